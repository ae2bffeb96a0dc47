//! `nvram completions SHELL`: the shell completion script, generated from the command line
//! definitions.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use std::process::ExitCode;

/// Print a shell completion script for nvram.
///
/// bash: `nvram completions bash > /etc/bash_completion.d/nvram` (or
/// `~/.local/share/bash-completion/completions/nvram`); zsh: into a directory of `$fpath` as
/// `_nvram`; fish: `~/.config/fish/completions/nvram.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: ShellArg,
}

/// The shells a script is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ShellArg {
    /// GNU bash (bash-completion).
    Bash,
    /// zsh's completion system (compinit).
    Zsh,
    /// fish.
    Fish,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "nvram", &mut script);
    super::out::result(&script)?;
    Ok(ExitCode::SUCCESS)
}
