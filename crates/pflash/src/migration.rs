//! Snapshot, restore and live migration of a [`Pflash`], over any [`Read`]/[`Write`] stream.
//!
//! The design follows QEMU's shortcut for varstore flashes: the flash content lives in memory
//! and is always up to date, so it travels with the device state instead of being migrated
//! as a disk. The destination's backing file only has to exist with the right size; it is
//! overwritten as a whole at an explicit *commit point*, once the destination owns it.
//!
//! # Pieces
//!
//! - [`DirtyTracking`]: a [`Storage`] wrapper that marks the chunks (the erase block, or 4 KiB
//!   if that is finer) changed by each program or erase, for iterative pre-copy. It costs a
//!   few bit operations per operation, on top of the wrapped storage.
//! - [`Outgoing`]: the source side. [`Outgoing::start`] sends the header and waits for the
//!   destination to accept the geometry; [`Outgoing::precopy_round`] sends the chunks dirtied
//!   since the previous round (all of them in the first), as many times as the VMM wants
//!   while the guest runs; [`Outgoing::complete`], with the guest paused, sends the device
//!   registers and the chunks still dirty, and returns once the destination confirmed that
//!   it verified the whole stream. On any error the device is untouched and can be migrated
//!   again (a new migration starts with a full round).
//! - [`incoming`]: the destination side. It checks the incoming geometry against the local
//!   device's before anything else, receives the stream into memory, verifies it and returns
//!   an [`Incoming`] device image. Nothing is written to any file.
//! - [`Deferred`]: the destination's storage until the commit point: the guest is served
//!   from memory and nothing reaches the file. [`commit`] (or [`commit_file`]) then replaces
//!   the file with the content (atomically for a regular file) and attaches the file storage.
//! - [`save`] and [`load`]: offline snapshot and restore, in the same format (a stream with
//!   no pre-copy round and no replies).
//!
//! # Wire format (version 2)
//!
//! All integers little-endian. The stream starts with a 52-byte header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PFLASHMG` |
//! | 8 | 2 | format version of the writer (2) |
//! | 10 | 2 | oldest reader version that understands the stream (2) |
//! | 12 | 4 | flags, 0 |
//! | 16 | 8 | sector length |
//! | 24 | 4 | number of blocks |
//! | 28 | 4 | bank width, device width, max device width, big-endian (one byte each) |
//! | 32 | 8 | ids 0 to 3 (u16 each) |
//! | 40 | 4 | read-only (one byte), QEMU compatibility the source ran (one byte: 1 `qemu-7.2`, 2 `qemu-10.0`), 2 zero bytes |
//! | 44 | 4 | chunk length (the dirty-tracking granule: a power of two dividing the size) |
//! | 48 | 4 | CRC-32 of bytes 0..48 |
//!
//! A reader checks the magic, then the compatibility version (so a stream from a newer,
//! incompatible writer is refused by its version, whatever its layout), then the CRC.
//!
//! ## Versions and the QEMU compatibility
//!
//! Version 2 added the compatibility byte (offset 41, zero in version 1) and nothing else.
//! Its streams say they need a version-2 reader: a version-1 reader would take the byte for
//! an unknown flag and call the stream corrupt, so it refuses it by version instead, naming
//! both. This build still reads version-1 streams and snapshots; they come from builds that
//! modelled QEMU 7.2 only, so they are taken as `qemu-7.2`.
//!
//! The destination compares the source's compatibility with its own device's
//! ([`Geometry::compat`]) right after the geometry, and refuses a difference with
//! [`MigrationError::CompatMismatch`] naming both: the guest would see the device change
//! behaviour in the middle of its run. [`IncomingOptions::accept_compat_mismatch`] lets it
//! through; the device then resumes the source's registers and content with the
//! destination's behaviour, as QEMU does when a guest migrates to a newer QEMU
//! ([`Incoming::source_compat`] tells what the source ran).
//!
//! Then records, each `kind u8, flags u8, 0u16, seq u32, len u32, payload[len], crc32`,
//! where `seq` counts records from 0 (a reordered, lost or repeated record is detected even
//! when its own CRC is right) and the CRC covers the 12-byte record header and the payload.
//! A record with flag bit 0 set may be skipped by a reader that does not know its kind
//! (room for compatible additions); unknown records without it are an error.
//!
//! | kind | name | payload |
//! |---|---|---|
//! | 1 | chunks | round u32, first chunk u64, count u32, then count × chunk length bytes of content |
//! | 2 | round end | round u32, chunks sent in the round u32, content bytes u64 |
//! | 3 | device state | wcycle, cmd, status, array mode, has buffer (u8 each), 3 zero bytes, counter u64, buffer offset u64, written start u64, written end u64, buffer length u32, buffer bytes |
//! | 4 | end | CRC-32 of every stream byte before this record, records before it u32, rounds u32 |
//!
//! Pre-copy rounds are numbered from 1, each a run of chunk records closed by a round end.
//! The final round is a device state record, chunk records of that round, and the end
//! record. Every chunk must have been sent at least once by the end.
//!
//! # Replies (live migration only)
//!
//! The destination answers twice, each reply `PFLR, code u8, 0u8, len u16, message[len],
//! crc32`: after the header (1 accept, or 3 refuse with the reason), and after the end
//! record (2 done: the stream is verified and the device can run here; or 3 refuse). The
//! source stops only after "done", so a destination that dies or refuses at any point leaves
//! the source running with its state intact.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crc32fast::Hasher;
use rustix::fs::FlockOperation;

use crate::compat::Compat;
use crate::device::{NoEvents, Pflash, PflashEvents};
use crate::file_storage::{Durability, FileStorage};
use crate::geometry::{Geometry, GeometryError};
use crate::state::{PflashState, WriteBuffer};
use crate::storage::{NoStorage, Storage, StorageError};

/// First bytes of every stream.
pub const MAGIC: [u8; 8] = *b"PFLASHMG";
/// The format version this build writes (and the newest it reads; it reads version 1 too).
pub const VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// First bytes of every reply of the destination.
const REPLY_MAGIC: [u8; 4] = *b"PFLR";

const HEADER_LEN: usize = 48;
const RECORD_HEADER_LEN: usize = 12;
/// Dirty-tracking granule upper bound: finer than arm `virt`'s 256 KiB erase blocks, so a
/// one-byte change in the final round costs 4 KiB of downtime traffic, not 256 KiB.
const MAX_TRACKING_CHUNK: u64 = 4096;
/// Content bytes per chunk record: large enough to amortise the framing, small enough that
/// a corrupt length cannot make the reader allocate much.
const MAX_RUN_BYTES: u64 = 1 << 20;
/// Largest payload a reader accepts before checking any CRC.
const MAX_PAYLOAD: u32 = 4 << 20;
const CHUNKS_PREFIX_LEN: usize = 16;
const STATE_PREFIX_LEN: usize = 44;

const KIND_CHUNKS: u8 = 1;
const KIND_ROUND_END: u8 = 2;
const KIND_STATE: u8 = 3;
const KIND_END: u8 = 4;
const FLAG_SKIPPABLE: u8 = 1;

