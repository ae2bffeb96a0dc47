//! `nvram flash`: drive the CFI flash device model without a VMM: replay a trace, and
//! migrate the device between two processes in the middle of one.

use super::out::message;
use anyhow::{anyhow, bail, Context, Result};
use pflash::migration::{self, Deferred, DirtyTracking};
use pflash::{
    BackgroundOptions, BackgroundStorage, Compat, Durability, FileStorage, Geometry, Pflash,
    PflashEvents, Storage, StorageError, StorageStats,
};
use pflash_migration::transport::{Address, Connection, Listener};
use pflash_migration::{IncomingOptions, MigrationError, Outgoing, TransferStats};
use pflash_trace::{ReplayMismatch, ReplayStats, TraceError};
use std::fmt::Write as _;
use std::io::Read;
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
    Incoming(IncomingArgs),
}

/// Replay an MMIO trace on a flash backed by an image, updating the image in place.
///
/// The image is the flash's backing file, locked while the replay runs and written in
/// operation order as a VMM would. Every `R` line of the trace is checked.
///
/// With `--migrate-at N --to ADDR` the replay stops after line N (lines count from 1,
/// comments included) and the device (registers and content) is live-migrated to an
/// `nvram flash incoming` listening on ADDR; after a successful migration this process
/// stops, after a failed one it reports the error and leaves the image as it was at line N.
///
/// Exit status: 0 every read matched (and the migration succeeded); 1 a read did not (the
/// line is named); 2 an error (a failed migration included).
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The flash image (varstore), updated in place.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The trace: `X`, `W <offset> <size> <value>`, `R <offset> <size> <value>` lines (.xz
    /// compressed or plain).
    #[arg(long, value_name = "TRACE")]
    trace: PathBuf,
    /// Flash geometry: q35 (x86 vars flash of the image's size), virt (arm 64 MiB bank),
    /// riscv-virt (32 MiB bank) or loongarch-virt (16 MiB vars flash).
    #[arg(long, value_enum, default_value_t = Preset::Q35)]
    preset: Preset,
    /// Behave like this QEMU release's cfi.pflash01 (they differ in buffered writes).
    #[arg(long, value_enum, default_value_t = CompatArg::Qemu10_0)]
    compat: CompatArg,
    /// When to fdatasync the image.
    #[arg(long, value_enum, default_value_t = DurabilityArg::FlushPoints)]
    durability: DurabilityArg,
    /// Who writes the image: a background thread (the MMIO handler only queues the changed
    /// bytes) or the handler itself.
    #[arg(long, value_enum, default_value_t = WriterArg::Background)]
    writer: WriterArg,
    /// Print what reached the image: operations, flushes, write syscalls, fsyncs, bytes.
    #[arg(long)]
    stats: bool,
    /// Print the result (with the statistics) as JSON.
    #[arg(long)]
    json: bool,
    /// Migrate after this trace line (1-based, comments counted).
    #[arg(long, value_name = "N", requires = "to")]
    migrate_at: Option<usize>,
    /// Where to migrate: `tcp:HOST:PORT` or `unix:PATH`.
    #[arg(long, value_name = "ADDR", requires = "migrate_at")]
    to: Option<Address>,
    /// Pre-copy rounds before the final round.
    #[arg(long, value_name = "K", default_value_t = 1)]
    precopy_rounds: u32,
    /// Keep retrying to connect (the destination may still be starting) this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    connect_timeout: u64,
}

