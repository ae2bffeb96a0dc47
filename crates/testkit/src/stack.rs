//! The two QEMU + firmware stacks the tests run against (`docs/testing.md`).
//!
//! `scripts/install-test-deps` puts both in place on a Debian 12 machine without replacing
//! anything the machine has: the QEMUs are unpacked from Debian's packages into
//! `target/peers/qemu-*` and run through generated wrappers (`bin/qemu-system-*`) that point
//! them at their own data and modules.

use std::path::{Path, PathBuf};

/// A QEMU release with the edk2 firmware of the same Debian generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stack {
    /// Debian 12: QEMU 7.2 (bookworm) and edk2 2022.11 (Debian 12's `ovmf`,
    /// `qemu-efi-aarch64`, installed in `/usr/share/OVMF` and `/usr/share/AAVMF`).
    Debian12,
    /// Today's: QEMU 10.0 (bookworm-backports) and edk2 2025.02 (Debian 13's `ovmf`,
    /// `qemu-efi-aarch64`, `qemu-efi-riscv64`, `qemu-efi-loongarch64`, unpacked).
    Current,
}

impl Stack {
    /// Both stacks, oldest first.
    pub const ALL: [Stack; 2] = [Stack::Debian12, Stack::Current];

    /// The stack's name in test output and docs: `debian12` or `current`.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Debian12 => "debian12",
            Stack::Current => "current",
        }
    }

    /// The QEMU version, as `-version` prints its first two components.
    pub fn qemu_version(self) -> &'static str {
        match self {
            Stack::Debian12 => "7.2",
            Stack::Current => "10.0",
        }
    }

    /// The directory holding this stack's `qemu-system-*` wrappers; put it first on `PATH` of
    /// a program that looks QEMU up there (`nvram prepare --machine q35`).
    pub fn qemu_bin_dir(self) -> PathBuf {
        peers().join(format!("qemu-{}/bin", self.qemu_version()))
    }

    /// This stack's `qemu-system-<target>`, e.g. `qemu(“x86_64”)`.
    ///
    /// # Panics
    ///
    /// If it is not there, naming the script that installs it: tests that need QEMU must fail
    /// on a machine without it, not pass.
    pub fn qemu(self, target: &str) -> PathBuf {
        let path = self.qemu_bin_dir().join(format!("qemu-system-{target}"));
        assert!(
            path.is_file(),
            "{} not found: run scripts/install-test-deps (scripts/test does)",
            path.display()
        );
        path
    }

    /// The directories this stack's firmware images are in, searched in order.
    pub fn firmware_dirs(self) -> Vec<PathBuf> {
        let root = match self {
            Stack::Debian12 => PathBuf::from("/"),
            Stack::Current => peers().join("edk2-2025.02"),
        };
        [
            "usr/share/OVMF",
            "usr/share/AAVMF",
            "usr/share/qemu-efi-riscv64",
            "usr/share/qemu-efi-loongarch64",
        ]
        .iter()
        .map(|dir| root.join(dir))
        .collect()
    }

    /// The QEMU firmware descriptors (`*.json`) that come with this stack's firmware, naming
    /// this stack's images: Debian 12's installed ones, or for the current stack a copy of
    /// Debian 13's whose `/usr/share/…` paths point into the unpacked tree (made by
    /// `scripts/install-test-deps`).
    pub fn firmware_descriptor_dir(self) -> PathBuf {
        match self {
            Stack::Debian12 => PathBuf::from("/usr/share/qemu/firmware"),
            Stack::Current => peers().join("edk2-2025.02/descriptors"),
        }
    }

    /// Path of one of this stack's firmware images, e.g. `"OVMF_CODE_4M.fd"`,
    /// `"RISCV_VIRT_VARS.fd"`.
    ///
    /// # Panics
    ///
    /// If the stack has no such file, saying what installs it.
    pub fn firmware(self, file_name: &str) -> PathBuf {
        let dirs = self.firmware_dirs();
        dirs.iter()
            .map(|dir| dir.join(file_name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "firmware {file_name} of stack {} not found in {}: run \
                     scripts/install-test-deps (scripts/test does)",
                    self.name(),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// `target/peers`, where `scripts/install-test-deps` puts the peers it does not install.
pub fn peers() -> PathBuf {
    // Without `..` components, so paths compare equal to the ones the install script wrote
    // into the descriptors it rewrote.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the workspace");
    workspace.join("target/peers")
}