const REPLY_ACCEPT: u8 = 1;
const REPLY_DONE: u8 = 2;
const REPLY_REFUSE: u8 = 3;

/// Why a snapshot or migration failed. Every variant leaves the source device untouched and
/// the destination's file unwritten.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The stream or the connection failed.
    // The cause is in the message and not also a `source()`, so that error reporters that
    // print the chain do not print it twice.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        error: io::Error,
    },
    /// The stream ended early (the source died, or the snapshot file is cut short).
    #[error("the migration stream is truncated: it ends at byte {offset} in {what}")]
    Truncated {
        /// Bytes read before the end.
        offset: u64,
        /// Where it ended.
        what: &'static str,
    },
    /// The stream does not start with [`MAGIC`].
    #[error("not a pflash migration stream (it starts with {found:02x?}, not \"PFLASHMG\")")]
    Foreign {
        /// The first bytes found.
        found: [u8; 8],
    },
    /// The stream needs a newer reader.
    #[error(
        "the migration stream has format version {version} and needs a reader of version \
         {needs} or later; this build reads versions {OLDEST_READABLE_VERSION} to {VERSION}"
    )]
    Version {
        /// The writer's version.
        version: u16,
        /// The oldest reader version that understands the stream.
        needs: u16,
    },
    /// A CRC or a field is wrong.
    #[error("the migration stream is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// Offset of the header or record at fault.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The flash sizes differ.
    #[error(
        "size mismatch for {}: the incoming flash is {incoming:#x} ({incoming}) bytes, the \
         local flash is {local:#x} ({local}) bytes",
        backing.display()
    )]
    SizeMismatch {
        /// The destination's backing file.
        backing: PathBuf,
        /// Size of the source's flash.
        incoming: u64,
        /// Size of the destination's flash.
        local: u64,
    },
    /// The sizes agree but another property differs.
    #[error("geometry mismatch for {}: {differences}", backing.display())]
    GeometryMismatch {
        /// The destination's backing file.
        backing: PathBuf,
        /// The properties that differ, with both values.
        differences: String,
    },
    /// The source's device behaved like another QEMU release than the destination's would.
    #[error(
        "QEMU compatibility mismatch for {}: the source's flash behaved like {incoming}, this \
         destination's behaves like {local}; refusing, because the guest would see the device \
         change behaviour (accept the mismatch explicitly to migrate anyway)",
        backing.display()
    )]
    CompatMismatch {
        /// The destination's backing file.
        backing: PathBuf,
        /// What the source ran.
        incoming: Compat,
        /// What the destination runs.
        local: Compat,
    },
    /// The stream carries a device state this geometry cannot resume.
    #[error("the migration stream carries an unusable device state: {0}")]
    State(GeometryError),
    /// The destination refused the migration (source side).
    #[error("the destination refused the migration: {0}")]
    Refused(String),
    /// Committing to the backing file failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> MigrationError {
    move |error| MigrationError::Io {
        context: context.into(),
        error,
    }
}

/// The dirty-tracking granule for a geometry: the erase block, or 4 KiB if smaller.
pub fn chunk_len(geometry: &Geometry) -> u64 {
    geometry.sector_len.min(MAX_TRACKING_CHUNK)
}

// ---------------------------------------------------------------------------------------
// Dirty tracking

/// A [`Storage`] wrapper that remembers which chunks of the content changed, for the
/// iterative pre-copy of a live migration. Everything is forwarded to the wrapped storage.
///
/// The tracking sits in the storage path rather than in the device because that path
/// already sees every content change (program, erase, confirmed buffered write) with its
/// range, and only those: the MMIO hot path of reads and command cycles is not touched.
///
/// ```
/// use pflash::migration::DirtyTracking;
/// use pflash::{Geometry, NoEvents, NoStorage, Pflash};
///
/// let g = Geometry::q35(16384).unwrap();
/// let storage = DirtyTracking::new(NoStorage, &g);
/// let mut dev = Pflash::new(g, vec![0xff; 16384], storage, NoEvents).unwrap();
/// dev.write(0x2001, &[0x10]);
/// dev.write(0x2001, &[0x00]);
/// assert_eq!(dev.storage().dirty_chunks(), 1);
/// assert!(dev.storage().is_dirty(2));
/// ```
#[derive(Debug)]
pub struct DirtyTracking<S> {
    inner: S,
    chunk_shift: u32,
    chunks: usize,
    bits: Vec<u64>,
    dirty: usize,
}

impl<S> DirtyTracking<S> {
    /// Wraps `inner` for a device of `geometry`, with nothing marked dirty.
    pub fn new(inner: S, geometry: &Geometry) -> Self {
        let chunk = chunk_len(geometry);
        let chunks = usize::try_from(geometry.size() / chunk).unwrap_or(usize::MAX);
        DirtyTracking {
            inner,
            chunk_shift: chunk.trailing_zeros(),
            chunks,
            bits: vec![0; chunks.div_ceil(64)],
            dirty: 0,
        }
    }

    /// The tracking granule in bytes (see [`chunk_len`]).
    pub fn chunk_len(&self) -> u64 {
        1 << self.chunk_shift
    }

    /// Number of chunks of the content.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Number of chunks changed since they were last taken.
    pub fn dirty_chunks(&self) -> usize {
        self.dirty
    }

