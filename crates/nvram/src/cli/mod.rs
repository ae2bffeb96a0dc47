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
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use varstore::{ErrorKind, ParseError, Varstore};

// The command line: a subcommand and the options every subcommand takes. (Plain comments on
// these two: clap would take doc comments for the description, which `root` gives.)
#[derive(Debug, clap::Args)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    globals: Globals,
}

// The options every subcommand takes.
#[derive(Debug, clap::Args)]
struct Globals {
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

/// The root of the command tree, without arguments or subcommands: the one place its name,
/// version and description are given, for both the whole tree and [`command_for`].
fn root() -> clap::Command {
    clap::Command::new("nvram")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .max_term_width(100)
}

impl clap::CommandFactory for Cli {
    fn command() -> clap::Command {
        <Self as clap::Args>::augment_args(root())
    }

    fn command_for_update() -> clap::Command {
        <Self as clap::Args>::augment_args_for_update(root())
    }
}

impl clap::Parser for Cli {}

/// The command tree needed to parse `argv`: when argv names a subcommand before any option
/// other than the global ones, the root with that subcommand alone; for `--version`/`-V`, the
/// root alone; otherwise (root help, `help`, a misspelt name, no argument) all of it. Building
/// every subcommand's arguments and help is most of the cost of starting `nvram`
/// (`benches/list_floor.rs`); matches of either tree read back into [`Cli`] alike, and help,
/// usage and errors are the same (tested below).
pub fn command_for(argv: &[std::ffi::OsString]) -> clap::Command {
    use clap::{Args, CommandFactory};
    let sub = match first_argument(argv) {
        Some("--version" | "-V") => None,
        Some(name) => match subcommand(name) {
            Some(sub) => Some(sub),
            None => return Cli::command(),
        },
        None => return Cli::command(),
    };
    let root = match sub {
        Some(sub) => root().subcommand(sub),
        None => root(),
    };
    // The whole tree numbers its subcommands before the global options, which sets where
    // those options show in every subcommand's help.
    Globals::augment_args(root.next_display_order(SUBCOMMANDS.len()))
        .subcommand_required(true)
        .arg_required_else_help(true)
}

/// The first argument that is neither argv[0] nor a global option (`--wait[=S]`,
/// `--format F`).
fn first_argument(argv: &[std::ffi::OsString]) -> Option<&str> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_str()?;
        if arg == "--format" {
            args.next()?;
        } else if !(arg == "--wait" || arg.starts_with("--wait=") || arg.starts_with("--format=")) {
            return Some(arg);
        }
    }
    None
}

/// The names of [`Command`]'s subcommands, in its order.
const SUBCOMMANDS: [&str; 23] = [
    "create",
    "list",
    "get",
    "check",
    "export",
    "flash",
    "prepare",
    "reset",
    "firmware",
    "set",
    "delete",
    "import",
    "secureboot",
    "shim",
    "apply",
    "boot",
    "clean",
    "convert",
    "upgrade",
    "vms",
    "libvirt-hook",
    "completions",
    "man",
];

/// The subcommand `name` as the derived [`Command`] builds it; `None` for a name it lacks.
fn subcommand(name: &str) -> Option<clap::Command> {
    use clap::Args;
    // The `'static` spelling of `name`, which `clap::Command::new` needs.
    let name = *SUBCOMMANDS.iter().find(|&&known| known == name)?;
    let sub = clap::Command::new(name);
    Some(match name {
        "create" => create::Args::augment_args(sub),
        "list" => list::Args::augment_args(sub),
        "get" => get::Args::augment_args(sub),
        "check" => check::Args::augment_args(sub),
        "export" => export::Args::augment_args(sub),
        "flash" => flash::Args::augment_args(sub),
        "prepare" => prepare::Args::augment_args(sub),
        "reset" => reset::Args::augment_args(sub),
        "firmware" => firmware::Args::augment_args(sub),
        "set" => set::Args::augment_args(sub),
        "delete" => delete::Args::augment_args(sub),
        "import" => import::Args::augment_args(sub),
        "secureboot" => secureboot::Args::augment_args(sub),
        "shim" => shim::Args::augment_args(sub),
        "apply" => apply::Args::augment_args(sub),
        "boot" => boot::Args::augment_args(sub),
        "clean" => clean::Args::augment_args(sub),
        "convert" => convert::Args::augment_args(sub),
        "upgrade" => upgrade::Args::augment_args(sub),
        "vms" => vms::Args::augment_args(sub),
        "libvirt-hook" => libvirt_hook::Args::augment_args(sub),
        "completions" => completions::Args::augment_args(sub),
        "man" => man::Args::augment_args(sub),
        _ => unreachable!("{name} is in SUBCOMMANDS but has no arguments here"),
    })
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
    nvram::files::set_lock_wait(cli.globals.wait.unwrap_or_default());
    nvram::container::set_default_format(cli.globals.format.map(Into::into));
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

#[cfg(test)]
mod tests {
    use super::{command_for, Cli, SUBCOMMANDS};
    use clap::CommandFactory;

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("nvram")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect()
    }

    #[test]
    fn the_subcommand_names_are_those_of_the_whole_tree() {
        let full: Vec<_> = Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        assert_eq!(full, SUBCOMMANDS);
    }

    #[test]
    fn one_subcommand_helps_and_parses_as_in_the_whole_tree() {
        let mut full = Cli::command();
        full.build();
        for name in SUBCOMMANDS {
            let mut alone = command_for(&argv(&["--wait=1", "--format", "raw", name]));
            assert_eq!(alone.get_subcommands().count(), 1, "{name}");
            alone.build();
            let help = |tree: &mut clap::Command| {
                let sub = tree.find_subcommand_mut(name).unwrap();
                (
                    sub.render_long_help().to_string(),
                    sub.render_usage().to_string(),
                )
            };
            assert_eq!(help(&mut alone), help(&mut full), "{name}");
        }
        let version = command_for(&argv(&["-V"]));
        assert_eq!(version.get_subcommands().count(), 0);
        assert_eq!(version.render_version(), full.render_version());
        for whole in [
            &[][..],
            &["--help"],
            &["help", "list"],
            &["lsit"],
            &["--json", "list"],
        ] {
            let tree = command_for(&argv(whole));
            assert_eq!(
                tree.get_subcommands().count(),
                SUBCOMMANDS.len(),
                "{whole:?}"
            );
        }
    }
}
