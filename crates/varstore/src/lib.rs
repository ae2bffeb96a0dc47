//! Reading, validating and creating the edk2 NV variable store that OVMF, AAVMF and edk2's
//! riscv64 and loongarch64 QEMU platforms keep in their flash (`OVMF_VARS*.fd`,
//! `AAVMF_VARS*.fd`, `RISCV_VIRT_VARS.fd`, LoongArch's `QEMU_VARS.fd`).
//!
//! The reader borrows the image: [`Varstore::parse`] walks the records exactly as the firmware
//! does and reports every deviation as a [`Finding`] with its file offset, field and what the
//! firmware will do about it ([`FirmwareVerdict`]). Blank stores come from built-in
//! [`Layout`]s, byte-identical to the distribution templates.
//!
//! ```
//! use varstore::{Layout, Varstore};
//!
//! let image = Layout::by_name("ovmf-4m").unwrap().create();
//! assert_eq!(image.len(), 540672);
//! let store = Varstore::parse(&image)?;
//! assert!(store.is_healthy());
//! for variable in store.live_variables() {
//!     println!("{} {} {}", variable.guid, variable.name(), variable.data.len());
//! }
//! # Ok::<(), varstore::ParseError>(())
//! ```
//!
//! Section numbers in comments (`spec §7`) refer to the repository's `docs/varstore-format.md`.
#![warn(missing_docs)]

pub mod boot;
pub mod decode;
pub mod edit;
mod error;
mod finding;
pub mod format;
mod ftw;
pub mod guid;
pub mod json;
mod layout;
mod record;
pub mod secureboot;
mod store;

pub use error::{ErrorKind, ParseError};
pub use finding::{Finding, FirmwareVerdict, Severity};
pub use ftw::{FtwWorkingBlock, PendingWrite, WriteRecord};
pub use layout::{Layout, AAVMF, LAYOUTS, LOONGARCH64, OVMF_2M, OVMF_4M, RISCV64};
pub use record::{Attributes, EfiTime, RecordState, VariableRecord};
pub use store::{FvInfo, StoreFormat, StoreInfo, Varstore};
pub use uguid::Guid;
