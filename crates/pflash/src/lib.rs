//! A CFI 01 (Intel command set) NOR flash device model for VMMs, behaviourally equal to QEMU
//! 10.0's `cfi.pflash01`, or to QEMU 7.2's when asked ([`Compat`]; see
//! `docs/pflash-cfi01.md`).
//!
//! In the style of rust-vmm's vm-superio: [`Pflash`] is a plain struct with
//! `read(offset, &mut [u8])` / `write(offset, &[u8])`, generic over a [`PflashEvents`] hook
//! trait (metrics, logging, and the array-mode notifications a VMM needs to map the flash
//! memory read-only) and a [`Storage`] backend that persists every program and erase in order.
//! Snapshot state is a separate plain struct, [`PflashState`].
//!
//! Module map:
//! - `geometry`: the properties QEMU names (sector length, blocks, widths, ids, read-only), the
//!   QEMU release to behave like, and the presets for x86 q35 and the arm, riscv and loongarch
//!   `virt` machines;
//! - `compat`: the QEMU releases whose differences the device models;
//! - `device`: the command state machine;
//! - `storage`: the persistence contract and the file backend;
//! - `migration`: what a VMM's migration needs (dirty tracking, the destination's deferred
//!   storage and commit point); the wire format and transports are in `pflash-migration`,
//!   the trace format in `pflash-trace`.

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

pub use background::{BackgroundOptions, BackgroundStats, BackgroundStorage};
pub use compat::{Compat, UnknownCompat};
pub use device::{NoEvents, Pflash, PflashEvents};
pub use file_storage::{Durability, FileStorage, StorageStats};
pub use geometry::{Geometry, GeometryError};
pub use migration::{Deferred, DirtyTracking};
pub use state::{PflashState, WriteBuffer};
pub use storage::{NoStorage, Storage, StorageError};
