//! The destination side: receiving and verifying a stream.

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::time::Instant;

use crc32fast::Hasher;
use pflash::{
    Compat, Geometry, GeometryError, NoEvents, NoStorage, Pflash, PflashEvents, PflashState,
    Storage,
};

use crate::outgoing::{RoundStats, TransferStats};
use crate::wire::*;
use crate::*;

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
    /// pass a [`Deferred`](pflash::Deferred) storage, so that nothing reaches the file before [`commit`](pflash::migration::commit).
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

    /// The device over the VMM's own `memory` (its mapping of the flash): the received
    /// content is copied into it once, then the device resumes as with
    /// [`into_device`](Self::into_device).
    ///
    /// # Errors
    ///
    /// [`GeometryError::ContentLength`] if `memory` is not the flash's size.
    pub fn into_device_in<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
        self,
        mut memory: M,
        storage: S,
        events: E,
    ) -> Result<Pflash<M, S, E>, GeometryError> {
        let received = self.device.memory();
        let len = memory.as_ref().len() as u64;
        if len != received.len() as u64 {
            return Err(GeometryError::ContentLength {
                expected: received.len() as u64,
                got: len,
            });
        }
        memory.as_mut().copy_from_slice(received);
        let state = self.device.state();
        Pflash::from_state(
            self.device.geometry().clone(),
            memory,
            &state,
            storage,
            events,
        )
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
/// any file: make the device with [`Incoming::into_device`] and a [`Deferred`](pflash::Deferred) storage, and
/// [`commit`](pflash::migration::commit) once the source has stopped.
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
/// use pflash_migration::IncomingOptions;
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
/// use pflash::DirtyTracking;
/// use pflash_migration::{self as migration, IncomingOptions, Outgoing};
/// use pflash::{Compat, Geometry, GeometryError, NoEvents, NoStorage, Pflash};
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
