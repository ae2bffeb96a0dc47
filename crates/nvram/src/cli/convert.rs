//! `nvram convert`: one store in another container format or layout.

use super::out::message;
use anyhow::{anyhow, bail, Context, Result};
use nvram::container::Format;
use nvram::convert::{convert, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::Layout;

/// Write a store in another format (raw flash image, qcow2, QEMU uefi-vars JSON, AWS EC2
/// uefi-data) or layout
/// (e.g. ovmf-2m → ovmf-4m for a VM whose firmware moved to the 4 MiB build). Every live
/// variable, attribute and timestamp is carried over; a variable the target cannot hold is
/// an error naming it, and nothing is written. The input's format is recognised by its
/// content (or the global --format).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store to read.
    input: PathBuf,
    /// The new file (created owner-only; must not exist unless --force).
    output: PathBuf,
    /// The new file's format; default: the input's (raw for a JSON or AWS input with --layout).
    #[arg(long, value_enum)]
    to: Option<super::StoreFormat>,
    /// The new flash image's layout (ovmf-4m, ovmf-2m, aavmf, riscv64, loongarch64); required
    /// to turn a JSON or AWS store into a flash image; default: the input's.
    #[arg(long, value_parser = super::args::layout)]
    layout: Option<&'static Layout>,
    /// Replace the output file if it exists (atomically).
    #[arg(long)]
    force: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let layout = args.layout;
    same_file_refused(&args)?;
    let source = nvram::files::read_store(&args.input)?;
    // A layout names a flash image: without --to, a JSON input with --layout becomes raw.
    let format = match (args.to, source.format()) {
        (Some(to), _) => to.into(),
        (None, from) if !from.is_flash() && layout.is_some() => Format::Raw,
        (None, from) => from,
    };
    let target = Target { format, layout };
    let (content, report) = convert(&source, &target)
        .map_err(|e| match e {
            nvram::convert::ConvertError::LayoutNeeded => {
                anyhow!("{e} (--layout ovmf-4m, aavmf, …)")
            }
            other => other.into(),
        })
        .with_context(|| {
            format!(
                "cannot convert {} to {}; nothing was written",
                args.input.display(),
                target.format
            )
        })?;
    super::write_output(&args.output, &content, args.force)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    if args.json {
        let mut doc = serde_json::to_value(&report)?;
        doc["input"] = serde_json::json!(args.input);
        doc["output"] = serde_json::json!(args.output);
        super::out::report(&(nvram::escape::to_json_pretty(&doc)? + "\n"));
    } else {
        let shape = |format: Format, layout: &Option<String>| match layout {
            Some(l) => format!("{format}, {l}"),
            None => format.to_string(),
        };
        message!(
            "converted {} ({}) to {} ({}): {} variables{}",
            args.input.display(),
            shape(report.from, &report.from_layout),
            args.output.display(),
            shape(report.to, &report.to_layout),
            report.variables,
            if report.relaid {
                ", written into a fresh store"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Converting a file onto itself would replace the store a VM may be using without its lock;
/// a new name (then a rename by the VM's manager) is the safe way.
fn same_file_refused(args: &Args) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (
        std::fs::metadata(&args.input),
        std::fs::symlink_metadata(&args.output),
    ) else {
        return Ok(());
    };
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        bail!(
            "{} and {} are the same file: convert into a new file, then replace the old one",
            args.input.display(),
            args.output.display()
        );
    }
    Ok(())
}
