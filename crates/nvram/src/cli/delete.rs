use super::out::message;
use super::set::StrategyArg;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::edit::{EditError, Strategy};

/// Delete a variable (the file is locked, edited on a copy and replaced atomically).
///
/// Exit status 1 if there is no such variable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// Variable name.
    name: String,
    /// Vendor GUID, or a well-known name such as EfiGlobalVariable; needed when the name is
    /// ambiguous. Without it, the one live variable of that name.
    #[arg(long, value_name = "GUID", value_parser = super::set::GuidParser)]
    guid: Option<varstore::Guid>,
    /// How to write the change: append marks the old copies deleted in place (as the firmware
    /// does); compact rewrites the variable area without them.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the line on stderr. No such variable: nothing on stdout, exit
    /// status 1.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let wanted = args.guid;
    let strategy = Strategy::from(args.strategy);
    let name = args.name.as_str();
    let shown = nvram::escape::terminal(name);
    let guid = match wanted {
        Some(g) => g,
        // Resolved from a first read; the locked edit below checks again that it is live.
        None => {
            let loaded = super::Loaded::read(&args.file)?;
            let Some(store) = loaded.parse()? else {
                return not_found(&args);
            };
            let guids: Vec<_> = store
                .live_variables()
                .iter()
                .filter(|r| r.name() == name)
                .map(|r| r.guid)
                .collect();
            match guids.as_slice() {
                [] => return not_found(&args),
                [one] => *one,
                many => {
                    let list: Vec<String> = many.iter().map(ToString::to_string).collect();
                    bail!(
                        "{}: {} variables are named {shown}; choose one with --guid: {}",
                        args.file.display(),
                        many.len(),
                        list.join(", ")
                    );
                }
            }
        }
    };
    let result = nvram::edit::edit_file(&args.file, |editor| editor.delete(name, guid, strategy));
    let edited = match result {
        Ok(edited) => edited,
        Err(nvram::edit::EditFileError::Edit {
            error: EditError::NotFound { .. },
            ..
        }) => return not_found(&args),
        Err(e) => return Err(e.into()),
    };
    let outcome = edited.value;
    if args.json {
        super::set::json_report(
            &args.file,
            &edited,
            serde_json::json!({
                "compacted": outcome.compacted,
                "variables": [super::set::JsonChange::new(name, guid, outcome.change.as_str())],
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
        "{}: {shown} {guid}: {}{how}",
        args.file.display(),
        outcome.change
    );
    Ok(ExitCode::SUCCESS)
}

fn not_found(args: &Args) -> Result<ExitCode> {
    message!(
        "nvram: {}: no variable {}{}; nothing was changed",
        args.file.display(),
        nvram::escape::terminal(&args.name),
        args.guid
            .map(|g| format!(" with GUID {g}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::from(1))
}
