//! `nvram flash`: drive the CFI flash device model without a VMM.

use anyhow::{anyhow, bail, Context, Result};
use pflash::trace::{ReplayMismatch, ReplayStats, TraceError};
use pflash::{Durability, FileStorage, Geometry, Pflash, PflashEvents, StorageError, StorageStats};
use std::fmt::Write as _;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Drive the CFI flash device model (the VMM side of a varstore) from files.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: FlashCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FlashCommand {
    Replay(ReplayArgs),
}

/// Replay an MMIO trace on a flash backed by an image, updating the image in place.
///
/// The image is the flash's backing file, locked while the replay runs and written in
/// operation order as a VMM would. Every `R` line of the trace is checked.
///
/// Exit status: 0 every read matched; 1 a read did not (the line is named); 2 an error.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The flash image (varstore), updated in place.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The trace: `X`, `W <offset> <size> <value>`, `R <offset> <size> <value>` lines (.xz
    /// compressed or plain).
    #[arg(long, value_name = "TRACE")]
    trace: PathBuf,
    /// Flash geometry: q35 (x86 vars flash of the image's size) or virt (arm 64 MiB bank).
    #[arg(long, value_enum, default_value_t = Preset::Q35)]
    preset: Preset,
    /// When to fdatasync the image.
    #[arg(long, value_enum, default_value_t = DurabilityArg::FlushPoints)]
    durability: DurabilityArg,
    /// Print what reached the image: operations, flushes, write syscalls, fsyncs, bytes.
    #[arg(long)]
    stats: bool,
    /// Print the result (with the statistics) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Preset {
    Q35,
    Virt,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    /// Never fdatasync.
    None,
    /// fdatasync at the end of every command sequence.
    FlushPoints,
    /// Write through and fdatasync every program and erase.
    EveryOp,
}

impl From<DurabilityArg> for Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::None => Durability::None,
            DurabilityArg::FlushPoints => Durability::FlushPoints,
            DurabilityArg::EveryOp => Durability::EveryOperation,
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        FlashCommand::Replay(args) => replay(args),
    }
}

/// Keeps the first storage error the device reports (it only sets a status bit).
#[derive(Default)]
struct Events {
    storage_errors: usize,
    first_storage_error: Option<String>,
}

impl PflashEvents for Events {
    fn storage_error(&mut self, error: &StorageError) {
        self.storage_errors += 1;
        if self.first_storage_error.is_none() {
            self.first_storage_error = Some(error.to_string());
        }
    }
}

fn image_len(path: &Path) -> Result<u64> {
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .with_context(|| format!("{}: cannot open", path.display()))
}

fn trace_error(path: &Path, error: TraceError) -> anyhow::Error {
    match error {
        // Already names the file.
        TraceError::Io { .. } => anyhow!(error),
        TraceError::Syntax { .. } => anyhow!("{}: {error}", path.display()),
    }
}

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let geometry = match args.preset {
        Preset::Q35 => Geometry::q35(image_len(&args.image)?)
            .with_context(|| format!("{}: cannot be a q35 vars flash", args.image.display()))?,
        Preset::Virt => Geometry::arm_virt(),
    };
    let len = usize::try_from(geometry.size()).context("the flash does not fit in memory")?;
    let trace =
        pflash::trace::read_trace_file(&args.trace).map_err(|e| trace_error(&args.trace, e))?;

    let storage = FileStorage::open(&args.image, len, geometry.read_only, args.durability.into())?;
    let content = storage.read_content()?;
    let mut dev = Pflash::new(geometry, content, storage, Events::default())
        .with_context(|| format!("{}: cannot make a flash of it", args.image.display()))?;

    let started = Instant::now();
    let result = pflash::trace::replay(&mut dev, &trace);
    let (_, mut storage, events) = dev.into_parts();
    // Changes after the trace's last flush point (a trace cut in the middle of a sequence).
    storage.flush()?;
    if storage.durability() != Durability::None {
        storage.sync()?;
    }
    let elapsed = started.elapsed();
    if let Some(error) = &events.first_storage_error {
        bail!(
            "{error} ({} storage errors during the replay)",
            events.storage_errors
        );
    }

    let stats = storage.stats();
    let replayed = result.as_ref().ok().copied();
    let mismatch = result.as_ref().err().copied();
    let output = if args.json {
        json_report(&args, replayed, mismatch, &stats, elapsed)? + "\n"
    } else {
        text_report(&args, replayed, &stats, elapsed)
    };
    super::emit(None, false, output.as_bytes())?;
    match mismatch {
        None => Ok(ExitCode::SUCCESS),
        Some(m) => {
            eprintln!(
                "nvram: {}:{}: read at offset {:#x}: expected {:#x}, got {:#x}",
                args.trace.display(),
                m.line,
                m.offset,
                m.expected,
                m.got
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn text_report(
    args: &ReplayArgs,
    replayed: Option<ReplayStats>,
    stats: &StorageStats,
    elapsed: Duration,
) -> String {
    let mut text = String::new();
    if let Some(r) = replayed {
        let _ = writeln!(
            text,
            "{}: replayed {}: {} writes, {} reads (all matched), {} resets",
            args.image.display(),
            args.trace.display(),
            r.writes,
            r.reads,
            r.resets
        );
    }
    if args.stats {
        let _ = writeln!(text, "  operations:     {}", stats.operations);
        let _ = writeln!(text, "  flush points:   {}", stats.flush_points);
        let _ = writeln!(text, "  flushes:        {}", stats.flushes);
        let _ = writeln!(text, "  write syscalls: {}", stats.write_syscalls);
        let _ = writeln!(text, "  fsyncs:         {}", stats.fsyncs);
        let _ = writeln!(text, "  bytes written:  {}", stats.bytes_written);
        let _ = writeln!(
            text,
            "  time:           {:.3} ms",
            elapsed.as_secs_f64() * 1e3
        );
    }
    text
}

fn json_report(
    args: &ReplayArgs,
    replayed: Option<ReplayStats>,
    mismatch: Option<ReplayMismatch>,
    stats: &StorageStats,
    elapsed: Duration,
) -> Result<String> {
    let doc = serde_json::json!({
        "image": args.image,
        "trace": args.trace,
        "matched": mismatch.is_none(),
        "replayed": replayed.map(|r| serde_json::json!({
            "writes": r.writes,
            "reads": r.reads,
            "resets": r.resets,
        })),
        "mismatch": mismatch.map(|m| serde_json::json!({
            "line": m.line,
            "offset": m.offset,
            "expected": m.expected,
            "got": m.got,
        })),
        "storage": {
            "durability": durability_name(args.durability),
            "operations": stats.operations,
            "flush_points": stats.flush_points,
            "flushes": stats.flushes,
            "write_syscalls": stats.write_syscalls,
            "fsyncs": stats.fsyncs,
            "bytes_written": stats.bytes_written,
        },
        "seconds": elapsed.as_secs_f64(),
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

fn durability_name(arg: DurabilityArg) -> &'static str {
    match arg {
        DurabilityArg::None => "none",
        DurabilityArg::FlushPoints => "flush-points",
        DurabilityArg::EveryOp => "every-op",
    }
}
