use anyhow::{anyhow, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::{Layout, LAYOUTS};

/// Create a blank variable store from a built-in layout (no template file needed).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Layout: ovmf-4m (OVMF_VARS_4M.fd, 528 KiB), ovmf-2m (OVMF_VARS.fd, 128 KiB) or aavmf (64 MiB).
    #[arg(long, default_value = "ovmf-4m")]
    layout: String,
    /// Replace FILE if it exists (atomically; a symlink is still refused).
    #[arg(long)]
    force: bool,
    /// The store to create (owner-only permissions).
    file: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let layout = Layout::by_name(&args.layout).ok_or_else(|| {
        let names: Vec<&str> = LAYOUTS.iter().map(|l| l.name).collect();
        anyhow!(
            "unknown layout {:?}: choose one of {}",
            args.layout,
            names.join(", ")
        )
    })?;
    let image = layout.create();
    nvram::files::write_output(&args.file, &image, args.force)?;
    eprintln!(
        "created {} ({}, {} bytes)",
        args.file.display(),
        layout.description,
        image.len()
    );
    Ok(ExitCode::SUCCESS)
}
