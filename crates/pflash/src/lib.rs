//! A CFI 01 (Intel command set) NOR flash device model for VMMs, behaviourally equal to QEMU
//! 10.0's `cfi.pflash01`, or to QEMU 7.2's when asked ([`Compat`]; see
//! `docs/pflash-cfi01.md`).
//!
//! In the style of rust-vmm's vm-superio: [`Pflash`] is a plain struct with
//! `read(offset, &mut [u8])` / `write(offset, &[u8])`, generic over the memory that holds the
//! content (any `AsRef<[u8]> + AsMut<[u8]>`: the VMM's own mapping, or a `Vec<u8>`), a
//! [`PflashEvents`] hook trait (metrics, logging, and the array-mode notifications a VMM needs
//! to map the flash memory read-only) and a [`Storage`] backend that persists every program and
//! erase in order. Snapshot state is a separate plain struct, [`PflashState`].
//!
//!
//! # Wiring it into a VMM
//!
//! The VMM owns the flash memory (here a boxed slice standing for its page-aligned mapping),
//! maps it read-only into the guest while the device is in read-array mode, so that reads
//! cost no exit, and sends every MMIO exit that reaches the flash to [`Pflash::read`] /
//! [`Pflash::write`]. A [`BackgroundStorage`] persists the changes from a writer thread, so
//! the exit handler makes no system call. For live migration the storage is wrapped in
//! [`DirtyTracking`]; the VMM sends [`Pflash::state`] and the dirty chunks over its own
//! channel, and the destination runs from memory until its explicit commit point.
//!
//! ```
//! use pflash::migration::{commit_with, Deferred, DirtyTracking};
//! use pflash::{BackgroundStorage, Durability, FileStorage, Geometry, Pflash, PflashEvents};
//!
//! /// The VMM's mapping of the flash (an mmap'd, page-aligned region in a real VMM).
//! struct Mapping(Box<[u8]>);
//! impl AsRef<[u8]> for Mapping {
//!     fn as_ref(&self) -> &[u8] { &self.0 }
//! }
//! impl AsMut<[u8]> for Mapping {
//!     fn as_mut(&mut self) -> &mut [u8] { &mut self.0 }
//! }
//!
//! /// Keeps the guest's view right: a read-only memory slot in array mode (KVM_MEM_READONLY:
//! /// reads do not exit, writes exit as MMIO), no slot otherwise (every read exits).
//! #[derive(Default)]
//! struct Slot { mapped: bool }
//! impl PflashEvents for Slot {
//!     fn array_mode_changed(&mut self, array_mode: bool) {
//!         self.mapped = array_mode; // KVM_SET_USER_MEMORY_REGION: add or remove the slot
//!     }
//!     fn storage_error(&mut self, error: &pflash::StorageError) {
//!         eprintln!("flash: {error}"); // the guest sees the status error bit too
//!     }
//! }
//!
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("vars.fd");
//! # std::fs::write(&path, vec![0xff; 0x84000])?;
//! let geometry = Geometry::q35(0x84000)?;
//! let file = FileStorage::open(&path, 0x84000, false, Durability::FlushPoints)?;
//! let mut mapping = Mapping(vec![0; 0x84000].into_boxed_slice());
//! mapping.0.copy_from_slice(&file.read_content()?);
//! let storage = DirtyTracking::new(BackgroundStorage::spawn(file, Default::default())?, &geometry);
//! let mut flash = Pflash::new(geometry.clone(), mapping, storage, Slot { mapped: true })?;
//!
//! // MMIO exits: OVMF programs a byte; the slot goes away for the sequence and comes back.
//! flash.write(0x100, &[0x10]);
//! assert!(!flash.events().mapped);
//! flash.write(0x100, &[0x42]);
//! flash.write(0x100, &[0xff]);
//! assert!(flash.events().mapped);
//!
//! // Live migration over the VMM's own channel: pre-copy while the guest runs...
//! let chunk = flash.storage().chunk_len() as usize;
//! let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
//! let mut send_dirty = |flash: &mut Pflash<Mapping, DirtyTracking<BackgroundStorage>, Slot>| {
//!     for run in flash.storage_mut().take_dirty() {
//!         for c in run {
//!             sent.push((c, flash.memory()[c * chunk..(c + 1) * chunk].to_vec()));
//!         }
//!     }
//! };
//! flash.storage_mut().mark_all();
//! send_dirty(&mut flash);
//! flash.write(0x2000, &[0x10]); // the guest goes on: one chunk dirty again
//! flash.write(0x2000, &[0x24]);
//! // ...then, guest paused, the registers (mid-sequence here) and what is still dirty.
//! let state = flash.state();
//! send_dirty(&mut flash);
//!
//! // Destination: rebuild the content in its own mapping and resume from the registers; it
//! // maps the slot itself if the device is in array mode (from_state reports no event).
//! let mut received = Mapping(vec![0; 0x84000].into_boxed_slice());
//! for (c, bytes) in sent {
//!     received.0[c * chunk..(c + 1) * chunk].copy_from_slice(&bytes);
//! }
//! let mut dest = Pflash::from_state(geometry, received, &state, Deferred::new(), Slot::default())?;
//! dest.write(0x2000, &[0xff]); // runs from memory; nothing reaches the file yet
//!
//! // The source stops and releases the file (its writer drains); then the commit point.
//! drop(flash);
//! commit_with(&mut dest, &path, Durability::FlushPoints, |file| {
//!     BackgroundStorage::spawn(file, Default::default())
//! })?;
//! let file = std::fs::read(&path)?;
//! assert_eq!((file[0x100], file[0x2000]), (0x42, 0x24));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Features: `serde` (snapshot types, and the `serde_format` module) and `vm-device`
//! (rust-vmm's `MutDeviceMmio` for [`Pflash`]). The stream format and socket transports for
//! migrating between processes are in the `pflash-migration` crate; the MMIO trace format
//! in `pflash-trace`.
//!
//! Module map:
//! - `geometry`: the properties QEMU names (sector length, blocks, widths, ids, read-only), the
//!   QEMU release to behave like, and the presets for x86 q35 and the arm, riscv and loongarch
//!   `virt` machines;
//! - `compat`: the QEMU releases whose differences the device models;
//! - `device`: the command state machine; [`commands`]: the opcodes and status bits by name;
//! - [`storage`], [`file_storage`], [`background`]: the persistence contract, the file
//!   backend, and the writer thread;
//! - [`migration`]: what a VMM's migration needs (dirty tracking, the destination's deferred
//!   storage and commit point).

#![warn(missing_docs)]

pub mod background;
mod cfi;
pub mod commands;
mod compat;
mod device;
pub mod file_storage;
mod geometry;
pub mod migration;
#[cfg(feature = "serde")]
pub mod serde_format;
mod state;
pub mod storage;
#[cfg(feature = "vm-device")]
mod vm_device;

pub use background::{BackgroundOptions, BackgroundStats, BackgroundStorage, Wake};
pub use compat::{Compat, UnknownCompat};
pub use device::{NoEvents, Pflash, PflashEvents};
pub use file_storage::{Durability, FileStorage, StorageStats};
pub use geometry::{Geometry, GeometryError};
pub use migration::{Deferred, DirtyTracking};
pub use state::{PflashState, WriteBuffer};
pub use storage::{NoStorage, Storage, StorageError};
