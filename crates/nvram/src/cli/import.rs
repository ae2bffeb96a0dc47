use super::args::StrategyArg;
use super::out::message;
use super::set::json_report;
use anyhow::{Context, Result};
use nvram::edit::Failure;
use nvram::edit::{changes, Snapshot};
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::edit::Strategy;

/// Import variables from JSON: QEMU's uefi-vars store, `virt-fw-vars --output-json` or
/// python-uefivars (`{"version": 2, "variables": [{"name", "guid", "attr", "data", "time"}]}`).
///
/// Each variable is set as with `nvram set`, in list order, all or nothing: one refused
/// variable leaves the file unchanged. QEMU's `digest` fields cannot be stored in an edk2
/// varstore (edk2's certdb digest hashes different input, so it cannot be derived from
/// QEMU's); they are reported and dropped.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// The JSON file to import.
    #[arg(long, value_name = "FILE")]
    json: PathBuf,
    /// Also delete the live variables the JSON does not list, so the store ends up holding
    /// exactly the listed ones.
    #[arg(long)]
    replace_all: bool,
    /// How to write the changes.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the lines on stderr (`--json` names the file to import).
    #[arg(long)]
    json_report: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let text = safefile::read_input(
        &args.json,
        safefile::Accept::RegularFile,
        nvram::edit::MAX_IMPORT_JSON_LEN,
        nvram::edit::IMPORT_JSON_WHAT,
    )
    .context("--json")?;
    let list = varstore::json::VariableList::from_json(&text)
        .with_context(|| format!("{}: cannot import", args.json.display()))?;
    let strategy = Strategy::from(args.strategy);
    let json = args.json_report;
    let edited = nvram::edit::edit_file(&args.file, |editor| -> Result<_, Failure> {
        let before = json.then(|| Snapshot::of(editor)).transpose()?;
        let report = nvram::edit::import(editor, &list, strategy, args.replace_all)?;
        let changes = match before {
            Some(before) => {
                let after = Snapshot::of(editor)?;
                // Every listed variable (its GUID parsed by the import already).
                let named: Vec<_> = list
                    .variables
                    .iter()
                    .filter_map(|v| {
                        Some((v.name.clone(), varstore::Guid::try_parse(&v.guid).ok()?))
                    })
                    .collect();
                changes(&before, &after, &named)
            }
            None => Vec::new(),
        };
        Ok((report, changes))
    })
    .with_context(|| format!("cannot import {}", args.json.display()))?;
    let (report, variables) = &edited.value;
    if json {
        json_report(
            &args.file,
            &edited,
            serde_json::json!({
                "compacted": report.compacted,
                "json": args.json.to_string_lossy(),
                "imported": list.variables.len(),
                "added": report.added,
                "replaced": report.replaced,
                "unchanged": report.unchanged,
                "deleted": report.deleted,
                "notes": report.notes,
                "variables": variables,
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    for note in &report.notes {
        message!("note: {note}");
    }
    let how = if report.compacted {
        " (store compacted)"
    } else {
        ""
    };
    message!(
        "{}: imported {} variables from {}: {} added, {} replaced, {} unchanged, {} deleted{how}",
        args.file.display(),
        list.variables.len(),
        args.json.display(),
        report.added,
        report.replaced,
        report.unchanged,
        report.deleted
    );
    super::set::note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}