    /// Whether chunk `index` changed since it was last taken.
    pub fn is_dirty(&self, index: usize) -> bool {
        self.bits
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Marks every chunk dirty (the start of a migration: everything must be sent).
    pub fn mark_all(&mut self) {
        self.bits.fill(u64::MAX);
        let tail = self.chunks % 64;
        if tail != 0 {
            if let Some(last) = self.bits.last_mut() {
                *last = (1 << tail) - 1;
            }
        }
        self.dirty = self.chunks;
    }

    /// Marks the chunks that overlap `range` (content bytes) dirty.
    pub fn mark(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let first = range.start >> self.chunk_shift;
        let last = ((range.end - 1) >> self.chunk_shift).min(self.chunks.saturating_sub(1));
        for chunk in first..=last {
            let (word, bit) = (chunk / 64, 1u64 << (chunk % 64));
            if self.bits[word] & bit == 0 {
                self.bits[word] |= bit;
                self.dirty += 1;
            }
        }
    }

    /// Clears the dirty marks and returns the dirty chunks as runs of consecutive chunk
    /// indices, in ascending order.
    pub fn take_dirty(&mut self) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        if self.dirty == 0 {
            return runs;
        }
        for (w, word) in self.bits.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let chunk = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                match runs.last_mut() {
                    Some(run) if run.end == chunk => run.end += 1,
                    _ => runs.push(chunk..chunk + 1),
                }
            }
        }
        self.dirty = 0;
        runs
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped storage, mutably.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the storage.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Storage> Storage for DirtyTracking<S> {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.mark(range.clone());
        self.inner.record_change(content, range)
    }

    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError> {
        self.inner.flush_point(content)
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

fn encode_header(geometry: &Geometry, chunk: u64) -> [u8; HEADER_LEN + 4] {
    let mut h = [0u8; HEADER_LEN + 4];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&geometry.sector_len.to_le_bytes());
    h[24..28].copy_from_slice(&geometry.num_blocks.to_le_bytes());
    h[28] = geometry.bank_width;
    h[29] = geometry.device_width;
    h[30] = geometry.max_device_width;
    h[31] = u8::from(geometry.big_endian);
    for (i, id) in geometry.id.iter().enumerate() {
        h[32 + 2 * i..34 + 2 * i].copy_from_slice(&id.to_le_bytes());
    }
    h[40] = u8::from(geometry.read_only);
    h[41] = geometry.compat.wire_code();
    h[44..48].copy_from_slice(&(chunk as u32).to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_LEN]);
    h[HEADER_LEN..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn encode_state(state: &PflashState) -> Vec<u8> {
    let buf = state.write_buffer.as_ref();
    let len = buf.map_or(0, |b| b.bytes.len());
    let mut p = Vec::with_capacity(STATE_PREFIX_LEN + len);
    p.extend_from_slice(&[
        state.wcycle,
        state.cmd,
        state.status,
        u8::from(state.array_mode),
        u8::from(buf.is_some()),
        0,
        0,
        0,
    ]);
    p.extend_from_slice(&state.counter.to_le_bytes());
    p.extend_from_slice(&buf.map_or(0, |b| b.offset).to_le_bytes());
    p.extend_from_slice(&buf.map_or(0, |b| b.written.start).to_le_bytes());
    p.extend_from_slice(&buf.map_or(0, |b| b.written.end).to_le_bytes());
    p.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(b) = buf {
        p.extend_from_slice(&b.bytes);
    }
    p
}

fn decode_state(p: &[u8]) -> Result<PflashState, &'static str> {
    if p.len() < STATE_PREFIX_LEN {
        return Err("device state record too short");
    }
    let flag = |b: u8| match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err("device state flag is neither 0 nor 1"),
    };
    if p[5..8] != [0; 3] {
        return Err("device state reserved bytes are not zero");
    }
    let has_buffer = flag(p[4])?;
    let len = u32_at(p, 40) as usize;
    if p.len() != STATE_PREFIX_LEN + len {
        return Err("device state record length does not match its buffer length");
    }
    let write_buffer = if has_buffer {
        Some(WriteBuffer {
            offset: u64_at(p, 16),
            written: u64_at(p, 24)..u64_at(p, 32),
            bytes: p[STATE_PREFIX_LEN..].to_vec(),
        })
    } else {
        if p[16..44].iter().any(|&b| b != 0) {
            return Err("device state has buffer fields but no buffer");
        }
        None
    };
    Ok(PflashState {
        wcycle: p[0],
        cmd: p[1],
        status: p[2],
        array_mode: flag(p[3])?,
        counter: u64_at(p, 8),
        write_buffer,
    })
}

/// Framing, sequence numbers and checksums of the outgoing stream.
struct StreamWriter<W: Write> {
    w: BufWriter<W>,
    stream_crc: Hasher,
    offset: u64,
    seq: u32,
}

impl<W: Write> StreamWriter<W> {
    fn new(w: W) -> Self {
        StreamWriter {
            w: BufWriter::with_capacity(64 << 10, w),
            stream_crc: Hasher::new(),
            offset: 0,
            seq: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.stream_crc.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes one record made of `parts`; returns its size on the wire.
    fn record(&mut self, kind: u8, parts: &[&[u8]]) -> io::Result<u64> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; RECORD_HEADER_LEN];
        head[0] = kind;
        head[4..8].copy_from_slice(&self.seq.to_le_bytes());
        head[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        let mut crc = Hasher::new();
        crc.update(&head);
        self.w.write_all(&head)?;
        for part in parts {
            crc.update(part);
            self.w.write_all(part)?;
        }
        // The stream CRC is the record CRC combined in, so content is hashed once.
        self.stream_crc.combine(&crc);
        let sum = crc.finalize().to_le_bytes();
        self.w.write_all(&sum)?;
        self.stream_crc.update(&sum);
        self.seq += 1;
        let wire = (RECORD_HEADER_LEN + len + 4) as u64;
        self.offset += wire;
        Ok(wire)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// What one round sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Round number (pre-copy rounds from 1; the final round follows the last).
    pub round: u32,
    /// Chunks sent.
    pub chunks: u64,
    /// Content bytes sent.
    pub content_bytes: u64,
    /// Bytes on the wire, framing and device state included.
    pub wire_bytes: u64,
    /// Time spent, including (for the final round) waiting for the destination's answer.
    pub elapsed: Duration,
}

/// What a whole snapshot or migration sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Rounds, the final one included.
    pub rounds: u32,
    /// Chunks sent, counting resends.
    pub chunks: u64,
    /// Bytes on the wire, header included.
    pub wire_bytes: u64,
    /// The final round (sent with the guest paused: the downtime).
    pub final_round: RoundStats,
    /// Time from the header to the destination's confirmation.
    pub elapsed: Duration,
}

/// Sends the content of `runs` (chunk index ranges) as chunk records of `round`.
fn send_runs<W: Write>(
    out: &mut StreamWriter<W>,
    memory: &[u8],
    chunk: u64,
    round: u32,
    runs: &[Range<usize>],
    stats: &mut RoundStats,
) -> io::Result<()> {
    let per_record = (MAX_RUN_BYTES / chunk).max(1) as usize;
    for run in runs {
        let mut first = run.start;
        while first < run.end {
            let count = (run.end - first).min(per_record);
            let start = first * chunk as usize;
            let end = start + count * chunk as usize;
            let mut prefix = [0u8; CHUNKS_PREFIX_LEN];
            prefix[0..4].copy_from_slice(&round.to_le_bytes());
            prefix[4..12].copy_from_slice(&(first as u64).to_le_bytes());
            prefix[12..16].copy_from_slice(&(count as u32).to_le_bytes());
            stats.wire_bytes += out.record(KIND_CHUNKS, &[&prefix, &memory[start..end]])?;
            stats.chunks += count as u64;
            stats.content_bytes += (end - start) as u64;
            first += count;
        }
    }
    Ok(())
}

fn send_end<W: Write>(out: &mut StreamWriter<W>, rounds: u32) -> io::Result<u64> {
    let stream_crc = out.stream_crc.clone().finalize();
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&stream_crc.to_le_bytes());
    p[4..8].copy_from_slice(&out.seq.to_le_bytes());
    p[8..12].copy_from_slice(&rounds.to_le_bytes());
    out.record(KIND_END, &[&p])
}

/// Writes an offline snapshot of `dev` (registers, any open buffered write, and the whole
/// content) to `w`. Restore it with [`load`].
///
/// # Errors
///
/// [`MigrationError::Io`] if `w` fails.
pub fn save<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents, W: Write>(
    dev: &Pflash<M, S, E>,
    w: W,
) -> Result<TransferStats, MigrationError> {
    let started = Instant::now();
    let geometry = dev.geometry();
    let chunk = chunk_len(geometry);
    let mut out = StreamWriter::new(w);
    let write = || io_error("writing the snapshot");
    out.raw(&encode_header(geometry, chunk)).map_err(write())?;
    let mut round = RoundStats {
        round: 1,
        ..RoundStats::default()
    };
    round.wire_bytes += out
        .record(KIND_STATE, &[&encode_state(&dev.state())])
        .map_err(write())?;
    let chunks = (geometry.size() / chunk) as usize;
    let everything = 0..chunks;
    send_runs(
        &mut out,
        dev.memory(),
        chunk,
        1,
        std::slice::from_ref(&everything),
        &mut round,
    )
    .map_err(write())?;
    round.wire_bytes += send_end(&mut out, 1).map_err(write())?;
    out.flush().map_err(write())?;
    round.elapsed = started.elapsed();
    Ok(TransferStats {
        rounds: 1,
        chunks: round.chunks,
        wire_bytes: out.offset,
        final_round: round,
        elapsed: round.elapsed,
    })
}

