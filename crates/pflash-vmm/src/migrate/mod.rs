//! Live migration of the whole VM between two `pflash-vmm` processes
//! (`pflash-vmm run … --migrate-at N --to ADDR`, `pflash-vmm incoming --listen ADDR`).
//!
//! # The connection
//!
//! One `unix:PATH` or `tcp:HOST:PORT` connection ([`pflash_migration::transport`]) carries,
//! in this order:
//!
//! 1. **The flash stream** of [`pflash_migration`], unchanged: its header (geometry, QEMU
//!    compatibility, chunk length), which the destination checks against its own varstore
//!    before anything else and answers; then pre-copy rounds of the flash content while the
//!    guest keeps running (round 1 is the whole content, each later round the chunks the
//!    guest programmed or erased since the previous one, found by
//!    [`pflash::DirtyTracking`]); then, with the vCPU paused, the final round (device
//!    registers and the chunks still dirty) and the end record, which the destination
//!    verifies and answers with "done".
//! 2. **The VM section** ([`VmSection`]), sent once "done" arrived (so that the flash
//!    stream's reader never reads ahead into it): 24 bytes of header, `PFVMMIGR`, the format
//!    version of the writer (u16, 1), the oldest reader version that understands it (u16,
//!    1), 4 zero bytes, the body length (u64); the body; and the SHA-256 of header and
//!    body. The body is a u32 length and a JSON object (the vCPU's general, segment and
//!    control registers, its x87/SSE state, the exit counters so that flash access numbers
//!    continue, and the wall-clock time the source paused), then the RAM size (u64), a
//!    bitmap of its non-zero 4 KiB pages and those pages (a fresh VM's RAM is zero), then
//!    the code flash image's length (u64) and the image (the destination has no copy of
//!    it).
//! 3. **Replies** of the destination, each `PFVR`, a code (u8: 1 verified, 3 refused), a
//!    u16 length and a message; and the source's last word, the same frame with code 2
//!    (released).
//!
//! # The commit point
//!
//! The destination writes nothing to its varstore until the whole state arrived and
//! verified: the received flash is a device with a [`pflash::Deferred`] storage. Then:
//!
//! - the destination builds the VM (KVM, memory slots, registers), so that nothing can fail
//!   on its side after it answers, and answers "verified": from now on the guest is the
//!   destination's;
//! - the source, on "verified", stops: it flushes its varstore writer and closes the file
//!   (which unlocks it, [`VarsFlash::release_file`](crate::flash::VarsFlash::release_file)),
//!   sends "released" and exits;
//! - the destination, on "released" (or on the connection closing, which means the source
//!   process is gone), commits: its varstore file is replaced atomically with the received
//!   content ([`VarsFlash::commit`](crate::flash::VarsFlash::commit)), and only then the
//!   guest resumes. Because the commit waits for the source to release its file, both may
//!   name the same file (shared storage).
//!
//! The downtime is from the source pausing the vCPU to the destination resuming it: the
//! final flash round, the VM section, the replies and the commit.
//!
//! # What is refused, and when
//!
//! - A varstore of another size (or geometry, or QEMU compatibility): refused by the
//!   destination right after the flash stream's header, with a message naming both sizes
//!   (the source prints it). The source guest keeps running and finishes there.
//! - A corrupt, truncated or reordered flash stream: refused at its end record.
//! - A VM section of an unknown version, a bad digest, a RAM size other than this VMM's, or
//!   registers of the wrong shape: refused after the section. The source resumes the
//!   guest (a later migration would start over with the whole flash).
//! - The source gone before "verified": the destination exits with an error and nothing
//!   written. The destination gone, or silent for the source's reply timeout (30 s),
//!   before "verified": the source resumes the guest; if it gives up after sending the VM
//!   section it first sends a refusal ("the source keeps the guest"), so that a late
//!   destination does not resume the guest too.
//! - The window no two-party handover closes: a destination that dies after "verified"
//!   loses the guest. The source has stopped by then, and its varstore file holds the
//!   content as of the pause (flushed before it released it), so the VM can be restarted
//!   from it.
//!
//! Pre-copy rounds run on the vCPU thread between two exits (the flash is at most a few
//! MiB); the guest runs between them, for the number of flash accesses given.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant, SystemTime};

use pflash_migration::transport::Connection;
use pflash_migration::{MigrationError, Outgoing, RoundStats};

use crate::vm::{Outcome, Vm, VmError, VmSnapshot};

mod section;

pub use section::{encode_section, read_section, VmSection, VM_MAGIC, VM_VERSION};

