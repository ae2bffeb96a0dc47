//! The real Secure Boot firmware (Debian's OVMF_CODE_4M.secboot.fd, q35 with SMM) honours what
//! `nvram secureboot enroll` writes:
//!
//! 1. a blank store is in setup mode: an unsigned EFI binary (systemd-boot) starts;
//! 2. after enrolling a generated PK/KEK/db the unsigned binary is refused (`Security
//!    Violation` in edk2 2022.11, `Access Denied` in 2025.02), while the same binary signed
//!    with the db key (sbsign) starts; on both stacks;
//!    Once its certificate is added to dbx, the signed binary is refused too;
//! 3. with Microsoft's certificates enrolled, Debian's Microsoft-signed shim starts (and then
//!    fails to find grub), and the firmware's unsigned internal shell is refused; it still
//!    starts with Microsoft's whole dbx (`add-dbx --microsoft all`) added;
//! 4. with only the Debian CA in db (`--distro debian`), Debian's signed grub starts and runs
//!    its grub.cfg; with only the Canonical CA (`--distro ubuntu`) the same grub is refused.
//!
//! Needs `openssl`, `sbsign` (sbsigntool), systemd-boot-efi, shim-signed and
//! grub-efi-amd64-signed (`scripts/install-test-deps`). Nothing resets the VM, so each boot is stopped as soon
//! as its serial log shows the outcome the test checks (or fails at the timeout).

mod common;

use common::{enroll_own_key, nvram_ok, path_str, sbsign, self_signed};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::{boot_ovmf, debian_firmware, BootError, OvmfBoot, Stack};

const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";

/// Boots `loader` as \EFI\BOOT\BOOTX64.EFI and returns the serial log once `stop_when`
/// holds for it (the outcome the test checks is decided by then) or the timeout hits.
fn boot_with(vars: &Path, loader: Vec<u8>, seconds: u64, stop_when: fn(&str) -> bool) -> String {
    boot_on(Stack::Debian12, vars, loader, seconds, stop_when)
}

/// [`boot_with`] with the Secure Boot OVMF and the QEMU of `stack`.
fn boot_on(
    stack: Stack,
    vars: &Path,
    loader: Vec<u8>,
    seconds: u64,
    stop_when: fn(&str) -> bool,
) -> String {
    let code = stack.firmware("OVMF_CODE_4M.secboot.fd");
    let mut boot = OvmfBoot::new(&code, vars, "reset -s\n");
    boot.stack = stack;
    boot.smm = true;
    boot.stop_when = Some(stop_when);
    boot.files = vec![("EFI/BOOT/BOOTX64.EFI".to_string(), loader)];
    boot.timeout = Duration::from_secs(seconds);
    match boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e @ BootError::Setup(_)) => panic!("{e}"),
        Err(e) => e.serial().unwrap_or_default().to_string(),
    }
}

/// systemd-boot without loader entries says so on the console.
fn systemd_boot_started(serial: &str) -> bool {
    serial.contains("systemd-boot") || serial.contains("Boot in") || serial.contains("No loader")
}

#[test]
fn ovmf_2025_02_enforces_enrolled_keys() {
    let dir = tempfile::tempdir().unwrap();
    enforces_enrolled_keys(Stack::Current, dir.path());
}

#[test]
fn ovmf_2022_11_enforces_enrolled_keys_and_microsofts() {
    let dir = tempfile::tempdir().unwrap();
    let cert = enforces_enrolled_keys(Stack::Debian12, dir.path());
    let blank = fs::read(debian_firmware("OVMF_VARS_4M.fd")).unwrap();
    let c = path_str(&cert);

    // 3. Microsoft profile: Debian's Microsoft-signed shim starts.
    let vars = dir.path().join("microsoft.fd");
    enroll_microsoft(&vars, &blank, c);
    let serial = assert_shim_starts(&vars, "Microsoft's certificates");
    // The firmware's own (unsigned) shell is refused now, too.
    assert!(
        internal_shell_refused(&serial),
        "the internal shell was not refused:\n{serial}"
    );

    // With Microsoft's whole revocation list (both dbx updates, ~2,400 entries) the firmware
    // still parses dbx and still accepts Debian's current shim, which it does not revoke.
    enroll_microsoft(&vars, &blank, c);
    nvram_ok(&[
        "secureboot",
        "add-dbx",
        path_str(&vars),
        "--microsoft",
        "all",
    ]);
    assert_shim_starts(&vars, "Microsoft's certificates and dbx");
}

