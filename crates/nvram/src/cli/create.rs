use super::out::message;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::Layout;

/// Create a blank variable store from a built-in layout (no template file needed); with the
/// global --format qcow2 wrapped in a qcow2 image, with --format json an empty QEMU JSON store.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Layout: ovmf-4m (x86_64 OVMF_VARS_4M.fd, 528 KiB), ovmf-2m (x86_64 OVMF_VARS.fd,
    /// 128 KiB), aavmf (aarch64 AAVMF_VARS.fd, 64 MiB), riscv64 (RISCV_VIRT_VARS.fd, 32 MiB) or
    /// loongarch64 (LoongArch QEMU_VARS.fd, 16 MiB).
    #[arg(long, default_value = "ovmf-4m", value_parser = super::args::layout)]
    layout: &'static Layout,
    /// Replace FILE if it exists (atomically; a symlink is still refused).
    #[arg(long)]
    force: bool,
    /// The store to create (owner-only permissions).
    file: PathBuf,
    /// Print a JSON report on stdout instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let layout = args.layout;
    let image = layout.create();
    let format = nvram::container::default_format().unwrap_or(nvram::container::Format::Raw);
    let content = nvram::container::wrap(&image, format)?;
    super::write_output(&args.file, &content, args.force)?;
    if args.json {
        let doc = serde_json::json!({
            "file": args.file,
            "layout": layout.name,
            "description": layout.description,
            "format": format,
            "bytes": image.len(),
            "file_bytes": content.len(),
        });
        // The file is created: failing to print the report does not change that.
        super::out::report(&(nvram::escape::to_json_pretty(&doc)? + "\n"));
        return Ok(ExitCode::SUCCESS);
    }
    message!(
        "created {} ({}, {} bytes{})",
        args.file.display(),
        layout.description,
        image.len(),
        match format {
            nvram::container::Format::Raw => String::new(),
            other => format!(", as {other}: {} bytes in the file", content.len()),
        }
    );
    Ok(ExitCode::SUCCESS)
}
