//! What a VMM's own migration needs from the device: dirty tracking, and the destination's
//! deferred storage with its explicit commit point. The device's registers are
//! [`PflashState`](crate::PflashState) ([`Pflash::state`](crate::Pflash::state) /
//! [`Pflash::from_state`](crate::Pflash::from_state)) and its content is
//! [`Pflash::memory`](crate::Pflash::memory).
//!
//! The flash content lives in memory and is always up to date, so it travels with the device
//! state instead of being migrated as a disk (QEMU's choice for varstore flashes too). A
//! migration is therefore:
//!
//! 1. source: wrap the storage in [`DirtyTracking`]; [`DirtyTracking::mark_all`], then send
//!    the content by chunks ([`DirtyTracking::chunk_len`]) while the guest runs, each round
//!    sending what [`DirtyTracking::take_dirty`] returns;
//! 2. source, guest paused: send [`Pflash::state`](crate::Pflash::state) and the chunks
//!    still dirty;
//! 3. destination: build the device with [`Pflash::from_state`](crate::Pflash::from_state)
//!    over the received content and a [`Deferred`] storage, and run the guest from memory;
//! 4. destination, once the source has stopped and released the file: [`commit`] (or
//!    [`commit_with`] for a [`BackgroundStorage`](crate::BackgroundStorage)) replaces the
//!    file with the content, atomically for a regular file, and attaches the file storage.
//!
//! # Why the wire format is not here
//!
//! A VMM has its own migration channel, framing and versioning (Cloud Hypervisor's and
//! crosvm's snapshot formats, vhost-user's, QEMU's vmstate); what it needs from a device crate
//! is the state, the content and the dirty blocks, which are all here. The stream format,
//! replies and unix/TCP transports that `nvram flash replay --migrate-at` and
//! `nvram flash incoming` speak, and that a VMM without a channel of its own can reuse, are
//! in the `pflash-migration` crate, so that the core links no protocol code and no
//! transport. The commit point stays here: it is about the file, which this crate owns.

mod commit;
mod dirty;

pub use commit::{commit, commit_file, commit_with, CommitStats, Deferred};
pub use dirty::{chunk_len, DirtyTracking};
