//! Dirty tracking for iterative pre-copy.

use std::ops::Range;

use crate::geometry::Geometry;
use crate::storage::{Storage, StorageError};

/// Dirty-tracking granule upper bound: finer than arm `virt`'s 256 KiB erase blocks, so a
/// one-byte change in the final round costs 4 KiB of downtime traffic, not 256 KiB.
const MAX_TRACKING_CHUNK: u64 = 4096;

/// The dirty-tracking granule for a geometry: the erase block, or 4 KiB if smaller.
pub fn chunk_len(geometry: &Geometry) -> u64 {
    geometry.sector_len.min(MAX_TRACKING_CHUNK)
}

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