// ---------------------------------------------------------------------------------------
// Source side of a live migration

/// The source side of a live migration in progress. See the [module documentation](self).
///
/// `R` reads the destination's replies and `W` carries the stream; for a socket pass two
/// references to it (`&TcpStream` and `&UnixStream` are both `Read` and `Write`).
pub struct Outgoing<R: Read, W: Write> {
    replies: R,
    out: StreamWriter<W>,
    chunk: u64,
    geometry: Geometry,
    rounds: Vec<RoundStats>,
    started: Instant,
}

impl<R: Read, W: Write> std::fmt::Debug for Outgoing<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("chunk", &self.chunk)
            .field("offset", &self.out.offset)
            .field("rounds", &self.rounds)
            .finish_non_exhaustive()
    }
}

impl<R: Read, W: Write> Outgoing<R, W> {
    /// Starts migrating `dev`: marks its whole content dirty, sends the header and waits
    /// for the destination to accept the geometry.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Refused`] with the destination's reason (a size or geometry
    /// mismatch names both sizes and the destination's file), or [`MigrationError::Io`].
    pub fn start<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
        dev: &mut Pflash<M, DirtyTracking<S>, E>,
        replies: R,
        stream: W,
    ) -> Result<Self, MigrationError> {
        let started = Instant::now();
        let geometry = dev.geometry().clone();
        let chunk = dev.storage().chunk_len();
        let mut me = Outgoing {
            replies,
            out: StreamWriter::new(stream),
            chunk,
            geometry,
            rounds: Vec::new(),
            started,
        };
        dev.storage_mut().mark_all();
        let header = encode_header(&me.geometry, chunk);
        me.send(|out| out.raw(&header).and_then(|()| out.flush()))?;
        me.expect_reply(REPLY_ACCEPT, "accepting the migration")?;
        Ok(me)
    }

    /// Sends the chunks changed since the previous round (every chunk in the first round)
    /// while the guest keeps running. Call it as often as the VMM likes, for example until
    /// [`DirtyTracking::dirty_chunks`] is small enough for the downtime goal.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Io`], or [`MigrationError::Refused`] when the destination gave up.
    pub fn precopy_round<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
        &mut self,
        dev: &mut Pflash<M, DirtyTracking<S>, E>,
    ) -> Result<RoundStats, MigrationError> {
        let started = Instant::now();
        let round = self.rounds.len() as u32 + 1;
        let runs = dev.storage_mut().take_dirty();
        let mut stats = RoundStats {
            round,
            ..RoundStats::default()
        };
        let chunk = self.chunk;
        self.send(|out| {
            send_runs(out, dev.memory(), chunk, round, &runs, &mut stats)?;
            let mut p = [0u8; 16];
            p[0..4].copy_from_slice(&round.to_le_bytes());
            p[4..8].copy_from_slice(&(stats.chunks as u32).to_le_bytes());
            p[8..16].copy_from_slice(&stats.content_bytes.to_le_bytes());
            stats.wire_bytes += out.record(KIND_ROUND_END, &[&p])?;
            out.flush()
        })?;
        stats.elapsed = started.elapsed();
        self.rounds.push(stats);
        Ok(stats)
    }

    /// The final round, with the guest paused: the device registers, the chunks still
    /// dirty, and the end of the stream; then waits until the destination confirms that it
    /// verified everything. After `Ok` the destination owns the guest: the source must not
    /// run it again. After an error it may (and may migrate again later).
    ///
    /// # Errors
    ///
    /// [`MigrationError::Io`], or [`MigrationError::Refused`] when the destination found the
    /// stream bad.
    pub fn complete<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
        mut self,
        dev: &mut Pflash<M, DirtyTracking<S>, E>,
    ) -> Result<TransferStats, MigrationError> {
        let started = Instant::now();
        let round = self.rounds.len() as u32 + 1;
        let runs = dev.storage_mut().take_dirty();
        let mut stats = RoundStats {
            round,
            ..RoundStats::default()
        };
        let chunk = self.chunk;
        let state = encode_state(&dev.state());
        let sent = self.send(|out| {
            stats.wire_bytes += out.record(KIND_STATE, &[&state])?;
            send_runs(out, dev.memory(), chunk, round, &runs, &mut stats)?;
            stats.wire_bytes += send_end(out, round)?;
            out.flush()
        });
        let result = sent.and_then(|()| self.expect_reply(REPLY_DONE, "confirming the migration"));
        if result.is_err() {
            // The chunks of this round may not have arrived: keep them for a later migration
            // (which starts with every chunk anyway; this keeps the bitmap truthful).
            for run in runs {
                let bytes = run.start * chunk as usize..run.end * chunk as usize;
                dev.storage_mut().mark(bytes);
            }
        }
        result?;
        stats.elapsed = started.elapsed();
        self.rounds.push(stats);
        Ok(TransferStats {
            rounds: round,
            chunks: self.rounds.iter().map(|r| r.chunks).sum(),
            wire_bytes: self.out.offset,
            final_round: stats,
            elapsed: self.started.elapsed(),
        })
    }

    /// The pre-copy rounds sent so far.
    pub fn rounds(&self) -> &[RoundStats] {
        &self.rounds
    }

    /// Bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.out.offset
    }

    /// Runs `f` on the stream; a write error caused by the destination going away is
    /// replaced by the destination's reason when it left one.
    fn send(
        &mut self,
        f: impl FnOnce(&mut StreamWriter<W>) -> io::Result<()>,
    ) -> Result<(), MigrationError> {
        match f(&mut self.out) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Only when the peer is known to be gone: then reading cannot block.
                if matches!(
                    e.kind(),
                    ErrorKind::BrokenPipe
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                ) {
                    if let Ok((REPLY_REFUSE, reason)) = read_reply(&mut self.replies) {
                        return Err(MigrationError::Refused(reason));
                    }
                }
                Err(io_error("sending the migration stream")(e))
            }
        }
    }

    fn expect_reply(&mut self, code: u8, what: &str) -> Result<(), MigrationError> {
        match read_reply(&mut self.replies) {
            Ok((c, _)) if c == code => Ok(()),
            Ok((REPLY_REFUSE, reason)) => Err(MigrationError::Refused(reason)),
            Ok((c, _)) => Err(MigrationError::Corrupt {
                offset: 0,
                what: format!("the destination answered with code {c} instead of {what}"),
            }),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(MigrationError::Io {
                context: format!("waiting for the destination {what}"),
                error: io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the destination closed the connection",
                ),
            }),
            Err(e) => Err(io_error(format!("waiting for the destination {what}"))(e)),
        }
    }
}