/// Receive a flash live-migrated by `nvram flash replay --migrate-at`, write it to the image
/// at the commit point, and optionally continue the trace.
///
/// The incoming geometry is checked against the local one (the preset, and for q35 the
/// image's size) before anything else, then the QEMU compatibility the source ran against
/// `--compat`: a mismatch is refused, naming both, unless `--accept-compat-mismatch`. The
/// image is not written until the migration is
/// complete and the source has closed the connection (it has stopped and released its
/// file); then it is replaced atomically (a block device is written in place and synced).
/// On any failure the image is left untouched.
///
/// Prints `listening on ADDR` (with the real port for `tcp:HOST:0`) once it listens.
///
/// Exit status: 0 migrated (and every read of the continued trace matched); 1 a read did
/// not; 2 an error.
#[derive(Debug, clap::Args)]
pub struct IncomingArgs {
    /// The flash image (varstore): its size must match the source's; replaced at commit.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// Where to listen: `tcp:HOST:PORT` or `unix:PATH`.
    #[arg(long, value_name = "ADDR")]
    listen: Address,
    /// Flash geometry: q35 (x86 vars flash of the image's size), virt (arm 64 MiB bank),
    /// riscv-virt (32 MiB bank) or loongarch-virt (16 MiB vars flash).
    #[arg(long, value_enum, default_value_t = Preset::Q35)]
    preset: Preset,
    /// Behave like this QEMU release's cfi.pflash01; the source must have run the same.
    #[arg(long, value_enum, default_value_t = CompatArg::Qemu10_0)]
    compat: CompatArg,
    /// Accept a source that ran another --compat: the device goes on with this side's.
    #[arg(long)]
    accept_compat_mismatch: bool,
    /// After the commit, replay this trace from the line after `--from-line`.
    #[arg(long, value_name = "TRACE", requires = "from_line")]
    then_replay: Option<PathBuf>,
    /// The last trace line the source executed.
    #[arg(long, value_name = "N", requires = "then_replay")]
    from_line: Option<usize>,
    /// When to fdatasync the image after the commit (the commit itself is always synced).
    #[arg(long, value_enum, default_value_t = DurabilityArg::FlushPoints)]
    durability: DurabilityArg,
    /// Who writes the image after the commit: a background thread or the MMIO handler.
    #[arg(long, value_enum, default_value_t = WriterArg::Background)]
    writer: WriterArg,
    /// Give up if no source connects, or the stream stalls, for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Preset {
    Q35,
    /// arm `virt`.
    #[value(alias = "arm-virt")]
    Virt,
    RiscvVirt,
    LoongarchVirt,
}

/// `--compat`: the QEMU release the device behaves like (`pflash::Compat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CompatArg {
    /// Debian 12's QEMU 7.2.
    #[value(name = "qemu-7.2")]
    Qemu7_2,
    /// QEMU 10.0.
    #[value(name = "qemu-10.0")]
    Qemu10_0,
}

impl From<CompatArg> for Compat {
    fn from(arg: CompatArg) -> Self {
        match arg {
            CompatArg::Qemu7_2 => Compat::Qemu7_2,
            CompatArg::Qemu10_0 => Compat::Qemu10_0,
        }
    }
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

/// `--writer`: where the image is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WriterArg {
    /// A writer thread (`pflash::BackgroundStorage`): no system call in the MMIO handler.
    Background,
    /// The MMIO handler itself (`pflash::FileStorage`), as QEMU does.
    Inline,
}

/// The image's storage, either writer.
enum ImageStorage {
    Inline(FileStorage),
    Background(BackgroundStorage),
}

impl ImageStorage {
    fn new(file: FileStorage, writer: WriterArg) -> Result<Self, StorageError> {
        Ok(match writer {
            WriterArg::Inline => ImageStorage::Inline(file),
            WriterArg::Background => ImageStorage::Background(BackgroundStorage::spawn(
                file,
                BackgroundOptions::default(),
            )?),
        })
    }

    /// Writes what is queued or buffered and syncs it as the durability asks.
    fn persist(&mut self) -> Result<()> {
        match self {
            ImageStorage::Inline(file) => {
                file.flush()?;
                if file.durability() != Durability::None {
                    file.sync()?;
                }
            }
            ImageStorage::Background(background) => background.flush()?,
        }
        Ok(())
    }

    /// Persists, stops a writer thread, and returns the counters.
    fn finish(mut self) -> Result<StorageStats> {
        self.persist()?;
        Ok(match self {
            ImageStorage::Inline(file) => file.stats(),
            ImageStorage::Background(background) => background.finish()?.stats(),
        })
    }
}

