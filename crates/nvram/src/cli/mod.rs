//! Argument parsing and one module per subcommand.

mod apply;
mod args;
mod boot;
mod check;
mod clean;
mod completions;
mod convert;
mod create;
mod delete;
mod export;
mod firmware;
mod flash;
mod get;
mod import;
mod libvirt_hook;
mod list;
mod man;
pub(crate) mod out;
mod prepare;
mod reset;
mod secureboot;
mod set;
mod shim;
mod sign_update;
mod upgrade;
mod vms;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use varstore::{ErrorKind, ParseError, Varstore};

/// Create, inspect and check UEFI variable stores (OVMF/AAVMF varstores) of virtual machines.
#[derive(Debug, Parser)]
#[command(name = "nvram", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Wait for the lock of a store that another process (a running VM, another nvram)
    /// holds instead of failing at once: without SECONDS until it is free, with --wait=SECONDS
    /// up to that long, then fail as without --wait. For the commands that write a store: set,
    /// delete, import, boot add/order/remove, secureboot enroll/add-*, shim, upgrade, reset,
    /// apply, clean, create --force and export -o --force replacing a file (prepare never
    /// writes an existing file, so it never waits); the other commands take no lock.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "forever",
        value_parser = parse_wait
    )]
    wait: Option<nvram::files::LockWait>,
    /// How the stores named on the command line are kept: a raw flash image, a qcow2 image,
    /// QEMU's uefi-vars JSON or AWS EC2's uefi-data. Without it each file's format is
    /// recognised by its content (an empty file is then raw: give --format json for a JSON
    /// store QEMU has not written yet). `firmware list` shows only firmware whose images have
    /// this format; `prepare` and `reset` write the VM's store in it.
    #[arg(long, global = true, value_name = "FORMAT")]
    format: Option<StoreFormat>,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreFormat {
    /// The flash image as QEMU maps it (`-drive if=pflash,format=raw`).
    Raw,
    /// A qcow2 image holding the flash image (`format=qcow2`).
    Qcow2,
    /// QEMU's uefi-vars JSON (`-device uefi-vars-*,jsonfile=FILE`).
    Json,
    /// AWS EC2's uefi-data (what `aws ec2 register-image --uefi-data` takes).
    Aws,
}

impl From<StoreFormat> for nvram::container::Format {
    fn from(f: StoreFormat) -> Self {
        match f {
            StoreFormat::Raw => Self::Raw,
            StoreFormat::Qcow2 => Self::Qcow2,
            StoreFormat::Json => Self::Json,
            StoreFormat::Aws => Self::Aws,
        }
    }
}

/// `--wait[=SECONDS]`: `forever` (the bare flag) or a number of seconds (fractions allowed).
fn parse_wait(text: &str) -> Result<nvram::files::LockWait, String> {
    use nvram::files::LockWait;
    if text == "forever" {
        return Ok(LockWait::Forever);
    }
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(seconds)
        .map(LockWait::Up)
        .map_err(|_| format!("{text:?} is not a number of seconds"))
}

