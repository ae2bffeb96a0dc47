use super::out::message;
use super::Loaded;
use anyhow::{anyhow, Result};
use nvram::edit::DeleteError;
use nvram::escape::terminal;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print one variable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// Variable name, e.g. BootOrder.
    name: String,
    /// Vendor GUID, or a well-known name such as EfiGlobalVariable; needed when the name is ambiguous.
    #[arg(long, value_name = "GUID", value_parser = super::args::GuidParser)]
    guid: Option<varstore::Guid>,
    /// Print the data as one line of hex.
    #[arg(long, group = "output")]
    hex: bool,
    /// Write the raw data bytes to stdout.
    #[arg(long, group = "output")]
    raw: bool,
    /// Print the variable as JSON (the export format).
    #[arg(long, group = "output")]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = Loaded::read(&args.file)?;
    let Some(store) = loaded.parse()? else {
        message!(
            "nvram: {}: no variable {}",
            args.file.display(),
            terminal(&args.name)
        );
        return Ok(ExitCode::from(1));
    };
    let record = match nvram::edit::find_variable(&store, &args.name, args.guid) {
        Ok(record) => record,
        Err(DeleteError::NotFound { .. }) => {
            message!(
                "nvram: {}: no variable {}",
                args.file.display(),
                terminal(&args.name)
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            return Err(anyhow!(
                "{}: {e}; choose one with --guid",
                args.file.display()
            ))
        }
    };
    if args.raw {
        super::emit(None, false, record.data)?;
    } else if args.hex {
        super::emit(
            None,
            false,
            format!("{}\n", hex::encode(record.data)).as_bytes(),
        )?;
    } else if args.json {
        let json = varstore::json::JsonVariable::from_record(record);
        super::emit(
            None,
            false,
            (nvram::escape::to_json_pretty(&json)? + "\n").as_bytes(),
        )?;
    } else {
        let view = nvram::inspect::VariableView::new(record);
        let mut text = String::new();
        let _ = writeln!(text, "name:       {}", terminal(&view.name));
        let _ = writeln!(text, "guid:       {}", view.guid);
        let _ = writeln!(
            text,
            "attributes: {} (0x{:x})",
            view.flags.join(","),
            view.attr
        );
        let _ = writeln!(text, "size:       {}", view.size);
        if let Some(time) = &view.time {
            let _ = writeln!(text, "time:       {time}");
        }
        if let Some(value) = &view.value {
            let _ = writeln!(text, "value:      {}", terminal(value));
        }
        text.push_str(&hexdump(record.data));
        super::out::text(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in data.chunks(16).enumerate() {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:08x}  {:<47}  {ascii}", i * 16, hex.join(" "));
    }
    out
}
