//! `nvram convert`: one store in another container format or layout.

use anyhow::{bail, Result};
use std::process::ExitCode;

/// Write a store in another format (raw flash, qcow2, QEMU JSON) or layout.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    bail!("not yet implemented")
}
