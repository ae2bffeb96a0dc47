use super::out::message;
use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use std::collections::HashMap;
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
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
    guid: Option<varstore::Guid>,
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
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let guid = args.guid.unwrap_or(guid::EFI_GLOBAL_VARIABLE);
    let attrs = nvram::edit::parse_attributes(&args.attr).map_err(|e| anyhow!("--attr {e}"))?;
    let data = data_of(&args)?;
    let time = args.time.as_deref().map(parse_time).transpose()?;
    let strategy = Strategy::from(args.strategy);
    let edited = nvram::edit::edit_file(&args.file, |editor| {
        editor.set(&args.name, guid, attrs, &data, time, strategy)
    })?;
    let outcome = edited.value;
    if args.json {
        json_report(
            &args.file,
            &edited,
            serde_json::json!({
                "compacted": outcome.compacted,
                "variables": [JsonChange::new(&args.name, guid, outcome.change.as_str())],
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
    // A path need not be UTF-8, so it is not passed through encode_data's text.
    if let Some(path) = &args.data_file {
        return read_data_file(path).context("--data-file");
    }
    let given = [
        ("data-hex", args.data_hex.clone()),
        ("string", args.string.clone()),
        ("ascii", args.ascii.clone()),
        ("u8", args.u8.clone()),
        ("u16", args.u16.clone()),
        ("u32", args.u32.clone()),
    ];
    match given.into_iter().find_map(|(kind, v)| Some((kind, v?))) {
        Some((kind, value)) => encode_data(kind, &value),
        None => bail!("no data given"),
    }
}

/// The content of a data file: a regular file of at most [`nvram::edit::MAX_DATA_FILE_LEN`]
/// bytes (a FIFO or `/dev/zero` is refused at once).
fn read_data_file(path: &std::path::Path) -> Result<Vec<u8>> {
    Ok(safefile::read_input(
        path,
        safefile::Accept::RegularFile,
        nvram::edit::MAX_DATA_FILE_LEN,
        "variable data",
    )?)
}

/// The data kinds of [`encode_data`], as `nvram set` spells its flags (without `--`).
pub(super) const DATA_KINDS: &str = "data-hex, data-file, string, ascii, u8, u16, u32";

/// Encodes `value` as `nvram set --KIND VALUE` does; shared with `nvram apply --set`, whose
/// `NAME=KIND:VALUE` spells the same kinds (also `hex` and `file` for short).
pub(super) fn encode_data(kind: &str, value: &str) -> Result<Vec<u8>> {
    let number = |text: &str, max: u64| -> Result<u64> {
        nvram::edit::parse_number(text)
            .filter(|n| *n <= max)
            .ok_or_else(|| anyhow!("--{kind} {text:?}: not a number from 0 to {max}"))
    };
    match kind {
        "data-hex" | "hex" => {
            let compact: String = value
                .chars()
                .filter(|c| !c.is_whitespace() && *c != ':')
                .collect();
            hex::decode(&compact).map_err(|e| anyhow!("--{kind}: {e}"))
        }
        "data-file" | "file" => {
            read_data_file(std::path::Path::new(value)).with_context(|| format!("--{kind}"))
        }
        "string" => {
            let mut out: Vec<u8> = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
            out.extend_from_slice(&[0, 0]);
            Ok(out)
        }
        "ascii" => {
            if !value.is_ascii() {
                bail!("--ascii {value:?}: not ASCII (use --string for a UEFI CHAR16 string)");
            }
            let mut out = value.as_bytes().to_vec();
            out.push(0);
            Ok(out)
        }
        "u8" => Ok(vec![number(value, 0xFF)? as u8]),
        "u16" => Ok((number(value, 0xFFFF)? as u16).to_le_bytes().to_vec()),
        "u32" => Ok((number(value, 0xFFFF_FFFF)? as u32).to_le_bytes().to_vec()),
        _ => bail!("unknown data kind {kind:?}: use one of {DATA_KINDS}"),
    }
}

/// Parses a `--guid` value: a GUID or a well-known GUID name.
pub(super) fn parse_guid(text: &str) -> Result<varstore::Guid> {
    guid::parse(text).ok_or_else(|| anyhow!("--guid {text:?} is {NOT_A_GUID}"))
}

/// What a value that [`GuidParser`] and [`parse_guid`] refuse is not.
const NOT_A_GUID: &str = "not a GUID or a known GUID name (such as EfiGlobalVariable)";

/// The value parser of the options that take a vendor or owner GUID (`set`/`delete --guid`,
/// `secureboot --owner`): a GUID (`8be4df61-93ca-11d2-aa0d-00e098032b8c`, any case) or a
/// well-known GUID name such as `EfiGlobalVariable` ([`varstore::guid::parse`]). A refused
/// value is quoted escaped, as nvram's own errors quote it (clap's own message would print it
/// raw).
#[derive(Debug, Clone, Copy)]
pub(super) struct GuidParser;

impl clap::builder::TypedValueParser for GuidParser {
    type Value = varstore::Guid;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<varstore::Guid, clap::Error> {
        if let Some(g) = value.to_str().and_then(guid::parse) {
            return Ok(g);
        }
        let flag = arg
            .and_then(clap::Arg::get_long)
            .map_or_else(|| "GUID".to_string(), |l| format!("--{l}"));
        let quoted = format!("{:?}", varstore::json::bounded(&value.to_string_lossy()));
        let message = format!(
            "{flag} {} is {NOT_A_GUID}\n",
            nvram::escape::terminal(&quoted)
        );
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

/// Parses a `--time` value: the 16-byte EFI_TIME as 32 hex digits.
pub(super) fn parse_time(text: &str) -> Result<varstore::EfiTime> {
    let bytes: [u8; 16] = hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("--time {text:?} is not 32 hex digits (a 16-byte EFI_TIME)"))?;
    Ok(varstore::EfiTime(bytes))
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

/// The live variables of a store by name and GUID, in store order, each with what makes two
/// copies equal (attributes, data, timestamp): taken before and after an edit for the
/// `--json` report of what it changed.
pub(super) struct Snapshot {
    order: Vec<VariableKey>,
    content: HashMap<VariableKey, Content>,
}

/// What makes two copies of a variable equal: attributes, data and timestamp.
type Content = (u32, Vec<u8>, Option<[u8; 16]>);

/// A variable's name and vendor GUID.
type VariableKey = (String, varstore::Guid);

impl Snapshot {
    /// The editor's live variables now.
    pub(super) fn of(editor: &varstore::edit::Editor) -> Result<Self, varstore::edit::EditError> {
        let store = editor.store()?;
        let live = store.live_variables();
        let mut order = Vec::with_capacity(live.len());
        let mut content = HashMap::with_capacity(live.len());
        for r in live {
            let key = (r.name(), r.guid);
            let value = (r.attributes.0, r.data.to_vec(), r.timestamp.map(|t| t.0));
            if content.insert(key.clone(), value).is_none() {
                order.push(key);
            }
        }
        Ok(Self { order, content })
    }
}

/// One variable of a `--json` report.
#[derive(Debug, Serialize)]
pub(super) struct JsonChange {
    /// Variable name.
    pub name: String,
    /// Vendor GUID.
    pub guid: String,
    /// added, replaced, unchanged or deleted.
    pub change: &'static str,
}

impl JsonChange {
    pub(super) fn new(name: &str, guid: varstore::Guid, change: &'static str) -> Self {
        Self {
            name: name.to_string(),
            guid: guid.to_string(),
            change,
        }
    }
}

/// What an edit did from `before` to `after`: the `named` variables first, in that order
/// (unchanged ones included; one absent before and after is left out), then every other
/// variable that was added, replaced or deleted, in store order.
pub(super) fn changes(
    before: &Snapshot,
    after: &Snapshot,
    named: &[(String, varstore::Guid)],
) -> Vec<JsonChange> {
    let change_of = |key: &(String, varstore::Guid)| -> Option<&'static str> {
        match (before.content.get(key), after.content.get(key)) {
            (None, None) => None,
            (None, Some(_)) => Some("added"),
            (Some(_), None) => Some("deleted"),
            (Some(a), Some(b)) if a == b => Some("unchanged"),
            (Some(_), Some(_)) => Some("replaced"),
        }
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for key in named {
        if !seen.insert(key.clone()) {
            continue;
        }
        if let Some(change) = change_of(key) {
            out.push(JsonChange::new(&key.0, key.1, change));
        }
    }
    for key in after.order.iter().chain(&before.order) {
        if !seen.insert(key.clone()) {
            continue;
        }
        match change_of(key) {
            Some("unchanged") | None => {}
            Some(change) => out.push(JsonChange::new(&key.0, key.1, change)),
        }
    }
    out
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
