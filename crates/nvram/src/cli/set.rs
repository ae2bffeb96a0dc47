use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::edit::Strategy;
use varstore::guid;

/// How an edit is written: `append` like the firmware (only clears bits; compacts first when
/// the store is full), `compact` rewrites the variable area with the live variables only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// New copy after the last record, old copies marked replaced/deleted (what the firmware does).
    Append,
    /// Rewrite the variable area with the live variables only (what a reclaim and virt-fw-vars do).
    Compact,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Append => Strategy::Append,
            StrategyArg::Compact => Strategy::Compact,
        }
    }
}

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
    /// need their GUID.
    #[arg(long)]
    guid: Option<String>,
    /// Attributes: comma-separated nv, bs, rt, at, or a number such as 0x7.
    #[arg(long, default_value = "nv,bs,rt")]
    attr: String,
    /// Data as hex (spaces and colons allowed between bytes).
    #[arg(long, group = "data", value_name = "HEX")]
    data_hex: Option<String>,
    /// Data: the bytes of this file.
    #[arg(long, group = "data", value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// Data: a UEFI string (CHAR16: UCS-2 little-endian) with its terminating NUL.
    #[arg(long, group = "data", value_name = "TEXT")]
    string: Option<String>,
    /// Data: an ASCII string with a terminating NUL (like PlatformLang "en").
    #[arg(long, group = "data", value_name = "TEXT")]
    ascii: Option<String>,
    /// Data: one byte (decimal or 0x hex).
    #[arg(long, group = "data", value_name = "N")]
    u8: Option<String>,
    /// Data: a 16-bit little-endian number, e.g. Timeout or BootNext.
    #[arg(long, group = "data", value_name = "N")]
    u16: Option<String>,
    /// Data: a 32-bit little-endian number.
    #[arg(long, group = "data", value_name = "N")]
    u32: Option<String>,
    /// Timestamp of a time-based authenticated (at) variable as 32 hex digits (the 16-byte
    /// EFI_TIME). Default: keep the one of the variable it replaces, else none.
    #[arg(long, value_name = "HEX")]
    time: Option<String>,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let guid = match args.guid.as_deref() {
        Some(g) => guid::parse(g)
            .ok_or_else(|| anyhow!("--guid {g:?} is not a GUID or a known GUID name"))?,
        None => guid::EFI_GLOBAL_VARIABLE,
    };
    let attrs = nvram::edit::parse_attributes(&args.attr).map_err(|e| anyhow!("--attr {e}"))?;
    let data = data_of(&args)?;
    let time = args
        .time
        .as_deref()
        .map(|t| -> Result<varstore::EfiTime> {
            let bytes: [u8; 16] = hex::decode(t)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("--time {t:?} is not 32 hex digits (a 16-byte EFI_TIME)"))?;
            Ok(varstore::EfiTime(bytes))
        })
        .transpose()?;
    let strategy = Strategy::from(args.strategy);
    let edited = nvram::edit::edit_file(&args.file, |editor| {
        editor.set(&args.name, guid, attrs, &data, time, strategy)
    })?;
    let outcome = edited.value;
    let how = if outcome.compacted {
        " (store compacted)"
    } else {
        ""
    };
    eprintln!(
        "{}: {} {guid}: {}{how}",
        args.file.display(),
        args.name,
        outcome.change
    );
    note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}

fn data_of(args: &Args) -> Result<Vec<u8>> {
    let number = |flag: &str, text: &str, max: u64| -> Result<u64> {
        nvram::edit::parse_number(text)
            .filter(|n| *n <= max)
            .ok_or_else(|| anyhow!("--{flag} {text:?}: not a number from 0 to {max}"))
    };
    if let Some(hex_text) = &args.data_hex {
        let compact: String = hex_text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        return hex::decode(&compact).map_err(|e| anyhow!("--data-hex: {e}"));
    }
    if let Some(path) = &args.data_file {
        return std::fs::read(path)
            .with_context(|| format!("--data-file: cannot read {}", path.display()));
    }
    if let Some(text) = &args.string {
        let mut out: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        out.extend_from_slice(&[0, 0]);
        return Ok(out);
    }
    if let Some(text) = &args.ascii {
        if !text.is_ascii() {
            bail!("--ascii {text:?}: not ASCII (use --string for a UEFI CHAR16 string)");
        }
        let mut out = text.as_bytes().to_vec();
        out.push(0);
        return Ok(out);
    }
    if let Some(n) = &args.u8 {
        return Ok(vec![number("u8", n, 0xFF)? as u8]);
    }
    if let Some(n) = &args.u16 {
        return Ok((number("u16", n, 0xFFFF)? as u16).to_le_bytes().to_vec());
    }
    if let Some(n) = &args.u32 {
        return Ok((number("u32", n, 0xFFFF_FFFF)? as u32)
            .to_le_bytes()
            .to_vec());
    }
    bail!("no data given")
}

/// Says when the firmware will compact the store at its next boot anyway: it does so when
/// less than its largest variable size is free (spec §8.5, ReclaimForOS).
pub(super) fn note_free_space<T>(edited: &nvram::edit::Edited<T>) {
    if edited.reclaim_at_boot {
        eprintln!(
            "note: only {} bytes are free after the last variable; the firmware compacts the store at its next boot",
            edited.free_space
        );
    }
}