fn read_reply<R: Read>(r: &mut R) -> io::Result<(u8, String)> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let len = usize::from(u16_at(&head, 6));
    let mut rest = vec![0u8; len + 4];
    r.read_exact(&mut rest)?;
    let mut crc = Hasher::new();
    crc.update(&head);
    crc.update(&rest[..len]);
    if head[..4] != REPLY_MAGIC || crc.finalize() != u32_at(&rest, len) {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "the destination's reply is not a pflash migration reply",
        ));
    }
    Ok((head[4], String::from_utf8_lossy(&rest[..len]).into_owned()))
}

fn write_reply<W: Write>(w: &mut W, code: u8, message: &str) -> io::Result<()> {
    let message = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
    let mut frame = Vec::with_capacity(12 + message.len());
    frame.extend_from_slice(&REPLY_MAGIC);
    frame.extend_from_slice(&[code, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_le_bytes());
    frame.extend_from_slice(message);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&frame)?;
    w.flush()
}

// ---------------------------------------------------------------------------------------
// Destination side

/// Reading side: offsets, sequence numbers and the whole-stream CRC.
struct StreamReader<R: Read> {
    r: BufReader<R>,
    stream_crc: Hasher,
    offset: u64,
    seq: u32,
}

impl<R: Read> StreamReader<R> {
    fn read(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), MigrationError> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.stream_crc.update(buf);
                self.offset += buf.len() as u64;
                Ok(())
            }
            // A reset is a source that died with our answer unread: its stream ends there.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                ) =>
            {
                Err(MigrationError::Truncated {
                    offset: self.offset,
                    what,
                })
            }
            Err(e) => Err(io_error("reading the migration stream")(e)),
        }
    }
}

fn corrupt(offset: u64, what: impl Into<String>) -> MigrationError {
    MigrationError::Corrupt {
        offset,
        what: what.into(),
    }
}

/// Refuses a stream this build cannot read: one that needs a newer reader, or one older than
/// [`OLDEST_READABLE_VERSION`].
fn check_version(version: u16, needs: u16) -> Result<(), MigrationError> {
    if needs > VERSION || needs == 0 || version < needs || version < OLDEST_READABLE_VERSION {
        return Err(MigrationError::Version { version, needs });
    }
    Ok(())
}

/// Checks the magic, the version and the CRC of a header, in that order, and decodes it.
fn decode_header(h: &[u8; HEADER_LEN + 4]) -> Result<(Geometry, u64), MigrationError> {
    if h[..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[..8]);
        return Err(MigrationError::Foreign { found });
    }
    let (version, needs) = (u16_at(h, 8), u16_at(h, 10));
    check_version(version, needs)?;
    if crc32fast::hash(&h[..HEADER_LEN]) != u32_at(h, HEADER_LEN) {
        return Err(corrupt(0, "header CRC mismatch"));
    }
    if u32_at(h, 12) != 0 || h[42..44] != [0; 2] || h[40] > 1 || h[31] > 1 {
        return Err(corrupt(0, "unknown header flags"));
    }
    let compat = if version == 1 {
        // Version 1 had no compatibility byte: its writers modelled QEMU 7.2 only.
        if h[41] != 0 {
            return Err(corrupt(0, "unknown header flags"));
        }
        Compat::Qemu7_2
    } else {
        Compat::from_wire_code(h[41]).ok_or_else(|| {
            corrupt(
                41,
                format!(
                    "unknown QEMU compatibility code {} (this build knows 1 qemu-7.2 and 2 \
                     qemu-10.0)",
                    h[41]
                ),
            )
        })?
    };
    let geometry = Geometry {
        sector_len: u64_at(h, 16),
        num_blocks: u32_at(h, 24),
        bank_width: h[28],
        device_width: h[29],
        max_device_width: h[30],
        big_endian: h[31] == 1,
        id: [u16_at(h, 32), u16_at(h, 34), u16_at(h, 36), u16_at(h, 38)],
        read_only: h[40] == 1,
        compat,
    };
    Ok((geometry, u64::from(u32_at(h, 44))))
}

/// Compares the incoming geometry with the local one.
fn check_geometry(
    incoming: &Geometry,
    local: &Geometry,
    backing: &Path,
) -> Result<(), MigrationError> {
    if incoming.size() != local.size() {
        return Err(MigrationError::SizeMismatch {
            backing: backing.to_path_buf(),
            incoming: incoming.size(),
            local: local.size(),
        });
    }
    let mut differences = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            differences.push(format!("{name} is {a} incoming, {b} locally"));
        }
    };
    field(
        "sector length",
        format!("{:#x}", incoming.sector_len),
        format!("{:#x}", local.sector_len),
    );
    field(
        "bank width",
        incoming.bank_width.to_string(),
        local.bank_width.to_string(),
    );
    field(
        "device width",
        incoming.device_width.to_string(),
        local.device_width.to_string(),
    );
    field(
        "max device width",
        incoming.max_device_width.to_string(),
        local.max_device_width.to_string(),
    );
    field(
        "big-endian",
        incoming.big_endian.to_string(),
        local.big_endian.to_string(),
    );
    field(
        "ids",
        format!("{:#x?}", incoming.id),
        format!("{:#x?}", local.id),
    );
    field(
        "read-only",
        incoming.read_only.to_string(),
        local.read_only.to_string(),
    );
    if differences.is_empty() {
        Ok(())
    } else {
        Err(MigrationError::GeometryMismatch {
            backing: backing.to_path_buf(),
            differences: differences.join("; "),
        })
    }
}

/// A device received from a stream: geometry, content and registers, verified, ready to be
/// given a storage and events with [`Incoming::into_device`].
#[derive(Debug)]
pub struct Incoming {
    device: Pflash<Vec<u8>, NoStorage, NoEvents>,
    stats: TransferStats,
    source_compat: Compat,
}

impl Incoming {
    /// The received content.
    pub fn memory(&self) -> &[u8] {
        self.device.memory()
    }

    /// The received registers.
    pub fn state(&self) -> PflashState {
        self.device.state()
    }

    /// The geometry (equal to the local one, or the stream would have been refused; its
    /// [`compat`](Geometry::compat) is the local one, see [`source_compat`](Self::source_compat)).
    pub fn geometry(&self) -> &Geometry {
        self.device.geometry()
    }

    /// The QEMU compatibility the source's device ran: the local one unless the mismatch was
    /// accepted with [`IncomingOptions::accept_compat_mismatch`] (`qemu-7.2` for a version-1
    /// stream).
    pub fn source_compat(&self) -> Compat {
        self.source_compat
    }

    /// What the stream carried: rounds, chunks (resends included), bytes.
    pub fn stats(&self) -> TransferStats {
        self.stats
    }

