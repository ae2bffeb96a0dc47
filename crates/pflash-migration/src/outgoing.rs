//! The source side: offline snapshots and live migration.

use std::io::{self, ErrorKind, Read, Write};
use std::ops::Range;
use std::time::{Duration, Instant};

use pflash::migration::{chunk_len, DirtyTracking};
use pflash::{Geometry, Pflash, PflashEvents, Storage};

use crate::wire::*;
use crate::*;

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

/// The source side of a live migration in progress. See the [crate documentation](crate).
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
    /// [`DirtyTracking::dirty_chunks`](pflash::DirtyTracking::dirty_chunks) is small enough for the downtime goal.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Io`], or [`MigrationError::Refused`] when the destination gave up.
    pub fn precopy_round<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
        &mut self,
        dev: &mut Pflash<M, DirtyTracking<S>, E>,
    ) -> Result<RoundStats, MigrationError> {
        let (started, mut stats) = self.open_round();
        let round = stats.round;
        let runs = dev.storage_mut().take_dirty();
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
        self.close_round(&mut stats, started);
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
        let (started, mut stats) = self.open_round();
        let round = stats.round;
        let runs = dev.storage_mut().take_dirty();
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
        self.close_round(&mut stats, started);
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

    /// The start time and the (still empty) statistics of the next round, numbered from 1.
    fn open_round(&self) -> (Instant, RoundStats) {
        let stats = RoundStats {
            round: self.rounds.len() as u32 + 1,
            ..RoundStats::default()
        };
        (Instant::now(), stats)
    }

    /// Records a sent round with its duration, the only place rounds are counted.
    fn close_round(&mut self, stats: &mut RoundStats, started: Instant) {
        stats.elapsed = started.elapsed();
        self.rounds.push(*stats);
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