const REPLY_MAGIC: [u8; 4] = *b"PFVR";
const REPLY_VERIFIED: u8 = 1;
const REPLY_RELEASED: u8 = 2;
const REPLY_REFUSED: u8 = 3;

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The flash stream failed or was refused.
    #[error("flash stream: {0}")]
    Flash(#[from] MigrationError),
    /// The connection failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The destination cannot be reached.
    #[error(transparent)]
    Transport(#[from] pflash_migration::transport::TransportError),
    /// The varstore cannot be released (source) or committed (destination).
    #[error("vars flash: {0}")]
    VarsFlash(#[from] crate::flash::FlashError),
    /// The guest ended before the migration did.
    #[error("the guest finished during pre-copy")]
    GuestFinished,
    /// The VM section is malformed.
    #[error("VM section: {0}")]
    Section(String),
    /// The vCPU state cannot be encoded, or a received one decoded.
    #[error("VM section: vCPU state: {0}")]
    VcpuState(#[source] serde_json::Error),
    /// The peer refused.
    #[error("the destination refused the VM state: {0}")]
    Refused(String),
    /// The VM could not be paused, built or resumed.
    #[error(transparent)]
    Vm(#[from] VmError),
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> MigrateError {
    move |source| MigrateError::Io { context, source }
}

fn write_reply(mut w: impl Write, code: u8, message: &str) -> std::io::Result<()> {
    let message = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
    let mut frame = Vec::with_capacity(7 + message.len());
    frame.extend_from_slice(&REPLY_MAGIC);
    frame.push(code);
    frame.extend_from_slice(&(message.len() as u16).to_le_bytes());
    frame.extend_from_slice(message);
    w.write_all(&frame)?;
    w.flush()
}

fn read_reply(mut r: impl Read) -> Result<(u8, String), MigrateError> {
    let mut head = [0u8; 7];
    r.read_exact(&mut head)
        .map_err(io("waiting for the peer"))?;
    if head[..4] != REPLY_MAGIC {
        return Err(MigrateError::Section(format!(
            "the peer answered {:02x?}, not a reply",
            &head[..4]
        )));
    }
    let mut message = vec![0u8; u16::from_le_bytes([head[5], head[6]]) as usize];
    r.read_exact(&mut message)
        .map_err(io("reading the peer's reply"))?;
    Ok((head[4], String::from_utf8_lossy(&message).into_owned()))
}

// ---------------------------------------------------------------------------------------
// Source

/// When and where the source migrates.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Start at the first flash access whose number is at least this (counting from the
    /// guest's first access, across earlier migrations).
    pub at: u64,
    /// The destination.
    pub to: pflash_migration::transport::Address,
    /// Pre-copy rounds before the final one (at least 1: the whole content).
    pub precopy_rounds: u32,
    /// Flash accesses the guest makes between two rounds.
    pub accesses_per_round: u64,
    /// How long to wait for the destination to accept the connection.
    pub connect_timeout: Duration,
}

/// One round as `--json` shows it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RoundReport {
    /// Round number (the last is the final, stop-and-copy one).
    pub round: u32,
    /// Flash chunks sent.
    pub chunks: u64,
    /// Flash content bytes sent.
    pub content_bytes: u64,
    /// Bytes on the wire.
    pub wire_bytes: u64,
    /// Flash access number at which the round was sent.
    pub at_access: u64,
}

impl RoundReport {
    fn new(r: &RoundStats, at_access: u64) -> Self {
        RoundReport {
            round: r.round,
            chunks: r.chunks,
            content_bytes: r.content_bytes,
            wire_bytes: r.wire_bytes,
            at_access,
        }
    }
}

/// What the source did (`run --json`'s `migration`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceReport {
    /// `migrated`, `refused` (the destination refused; the guest finished here) or
    /// `abandoned` (the guest finished during pre-copy, or the connection failed).
    pub result: &'static str,
    /// Why it did not migrate.
    pub error: Option<String>,
    /// The flash access number where the migration started.
    pub started_at_access: u64,
    /// The flash access number where the vCPU paused.
    pub paused_at_access: Option<u64>,
    /// Whether the flash device was in read-array mode at the pause (false: the guest was
    /// in the middle of a command sequence).
    pub array_mode_at_pause: Option<bool>,
    /// Every round, the final one last.
    pub rounds: Vec<RoundReport>,
    /// Bytes of the flash stream.
    pub flash_wire_bytes: u64,
    /// Bytes of the VM section.
    pub vm_section_bytes: u64,
    /// Both.
    pub total_bytes: u64,
    /// From the pause to the destination's "verified" (the destination reports the whole
    /// downtime, commit included).
    pub paused_until_verified_ms: f64,
}

enum Phase<'c> {
    Waiting,
    Precopy {
        out: Outgoing<&'c Connection, &'c Connection>,
        conn: &'c Connection,
        next_at: u64,
    },
    Over,
}

/// How a source run ended.
pub enum SourceEnd {
    /// The guest ended here (`migration` says why it did not leave).
    Finished {
        /// The VM, to report on.
        vm: Box<Vm>,
        /// How the guest ended.
        outcome: Outcome,
        /// What the migration did.
        migration: SourceReport,
    },
    /// The destination owns the guest; this VM is gone and its varstore released.
    Migrated(SourceReport),
}

/// Runs `vm` and migrates it as `plan` says. Whatever goes wrong before the destination
/// verified the whole state, the guest keeps running here.
///
/// # Errors
///
/// The guest itself fails ([`VmError`]), or the source cannot release its varstore after
/// the destination took over.
pub fn run_source(
    mut vm: Vm,
    timeout: Option<Duration>,
    plan: &Plan,
) -> Result<SourceEnd, MigrateError> {
    let mut report = SourceReport::default();
    // Set once, borrowed by `Outgoing` while the VM runs between rounds.
    let connected = std::cell::OnceCell::new();
    let mut connection: Option<&Connection> = None;
    let mut phase = Phase::Waiting;
    loop {
        let next = match &phase {
            Phase::Waiting => plan.at,
            Phase::Precopy { next_at, .. } => *next_at,
            Phase::Over => u64::MAX,
        };
        let outcome = vm.run(timeout, &mut |exits| exits.flash_accesses() >= next)?;
        if outcome != Outcome::Stopped {
            if let Phase::Precopy { conn, .. } = phase {
                abandon(
                    &mut report,
                    &plan.to,
                    MigrateError::GuestFinished,
                    Some(conn),
                );
            }
            return Ok(SourceEnd::Finished {
                vm: Box::new(vm),
                outcome,
                migration: report,
            });
        }
        let access = vm.exits().flash_accesses();
        phase = match std::mem::replace(&mut phase, Phase::Over) {
            Phase::Waiting => {
                report.started_at_access = access;
                let started = plan
                    .to
                    .connect(plan.connect_timeout)
                    .map_err(MigrateError::from)
                    .and_then(|c| {
                        let c = connected.get_or_init(|| c);
                        connection = Some(c);
                        // A destination that stops answering must not keep the guest
                        // paused for ever.
                        c.set_read_timeout(Some(plan.connect_timeout))
                            .map_err(io("setting the reply timeout"))?;
                        let mut out = Outgoing::start(vm.flash_mut().device_mut(), c, c)?;
                        let round = out.precopy_round(vm.flash_mut().device_mut())?;
                        report.rounds.push(RoundReport::new(&round, access));
                        Ok(out)
                    });
                match (started, connection) {
                    (Ok(out), Some(conn)) => Phase::Precopy {
                        out,
                        conn,
                        next_at: access + plan.accesses_per_round,
                    },
                    (Err(e), _) => abandon(&mut report, &plan.to, e, connection),
                    (Ok(_), None) => Phase::Over,
                }
            }
            Phase::Precopy { mut out, conn, .. } => {
                let dirty = vm.flash().device().storage().dirty_chunks();
                if (out.rounds().len() as u32) < plan.precopy_rounds.max(1) && dirty > 0 {
                    match out.precopy_round(vm.flash_mut().device_mut()) {
                        Ok(round) => {
                            report.rounds.push(RoundReport::new(&round, access));
                            Phase::Precopy {
                                out,
                                conn,
                                next_at: access + plan.accesses_per_round,
                            }
                        }
                        Err(e) => abandon(&mut report, &plan.to, e.into(), Some(conn)),
                    }
                } else {
                    match switch_over(&mut vm, out, conn, &mut report) {
                        Ok(()) => {
                            // The destination took over: release the varstore, then say so.
                            vm.flash_mut().release_file()?;
                            let _ = write_reply(conn, REPLY_RELEASED, "");
                            drop(vm);
                            report.result = "migrated";
                            return Ok(SourceEnd::Migrated(report));
                        }
                        Err(e) => abandon(&mut report, &plan.to, e, Some(conn)),
                    }
                }
            }
            Phase::Over => Phase::Over,
        };
    }
}

/// The guest stays here: tells a destination that has the whole state not to resume it
/// (it would otherwise take the connection closing for the source's end), and closes the
/// connection so that a destination still reading the stream stops.
fn abandon<'c>(
    report: &mut SourceReport,
    to: &pflash_migration::transport::Address,
    e: MigrateError,
    connection: Option<&Connection>,
) -> Phase<'c> {
    eprintln!("pflash-vmm: migration to {to}: {e}; the guest stays here");
    if let Some(conn) = connection {
        if report.vm_section_bytes > 0 {
            let _ = write_reply(conn, REPLY_REFUSED, "the source keeps the guest");
        }
        let _ = match conn {
            Connection::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Connection::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
    report.result = if matches!(
        e,
        MigrateError::Refused(_) | MigrateError::Flash(MigrationError::Refused(_))
    ) {
        "refused"
    } else {
        "abandoned"
    };
    report.error = Some(e.to_string());
    Phase::Over
}

/// Pause, final flash round, VM section, and the destination's verdict.
fn switch_over(
    vm: &mut Vm,
    out: Outgoing<&Connection, &Connection>,
    conn: &Connection,
    report: &mut SourceReport,
) -> Result<(), MigrateError> {
    let paused = Instant::now();
    let paused_at = SystemTime::now();
    let access = vm.exits().flash_accesses();
    report.paused_at_access = Some(access);
    report.array_mode_at_pause = Some(vm.flash().is_array_mode());
    let snapshot = vm.snapshot()?;
    let stats = out.complete(vm.flash_mut().device_mut())?;
    report
        .rounds
        .push(RoundReport::new(&stats.final_round, access));
    report.flash_wire_bytes = stats.wire_bytes;
    let section = encode_section(&VmSection {
        snapshot,
        paused_at,
    })?;
    let sent = (&*conn)
        .write_all(&section)
        .and_then(|()| (&*conn).flush())
        .map_err(io("sending the VM section"));
    if let Err(e) = sent {
        // The destination may have refused and closed: its reason is the better error.
        return match read_reply(conn) {
            Ok((REPLY_REFUSED, reason)) => Err(MigrateError::Refused(reason)),
            _ => Err(e),
        };
    }
    report.vm_section_bytes = section.len() as u64;
    report.total_bytes = report.flash_wire_bytes + report.vm_section_bytes;
    let verdict = read_reply(conn);
    report.paused_until_verified_ms = paused.elapsed().as_secs_f64() * 1e3;
    match verdict? {
        (REPLY_VERIFIED, _) => Ok(()),
        (REPLY_REFUSED, reason) => Err(MigrateError::Refused(reason)),
        (code, _) => Err(MigrateError::Section(format!(
            "the destination answered with code {code} instead of \"verified\""
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Destination

/// What the destination received (`incoming --json`'s `incoming`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IncomingReport {
    /// Flash rounds, the final one included.
    pub rounds: u32,
    /// Flash chunks received, counting resends.
    pub flash_chunks: u64,
    /// Bytes of the flash stream.
    pub flash_wire_bytes: u64,
    /// Bytes of the VM section.
    pub vm_section_bytes: u64,
    /// Both.
    pub total_bytes: u64,
    /// The flash access number where the guest resumes.
    pub resumed_at_access: u64,
    /// Whether the flash device resumed in read-array mode.
    pub array_mode_at_resume: bool,
    /// Time of the commit of the varstore file.
    pub commit_ms: f64,
    /// From the source's pause to the resume here, by the wall clocks of both (meaningful
    /// on one host, or with synchronised clocks).
    pub downtime_ms: f64,
}

/// The destination after the VM section: verifies it, builds the VM, answers "verified",
/// waits for the source to release its varstore, commits, and returns the VM ready to
/// resume.
///
/// `build` makes the VM from the received section (and the flash received before it).
///
/// # Errors
///
/// Any failure before "verified" is also sent to the source (best effort), which then keeps
/// the guest.
pub fn receive_vm(
    conn: &Connection,
    report: &mut IncomingReport,
    build: impl FnOnce(&VmSnapshot) -> Result<Vm, MigrateError>,
    commit: impl FnOnce(&mut Vm) -> Result<f64, MigrateError>,
) -> Result<Vm, MigrateError> {
    let built = read_section(conn).and_then(|(section, wire)| {
        report.vm_section_bytes = wire;
        build(&section.snapshot).map(|vm| (vm, section.paused_at))
    });
    let (mut vm, paused_at) = match built {
        Ok(v) => v,
        Err(e) => {
            let _ = write_reply(conn, REPLY_REFUSED, &e.to_string());
            return Err(e);
        }
    };
    write_reply(conn, REPLY_VERIFIED, "").map_err(io("answering \"verified\""))?;
    // "Released", or the connection closing: either way the source no longer holds its
    // varstore (a process that exits drops its lock).
    match read_reply(conn) {
        Ok((REPLY_RELEASED, _)) => {}
        Err(MigrateError::Io { source, .. })
            if matches!(
                source.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) => {}
        Ok((REPLY_REFUSED, reason)) => {
            return Err(MigrateError::Section(format!(
                "the source gave up after \"verified\": {reason}"
            )))
        }
        Ok((code, _)) => {
            return Err(MigrateError::Section(format!(
                "the source answered with code {code} instead of \"released\""
            )))
        }
        Err(e) => return Err(e),
    }
    report.commit_ms = commit(&mut vm)?;
    report.total_bytes = report.flash_wire_bytes + report.vm_section_bytes;
    report.resumed_at_access = vm.exits().flash_accesses();
    report.array_mode_at_resume = vm.flash().is_array_mode();
    report.downtime_ms = SystemTime::now()
        .duration_since(paused_at)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Ok(vm)
}