    /// The device, resuming exactly where the source stopped. For a migration destination
    /// pass a [`Deferred`] storage, so that nothing reaches the file before [`commit`].
    pub fn into_device<S: Storage, E: PflashEvents>(
        self,
        storage: S,
        events: E,
    ) -> Pflash<Vec<u8>, S, E> {
        let state = self.device.state();
        let geometry = self.device.geometry().clone();
        let (content, _, _) = self.device.into_parts();
        match Pflash::from_state(geometry, content, &state, storage, events) {
            Ok(dev) => dev,
            // The same geometry, content and state made a device when the stream was read.
            Err(e) => unreachable!("a verified device state was refused: {e}"),
        }
    }
}

/// Parse state of the incoming record sequence.
enum Phase {
    /// In pre-copy round `n`, having received `chunks` chunks of it.
    Precopy { round: u32, chunks: u64 },
    /// In the final round `n`, after the device state.
    Final { round: u32, state: PflashState },
}

/// Reads a whole stream into a verified [`Incoming`]. `accepted` runs once the header
/// passed the geometry check.
fn receive<R: Read>(
    reader: R,
    local: &Geometry,
    backing: &Path,
    options: &IncomingOptions,
    accepted: impl FnOnce() -> Result<(), MigrationError>,
) -> Result<(Incoming, BufReader<R>), MigrationError> {
    let started = Instant::now();
    let mut s = StreamReader {
        r: BufReader::with_capacity(64 << 10, reader),
        stream_crc: Hasher::new(),
        offset: 0,
        seq: 0,
    };
    let mut header = [0u8; HEADER_LEN + 4];
    // The magic first, so that a short foreign stream is called foreign, not truncated.
    s.read(&mut header[..8], "the header")?;
    if header[..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&header[..8]);
        return Err(MigrationError::Foreign { found });
    }
    s.read(&mut header[8..12], "the header")?;
    let (version, needs) = (u16_at(&header, 8), u16_at(&header, 10));
    check_version(version, needs)?;
    s.read(&mut header[12..], "the header")?;
    let (geometry, chunk) = decode_header(&header)?;
    check_geometry(&geometry, local, backing)?;
    if geometry.compat != local.compat && !options.accept_compat_mismatch {
        return Err(MigrationError::CompatMismatch {
            backing: backing.to_path_buf(),
            incoming: geometry.compat,
            local: local.compat,
        });
    }
    let source_compat = geometry.compat;
    let size = local.size();
    if chunk == 0 || !chunk.is_power_of_two() || size % chunk != 0 || chunk > MAX_RUN_BYTES {
        return Err(corrupt(44, format!("bad chunk length {chunk}")));
    }
    accepted()?;

    let chunks = size / chunk;
    let mut content = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    let mut covered = vec![false; chunks as usize];
    let mut uncovered = chunks;
    let mut total_chunks = 0u64;
    let mut phase = Phase::Precopy {
        round: 1,
        chunks: 0,
    };
    loop {
        let at = s.offset;
        let crc_before = s.stream_crc.clone();
        let mut head = [0u8; RECORD_HEADER_LEN];
        s.read(&mut head, "a record header")?;
        let (kind, flags, seq, len) = (head[0], head[1], u32_at(&head, 4), u32_at(&head, 8));
        if u16_at(&head, 2) != 0 || flags & !FLAG_SKIPPABLE != 0 {
            return Err(corrupt(at, "record header reserved bits are set"));
        }
        if seq != s.seq {
            return Err(corrupt(
                at,
                format!(
                    "record number {seq} where {} was due (records reordered, lost or repeated)",
                    s.seq
                ),
            ));
        }
        if len > MAX_PAYLOAD {
            return Err(corrupt(at, format!("record length {len} is too large")));
        }
        let mut crc = Hasher::new();
        crc.update(&head);
        let len = len as usize;
        // Chunk data goes straight into the content: a bad CRC fails the whole stream and
        // the content is never used.
        let mut small = Vec::new();
        let mut target = None;
        if kind == KIND_CHUNKS {
            if len < CHUNKS_PREFIX_LEN {
                return Err(corrupt(at, "chunk record too short"));
            }
            let mut prefix = [0u8; CHUNKS_PREFIX_LEN];
            s.read(&mut prefix, "a chunk record")?;
            crc.update(&prefix);
            let (round, first, count) =
                (u32_at(&prefix, 0), u64_at(&prefix, 4), u32_at(&prefix, 12));
            let count = u64::from(count);
            let bytes = count.saturating_mul(chunk);
            if (len - CHUNKS_PREFIX_LEN) as u64 != bytes
                || first.checked_add(count).is_none_or(|end| end > chunks)
            {
                return Err(corrupt(
                    at,
                    "chunk record outside the flash or of the wrong length",
                ));
            }
            let expected_round = match &phase {
                Phase::Precopy { round, .. } | Phase::Final { round, .. } => *round,
            };
            if round != expected_round {
                return Err(corrupt(
                    at,
                    format!("chunk record of round {round} in round {expected_round}"),
                ));
            }
            let range = (first * chunk) as usize..((first + count) * chunk) as usize;
            s.read(&mut content[range.clone()], "a chunk record")?;
            crc.update(&content[range]);
            target = Some((first, count));
        } else {
            small.resize(len, 0);
            s.read(&mut small, "a record")?;
            crc.update(&small);
        }
        let mut sum = [0u8; 4];
        s.read(&mut sum, "a record CRC")?;
        if crc.finalize() != u32::from_le_bytes(sum) {
            return Err(corrupt(at, format!("CRC mismatch in record number {seq}")));
        }
        s.seq += 1;

        match (kind, &mut phase) {
            (KIND_CHUNKS, phase) => {
                let Some((first, count)) = target else {
                    unreachable!("chunk records set their target")
                };
                for c in first..first + count {
                    if !std::mem::replace(&mut covered[c as usize], true) {
                        uncovered -= 1;
                    }
                }
                total_chunks += count;
                if let Phase::Precopy { chunks, .. } = phase {
                    *chunks += count;
                }
            }
            (KIND_ROUND_END, Phase::Precopy { round, chunks }) => {
                if small.len() != 16 || u32_at(&small, 0) != *round {
                    return Err(corrupt(at, "round end record does not match the round"));
                }
                if u64::from(u32_at(&small, 4)) != *chunks {
                    return Err(corrupt(at, "round end record counts other chunks"));
                }
                *round += 1;
                *chunks = 0;
            }
            (KIND_STATE, Phase::Precopy { round, .. }) => {
                let state = decode_state(&small).map_err(|e| corrupt(at, e))?;
                phase = Phase::Final {
                    round: *round,
                    state,
                };
            }
            (KIND_END, Phase::Final { round, state }) => {
                let stream_crc = crc_before.finalize();
                if small.len() != 12 {
                    return Err(corrupt(at, "end record of the wrong length"));
                }
                if u32_at(&small, 0) != stream_crc {
                    return Err(corrupt(at, "whole-stream CRC mismatch"));
                }
                if u32_at(&small, 4) != seq || u32_at(&small, 8) != *round {
                    return Err(corrupt(at, "end record counts other records or rounds"));
                }
                if uncovered != 0 {
                    return Err(corrupt(
                        at,
                        format!("{uncovered} chunks of the content were never sent"),
                    ));
                }
                let state = std::mem::take(state);
                let device =
                    Pflash::from_state(local.clone(), content, &state, NoStorage, NoEvents)
                        .map_err(MigrationError::State)?;
                let stats = TransferStats {
                    rounds: *round,
                    chunks: total_chunks,
                    wire_bytes: s.offset,
                    final_round: RoundStats::default(),
                    elapsed: started.elapsed(),
                };
                return Ok((
                    Incoming {
                        device,
                        stats,
                        source_compat,
                    },
                    s.r,
                ));
            }
            (kind, _) if flags & FLAG_SKIPPABLE != 0 && !matches!(kind, 1..=4) => {}
            (KIND_ROUND_END | KIND_STATE | KIND_END, _) => {
                return Err(corrupt(at, format!("record of kind {kind} out of place")))
            }
            (kind, _) => return Err(corrupt(at, format!("unknown record kind {kind}"))),
        }
    }
}