impl Storage for ImageStorage {
    fn record_change(
        &mut self,
        content: &[u8],
        range: std::ops::Range<usize>,
    ) -> Result<(), StorageError> {
        match self {
            ImageStorage::Inline(s) => s.record_change(content, range),
            ImageStorage::Background(s) => s.record_change(content, range),
        }
    }

    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError> {
        match self {
            ImageStorage::Inline(s) => s.flush_point(content),
            ImageStorage::Background(s) => s.flush_point(content),
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        FlashCommand::Replay(args) => replay(args),
        FlashCommand::Incoming(args) => incoming(args),
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

/// The size of a flash image: a regular file or a block device; anything else (a FIFO…) is
/// refused at once, without waiting for a writer.
fn image_len(path: &Path) -> Result<u64> {
    Ok(safefile::Input::open(path, safefile::Accept::RegularFileOrBlockDevice)?.size()?)
}

fn trace_error(path: &Path, error: TraceError) -> anyhow::Error {
    match error {
        // Already names the file.
        TraceError::Io { .. } | TraceError::Input(_) | TraceError::TooLarge { .. } => {
            anyhow!(error)
        }
        TraceError::Syntax { .. } => anyhow!("{}: {error}", path.display()),
    }
}

/// The geometry of `preset` for `image` (q35 takes the image's size), behaving like
/// `compat`.
fn local_geometry(preset: Preset, image: &Path, compat: CompatArg) -> Result<Geometry> {
    let geometry = match preset {
        Preset::Q35 => Geometry::q35(image_len(image)?)
            .with_context(|| format!("{}: cannot be a q35 vars flash", image.display()))?,
        Preset::Virt => Geometry::arm_virt(),
        Preset::RiscvVirt => Geometry::riscv_virt(),
        Preset::LoongarchVirt => Geometry::loongarch_virt(),
    };
    Ok(geometry.with_compat(compat.into()))
}

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    // Refuses a FIFO or a device as the image before anything opens it for writing.
    image_len(&args.image)?;
    let geometry = local_geometry(args.preset, &args.image, args.compat)?;
    let len = usize::try_from(geometry.size()).context("the flash does not fit in memory")?;
    let trace =
        pflash_trace::read_trace_file(&args.trace).map_err(|e| trace_error(&args.trace, e))?;

    let file = FileStorage::open(&args.image, len, geometry.read_only, args.durability.into())?;
    let content = file.read_content()?;
    let storage = ImageStorage::new(file, args.writer)?;
    // Dirty tracking costs a few bit operations per program or erase; always on, so that
    // the replay measured is the one that migrates.
    let storage = DirtyTracking::new(storage, &geometry);
    let mut dev = Pflash::new(geometry, content, storage, Events::default())
        .with_context(|| format!("{}: cannot make a flash of it", args.image.display()))?;

    // Lines 1..=N are `trace[..N]`: the parser keeps one entry per line.
    let upto = args.migrate_at.map_or(trace.len(), |n| n.min(trace.len()));
    let started = Instant::now();
    let result = pflash_trace::replay(&mut dev, &trace[..upto]);
    let elapsed = started.elapsed();
    let migrated = match (&args.to, args.migrate_at, &result) {
        (Some(to), Some(at), Ok(_)) => {
            // The image must be at line N while the migration runs, whatever happens to it.
            dev.storage_mut().inner_mut().persist()?;
            let connect_timeout = Duration::from_secs(args.connect_timeout);
            match migrate_out(&mut dev, to, args.precopy_rounds, connect_timeout) {
                Ok((stats, conn)) => Some((at, to.clone(), stats, conn)),
                Err(e) => {
                    drop(dev);
                    return Err(e.context(format!(
                        "migration to {to} failed; this process keeps the device, its image \
                         {} is as after line {at}",
                        args.image.display()
                    )));
                }
            }
        }
        _ => None,
    };
    let (_, storage, events) = dev.into_parts();
    // Changes after the trace's last flush point (a trace cut in the middle of a sequence);
    // releases the image, so that closing the connection then lets the destination commit.
    let stats = storage.into_inner().finish()?;
    if let Some(error) = &events.first_storage_error {
        bail!(
            "{error} ({} storage errors during the replay)",
            events.storage_errors
        );
    }

    let migrated = migrated.map(|(at, to, stats, conn)| {
        drop(conn);
        (at, to, stats)
    });
    let replayed = result.as_ref().ok().copied();
    let mismatch = result.as_ref().err().copied();
    let output = if args.json {
        json_report(
            &args,
            replayed,
            mismatch,
            &stats,
            elapsed,
            migrated.as_ref(),
        )? + "\n"
    } else {
        let mut text = text_report(&args, replayed, &stats, elapsed);
        if let Some((at, to, m)) = &migrated {
            let _ = writeln!(
                text,
                "migrated after line {at} to {to}: {} rounds, {} bytes, final round {} bytes \
                 ({} chunks) in {:.3} ms",
                m.rounds,
                m.wire_bytes,
                m.final_round.wire_bytes,
                m.final_round.chunks,
                m.final_round.elapsed.as_secs_f64() * 1e3
            );
        }
        text
    };
    // The image was written: failing to print the report does not change the status.
    super::out::report(&output);
    match mismatch {
        None => Ok(ExitCode::SUCCESS),
        Some(m) => {
            message!(
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

/// The source side: pre-copy rounds and the final round over a fresh connection.
fn migrate_out(
    dev: &mut Pflash<Vec<u8>, DirtyTracking<ImageStorage>, Events>,
    to: &Address,
    precopy_rounds: u32,
    connect_timeout: Duration,
) -> Result<(TransferStats, Connection)> {
    let conn = to.connect(connect_timeout)?;
    let mut out = Outgoing::start(dev, &conn, &conn)?;
    for _ in 0..precopy_rounds {
        out.precopy_round(dev)?;
    }
    let stats = out.complete(dev)?;
    // The connection stays open until this process has released its image: closing it
    // tells the destination that it may commit.
    Ok((stats, conn))
}

fn incoming(args: IncomingArgs) -> Result<ExitCode> {
    let geometry = local_geometry(args.preset, &args.image, args.compat)?;
    let trace = match &args.then_replay {
        Some(path) => Some(pflash_trace::read_trace_file(path).map_err(|e| trace_error(path, e))?),
        None => None,
    };
    let timeout = Duration::from_secs(args.timeout);
    let conn = accept(&args.listen, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let options = IncomingOptions {
        accept_compat_mismatch: args.accept_compat_mismatch,
    };
    let received =
        match pflash_migration::incoming_with(&conn, &conn, &geometry, &args.image, &options) {
            Ok(received) => received,
            Err(e @ MigrationError::CompatMismatch { .. }) => {
                return Err(anyhow!(e).context(format!(
                    "incoming migration on {} (--accept-compat-mismatch takes it anyway)",
                    args.listen
                )))
            }
            Err(e) => {
                return Err(anyhow!(e).context(format!("incoming migration on {}", args.listen)))
            }
        };
    let transfer = received.stats();
    let source_compat = received.source_compat();
    let mut dev = received.into_device(Deferred::<ImageStorage>::new(), Events::default());

    // The source closes the connection once it has stopped and released its image: only
    // then does this side own the guest's varstore and commit.
    let mut rest = [0u8; 64];
    loop {
        match (&conn).read(&mut rest) {
            Ok(0) => break,
            Ok(_) => bail!("the migration source sent data after the end of the stream"),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                return Err(e).context("waiting for the migration source to stop (not committed)")
            }
        }
    }
    drop(conn);
    let writer = args.writer;
    let commit = migration::commit_with(&mut dev, &args.image, args.durability.into(), |file| {
        ImageStorage::new(file, writer)
    })?;

    let mut replayed = None;
    let mut mismatch = None;
    let mut elapsed = Duration::ZERO;
    if let (Some(trace), Some(from)) = (&trace, args.from_line) {
        let from = from.min(trace.len());
        let started = Instant::now();
        match pflash_trace::replay(&mut dev, &trace[from..]) {
            Ok(r) => replayed = Some(r),
            Err(m) => mismatch = Some(m),
        }
        elapsed = started.elapsed();
    }
    let (_, storage, events) = dev.into_parts();
    let stats = match storage.into_inner() {
        Some(storage) => storage.finish()?,
        None => bail!("the commit did not attach the image"),
    };
    if let Some(error) = &events.first_storage_error {
        bail!(
            "{error} ({} storage errors during the replay)",
            events.storage_errors
        );
    }
    let output = if args.json {
        let doc = serde_json::json!({
            "image": args.image,
            "compat": Compat::from(args.compat).name(),
            "source_compat": source_compat.name(),
            "migration": transfer_json(&transfer),
            "commit": {
                "bytes": commit.bytes,
                "atomic": commit.atomic,
                "seconds": commit.elapsed.as_secs_f64(),
            },
            "replayed": replayed.map(|r| serde_json::json!({
                "writes": r.writes, "reads": r.reads, "resets": r.resets,
            })),
            "matched": mismatch.is_none(),
            "storage": {
                "write_syscalls": stats.write_syscalls,
                "bytes_written": stats.bytes_written,
            },
            "seconds": elapsed.as_secs_f64(),
        });
        nvram::escape::to_json_pretty(&doc)? + "\n"
    } else {
        let mut text = format!(
            "{}: received {} bytes in {} rounds, committed {} bytes ({}) in {:.3} ms\n",
            args.image.display(),
            transfer.wire_bytes,
            transfer.rounds,
            commit.bytes,
            if commit.atomic {
                "atomic rename"
            } else {
                "in place"
            },
            commit.elapsed.as_secs_f64() * 1e3
        );
        if source_compat != Compat::from(args.compat) {
            let _ = writeln!(
                text,
                "{}: the source ran {source_compat}, this device goes on as {} \
                 (--accept-compat-mismatch)",
                args.image.display(),
                Compat::from(args.compat)
            );
        }
        if let Some(r) = replayed {
            let _ = writeln!(
                text,
                "{}: continued the trace: {} writes, {} reads (all matched), {} resets",
                args.image.display(),
                r.writes,
                r.reads,
                r.resets
            );
        }
        text
    };
    // The image was written: failing to print the report does not change the status.
    super::out::report(&output);
    match (mismatch, &args.then_replay) {
        (Some(m), Some(path)) => {
            message!(
                "nvram: {}:{}: read at offset {:#x}: expected {:#x}, got {:#x}",
                path.display(),
                m.line,
                m.offset,
                m.expected,
                m.got
            );
            Ok(ExitCode::from(1))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Listens on `address`, says so on stdout, and accepts one connection within `timeout`.
fn accept(address: &Address, timeout: Duration) -> Result<Connection> {
    let listener = Listener::bind(address)?;
    super::out::text(&format!("listening on {}\n", listener.local_address()?))?;
    Ok(listener.accept(timeout)?)
}

fn transfer_json(t: &TransferStats) -> serde_json::Value {
    serde_json::json!({
        "rounds": t.rounds,
        "chunks": t.chunks,
        "wire_bytes": t.wire_bytes,
        "final_round": {
            "chunks": t.final_round.chunks,
            "wire_bytes": t.final_round.wire_bytes,
            "seconds": t.final_round.elapsed.as_secs_f64(),
        },
        "seconds": t.elapsed.as_secs_f64(),
    })
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
            "{}: replayed {} as {}: {} writes, {} reads (all matched), {} resets",
            args.image.display(),
            args.trace.display(),
            Compat::from(args.compat),
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
    migrated: Option<&(usize, Address, TransferStats)>,
) -> Result<String> {
    let doc = serde_json::json!({
        "migrated": migrated.map(|(at, to, t)| serde_json::json!({
            "after_line": at,
            "to": to.to_string(),
            "transfer": transfer_json(t),
        })),
        "image": args.image,
        "trace": args.trace,
        "compat": Compat::from(args.compat).name(),
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
            "writer": match args.writer {
                WriterArg::Background => "background",
                WriterArg::Inline => "inline",
            },
            "operations": stats.operations,
            "flush_points": stats.flush_points,
            "flushes": stats.flushes,
            "write_syscalls": stats.write_syscalls,
            "fsyncs": stats.fsyncs,
            "bytes_written": stats.bytes_written,
        },
        "seconds": elapsed.as_secs_f64(),
    });
    Ok(nvram::escape::to_json_pretty(&doc)?)
}

fn durability_name(arg: DurabilityArg) -> &'static str {
    match arg {
        DurabilityArg::None => "none",
        DurabilityArg::FlushPoints => "flush-points",
        DurabilityArg::EveryOp => "every-op",
    }
}
