//! Every architecture edk2 ships for QEMU, end to end under TCG: AAVMF on arm `virt`
//! (`-cpu max`), the RISC-V `virt` firmware (OpenSBI, then edk2) and LoongArch `virt`.
//! Stores made by `nvram create --layout …` boot; `nvram` reads exactly what the firmware wrote
//! (compared with its own `dmpstore -all`); on arm64 a variable we set and a boot entry we add
//! with `--next` are seen by the firmware, and keys we enrol make the Secure Boot build refuse
//! an unsigned binary and run a signed one.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    assert_read_back, boot_and_dump_on, enroll_own_key, nvram_ok, path_str, sbsign, self_signed,
    Variable,
};
use testkit::{boot_ovmf, parse_dmpstore, Arch, BootError, BootOutcome, OvmfBoot, Stack};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";

type VariableSet = BTreeSet<Variable>;

fn create(dir: &Path, layout: &str) -> PathBuf {
    let vars = dir.join(format!("{layout}_VARS.fd"));
    nvram_ok(&["create", "--layout", layout, path_str(&vars)]);
    vars
}

/// A store made by `nvram create --layout LAYOUT` boots with the firmware `code` of `stack`,
/// the firmware's `setvar` lands in it, and nvram reads what the firmware wrote.
fn created_store_boots(stack: Stack, arch: Arch, layout: &str, code: &str) {
    let dir = tempfile::tempdir().unwrap();
    let vars = create(dir.path(), layout);
    let commands = testkit::setvar_command("NvramArch", TEST_GUID, 0x7, layout.as_bytes());
    let firmware: VariableSet = boot_and_dump_on(stack, arch, code, &vars, &commands);
    assert!(
        firmware
            .iter()
            .any(|v| v.0 == "NvramArch" && v.3 == layout.as_bytes()),
        "the firmware's setvar is not in its own dump"
    );
    assert!(
        firmware.iter().any(|v| v.0 == "BootOrder"),
        "the firmware wrote its boot entries"
    );
    assert_read_back(&firmware, &vars);
}

#[test]
fn aavmf_2025_02_boots_a_store_made_by_nvram_create() {
    created_store_boots(Stack::Current, Arch::Aarch64, "aavmf", "AAVMF_CODE.fd");
}

#[test]
fn aavmf_2022_11_boots_a_store_made_by_nvram_create() {
    created_store_boots(Stack::Debian12, Arch::Aarch64, "aavmf", "AAVMF_CODE.fd");
}

#[test]
fn riscv64_edk2_2025_02_boots_a_store_made_by_nvram_create() {
    created_store_boots(
        Stack::Current,
        Arch::Riscv64,
        "riscv64",
        "RISCV_VIRT_CODE.fd",
    );
}

#[test]
fn loongarch64_edk2_2025_02_boots_a_store_made_by_nvram_create() {
    created_store_boots(
        Stack::Current,
        Arch::Loongarch64,
        "loongarch64",
        "QEMU_EFI.fd",
    );
}

fn boot_aavmf(vars: &Path, script: &str, files: Vec<(String, Vec<u8>)>) -> BootOutcome {
    let code = Stack::Current.firmware("AAVMF_CODE.fd");
    let mut boot = OvmfBoot::new(&code, vars, script);
    boot.stack = Stack::Current;
    boot.arch = Arch::Aarch64;
    boot.files = files;
    boot.timeout = Duration::from_secs(240);
    boot_ovmf(&boot).unwrap_or_else(|e| panic!("boot failed: {e}"))
}

