//! `nvram shim`: shim's and fallback's switches and the SBAT level.

use super::args::StrategyArg;
use super::out::message;
use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use nvram::shim::{self, Setting, ShimChange};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use varstore::edit::Strategy;

/// Configure shim and its fallback loader: debug and verbose switches, fallback's reboot,
/// the SBAT revocation level (variables under shim's GUID, as virt-fw-vars writes them).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Set(SetArgs),
    SbatLevel(SbatArgs),
}

/// A shim or fallback switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum SettingArg {
    /// SHIM_DEBUG: shim waits for a debugger to attach.
    Debug,
    /// SHIM_VERBOSE: shim prints what it does.
    Verbose,
    /// FALLBACK_VERBOSE: fallback.efi prints what it does.
    FallbackVerbose,
    /// FB_NO_REBOOT: fallback.efi does not reset after creating boot entries.
    FallbackNoReboot,
}

impl From<SettingArg> for Setting {
    fn from(s: SettingArg) -> Self {
        match s {
            SettingArg::Debug => Setting::Debug,
            SettingArg::Verbose => Setting::Verbose,
            SettingArg::FallbackVerbose => Setting::FallbackVerbose,
            SettingArg::FallbackNoReboot => Setting::FallbackNoReboot,
        }
    }
}

/// Turn a switch on (the variable holds the 32-bit number 1), or off with --off (the variable
/// is deleted).
#[derive(Debug, clap::Args)]
struct SetArgs {
    /// The store.
    file: PathBuf,
    /// The switch.
    #[arg(value_enum)]
    setting: SettingArg,
    /// Turn it off instead.
    #[arg(long)]
    off: bool,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

/// Set SbatLevel, the SBAT revocation level shim enforces, to the content of a file.
#[derive(Debug, clap::Args)]
struct SbatArgs {
    /// The store.
    file: PathBuf,
    /// The SBAT level (text such as "sbat,1,2023012900\nshim,2\n…").
    level: PathBuf,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Set(a) => {
            let (setting, on) = (Setting::from(a.setting), !a.off);
            let strategy = Strategy::from(a.strategy);
            let edited = nvram::edit::edit_file(&a.file, |editor| {
                shim::set_setting(editor, setting, on, strategy)
            })?;
            report(&a.file, &edited, a.json)
        }
        Command::SbatLevel(a) => {
            let level = shim::read_sbat_level(&a.level).context("the SBAT level")?;
            let strategy = Strategy::from(a.strategy);
            let edited = nvram::edit::edit_file(&a.file, |editor| {
                shim::set_sbat_level(editor, &level, strategy)
            })?;
            report(&a.file, &edited, a.json)
        }
    }
}

fn report(file: &Path, edited: &nvram::edit::Edited<ShimChange>, json: bool) -> Result<ExitCode> {
    let c = &edited.value;
    if json {
        super::set::json_report(file, edited, serde_json::json!({ "variables": [c] }));
    } else {
        message!("{}: {} {}: {}", file.display(), c.name, c.guid, c.change);
        super::set::note_free_space(edited);
    }
    Ok(ExitCode::SUCCESS)
}
