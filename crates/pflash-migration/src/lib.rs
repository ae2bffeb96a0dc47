//! The migration stream of the [`pflash`] device: offline snapshots and live migration with
//! iterative pre-copy, over any [`Read`](std::io::Read)/[`Write`](std::io::Write) pair, plus
//! unix-socket and TCP [`transport`]s. `nvram flash replay --migrate-at` and
//! `nvram flash incoming` speak it, and a VMM without a migration channel of its own can too.
//!
//! The device crate keeps what every VMM needs whatever its channel
//! ([`pflash::migration`]: dirty tracking, the destination's deferred storage and commit
//! point); this crate adds the framing, checksums, versioning and the source/destination
//! handshake, which a VMM with its own channel replaces with its own.
//!
//! # Pieces
//!
//! - [`Outgoing`]: the source side, over a device whose storage is wrapped in
//!   [`DirtyTracking`](pflash::DirtyTracking). [`Outgoing::start`] sends the header and waits
//!   for the destination to accept the geometry; [`Outgoing::precopy_round`] sends the chunks
//!   dirtied since the previous round (all of them in the first), as many times as the VMM
//!   wants while the guest runs; [`Outgoing::complete`], with the guest paused, sends the
//!   device registers and the chunks still dirty, and returns once the destination confirmed
//!   that it verified the whole stream. On any error the device is untouched and can be
//!   migrated again (a new migration starts with a full round).
//! - [`incoming`]: the destination side. It checks the incoming geometry against the local
//!   device's before anything else, receives the stream into memory, verifies it and returns
//!   an [`Incoming`] device image. Nothing is written to any file.
//! - then [`Deferred`](pflash::Deferred)(pflash::Deferred) storage until the source has stopped, and
//!   [`commit`](pflash::migration::commit)(pflash::migration::commit) (see [`pflash::migration`]).
//! - [`save`] and [`load`]: offline snapshot and restore, in the same format (a stream with
//!   no pre-copy round and no replies).
//!
//! ```
//! use pflash::{DirtyTracking, Deferred, Geometry, NoEvents, NoStorage, Pflash};
//! use pflash_migration::{incoming, Outgoing};
//! use std::os::unix::net::UnixStream;
//! use std::path::Path;
//!
//! let g = Geometry::q35(8192)?;
//! let (src_end, dst_end) = UnixStream::pair()?;
//! let local = g.clone();
//! let destination = std::thread::spawn(move || incoming(&dst_end, &dst_end, &local, Path::new("vars.fd")));
//!
//! let storage = DirtyTracking::new(NoStorage, &g);
//! let mut dev = Pflash::new(g, vec![0xff; 8192], storage, NoEvents)?;
//! let mut out = Outgoing::start(&mut dev, &src_end, &src_end)?;
//! out.precopy_round(&mut dev)?; // guest running
//! dev.write(0x10, &[0x10]);
//! dev.write(0x10, &[0x42]); // dirties one chunk; the guest stops in program mode
//! out.complete(&mut dev)?; // guest paused: registers and the dirty chunk
//!
//! let received = destination.join().unwrap()?;
//! let mut resumed = received.into_device(Deferred::<NoStorage>::new(), NoEvents);
//! resumed.write(0x10, &[0xff]);
//! assert_eq!(resumed.memory()[0x10], 0x42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! ([`Geometry::compat`](pflash::Geometry::compat)) right after the geometry, and refuses a difference with
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

#![warn(missing_docs)]

use std::io;
use std::path::PathBuf;

use pflash::{Compat, GeometryError, StorageError};

mod incoming;
mod outgoing;
pub mod transport;
mod wire;

pub use incoming::{incoming, incoming_with, load, load_with, Incoming, IncomingOptions};
pub use outgoing::{save, Outgoing, RoundStats, TransferStats};

/// First bytes of every stream.
pub const MAGIC: [u8; 8] = *b"PFLASHMG";
/// The format version this build writes (and the newest it reads; it reads version 1 too).
pub const VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// First bytes of every reply of the destination.
pub(crate) const REPLY_MAGIC: [u8; 4] = *b"PFLR";

pub(crate) const HEADER_LEN: usize = 48;
pub(crate) const RECORD_HEADER_LEN: usize = 12;
/// Content bytes per chunk record: large enough to amortise the framing, small enough that
/// a corrupt length cannot make the reader allocate much.
pub(crate) const MAX_RUN_BYTES: u64 = 1 << 20;
/// Largest payload a reader accepts before checking any CRC.
pub(crate) const MAX_PAYLOAD: u32 = 4 << 20;
pub(crate) const CHUNKS_PREFIX_LEN: usize = 16;
pub(crate) const STATE_PREFIX_LEN: usize = 44;

pub(crate) const KIND_CHUNKS: u8 = 1;
pub(crate) const KIND_ROUND_END: u8 = 2;
pub(crate) const KIND_STATE: u8 = 3;
pub(crate) const KIND_END: u8 = 4;
pub(crate) const FLAG_SKIPPABLE: u8 = 1;

pub(crate) const REPLY_ACCEPT: u8 = 1;
pub(crate) const REPLY_DONE: u8 = 2;
pub(crate) const REPLY_REFUSE: u8 = 3;

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

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> MigrationError {
    move |error| MigrationError::Io {
        context: context.into(),
        error,
    }
}