#[test]
fn aavmf_sees_a_variable_we_set_and_tries_a_boot_next_entry_we_added() {
    let dir = tempfile::tempdir().unwrap();
    let vars = create(dir.path(), "aavmf");
    let v = path_str(&vars);
    // The first boot creates the firmware's own entries, as on a new VM.
    boot_aavmf(&vars, "reset -s\n", Vec::new());

    nvram_ok(&[
        "set",
        v,
        "NvramFromHost",
        "--guid",
        TEST_GUID,
        "--attr",
        "nv,bs,rt",
        "--ascii",
        "set by nvram",
    ]);
    let out = nvram_ok(&[
        "boot",
        "add",
        v,
        "--next",
        "--description",
        "Test",
        "--file",
        r"\EFI\BOOT\TEST.EFI",
    ]);
    let name = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // TEST.EFI is not a valid image: BdsDxe tries it, fails and falls back to BootOrder (the
    // shell), which runs the script.
    let files = vec![("EFI/BOOT/TEST.EFI".to_string(), b"not a PE image".to_vec())];
    let script = "dmpstore -all -sfo >a fs0:\\dump.txt\nreset -s\n";
    let outcome = boot_aavmf(&vars, script, files);
    common::assert_bds_tried(&outcome.serial, &name, "Test");
    let dump = outcome
        .read_file("dump.txt")
        .unwrap_or_else(|| panic!("no dump; serial log:\n{}", outcome.serial));
    let dumped = parse_dmpstore(&String::from_utf8_lossy(&dump)).unwrap();
    let ours = dumped
        .iter()
        .find(|d| d.name == "NvramFromHost")
        .unwrap_or_else(|| panic!("the firmware does not see NvramFromHost"));
    assert_eq!(
        ours.data, b"set by nvram\0",
        "--ascii stores a NUL-terminated string"
    );
    assert_eq!(ours.attributes, 0x7);
    assert!(
        !dumped.iter().any(|d| d.name == "BootNext"),
        "the firmware consumed BootNext"
    );
    let firmware: VariableSet = dumped
        .into_iter()
        .filter(|d| d.attributes & testkit::ATTR_NV != 0)
        .map(|d| (d.name, d.guid, d.attributes, d.data))
        .collect();
    assert_read_back(&firmware, &vars);
    eprintln!("AAVMF boot took {:?}", outcome.elapsed);
}

const SIGNED_MARKER: &str = "NVRAM-REMOVABLE-SHELL-RAN";

/// The outcome on the console: a refusal, or the removable-media shell ran our script.
fn decided(serial: &str) -> bool {
    serial.contains("Access Denied")
        || serial.contains("Security Violation")
        || serial.contains(SIGNED_MARKER)
}

/// Boots AAVMF's Secure Boot build with `loader` as \EFI\BOOT\BOOTAA64.EFI; returns the log.
fn boot_secure(vars: &Path, loader: Vec<u8>) -> String {
    let code = Stack::Current.firmware("AAVMF_CODE.secboot.fd");
    let script = format!("echo {SIGNED_MARKER}\nreset -s\n");
    let mut boot = OvmfBoot::new(&code, vars, &script);
    boot.stack = Stack::Current;
    boot.arch = Arch::Aarch64;
    boot.files = vec![(
        format!("EFI/BOOT/{}", Arch::Aarch64.default_boot_file()),
        loader,
    )];
    boot.stop_when = Some(decided);
    boot.timeout = Duration::from_secs(120);
    match boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e @ BootError::Setup(_)) => panic!("{e}"),
        Err(e) => e.serial().unwrap_or_default().to_string(),
    }
}

#[test]
fn aavmf_secure_boot_enforces_keys_we_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = self_signed(dir.path(), "db", "nvram arm64 test key");
    // edk2's UEFI shell built as a standalone arm64 application (Debian 13's efi-shell-aa64):
    // an unsigned binary that, once signed, shows it ran by executing startup.nsh.
    let shell = testkit::peers().join("edk2-2025.02/usr/share/efi-shell-aa64/shellaa64.efi");
    let unsigned = fs::read(&shell).unwrap_or_else(|e| panic!("{}: {e}", shell.display()));
    let signed = sbsign(&key, &cert, &shell, &dir.path().join("signed.efi"));

    let vars = create(dir.path(), "aavmf");
    enroll_own_key(&vars, &cert);
    let enrolled = fs::read(&vars).unwrap();

    let serial = boot_secure(&vars, unsigned);
    assert!(
        (serial.contains("Access Denied") || serial.contains("Security Violation"))
            && !serial.contains(SIGNED_MARKER),
        "the unsigned binary was not refused:\n{serial}"
    );

    fs::write(&vars, &enrolled).unwrap();
    let serial = boot_secure(&vars, signed);
    assert!(
        serial.contains(SIGNED_MARKER)
            && !serial.contains("Access Denied")
            && !serial.contains("Security Violation"),
        "the signed binary did not run:\n{serial}"
    );
    // The store still holds the enrolled PK after the firmware ran with it.
    let out = nvram_ok(&["secureboot", "status", path_str(&vars), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status.to_string().contains("nvram arm64 test key"),
        "{status}"
    );
}