/// The destination side of a live migration: receives the stream from `stream`, answering
/// on `replies`, into a verified [`Incoming`].
///
/// The incoming geometry is compared with `local` (the destination's device) before
/// anything else; `backing` names the destination's file in errors. Nothing is written to
/// any file: make the device with [`Incoming::into_device`] and a [`Deferred`] storage, and
/// [`commit`] once the source has stopped.
///
/// On an error the source is told why (best effort) so that it reports it and keeps
/// running.
///
/// # Errors
///
/// [`MigrationError::SizeMismatch`] or [`MigrationError::GeometryMismatch`];
/// [`MigrationError::CompatMismatch`] when the source ran another QEMU compatibility (see
/// [`incoming_with`] to accept that); for a bad stream [`MigrationError::Foreign`],
/// [`MigrationError::Version`], [`MigrationError::Truncated`], [`MigrationError::Corrupt`]
/// or [`MigrationError::State`]; [`MigrationError::Io`].
pub fn incoming<R: Read, W: Write>(
    stream: R,
    replies: W,
    local: &Geometry,
    backing: &Path,
) -> Result<Incoming, MigrationError> {
    incoming_with(stream, replies, local, backing, &IncomingOptions::default())
}

/// What a destination tolerates beyond an exact match ([`incoming_with`], [`load_with`]).
/// The default tolerates nothing.
///
/// ```
/// use pflash::migration::IncomingOptions;
///
/// let strict = IncomingOptions::default();
/// assert!(!strict.accept_compat_mismatch);
/// let lenient = IncomingOptions { accept_compat_mismatch: true };
/// # let _ = lenient;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncomingOptions {
    /// Accept a source whose device behaved like another QEMU release: the device resumes
    /// with the destination's [`Geometry::compat`] instead of failing with
    /// [`MigrationError::CompatMismatch`].
    pub accept_compat_mismatch: bool,
}

/// [`incoming`] with `options`.
///
/// ```
/// use pflash::migration::{self, DirtyTracking, IncomingOptions, MigrationError, Outgoing};
/// use pflash::{Compat, Geometry, NoEvents, NoStorage, Pflash};
/// use std::os::unix::net::UnixStream;
/// use std::path::Path;
///
/// let (src_end, dst_end) = UnixStream::pair().unwrap();
/// let g = Geometry::q35(8192).unwrap();
/// let source = std::thread::spawn(move || {
///     let old = g.with_compat(Compat::Qemu7_2);
///     let storage = DirtyTracking::new(NoStorage, &old);
///     let mut dev = Pflash::new(old, vec![0xff; 8192], storage, NoEvents).unwrap();
///     let mut out = Outgoing::start(&mut dev, &src_end, &src_end).unwrap();
///     out.complete(&mut dev).unwrap();
/// });
/// let local = Geometry::q35(8192).unwrap(); // QEMU 10.0
/// let options = IncomingOptions { accept_compat_mismatch: true };
/// let received =
///     migration::incoming_with(&dst_end, &dst_end, &local, Path::new("vars.fd"), &options).unwrap();
/// source.join().unwrap();
/// assert_eq!(received.source_compat(), Compat::Qemu7_2);
/// assert_eq!(received.geometry().compat, Compat::Qemu10_0);
/// ```
///
/// # Errors
///
/// As for [`incoming`], without [`MigrationError::CompatMismatch`] if `options` accept it.
pub fn incoming_with<R: Read, W: Write>(
    stream: R,
    mut replies: W,
    local: &Geometry,
    backing: &Path,
    options: &IncomingOptions,
) -> Result<Incoming, MigrationError> {
    let result = receive(stream, local, backing, options, || {
        // A source that cannot hear the answer is gone: the next read tells how far its
        // stream got, which is the more useful error, so the write error is not fatal.
        let _ = write_reply(&mut replies, REPLY_ACCEPT, "");
        Ok(())
    });
    match result {
        Ok((incoming, _)) => {
            write_reply(&mut replies, REPLY_DONE, "")
                .map_err(io_error("confirming the migration to the source"))?;
            Ok(incoming)
        }
        Err(e) => {
            // Best effort: the source may be gone, which is often why we are here.
            let _ = write_reply(&mut replies, REPLY_REFUSE, &e.to_string());
            Err(e)
        }
    }
}

/// Restores an offline snapshot written by [`save`] for a device of geometry `local`
/// (`backing` names its file in errors). The snapshot must end right after its end record.
///
/// # Errors
///
/// As for [`incoming`].
pub fn load<R: Read>(
    snapshot: R,
    local: &Geometry,
    backing: &Path,
) -> Result<Incoming, MigrationError> {
    load_with(snapshot, local, backing, &IncomingOptions::default())
}

/// [`load`] with `options` (for example to restore a QEMU 7.2 snapshot into a QEMU 10.0
/// device).
///
/// # Errors
///
/// As for [`incoming_with`].
pub fn load_with<R: Read>(
    snapshot: R,
    local: &Geometry,
    backing: &Path,
    options: &IncomingOptions,
) -> Result<Incoming, MigrationError> {
    let (incoming, mut rest) = receive(snapshot, local, backing, options, || Ok(()))?;
    let mut extra = [0u8; 1];
    match rest.read(&mut extra) {
        Ok(0) => Ok(incoming),
        Ok(_) => Err(corrupt(
            incoming.stats.wire_bytes,
            "bytes follow the end record",
        )),
        Err(e) => Err(io_error("reading the snapshot")(e)),
    }
}

// ---------------------------------------------------------------------------------------
// Commit point

/// The storage of a migration destination until its commit point: nothing is written, the
/// guest is served from the device's memory. [`Deferred::attach`] (done by [`commit`])
/// makes it forward to the real storage from then on.
///
/// Why not buffer the changes: the commit writes the whole content anyway, so every change
/// made before it is included without keeping a log.
#[derive(Debug)]
pub struct Deferred<S> {
    inner: Option<S>,
    deferred_changes: u64,
}

impl<S> Default for Deferred<S> {
    fn default() -> Self {
        Deferred {
            inner: None,
            deferred_changes: 0,
        }
    }
}

impl<S> Deferred<S> {
    /// Nothing attached yet: changes stay in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the storage is attached (the commit happened).
    pub fn is_committed(&self) -> bool {
        self.inner.is_some()
    }

