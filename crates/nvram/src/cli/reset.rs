//! `nvram reset`: re-instantiate a VM's varstore from its template.

use super::firmware::TemplateSource;
use super::out::message;
use anyhow::{Context, Result};
use nvram::prepare::{self, Template};
use std::path::PathBuf;
use std::process::ExitCode;

/// Re-create a VM's varstore from the template, atomically, keeping the old contents in
/// PATH.bak (or PATH.bak.1, … if taken). Refused while a VM runs on the file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's varstore.
    #[arg(long, value_name = "PATH")]
    nvram: PathBuf,
    #[command(flatten)]
    source: TemplateSource,
    /// Do not keep a copy of the old contents.
    #[arg(long)]
    no_backup: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let chosen = args.source.resolve()?;
    let template = Template::load_as(&chosen.template, chosen.template_format)?;
    let reset = prepare::reset_as(
        &args.nvram,
        &template,
        !args.no_backup,
        nvram::container::default_format(),
    )
    .map_err(super::advised_prepare_error)
    .with_context(|| format!("cannot reset {}", args.nvram.display()))?;
    if args.json {
        let mut doc = serde_json::to_value(&reset)?;
        doc["firmware"] = chosen.firmware_json();
        // The file is reset: failing to print the report does not change that.
        super::out::report(&(nvram::escape::to_json_pretty(&doc)? + "\n"));
    } else {
        message!("{reset}");
    }
    Ok(ExitCode::SUCCESS)
}
