//! Test helpers shared by the workspace's integration tests.
//!
//! The centrepiece is [`boot_ovmf`]: it boots Debian's real OVMF firmware
//! under QEMU (TCG, no KVM needed) with a given variable store used *in
//! place*, runs a UEFI shell script (`startup.nsh`) from a FAT disk, waits for
//! QEMU to exit and hands back the serial log and the disk. Around it:
//!
//! * [`setvar_command`] builds a UEFI shell `setvar` line that stores
//!   arbitrary bytes exactly (its rustdoc records how the shell parses data);
//! * [`parse_dmpstore`] parses what `dmpstore -all` (or `dmpstore -all -sfo`)
//!   wrote to a file, strictly;
//! * [`debian_firmware`] and [`require_tool`] locate firmware and programs and
//!   *panic* with an actionable message when they are missing: these tests run
//!   in CI and must fail, not skip, on a machine that lacks them.
//!
//! A typical test:
//!
//! ```no_run
//! use testkit::{boot_ovmf, debian_firmware, parse_dmpstore, setvar_command, OvmfBoot};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let vars = dir.path().join("vars.fd");
//! std::fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
//! let code = debian_firmware("OVMF_CODE_4M.fd");
//! let script = format!(
//!     "{}\ndmpstore -all -sfo >a fs0:\\dump.txt\nreset -s\n",
//!     setvar_command("Test", "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01", 0x7, b"\x01\x02")
//! );
//! let outcome = boot_ovmf(&OvmfBoot::new(&code, &vars, &script)).unwrap();
//! let dump = outcome.read_file("dump.txt").expect("the script wrote dump.txt");
//! let vars = parse_dmpstore(&String::from_utf8_lossy(&dump)).unwrap();
//! assert!(vars.iter().any(|v| v.name == "Test" && v.data == [1, 2]));
//! ```

mod boot;
mod dmpstore;
mod http;
pub mod libvirt;
mod qmp;
mod qtest;
mod setvar;
mod stack;

use std::path::{Path, PathBuf};

pub use boot::{boot_ovmf, gpt_esp_disk, Arch, BootError, BootOutcome, OvmfBoot};
pub use dmpstore::{parse_dmpstore, DumpedVariable};
pub use http::{HttpFile, HttpFileServer, HttpRequest};
pub use qmp::{free_local_port, make_startup_disk, QemuVm, Qmp, QmpError, VmConfig};
pub use qtest::{QtestFlash, QtestOp};
pub use setvar::setvar_command;
pub use stack::{peers, Stack};

