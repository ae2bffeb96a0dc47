//! QEMU firmware descriptors (`docs/interop/firmware.json`) and firmware selection.
//!
//! Distributions describe each firmware build they ship in a small JSON file: which interface
//! it offers (`uefi`), for which architecture and machine types, how it is mapped (a split
//! executable + varstore *template* pair of flash images, a combined image, or stateless),
//! and its features (`secure-boot`, `enrolled-keys`, `requires-smm`, …). A VM manager picks
//! the first descriptor that fits the VM, in file-name order, as libvirt does. This module
//! reads them with the same lookup rules as QEMU and libvirt:
//!
//! - directories, lowest priority first: `/usr/share/qemu/firmware`, `/etc/qemu/firmware`,
//!   `$XDG_CONFIG_HOME/qemu/firmware` (default `~/.config/qemu/firmware`); the environment
//!   variable `NVRAM_FIRMWARE_DIRS` (colon-separated, same order) replaces that list;
//! - only `*.json` files; a file in a later directory overrides the same-named file in an
//!   earlier one, and an empty file masks it;
//! - the result is sorted by file name (the `NN-` prefix is the priority);
//! - unknown members and unknown feature names are ignored, as the schema requires of
//!   consumers; a file that is not a descriptor at all is skipped and reported, not fatal, so
//!   one broken package cannot stop every VM from starting.
//!
//! ```
//! use nvram::firmware::{Catalog, Criteria};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("60-test.json"), r#"{
//!     "description": "test", "interface-types": ["uefi"],
//!     "mapping": {"device": "flash",
//!                 "executable": {"filename": "/fw/CODE.fd", "format": "raw"},
//!                 "nvram-template": {"filename": "/fw/VARS.fd", "format": "raw"}},
//!     "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
//!     "features": ["acpi-s3", "some-future-feature"], "tags": []}"#).unwrap();
//! let catalog = Catalog::load(&[dir.path().to_path_buf()]);
//! let criteria = Criteria::uefi_varstore("x86_64").machine("pc-q35-7.2");
//! let chosen = catalog.select(&criteria).unwrap();
//! assert_eq!(chosen.name, "60-test.json");
//! assert_eq!(chosen.nvram_template().unwrap().filename, std::path::Path::new("/fw/VARS.fd"));
//! ```
//!
//! The module is in three parts, all re-exported here: descriptor parsing and loading
//! ([`Catalog`], [`Descriptor`], [`parse_descriptor`]), selection ([`Criteria`],
//! [`Catalog::select`], [`glob_match`]) and machine-type alias resolution
//! ([`resolve_machine_alias`]).

mod descriptor;
mod machine;
mod select;
mod template;

pub use descriptor::{
    parse_descriptor, search_dirs, Catalog, Descriptor, DescriptorError, Firmware, FlashFile,
    FlashMapping, Mapping, Skipped, Target, DIRS_ENV,
};
pub use machine::{
    is_versioned_machine, parse_machine_aliases, parse_machine_names, qemu_binary, qemu_target,
    resolve_machine_alias, MachineError, QemuFailure,
};
pub use select::{
    glob_match, raw_template, varstore_template, Criteria, FirmwareError, FlashMode, Mismatch,
};
pub use template::{host_arch, ChosenTemplate, FirmwareChoice};
