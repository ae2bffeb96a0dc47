//! `nvram prepare`: instantiate or verify a VM's varstore before QEMU starts.

use super::firmware::TemplateSource;
use super::out::message;
use anyhow::{Context, Result};
use nvram::prepare::{self, Template};
use std::path::PathBuf;
use std::process::ExitCode;

/// Prepare a VM's varstore before starting QEMU: copy the template if the file is absent
/// (only its size for --incoming), else leave it alone and verify it fits the template.
///
/// Exit status: 0 ready; 1 the existing file does not fit the template (size or layout;
/// nothing was changed); 2 an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's varstore (QEMU's pflash unit 1 / libvirt's <nvram>).
    #[arg(long, value_name = "PATH")]
    nvram: PathBuf,
    #[command(flatten)]
    source: TemplateSource,
    /// QEMU will start with -incoming: the contents come with the migration, so an absent
    /// file is created zero-filled at the template's size and an existing one is checked for
    /// its size only.
    #[arg(long)]
    incoming: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let chosen = args.source.resolve()?;
    let template = Template::load_as(&chosen.template, chosen.template_format)?;
    let firmware = chosen.firmware_json();
    match prepare::prepare_as(
        &args.nvram,
        &template,
        args.incoming,
        nvram::container::default_format(),
    ) {
        Ok(prepared) => {
            if args.json {
                let mut doc = serde_json::to_value(&prepared)?;
                doc["ok"] = true.into();
                doc["incoming"] = args.incoming.into();
                doc["firmware"] = firmware;
                doc["machine"] = chosen.machine.clone().into();
                // The file is prepared: failing to print the report does not change that.
                super::out::report(&(nvram::escape::to_json_pretty(&doc)? + "\n"));
            } else {
                message!("{prepared}");
                if let Some(f) = &chosen.firmware {
                    message!("firmware: {} ({})", f.name, f.descriptor.description);
                }
            }
            if !prepared.locks.is_empty() {
                let locks: Vec<String> = prepared.locks.iter().map(ToString::to_string).collect();
                let note = if args.incoming {
                    "expected if the source VM uses the same file on shared storage"
                } else {
                    "a VM seems to be running on it already; QEMU will refuse a second one"
                };
                message!(
                    "nvram: note: {} is locked ({}): {note}",
                    args.nvram.display(),
                    locks.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_mismatch() => {
            let error_text = match super::prepare_advice(&e) {
                Some(advice) => format!("{e}; {advice}"),
                None => e.to_string(),
            };
            if args.json {
                let doc = serde_json::json!({
                    "ok": false,
                    "nvram": args.nvram,
                    "template": chosen.template,
                    "incoming": args.incoming,
                    "error": error_text,
                    "firmware": firmware,
                    "machine": chosen.machine,
                });
                super::emit(
                    None,
                    false,
                    (nvram::escape::to_json_pretty(&doc)? + "\n").as_bytes(),
                )?;
            }
            message!("nvram: {error_text}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(super::advised_prepare_error(e))
            .with_context(|| format!("cannot prepare {}", args.nvram.display())),
    }
}