/// Setup mode runs anything; with our own PK/KEK/db the stack's Secure Boot OVMF refuses an
/// unsigned binary, runs a signed one, and refuses it again once its certificate is in dbx.
/// Returns the certificate (the key pair lives in `dir`).
fn enforces_enrolled_keys(stack: Stack, dir: &Path) -> PathBuf {
    let boot_with =
        |vars: &Path, loader, seconds, stop_when| boot_on(stack, vars, loader, seconds, stop_when);
    let (key, cert) = self_signed(dir, "db", "nvram test key");
    let signed = sbsign(
        &key,
        &cert,
        Path::new(SYSTEMD_BOOT),
        &dir.join("signed.efi"),
    );
    let unsigned = fs::read(SYSTEMD_BOOT).expect("systemd-boot-efi installed");
    let blank = fs::read(stack.firmware("OVMF_VARS_4M.fd")).unwrap();

    // 1. Setup mode: anything runs.
    let vars = dir.join("setup.fd");
    fs::write(&vars, &blank).unwrap();
    let serial = boot_with(&vars, unsigned.clone(), 60, systemd_boot_started);
    assert!(
        systemd_boot_started(&serial) && !refused(&serial),
        "setup mode did not start the unsigned binary:\n{serial}"
    );

    // 2. Enrolled: unsigned refused, signed accepted.
    let vars = dir.join("enrolled.fd");
    fs::write(&vars, &blank).unwrap();
    enroll_own_key(&vars, &cert);
    let c = path_str(&cert);
    let enrolled = fs::read(&vars).unwrap();
    let serial = boot_with(&vars, unsigned, 60, refused_or_started);
    assert!(
        refused(&serial) && !systemd_boot_started(&serial),
        "the unsigned binary was not refused:\n{serial}"
    );
    fs::write(&vars, &enrolled).unwrap();
    let serial = boot_with(&vars, signed.clone(), 60, refused_or_started);
    assert!(
        systemd_boot_started(&serial) && !refused(&serial),
        "the signed binary did not start:\n{serial}"
    );
    // Revoked: the signing certificate in dbx (`add-dbx CERT`) overrides db.
    fs::write(&vars, &enrolled).unwrap();
    nvram_ok(&["secureboot", "add-dbx", path_str(&vars), c]);
    let serial = boot_with(&vars, signed, 60, refused_or_started);
    assert!(
        refused(&serial) && !systemd_boot_started(&serial),
        "the binary signed by a revoked certificate was not refused:\n{serial}"
    );

    cert
}

/// `vars` as `blank` with `cert` as PK and KEK and all of Microsoft's KEK and db certificates.
fn enroll_microsoft(vars: &Path, blank: &[u8], cert: &str) {
    fs::write(vars, blank).unwrap();
    nvram_ok(&[
        "secureboot",
        "enroll",
        path_str(vars),
        "--pk",
        cert,
        "--kek",
        cert,
        "--microsoft",
        "all",
    ]);
}

/// Boots Debian's Microsoft-signed shim from `vars` and asserts that it started; returns the
/// serial log.
fn assert_shim_starts(vars: &Path, enrolled: &str) -> String {
    let shim = fs::read(SHIM).expect("shim-signed installed");
    let serial = boot_with(vars, shim, 60, internal_shell_refused);
    let refused_disk = serial
        .lines()
        .any(|l| l.contains("Non-Block Boot Device") && refused(l));
    assert!(
        shim_started(&serial) && !refused_disk,
        "shim did not start with {enrolled}:\n{serial}"
    );
    serial
}

