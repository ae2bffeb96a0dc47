use super::args::{Data, GuidParser, StrategyArg};
use super::out::message;
use anyhow::{bail, Context, Result};
use nvram::edit::{ChangedVariable, DataKind};
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::edit::Strategy;
use varstore::{guid, Attributes, EfiTime};

/// Create or replace a variable (the file is locked, edited on a copy and replaced atomically).
///
/// The firmware's rules are enforced: nv and bs are required (rt needs bs), hr and aw are
/// refused, and the size limit of the layout applies. Setting what is already there changes
/// nothing.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("data").required(true)))]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// Variable name, e.g. BootOrder.
    name: String,
    /// Vendor GUID, or a well-known name such as EfiGlobalVariable. Default: the EFI global
    /// variable GUID (8be4df61-…), as the UEFI shell's setvar does; other vendors' variables
    /// need their GUID. With --true/--false: the GUID virt-fw-vars gives that name (shim's
    /// for SHIM_VERBOSE, …).
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
    guid: Option<varstore::Guid>,
    /// Attributes: comma-separated nv, bs, rt, at, or a number such as 0x7. Default: nv,bs,rt;
    /// with --true/--false the variable's own if it exists, else what virt-fw-vars gives the
    /// name (nv,bs for a name it does not know).
    #[arg(long, value_parser = super::args::attributes)]
    attr: Option<Attributes>,
    /// Data: the boolean true, one byte 1 (virt-fw-vars' --set-true).
    #[arg(long, group = "data")]
    r#true: bool,
    /// Data: the boolean false, one byte 0 (virt-fw-vars' --set-false).
    #[arg(long, group = "data")]
    r#false: bool,
    /// Data as hex (spaces and colons allowed between bytes).
    #[arg(long, group = "data", value_name = "HEX", value_parser = super::args::data(DataKind::Hex))]
    data_hex: Option<Data>,
    /// Data: the bytes of this file.
    #[arg(long, group = "data", value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// Data: a UEFI string (CHAR16: UCS-2 little-endian) with its terminating NUL.
    #[arg(long, group = "data", value_name = "TEXT", value_parser = super::args::data(DataKind::String))]
    string: Option<Data>,
    /// Data: an ASCII string with a terminating NUL (like PlatformLang "en").
    #[arg(long, group = "data", value_name = "TEXT", value_parser = super::args::data(DataKind::Ascii))]
    ascii: Option<Data>,
    /// Data: one byte (decimal or 0x hex).
    #[arg(long, group = "data", value_name = "N", value_parser = super::args::data(DataKind::U8))]
    u8: Option<Data>,
    /// Data: a 16-bit little-endian number, e.g. Timeout or BootNext.
    #[arg(long, group = "data", value_name = "N", value_parser = super::args::data(DataKind::U16))]
    u16: Option<Data>,
    /// Data: a 32-bit little-endian number.
    #[arg(long, group = "data", value_name = "N", value_parser = super::args::data(DataKind::U32))]
    u32: Option<Data>,
    /// Timestamp of a time-based authenticated (at) variable as 32 hex digits (the 16-byte
    /// EFI_TIME). Default: keep the one of the variable it replaces, else none.
    #[arg(long, value_name = "HEX", value_parser = super::args::efi_time)]
    time: Option<EfiTime>,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let boolean = args.r#true || args.r#false;
    let (bool_guid, bool_attr) = nvram::edit::virt_firmware_defaults(&args.name);
    let guid = match args.guid {
        Some(g) => g,
        None if boolean => bool_guid,
        None => guid::EFI_GLOBAL_VARIABLE,
    };
    let data = data_of(&args)?;
    let strategy = Strategy::from(args.strategy);
    let edited = nvram::edit::edit_file(&args.file, |editor| {
        let attr = match args.attr {
            Some(a) => a,
            // virt-fw-vars keeps an existing variable's attributes and dates a time-based
            // authenticated one with the clock.
            None if boolean => {
                let existing = editor
                    .store()?
                    .live_variables()
                    .iter()
                    .find(|v| v.guid == guid && v.name() == args.name)
                    .map(|v| v.attributes);
                existing.unwrap_or(bool_attr)
            }
            None => Attributes(0x7),
        };
        let time = match args.time {
            None if boolean && attr.is_time_based_authenticated() => Some(nvram::certs::now()),
            t => t,
        };
        editor.set(&args.name, guid, attr, &data, time, strategy)
    })?;
    let outcome = edited.value;
    if args.json {
        json_report(
            &args.file,
            &edited,
            serde_json::json!({
                "compacted": outcome.compacted,
                "variables": [ChangedVariable { name: args.name.clone(), guid, change: outcome.change }],
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let how = if outcome.compacted {
        " (store compacted)"
    } else {
        ""
    };
    message!(
        "{}: {} {guid}: {}{how}",
        args.file.display(),
        nvram::escape::terminal(&args.name),
        outcome.change
    );
    note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}

fn data_of(args: &Args) -> Result<Vec<u8>> {
    // A path need not be UTF-8, so it is read here rather than by a value parser's text.
    if let Some(path) = &args.data_file {
        return nvram::edit::read_data_file(path).context("--data-file");
    }
    if args.r#true || args.r#false {
        return Ok(vec![u8::from(args.r#true)]);
    }
    [
        &args.data_hex,
        &args.string,
        &args.ascii,
        &args.u8,
        &args.u16,
        &args.u32,
    ]
    .into_iter()
    .find_map(|d| d.clone())
    .map(|Data(bytes)| bytes)
    .map_or_else(|| bail!("no data given"), Ok)
}

/// Says when the firmware will compact the store at its next boot anyway: it does so when
/// less than its largest variable size is free (`ReclaimForOS`, docs/varstore-format.md §8.5).
pub(super) fn note_free_space<T>(edited: &nvram::edit::Edited<T>) {
    if edited.reclaim_at_boot {
        message!(
            "note: only {} bytes are free after the last variable; the firmware compacts the store at its next boot",
            edited.free_space
        );
    }
}

/// Prints the `--json` report of an edit of `file` to stdout: `file`, `written`,
/// `free_space`, `reclaim_at_boot`, then `members` (an object: `variables` and what the
/// command adds). Not being able to print it is said on stderr (the change was made).
pub(super) fn json_report<T>(
    file: &std::path::Path,
    edited: &nvram::edit::Edited<T>,
    members: serde_json::Value,
) {
    let mut doc = serde_json::json!({
        "file": file.to_string_lossy(),
        "written": edited.written,
        "free_space": edited.free_space,
        "reclaim_at_boot": edited.reclaim_at_boot,
    });
    if let (Some(doc), serde_json::Value::Object(members)) = (doc.as_object_mut(), members) {
        doc.extend(members);
    }
    match nvram::escape::to_json_pretty(&doc) {
        Ok(text) => super::out::report(&(text + "\n")),
        Err(e) => {
            message!("nvram: warning: cannot write the JSON report ({e}); the change was made")
        }
    }
}
