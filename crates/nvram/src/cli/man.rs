//! `nvram man`: the manual page, generated from the command line definitions.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::process::ExitCode;

/// Print the manual page (roff) of nvram and of each of its commands to stdout.
///
/// `nvram man | man -l -` reads it; `nvram man > /usr/local/share/man/man1/nvram.1` installs
/// it. The page of `nvram` comes first, then one page per command (`nvram-boot-add`, …).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut roff = Vec::new();
    render(&cmd, &mut roff).context("cannot render the manual page")?;
    super::out::result(&roff)?;
    Ok(ExitCode::SUCCESS)
}

/// `cmd`'s page, then those of its subcommands, depth first.
fn render(cmd: &clap::Command, roff: &mut Vec<u8>) -> std::io::Result<()> {
    // Each page's footer names nvram and its version (a subcommand has none of its own).
    clap_mangen::Man::new(cmd.clone())
        .source(format!("nvram {}", env!("CARGO_PKG_VERSION")))
        .render(roff)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(sub, roff)?;
    }
    Ok(())
}