/// The loader either started or the firmware refused it (it reports the violation before it
/// would run anything else from the disk).
fn refused_or_started(serial: &str) -> bool {
    refused(serial) || systemd_boot_started(serial)
}

/// The firmware refused an image because of the Secure Boot databases. BdsDxe names the status
/// LoadImage returned: edk2 2022.11 says "Security Violation", edk2 2025.02 "Access Denied"
/// (measured under QEMU 7.2 and 10.0 with the same keys and binaries).
fn refused(serial: &str) -> bool {
    serial.contains("Security Violation") || serial.contains("Access Denied")
}

/// The firmware got past the disk's loader (shim, which returns without grub) to its own
/// unsigned shell, and refused that.
fn internal_shell_refused(serial: &str) -> bool {
    serial
        .lines()
        .any(|l| l.contains("EFI Internal Shell") && refused(l))
}

/// shim, started without grub next to it, complains about the missing second stage.
fn shim_started(serial: &str) -> bool {
    serial.contains("grubx64.efi")
        || serial.contains("Failed to open")
        || serial.contains("start_image")
}

/// Debian's grub, signed by "Debian Secure Boot Signer 2022 - grub2" (issued by the Debian CA).
const DEBIAN_GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// Printed by the grub.cfg the test puts next to grub: grub started and ran its configuration.
const GRUB_MARKER: &str = "nvram-grub-config-ran";

/// grub ran its configuration, or the firmware refused the disk's loader and went on to its
/// own shell (refused, too, in user mode).
fn grub_ran_or_refused(serial: &str) -> bool {
    serial.contains(GRUB_MARKER) || refused(serial)
}

/// With only the Debian CA in db (`--distro debian`), the firmware itself verifies Debian's
/// signed grub and starts it (no shim involved); with only the Canonical CA (`--distro
/// ubuntu`) it refuses the same binary.
#[test]
fn firmware_trusts_distro_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert) = self_signed(dir.path(), "pk", "nvram test PK");
    let grub = fs::read(DEBIAN_GRUB).expect("grub-efi-amd64-signed installed");
    let config = format!("echo {GRUB_MARKER}\n").into_bytes();
    let blank = fs::read(debian_firmware("OVMF_VARS_4M.fd")).unwrap();
    let c = path_str(&cert);
    let boot_grub = |distro: &str| {
        let vars = dir.path().join(format!("{distro}.fd"));
        fs::write(&vars, &blank).unwrap();
        nvram_ok(&[
            "secureboot",
            "enroll",
            path_str(&vars),
            "--pk",
            c,
            "--kek",
            c,
            "--distro",
            distro,
        ]);
        let code = debian_firmware("OVMF_CODE_4M.secboot.fd");
        let mut boot = OvmfBoot::new(&code, &vars, "reset -s\n");
        boot.smm = true;
        boot.stop_when = Some(grub_ran_or_refused);
        // Debian's signed grub reads grub.cfg from the directory it was started from.
        boot.files = vec![
            ("EFI/BOOT/BOOTX64.EFI".to_string(), grub.clone()),
            ("EFI/BOOT/grub.cfg".to_string(), config.clone()),
        ];
        boot.timeout = Duration::from_secs(60);
        match boot_ovmf(&boot) {
            Ok(outcome) => outcome.serial,
            Err(e @ BootError::Setup(_)) => panic!("{e}"),
            Err(e) => e.serial().unwrap_or_default().to_string(),
        }
    };

    let serial = boot_grub("debian");
    assert!(
        serial.contains("Welcome to GRUB") && serial.contains(GRUB_MARKER),
        "Debian's signed grub did not start with the Debian CA in db:\n{serial}"
    );

    let serial = boot_grub("ubuntu");
    let disk_refused = serial.lines().any(|l| {
        l.contains("failed to load")
            && l.contains("Non-Block Boot Device")
            && l.contains("Access Denied")
    });
    assert!(
        disk_refused && !serial.contains("GRUB"),
        "Debian's grub was not refused with only the Canonical CA in db:\n{serial}"
    );
}
