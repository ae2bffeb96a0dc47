//! The management side of nvram: safe file handling and the views the `nvram` command prints.
//!
//! The format itself lives in the `varstore` crate; this crate adds what a tool needs around
//! it and stays free of argument parsing.
//!
//! ```
//! let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
//! let store = varstore::Varstore::parse(&image).unwrap();
//! let report = nvram::inspect::CheckReport::of_store(&store);
//! assert_eq!(report.exit_code(), 0);
//! ```

pub mod apply;
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
pub mod upgrade;
