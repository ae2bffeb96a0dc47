use super::Loaded;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::json::VariableList;

/// Export the live variables as JSON (`{"version": 2, "variables": [...]}`), the format of
/// QEMU's uefi-vars and virt-fw-vars.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// Write to this file instead of stdout (created owner-only; must not exist unless --force).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = Loaded::read(&args.file)?;
    let list = match loaded.parse()? {
        Some(store) => VariableList::from_store(&store),
        None => VariableList {
            version: 2,
            variables: Vec::new(),
        },
    };
    let json = nvram::escape::to_json_pretty(&list)? + "\n";
    super::emit(args.output.as_deref(), args.force, json.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
