//! `pflash-vmm`: builds guest images and runs them in a small KVM VMM with the pflash device.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pflash::{Compat, Durability};
use pflash_migration::transport::{Address, Listener};
use pflash_vmm::exits::Exits;
use pflash_vmm::flash::{ModeEvents, VarsFlash, Writer, WriterStats};
use pflash_vmm::guest::{self, workload};
use pflash_vmm::latency::LatencySummary;
use pflash_vmm::migrate::{self, IncomingReport, Plan, SourceEnd, SourceReport};
use pflash_vmm::vm::{Outcome, Vm};

/// A small KVM VMM that runs the pflash device, and the guest programs it runs.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a code-flash image (QEMU `-drive if=pflash,unit=0`) carrying a workload.
    Guest {
        /// `boot` (the recorded OVMF boot's flash operations) or `random:N:SEED`.
        #[arg(long)]
        workload: workload::Workload,
        /// For `random:N:SEED`: the varstore the guest will start from (its size and content
        /// decide the expected values); default: the boot trace's before-image.
        #[arg(long)]
        vars: Option<PathBuf>,
        /// The image to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Writes the varstore image the boot workload starts from (or, with `--after`, the one
    /// QEMU left after it).
    Vars {
        /// The after-image instead of the before-image.
        #[arg(long)]
        after: bool,
        /// The image to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Runs a code-flash image with a varstore under KVM; exits like QEMU with
    /// `isa-debug-exit`: `(value << 1) | 1`, or 2 if the guest did not report.
    Run {
        /// The code-flash image (from `pflash-vmm guest`).
        #[arg(long)]
        code: PathBuf,
        /// The varstore file, written in place as the guest programs and erases it.
        #[arg(long)]
        vars: PathBuf,
        /// Print `flash accesses: K` on standard error after every N flash accesses, for a
        /// test or a script that acts at a point of the guest's run (such as a SIGKILL).
        #[arg(long, value_name = "N")]
        progress_every: Option<u64>,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Receives a migrating VM on `--listen`, commits its varstore to `--vars` once the
    /// whole state arrived and the source released its own, and runs it to the end (exit
    /// status as for `run`). Its varstore must have the source's size; its content is
    /// replaced by the source's.
    Incoming {
        /// `unix:PATH` or `tcp:HOST:PORT` (port 0: any free port; the address is printed
        /// on standard error as `listening on ADDR`).
        #[arg(long)]
        listen: Address,
        /// The varstore file this VM will use, written only at the commit point.
        #[arg(long)]
        vars: PathBuf,
        #[command(flatten)]
        vm: VmArgs,
    },
}

/// How a VM runs, whether started here (`run`) or received (`incoming`, where the varstore
/// options apply from the commit on).
#[derive(clap::Args)]
struct VmArgs {
    /// The QEMU release whose flash behaviour to reproduce (an incoming VM's must match its
    /// source's).
    #[arg(long, default_value = "qemu-10.0")]
    compat: Compat,
    /// Who writes the varstore file: a writer thread (no system call in the MMIO handler)
    /// or the vCPU thread at each flush point.
    #[arg(long, value_enum, default_value_t = WriterArg::Background)]
    writer: WriterArg,
    /// When the varstore file is synced to disk.
    #[arg(long, value_enum, default_value_t = DurabilityArg::FlushPoints)]
    durability: DurabilityArg,
    /// Where the guest's COM1 output goes (default: standard error).
    #[arg(long)]
    serial: Option<PathBuf>,
    /// Print the result, the exits by kind (and for `incoming` the transfer) as JSON on
    /// standard output.
    #[arg(long)]
    json: bool,
    /// Give up if the guest has not finished (exit status 2), or for `incoming` no source
    /// connected, after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    migrate: MigrateArgs,
}

/// Live migration of the running guest to another `pflash-vmm incoming`.
#[derive(clap::Args)]
struct MigrateArgs {
    /// Start migrating at the guest's Nth flash access (counted from its first, across
    /// earlier migrations).
    #[arg(long, requires = "to")]
    migrate_at: Option<u64>,
    /// The destination: `unix:PATH` or `tcp:HOST:PORT`.
    #[arg(long, requires = "migrate_at")]
    to: Option<Address>,
    /// Pre-copy rounds of the flash content before the stop-and-copy round (the first
    /// sends all of it; the next ones what the guest changed meanwhile).
    #[arg(long, default_value_t = 3)]
    precopy_rounds: u32,
    /// Flash accesses the guest makes between two rounds.
    #[arg(long, default_value_t = 40)]
    precopy_accesses: u64,
}

impl MigrateArgs {
    fn plan(&self) -> Option<Plan> {
        Some(Plan {
            at: self.migrate_at?,
            to: self.to.clone()?,
            precopy_rounds: self.precopy_rounds,
            accesses_per_round: self.precopy_accesses,
            connect_timeout: std::time::Duration::from_secs(30),
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum WriterArg {
    /// A writer thread.
    Background,
    /// The vCPU thread.
    Inline,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Never fdatasync.
    None,
    /// fdatasync when the device returns to read-array mode and after erases.
    FlushPoints,
    /// fdatasync after every program and erase.
    EveryOperation,
}

impl From<DurabilityArg> for Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::None => Durability::None,
            DurabilityArg::FlushPoints => Durability::FlushPoints,
            DurabilityArg::EveryOperation => Durability::EveryOperation,
        }
    }
}

/// What `run --json` prints.
#[derive(serde::Serialize)]
struct Report {
    /// `debug-exit` or `halted`.
    outcome: &'static str,
    /// The value written to `isa-debug-exit`.
    exit_value: Option<u32>,
    /// The process exit status.
    exit_status: u8,
    serial: String,
    exits: Exits,
    device: ModeEvents,
    storage: WriterStats,
    /// This VM's outgoing migration, if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    migration: Option<SourceReport>,
    /// How this VM arrived (`incoming`).
    #[serde(skip_serializing_if = "Option::is_none")]
    incoming: Option<IncomingReport>,
    /// The vars flash's write call per MMIO write exit.
    mmio_write_latency: LatencySummary,
}

/// What `run --json` prints when the guest left for another VMM.
#[derive(serde::Serialize)]
struct MigratedReport {
    outcome: &'static str,
    exit_status: u8,
    migration: SourceReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    incoming: Option<IncomingReport>,
}

fn serial_sink(serial: Option<&Path>) -> Result<Box<dyn Write>, String> {
    Ok(match serial {
        Some(path) => Box::new(
            File::create(path).map_err(|e| format!("{}: cannot create: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    })
}

fn writer(arg: WriterArg) -> Writer {
    match arg {
        WriterArg::Background => Writer::Background,
        WriterArg::Inline => Writer::Inline,
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// Runs the guest to its end here or to its migration (`plan`), reports, and returns the
/// exit status.
fn drive(
    vm: Vm,
    args: &VmArgs,
    progress_every: Option<u64>,
    incoming: Option<IncomingReport>,
) -> Result<u8, String> {
    let json = args.json;
    let timeout = Some(std::time::Duration::from_secs(args.timeout));
    let (mut vm, outcome, migration) = match args.migrate.plan() {
        None => {
            let mut vm = vm;
            let outcome = vm
                .run(timeout, &mut |exits| {
                    report_progress(progress_every, exits);
                    false
                })
                .map_err(|e| e.to_string())?;
            (vm, outcome, None)
        }
        Some(plan) => match migrate::run_source(vm, timeout, &plan).map_err(|e| e.to_string())? {
            SourceEnd::Migrated(migration) => {
                if json {
                    print_json(&MigratedReport {
                        outcome: "migrated",
                        exit_status: 0,
                        migration,
                        incoming,
                    })?;
                }
                return Ok(0);
            }
            SourceEnd::Finished {
                vm,
                outcome,
                migration,
            } => (*vm, outcome, Some(migration)),
        },
    };
    vm.flash_mut()
        .flush()
        .map_err(|e| format!("vars flash: {e}"))?;
    let (outcome, exit_value, status) = match outcome {
        Outcome::DebugExit(value) => ("debug-exit", Some(value), ((value << 1) | 1) as u8),
        Outcome::Halted | Outcome::Stopped => ("halted", None, STATUS_NO_RESULT),
    };
    if json {
        print_json(&Report {
            outcome,
            exit_value,
            exit_status: status,
            serial: String::from_utf8_lossy(vm.serial()).into_owned(),
            exits: vm.exits(),
            device: vm.flash().events(),
            storage: vm.flash().storage_stats(),
            migration,
            incoming,
            mmio_write_latency: vm.mmio_write_latency(),
        })?;
    }
    Ok(status)
}

/// Exit status for a run whose guest did not report through `isa-debug-exit` (even, so
/// never one QEMU's `(value << 1) | 1` gives) and for errors.
const STATUS_NO_RESULT: u8 = 2;

fn main() -> ExitCode {
    match run_command(Cli::parse().command) {
        Ok(status) => ExitCode::from(status),
        Err(message) => {
            eprintln!("pflash-vmm: {message}");
            ExitCode::from(STATUS_NO_RESULT)
        }
    }
}

/// The `--progress-every` line, written unbuffered so that a reader sees it at once.
fn report_progress(every: Option<u64>, exits: &Exits) {
    let accesses = exits.flash_accesses();
    if every.is_some_and(|n| n > 0 && accesses % n == 0) {
        eprintln!("flash accesses: {accesses}");
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

fn run_command(command: Command) -> Result<u8, String> {
    match command {
        Command::Guest {
            workload,
            vars,
            output,
        } => {
            if workload == workload::Workload::Boot && vars.is_some() {
                return Err(
                    "--vars is for random workloads: boot starts from the recorded before-image"
                        .into(),
                );
            }
            let initial = vars
                .map(|path| {
                    std::fs::read(&path)
                        .map_err(|e| format!("{}: cannot read: {e}", path.display()))
                })
                .transpose()?;
            let program = workload::program(workload, initial.as_deref())
                .map_err(|e| format!("workload {workload}: {e}"))?;
            let image =
                guest::build_image(&program).map_err(|e| format!("workload {workload}: {e}"))?;
            write_file(&output, &image)?;
            let checked = program
                .ops
                .iter()
                .filter(|op| {
                    matches!(
                        op,
                        guest::Op::Read {
                            expect: Some(_),
                            ..
                        }
                    )
                })
                .count();
            eprintln!(
                "{}: workload {workload}: {} operations ({checked} checked reads), {} bytes",
                output.display(),
                program.ops.len(),
                image.len()
            );
            Ok(0)
        }
        Command::Vars { after, output } => {
            let image = if after {
                workload::boot_after_image()
            } else {
                workload::boot_before_image()
            }
            .map_err(|e| e.to_string())?;
            write_file(&output, &image)?;
            Ok(0)
        }
        Command::Run {
            code,
            vars,
            progress_every,
            vm,
        } => {
            let image = std::fs::read(&code)
                .map_err(|e| format!("{}: cannot read the code image: {e}", code.display()))?;
            let flash = VarsFlash::open(&vars, vm.compat, vm.durability.into(), writer(vm.writer))
                .map_err(|e| format!("vars flash: {e}"))?;
            let machine = Vm::new(&image, flash, serial_sink(vm.serial.as_deref())?)
                .map_err(|e| e.to_string())?;
            drive(machine, &vm, progress_every, None)
        }
        Command::Incoming { listen, vars, vm } => {
            let (machine, report) = incoming(&listen, &vars, &vm)?;
            drive(machine, &vm, None, Some(report))
        }
    }
}

/// The destination's side up to the resume: see [`pflash_vmm::migrate`].
fn incoming(listen: &Address, vars: &Path, args: &VmArgs) -> Result<(Vm, IncomingReport), String> {
    let (compat, timeout) = (args.compat, args.timeout);
    let (durability, writer): (Durability, Writer) = (args.durability.into(), writer(args.writer));
    // Only the size: the file may be the source's own (shared storage), locked and in use
    // until the source releases it.
    let len = std::fs::metadata(vars)
        .map_err(|e| format!("{}: cannot stat the varstore: {e}", vars.display()))?
        .len();
    let geometry = pflash::Geometry::q35(len)
        .map_err(|e| format!("{}: {e}", vars.display()))?
        .with_compat(compat);
    let listener = Listener::bind(listen).map_err(|e| e.to_string())?;
    let address = listener.local_address().map_err(|e| e.to_string())?;
    eprintln!("pflash-vmm: listening on {address}");
    let conn = listener
        .accept(std::time::Duration::from_secs(timeout))
        .map_err(|e| e.to_string())?;
    // A source that stops sending fails the migration instead of hanging it.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(timeout)))
        .map_err(|e| format!("{address}: {e}"))?;
    let received = pflash_migration::incoming(&conn, &conn, &geometry, vars)
        .map_err(|e| format!("migration failed: {e}"))?;
    let stats = received.stats();
    let mut report = IncomingReport {
        rounds: stats.rounds,
        flash_chunks: stats.chunks,
        flash_wire_bytes: stats.wire_bytes,
        ..Default::default()
    };
    let flash = VarsFlash::from_incoming(received).map_err(|e| format!("vars flash: {e}"))?;
    let sink = serial_sink(args.serial.as_deref())?;
    let vm = migrate::receive_vm(
        &conn,
        &mut report,
        |snapshot| Ok(Vm::from_snapshot(snapshot, flash, sink)?),
        |vm| {
            let stats = vm.flash_mut().commit(vars, durability, writer)?;
            Ok(stats.elapsed.as_secs_f64() * 1e3)
        },
    )
    .map_err(|e| format!("migration failed: {e}"))?;
    Ok((vm, report))
}
