use super::out::message;
use super::set::StrategyArg;
use anyhow::{Context, Result};
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
}

pub fn run(args: Args) -> Result<ExitCode> {
    let text = safefile::read_input(
        &args.json,
        safefile::Accept::RegularFile,
        nvram::edit::MAX_IMPORT_JSON_LEN,
        nvram::edit::IMPORT_JSON_WHAT,
    )
    .context("--json")?;
    let list = nvram::edit::ImportList::from_json(&text)
        .with_context(|| format!("{}: cannot import", args.json.display()))?;
    let strategy = Strategy::from(args.strategy);
    let edited = nvram::edit::edit_file(&args.file, |editor| {
        nvram::edit::import(editor, &list, strategy, args.replace_all)
    })
    .with_context(|| format!("cannot import {}", args.json.display()))?;
    let report = &edited.value;
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
