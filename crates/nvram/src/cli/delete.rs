use super::args::{GuidParser, StrategyArg};
use super::out::message;
use anyhow::{anyhow, Result};
use nvram::edit::{ChangedVariable, DeleteError, EditFileError};
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::edit::Strategy;

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
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
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
    let strategy = Strategy::from(args.strategy);
    let name = args.name.as_str();
    let shown = nvram::escape::terminal(name);
    // The name is resolved to its GUID under the edit's lock: no other writer can change
    // which variable it stands for in between.
    let result = nvram::edit::edit_file(&args.file, |editor| {
        nvram::edit::delete_by_name(editor, name, args.guid, strategy)
    });
    let edited = match result {
        Ok(edited) => edited,
        Err(EditFileError::Edit {
            error: DeleteError::NotFound { .. },
            ..
        }) => return not_found(&args),
        Err(EditFileError::Edit {
            error: e @ DeleteError::Ambiguous { .. },
            ..
        }) => {
            return Err(anyhow!(
                "{}: {e}; choose one with --guid (nothing was changed)",
                args.file.display()
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let (guid, outcome) = edited.value;
    if args.json {
        super::set::json_report(
            &args.file,
            &edited,
            serde_json::json!({
                "compacted": outcome.compacted,
                "variables": [ChangedVariable { name: name.to_string(), guid, change: outcome.change }],
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
