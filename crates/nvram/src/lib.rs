//! The management side of nvram: what a VM manager, and the `nvram` command built on it, does
//! with the UEFI variable stores of its VMs, with typed inputs and typed errors (no message
//! names a command-line flag; the binary adds its own advice).
//!
//! The format itself lives in the `varstore` crate; this crate adds what a tool needs around
//! it and stays free of argument parsing. The entry points:
//!
//! - open a store in any format: [`files::read_store`] ([`container`] for raw, qcow2, JSON);
//! - edit one under the lock a running VM holds, all or nothing: [`edit::edit_file`] with
//!   [`varstore::edit::Editor::set`], [`edit::delete_by_name`], [`edit::import`];
//! - Secure Boot: [`secureboot::enroll`], [`secureboot::add`], [`secureboot::status`],
//!   [`secureboot::enroll_generated_pk`];
//! - a VM's store from a template or a firmware descriptor: [`prepare::prepare`],
//!   [`firmware::Catalog::template`]; a newer template's databases: [`upgrade::upgrade_with`];
//! - the same edit over a fleet: [`apply::apply_all`] ([`apply::parse_set`] for the
//!   `NAME[@GUID][:ATTRS]=KIND:VALUE` spelling), [`libvirt::apply_targets`] for libvirt's
//!   domains;
//! - checking: [`inspect::check_file`].
//!
//! ```
//! let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
//! let store = varstore::Varstore::parse(&image).unwrap();
//! let report = nvram::inspect::CheckReport::of_store(&store);
//! assert_eq!(report.health(), nvram::inspect::Health::Healthy);
//! ```
#![warn(missing_docs)]

pub mod apply;
pub mod awsstore;
pub mod certs;
pub mod container;
pub mod convert;
pub mod edit;
pub mod escape;
pub mod files;
pub mod firmware;
pub mod hook;
pub mod inspect;
pub mod jsonstore;
pub mod libvirt;
pub mod prepare;
pub mod secureboot;
pub mod shim;
pub mod upgrade;
