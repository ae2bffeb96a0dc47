//! `pflash-vmm`: builds guest images and runs them in a small KVM VMM with the pflash device.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pflash::{Compat, Durability};
use pflash_vmm::exits::Exits;
use pflash_vmm::flash::{ModeEvents, VarsFlash, Writer, WriterStats};
use pflash_vmm::guest::{self, workload};
use pflash_vmm::latency::LatencySummary;
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
        /// The QEMU release whose flash behaviour to reproduce.
        #[arg(long, default_value = "qemu-10.0")]
        compat: Compat,
        /// Who writes the varstore file: a writer thread (no system call in the MMIO
        /// handler) or the vCPU thread at each flush point.
        #[arg(long, value_enum, default_value_t = WriterArg::Background)]
        writer: WriterArg,
        /// When the varstore file is synced to disk.
        #[arg(long, value_enum, default_value_t = DurabilityArg::FlushPoints)]
        durability: DurabilityArg,
        /// Where the guest's COM1 output goes (default: standard error).
        #[arg(long)]
        serial: Option<PathBuf>,
        /// Print the result and the exits by kind as JSON on standard output.
        #[arg(long)]
        json: bool,
        /// Give up (exit status 2) if the guest has not finished after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Print `flash accesses: K` on standard error after every N flash accesses, for a
        /// test or a script that acts at a point of the guest's run (such as a SIGKILL).
        #[arg(long, value_name = "N")]
        progress_every: Option<u64>,
    },
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
    /// The vars flash's write call per MMIO write exit.
    mmio_write_latency: LatencySummary,
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
            compat,
            durability,
            writer,
            serial,
            json,
            timeout,
            progress_every,
        } => {
            let image = std::fs::read(&code)
                .map_err(|e| format!("{}: cannot read the code image: {e}", code.display()))?;
            let flash = VarsFlash::open(
                &vars,
                compat,
                durability.into(),
                match writer {
                    WriterArg::Background => Writer::Background,
                    WriterArg::Inline => Writer::Inline,
                },
            )
            .map_err(|e| format!("vars flash: {e}"))?;
            let sink: Box<dyn Write> = match &serial {
                Some(path) => Box::new(
                    File::create(path)
                        .map_err(|e| format!("{}: cannot create: {e}", path.display()))?,
                ),
                None => Box::new(std::io::stderr()),
            };
            let mut vm = Vm::new(&image, flash, sink).map_err(|e| e.to_string())?;
            let outcome = vm
                .run(
                    Some(std::time::Duration::from_secs(timeout)),
                    &mut |exits| {
                        report_progress(progress_every, exits);
                        false
                    },
                )
                .map_err(|e| e.to_string())?;
            vm.flash_mut()
                .flush()
                .map_err(|e| format!("vars flash: {e}"))?;
            let (outcome, exit_value, status) = match outcome {
                Outcome::DebugExit(value) => ("debug-exit", Some(value), ((value << 1) | 1) as u8),
                Outcome::Halted | Outcome::Stopped => ("halted", None, STATUS_NO_RESULT),
            };
            if json {
                let report = Report {
                    outcome,
                    exit_value,
                    exit_status: status,
                    serial: String::from_utf8_lossy(vm.serial()).into_owned(),
                    exits: vm.exits(),
                    device: vm.flash().events(),
                    storage: vm.flash().storage_stats(),
                    mmio_write_latency: vm.mmio_write_latency(),
                };
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                println!("{text}");
            }
            Ok(status)
        }
    }
}
