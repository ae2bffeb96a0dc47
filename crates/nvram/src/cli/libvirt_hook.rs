//! `nvram libvirt-hook`: libvirt's QEMU hook that refuses to start a domain on a store that
//! does not fit (`nvram::hook`), and its installation.

use super::out::message;
use anyhow::{bail, Context, Result};
use nvram::hook::{self, Config, HookError, Outcome};
use nvram::prepare::PrepareError;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// libvirt's QEMU hook: check a domain's UEFI variable store before QEMU starts.
///
/// libvirt runs it as `/etc/libvirt/hooks/qemu.d/nvram DOMAIN OPERATION SUB-OPERATION EXTRA`
/// with the domain XML on standard input. At `start begin` (after libvirt has created or
/// reset the store, before QEMU is spawned) it checks the store named in the XML: healthy,
/// and the size and layout of the template in the XML and of the code image's firmware
/// descriptor; for an incoming migration or a restore (announced by `migrate begin` /
/// `restore begin`) the size only. A refused start exits with status 1 and one line on
/// stderr naming the file and the problem, which libvirt shows in its error. Every other
/// operation exits 0 silently. Nothing is ever written to the store or to stdout.
///
/// With --install, writes DIR/qemu.d/nvram (a script running this binary by its absolute
/// path) and says whether anything changed. libvirt 9.0 looks for hooks when the daemon
/// starts and on SIGHUP: restart or reload it after the first install.
///
/// Exit status: 0 the start may go on (or --install succeeded); 1 the start is refused;
/// 2 an error (no usable XML, bad arguments): libvirt stops the start too.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The domain's name (libvirt's first argument).
    #[arg(value_name = "OBJECT", required_unless_present = "install")]
    object: Option<String>,
    /// libvirt's operation: prepare, start, started, stopped, release, migrate, restore, …
    #[arg(value_name = "OPERATION", required_unless_present = "install")]
    operation: Option<String>,
    /// libvirt's sub-operation: begin, end or -.
    #[arg(value_name = "SUBOP", required_unless_present = "install")]
    sub_operation: Option<String>,
    /// libvirt's extra argument (usually -).
    #[arg(value_name = "EXTRA")]
    extra: Option<String>,
    /// Install the hook instead of running it.
    #[arg(long, conflicts_with_all = ["object", "operation", "sub_operation", "extra"])]
    install: bool,
    /// The hooks directory of --install (the system daemon's is /etc/libvirt/hooks).
    #[arg(long, value_name = "DIR", requires = "install", default_value = hook::DEFAULT_HOOKS_DIR)]
    hooks_dir: PathBuf,
    /// Check only domains whose name matches this glob (repeatable; default: every domain).
    /// With --install, written into the installed hook.
    #[arg(long = "domain", value_name = "GLOB")]
    domains: Vec<String>,
    /// Where `migrate begin` / `restore begin` note that an incoming start follows.
    /// With --install, written into the installed hook.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.install {
        return install(&args);
    }
    let (Some(object), Some(operation), Some(sub_operation)) =
        (&args.object, &args.operation, &args.sub_operation)
    else {
        bail!("OBJECT OPERATION SUBOP are required (libvirt passes them)");
    };
    let xml = read_xml(hook::Action::of(operation, sub_operation) != hook::Action::Ignore)?;
    let config = Config {
        domains: args.domains.clone(),
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(hook::DEFAULT_STATE_DIR)),
        ..Config::default()
    };
    match hook::run(&config, operation, sub_operation, &xml) {
        Ok(Outcome::Absent(path)) => {
            // Not an error: libvirt creates it from the template. Said on stderr, which
            // libvirt only logs (stdout would be taken as a new XML by `migrate begin`).
            message!(
                "nvram: {object}: {} does not exist yet; libvirt creates it from the template",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e @ HookError::Xml(_)) => Err(e.into()),
        Err(e) if e.is_refusal() => {
            let what = match operation.as_str() {
                "migrate" => "the incoming migration of",
                "restore" => "to restore",
                _ => "to start",
            };
            // The store of an incoming migration is re-created by preparing the destination
            // again; `--reset-nvram` would start the domain instead of receiving it.
            let recreate = if operation == "migrate" {
                "`nvram prepare --incoming` on this host re-creates it for the migration"
            } else {
                "`virsh start --reset-nvram` re-creates it from the template"
            };
            let advice = match &e {
                HookError::Damaged { .. } => format!("; `nvram check` tells more; {recreate}"),
                HookError::Store(p) | HookError::Descriptor { source: p, .. }
                    if matches!(**p, PrepareError::FormatMismatch { .. }) =>
                {
                    "; `nvram convert` rewrites it in another format".to_string()
                }
                _ => format!("; {recreate}"),
            };
            message!("nvram: refusing {what} domain {object}: {e}{advice}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e).with_context(|| format!("cannot check the store of domain {object}")),
    }
}

/// The domain XML from stdin, at most [`hook::MAX_XML_LEN`] bytes. For an operation that is
/// not checked it is read and dropped (libvirt writes all of it and must not see a broken
/// pipe). A terminal is refused at once rather than waited on.
fn read_xml(needed: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("standard input is a terminal; libvirt writes the domain XML to it");
    }
    if !needed {
        let _ = std::io::copy(
            &mut stdin.lock().take(hook::MAX_XML_LEN),
            &mut std::io::sink(),
        );
        return Ok(String::new());
    }
    let bytes = safefile::read_bounded(
        stdin.lock().by_ref(),
        Path::new("standard input"),
        hook::MAX_XML_LEN,
        "a domain XML",
    )?;
    String::from_utf8(bytes).context("the domain XML on standard input is not UTF-8")
}

fn install(args: &Args) -> Result<ExitCode> {
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot tell where this nvram binary is")?;
    let mut options = Vec::new();
    for glob in &args.domains {
        options.push("--domain".to_string());
        options.push(glob.clone());
    }
    if let Some(dir) = &args.state_dir {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot make {} absolute", dir.display()))?;
        options.push("--state-dir".to_string());
        options.push(dir.to_string_lossy().into_owned());
    }
    let script = hook::script(&binary, &options);
    let path = hook::hook_path(&args.hooks_dir);
    let done = hook::install(&args.hooks_dir, &script)
        .with_context(|| format!("cannot install {}", path.display()))?;
    let note = match done {
        hook::Installed::Unchanged => String::new(),
        _ => "; libvirtd (or virtqemud) looks for hooks when it starts and on SIGHUP: \
              restart or reload it unless it already had a qemu hook"
            .to_string(),
    };
    super::out::report(&format!(
        "{done} {} (runs {}){note}\n",
        path.display(),
        binary.display()
    ));
    Ok(ExitCode::SUCCESS)
}