    /// Changes made before the commit (held in memory only).
    pub fn deferred_changes(&self) -> u64 {
        self.deferred_changes
    }

    /// Attaches `storage`, which must already hold the device's whole content. Use
    /// [`commit`] for a file.
    pub fn attach(&mut self, storage: S) {
        self.inner = Some(storage);
    }

    /// The attached storage.
    pub fn get(&self) -> Option<&S> {
        self.inner.as_ref()
    }

    /// The attached storage, mutably.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.inner.as_mut()
    }

    /// The attached storage, if any.
    pub fn into_inner(self) -> Option<S> {
        self.inner
    }
}

impl<S: Storage> Storage for Deferred<S> {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        match &mut self.inner {
            Some(s) => s.record_change(content, range),
            None => {
                self.deferred_changes += 1;
                Ok(())
            }
        }
    }

    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError> {
        match &mut self.inner {
            Some(s) => s.flush_point(content),
            None => Ok(()),
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Bytes written.
    pub bytes: u64,
    /// `true` for a regular file replaced by rename; `false` for a block device written in
    /// place.
    pub atomic: bool,
    /// Time taken, fsyncs included.
    pub elapsed: Duration,
}

/// The commit point of a migration destination backed by a file: writes the device's whole
/// content to `path` (see [`commit_file`]) and attaches the file storage, so that later
/// changes are persisted as usual. Call it once the destination owns the file, after the
/// source has stopped.
///
/// # Errors
///
/// As for [`commit_file`]; the device keeps running from memory and the commit can be
/// retried. Committing twice is an error.
pub fn commit<M: AsRef<[u8]> + AsMut<[u8]>, E: PflashEvents>(
    dev: &mut Pflash<M, Deferred<FileStorage>, E>,
    path: &Path,
    durability: Durability,
) -> Result<CommitStats, StorageError> {
    commit_with(dev, path, durability, Ok)
}

/// [`commit`] for a destination whose storage wraps the file backend, such as
/// [`BackgroundStorage`](crate::BackgroundStorage): `wrap` turns the committed
/// [`FileStorage`] into the storage to attach.
///
/// ```no_run
/// # fn f(dev: &mut pflash::Pflash<Vec<u8>, pflash::migration::Deferred<pflash::BackgroundStorage>>) -> Result<(), pflash::StorageError> {
/// use pflash::{BackgroundStorage, Durability};
/// pflash::migration::commit_with(dev, "vars.fd".as_ref(), Durability::FlushPoints, |file| {
///     BackgroundStorage::spawn(file, Default::default())
/// })?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As for [`commit`], or what `wrap` returns (the file is committed then).
pub fn commit_with<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
    dev: &mut Pflash<M, Deferred<S>, E>,
    path: &Path,
    durability: Durability,
    wrap: impl FnOnce(FileStorage) -> Result<S, StorageError>,
) -> Result<CommitStats, StorageError> {
    if dev.storage().is_committed() {
        return Err(StorageError {
            context: format!("{}: cannot commit", path.display()),
            source: io::Error::new(
                ErrorKind::AlreadyExists,
                "the migration is already committed",
            ),
        });
    }
    let (storage, stats) = commit_file(path, dev.memory(), durability)?;
    dev.storage_mut().attach(wrap(storage)?);
    Ok(stats)
}

/// Writes `content` to the flash backing file `path` and returns the open, locked
/// [`FileStorage`] for it.
///
/// - A regular file (or a missing one) is replaced atomically with [`safefile::replace_with`]:
///   the content goes to a new file in the same directory, locked, with the old file's
///   permissions and owner, which is fsync'ed, renamed over `path`, and the directory
///   fsync'ed. A crash leaves either the old file or the new one, never a mix. A symlink is
///   refused, and so is a replacement whose owner cannot be kept (the VMM runs as another
///   user than the file's and not as root).
/// - A block device is written in place, then fsync'ed (it cannot be renamed).
///
/// Refuses while another process holds the file's lock (the migration source has not
/// stopped yet). `durability` is the policy of the returned storage; the commit itself is
/// always synced.
///
/// # Errors
///
/// Naming the file. A regular-file commit that fails before the rename leaves `path`
/// untouched; one that fails after it (fsync of the directory) has replaced it.
pub fn commit_file(
    path: &Path,
    content: &[u8],
    durability: Durability,
) -> Result<(FileStorage, CommitStats), StorageError> {
    let started = Instant::now();
    let error = |what: &str| {
        let context = format!("{}: {what}", path.display());
        move |source| StorageError { context, source }
    };
    let old = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(error("cannot stat")(e)),
    };
    if let Some(meta) = &old {
        if meta.file_type().is_block_device() {
            let mut storage = FileStorage::open(path, content.len(), false, durability)?;
            storage.write_all(content)?;
            // write_all skips the sync under Durability::None; a commit is always durable.
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(error("cannot open"))?;
            file.sync_data().map_err(error("cannot fsync"))?;
            let stats = CommitStats {
                bytes: content.len() as u64,
                atomic: false,
                elapsed: started.elapsed(),
            };
            return Ok((storage, stats));
        }
        // Opening a FIFO for the lock probe would block until a writer comes; a character
        // device or a directory is no flash either.
        if !meta.file_type().is_file() {
            return Err(error("not a regular file or a block device")(
                io::Error::new(
                    ErrorKind::InvalidInput,
                    "refusing to commit the flash content to it",
                ),
            ));
        }
        // Probe the lock: replacing a file that a running source still writes would lose
        // its last writes.
        let probe = File::open(path).map_err(error("cannot open"))?;
        match rustix::fs::flock(&probe, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(error(
                    "locked by another process (has the migration source stopped?)",
                )(e.into()))
            }
            Err(e) => return Err(error("cannot lock")(e.into())),
        }
    }
    // The new file is locked before it takes the name, so it is never visible unlocked.
    let file = safefile::replace_with(path, content, |file| {
        rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)
    })
    .map_err(|e| match e {
        safefile::SafeFileError::Io {
            path,
            action,
            source,
        } => StorageError {
            context: format!("{}: {action}", path.display()),
            source,
        },
        safefile::SafeFileError::Owner {
            path,
            uid,
            gid,
            source,
        } => StorageError {
            context: format!(
                "{}: cannot keep its owner {uid}:{gid} for the committed file",
                path.display()
            ),
            source,
        },
        // The destination's file holds the migrated content already; only the directory
        // entry may not survive a host crash. Said as such, not as a failed commit.
        safefile::SafeFileError::NotDurable { path, source } => StorageError {
            context: format!(
                "{}: the committed content is in place but may not be durable: fsync of {} failed",
                path.display(),
                source.dir.display()
            ),
            source: source.error,
        },
        other => StorageError {
            context: format!("{}: cannot commit", path.display()),
            source: io::Error::new(ErrorKind::InvalidInput, other.to_string()),
        },
    })?;
    // The new file is already locked through this same open file, so taking the lock
    // again cannot fail on a third party.
    let storage = FileStorage::from_file(file, path, content.len(), false, durability)?;
    let stats = CommitStats {
        bytes: content.len() as u64,
        atomic: true,
        elapsed: started.elapsed(),
    };
    Ok((storage, stats))
}