/// `EFI_VARIABLE_NON_VOLATILE`.
pub const ATTR_NV: u32 = 0x01;
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS`.
pub const ATTR_BS: u32 = 0x02;
/// `EFI_VARIABLE_RUNTIME_ACCESS`.
pub const ATTR_RT: u32 = 0x04;
/// `EFI_VARIABLE_HARDWARE_ERROR_RECORD`.
pub const ATTR_HR: u32 = 0x08;
/// `EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS` (deprecated by UEFI).
pub const ATTR_AW: u32 = 0x10;
/// `EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS`.
pub const ATTR_AT: u32 = 0x20;

/// Path of a firmware image of Debian 12 (edk2 2022.11), e.g. `"OVMF_CODE_4M.fd"`: the
/// [`Stack::Debian12`] firmware, in `/usr/share/OVMF` or `/usr/share/AAVMF`.
///
/// # Panics
///
/// If the file is not there. Panicking (rather than returning an error or skipping) is
/// deliberate: a CI machine without the firmware must make the tests fail loudly, not pass
/// vacuously.
pub fn debian_firmware(file_name: &str) -> PathBuf {
    Stack::Debian12.firmware(file_name)
}

/// Full path of the program `name`, searched on `PATH`.
///
/// `/usr/sbin` and `/sbin` are searched after `PATH` because Debian installs
/// `mkfs.vfat` there and a non-root `PATH` usually lacks them.
///
/// # Panics
///
/// If the program is not found; the message names the Debian package that
/// provides it (for the programs this crate uses), so a failing CI run says
/// what to install.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required program {name} not found on PATH (nor in /usr/sbin, /sbin): \
             install {} (scripts/test does)",
            debian_package_for(name)
        )
    })
}

fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;

    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The Debian package that ships `program`, for error messages.
fn debian_package_for(program: &str) -> String {
    match program {
        "mkfs.vfat" | "mkfs.fat" => "Debian's dosfstools package".into(),
        "mcopy" | "mmd" | "mdir" | "mtype" | "mdel" => "Debian's mtools package".into(),
        "sfdisk" => "Debian's fdisk package".into(),
        _ => "the Debian package that provides it".into(),
    }
}

/// Path of virt-firmware's `virt-fw-vars`, the peer for JSON and enrolment comparisons:
/// `$NVRAM_VIRT_FW_VARS`, else the virtualenv that `scripts/install-test-deps` makes under
/// `target/peers/venv`.
///
/// # Panics
///
/// If it is not there, naming the script that installs it.
pub fn virt_fw_vars() -> PathBuf {
    let path = std::env::var_os("NVRAM_VIRT_FW_VARS")
        .map(PathBuf::from)
        .unwrap_or_else(|| peers().join("venv/bin/virt-fw-vars"));
    assert!(
        path.exists(),
        "virt-fw-vars not found at {}: run scripts/install-test-deps (scripts/test does)",
        path.display()
    );
    path
}

/// A recorded trace or image in `crates/pflash/tests/data` (its README says how each was
/// made): `ovmf-boot-*`, `ovmf-4m-setvar-*`, `ovmf-2m-reclaim-*`.
pub fn trace_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/pflash/tests/data")
        .join(name)
}

/// The decompressed contents of the xz file `path`.
///
/// # Panics
///
/// If it cannot be read or is not xz, naming the file.
pub fn unxz(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    out
}

/// A file of a Debian package that `scripts/install-test-deps` unpacks (without installing it)
/// into `target/peers/debian`, e.g. `etc/refind.d/keys/canonical-uefi-ca.cer`.
///
/// # Panics
///
/// If it is not there, naming the script that unpacks it.
pub fn unpacked_debian_file(path: &str) -> PathBuf {
    let path = peers().join("debian").join(path);
    assert!(
        path.exists(),
        "{} not found: run scripts/install-test-deps (scripts/test does)",
        path.display()
    );
    path
}

/// `true` if the test can use KVM (`/dev/kvm` opens read-write); panics saying why not,
/// unless the run opts out explicitly with `NVRAM_TESTS_WITHOUT_KVM=1` (then it prints
/// `NOT RUN` and returns `false`).
pub fn kvm_available() -> bool {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    match opened {
        Ok(_) => true,
        Err(e) if std::env::var("NVRAM_TESTS_WITHOUT_KVM").as_deref() == Ok("1") => {
            eprintln!("NOT RUN: /dev/kvm cannot be opened ({e}) and NVRAM_TESTS_WITHOUT_KVM=1");
            false
        }
        Err(e) => panic!(
            "/dev/kvm cannot be opened ({e}): these tests run guests under KVM; \
             set NVRAM_TESTS_WITHOUT_KVM=1 to skip them explicitly"
        ),
    }
}

/// The number of operations after which the content equals `file`, if any: the test of the
/// prefix property (a file written by a killed writer equals the content after some prefix
/// of the completed operations). `ops` are `(offset, bytes)` in completion order; walks them
/// keeping the count of bytes where the content differs from `file`.
pub fn prefix_len(initial: &[u8], ops: &[(usize, Vec<u8>)], file: &[u8]) -> Option<usize> {
    if file.len() != initial.len() {
        return None;
    }
    let mut content = initial.to_vec();
    let mut differing = content.iter().zip(file).filter(|(a, b)| a != b).count();
    if differing == 0 {
        return Some(0);
    }
    for (i, (offset, data)) in ops.iter().enumerate() {
        for (j, &new) in data.iter().enumerate() {
            let at = offset + j;
            differing -= usize::from(content[at] != file[at]);
            content[at] = new;
            differing += usize::from(new != file[at]);
        }
        if differing == 0 {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_that_always_exists() {
        assert!(require_tool("sh").is_absolute());
    }

    #[test]
    #[should_panic(expected = "not found on PATH")]
    fn missing_tool_panics_clearly() {
        require_tool("testkit-no-such-program");
    }

    #[test]
    fn package_hints_name_debian_packages() {
        assert_eq!(debian_package_for("mcopy"), "Debian's mtools package");
        assert_eq!(
            debian_package_for("mkfs.vfat"),
            "Debian's dosfstools package"
        );
    }

    #[test]
    #[should_panic(expected = "firmware NO_SUCH_FIRMWARE.fd of stack debian12 not found")]
    fn missing_firmware_panics_clearly() {
        debian_firmware("NO_SUCH_FIRMWARE.fd");
    }
}
