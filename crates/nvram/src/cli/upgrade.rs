//! `nvram upgrade`: give an existing VM's store a newer template's Secure Boot databases.

use anyhow::{bail, Result};
use std::process::ExitCode;

/// Give a VM's store the Secure Boot databases of a newer template, keeping the VM's own
/// variables.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    bail!("not yet implemented")
}
