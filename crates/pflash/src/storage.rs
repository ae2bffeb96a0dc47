//! Persistence of the flash content.
//!
//! The device owns the content (one contiguous memory block) and tells its [`Storage`] about
//! every completed program or erase, in order, and about *flush points*: moments when a
//! sequence of operations has ended (the device is back in read-array mode, or an erase has
//! completed). A storage may write through at every change or coalesce changes until a flush
//! point, as long as its backing store always equals the content after some prefix of the
//! completed operations.

use std::ops::Range;

/// A persistence failure. The device reports it through
/// [`PflashEvents::storage_error`](crate::PflashEvents::storage_error) and sets the program or
/// erase error bit in its status register, as real flash would.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StorageError {
    /// What was being done, naming the backing file.
    pub context: String,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// Where the device's content is persisted.
pub trait Storage {
    /// `content[range]` was just changed by one completed program or erase operation.
    /// `content` is the whole, already updated, flash content.
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError>;

    /// A sequence of operations ended; coalesced changes should reach the backing store now.
    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError>;
}

/// Keeps the content in memory only (a VMM that persists it some other way, or tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStorage;

impl Storage for NoStorage {
    fn record_change(&mut self, _: &[u8], _: Range<usize>) -> Result<(), StorageError> {
        Ok(())
    }

    fn flush_point(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }
}