#[derive(Debug, Subcommand)]
enum Command {
    Create(create::Args),
    List(list::Args),
    Get(get::Args),
    Check(check::Args),
    Export(export::Args),
    Flash(flash::Args),
    Prepare(prepare::Args),
    Reset(reset::Args),
    Firmware(firmware::Args),
    Set(set::Args),
    Delete(delete::Args),
    Import(import::Args),
    Secureboot(secureboot::Args),
    Shim(shim::Args),
    // Boxed: its many flags make it far larger than the other commands.
    Apply(Box<apply::Args>),
    Boot(boot::Args),
    Clean(clean::Args),
    Convert(convert::Args),
    Upgrade(upgrade::Args),
    Vms(vms::Args),
    LibvirtHook(libvirt_hook::Args),
    Completions(completions::Args),
    Man(man::Args),
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    nvram::files::set_lock_wait(cli.wait.unwrap_or_default());
    nvram::container::set_default_format(cli.format.map(Into::into));
    match cli.command {
        Command::Create(args) => create::run(args),
        Command::List(args) => list::run(args),
        Command::Get(args) => get::run(args),
        Command::Check(args) => check::run(args),
        Command::Export(args) => export::run(args),
        Command::Flash(args) => flash::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Reset(args) => reset::run(args),
        Command::Firmware(args) => firmware::run(args),
        Command::Set(args) => set::run(args),
        Command::Delete(args) => delete::run(args),
        Command::Import(args) => import::run(args),
        Command::Secureboot(args) => secureboot::run(args),
        Command::Shim(args) => shim::run(args),
        Command::Apply(args) => apply::run(*args),
        Command::Boot(args) => boot::run(args),
        Command::Clean(args) => clean::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Vms(args) => vms::run(args),
        Command::LibvirtHook(args) => libvirt_hook::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// A store image read from a file (unwrapped from qcow2 or JSON).
pub struct Loaded {
    path: PathBuf,
    image: Vec<u8>,
}

impl Loaded {
    fn read(path: &Path) -> Result<Self> {
        let image = nvram::files::read_store(path)?.into_image();
        Ok(Self {
            path: path.to_path_buf(),
            image,
        })
    }

    /// Parses the image. `Ok(None)` for an unformatted image (a note goes to stderr);
    /// an error names the file, offset and field.
    fn parse(&self) -> Result<Option<Varstore<'_>>> {
        match Varstore::parse(&self.image) {
            Ok(store) => Ok(Some(store)),
            Err(e) if e.kind() == ErrorKind::Unformatted => {
                out::message!("nvram: {}: {e}; it holds no variables", self.path.display());
                Ok(None)
            }
            Err(e) => Err(parse_error(&self.path, e)),
        }
    }
}

fn parse_error(path: &Path, error: ParseError) -> anyhow::Error {
    anyhow::Error::new(error).context(format!(
        "{}: cannot read the variable store",
        path.display()
    ))
}

/// A library error with what to do about it, in this command line's words (the library's
/// messages name no command or flag). Its message is the error's followed by the advice;
/// its `source` is the error's own, so the binary's chain of causes goes on from there.
#[derive(Debug)]
pub(crate) struct Advised<E> {
    pub error: E,
    pub advice: &'static str,
}

impl<E: std::fmt::Display> std::fmt::Display for Advised<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.error, self.advice)
    }
}

impl<E: std::error::Error> std::error::Error for Advised<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// What to do about an existing varstore that prepare, reset or the libvirt hook refused.
pub(crate) fn prepare_advice(error: &nvram::prepare::PrepareError) -> Option<&'static str> {
    use nvram::prepare::PrepareError as E;
    match error {
        E::SizeMismatch { .. } | E::LayoutMismatch { .. } | E::NotVarstore { .. } => {
            Some("`nvram reset` re-creates it from the template")
        }
        E::FormatMismatch { .. } => Some("`nvram convert` rewrites it in another format"),
        E::IncomingJson { .. } => Some("prepare it without --incoming"),
        _ => None,
    }
}

/// `error` with [`prepare_advice`], as an error of the binary.
pub(crate) fn advised_prepare_error(error: nvram::prepare::PrepareError) -> anyhow::Error {
    match prepare_advice(&error) {
        Some(advice) => Advised { error, advice }.into(),
        None => error.into(),
    }
}

/// [`nvram::files::write_output`], saying that `--force` replaces an existing file.
fn write_output(path: &Path, content: &[u8], force: bool) -> Result<()> {
    nvram::files::write_output(path, content, force).map_err(|error| match error {
        e @ nvram::files::FileError::Exists { .. } => Advised {
            error: e,
            advice: "use --force to replace it",
        }
        .into(),
        e => anyhow::Error::new(e),
    })
}

/// Writes command output as it is (JSON, raw bytes) to stdout (see [`out::result`]) or, with
/// `-o`, safely to a file. Human text goes to [`out::text`] instead.
fn emit(output: Option<&Path>, force: bool, content: &[u8]) -> Result<()> {
    match output {
        None => out::result(content),
        Some(path) => write_output(path, content, force)
            .with_context(|| format!("cannot write {}", path.display())),
    }
}
