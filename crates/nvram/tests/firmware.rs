//! Interoperability with the real firmware, both ways: OVMF boots from stores that
//! `nvram create` made, and `nvram` reads exactly what OVMF wrote (compared with the firmware's
//! own `dmpstore -all`), including after a forced reclaim.

mod common;

use common::{boot_and_dump, exported, nvram, Variable};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use testkit::{debian_firmware, setvar_command};
use varstore::{FirmwareVerdict, Varstore};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";

type VariableSet = BTreeSet<Variable>;

fn assert_same(firmware: &VariableSet, ours: &VariableSet) {
    let missing: Vec<_> = firmware.difference(ours).map(|v| (&v.0, &v.1)).collect();
    let extra: Vec<_> = ours.difference(firmware).map(|v| (&v.0, &v.1)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "firmware and nvram disagree.\n  only in dmpstore: {missing:?}\n  only in nvram: {extra:?}"
    );
}

fn set_test_variables() -> String {
    [
        setvar_command("NvramTest", TEST_GUID, 0x7, b"hello from the firmware"),
        setvar_command(
            "NvramBytes",
            TEST_GUID,
            0x3,
            &(0..=255u8).collect::<Vec<_>>(),
        ),
    ]
    .join("\n")
}

#[test]
fn ovmf_boots_from_a_store_made_by_nvram_create_and_nvram_reads_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.fd");
    let out = nvram(&["create", vars.to_str().unwrap()]);
    assert!(out.status.success());
    let firmware: VariableSet = boot_and_dump("OVMF_CODE_4M.fd", &vars, &set_test_variables());
    assert!(firmware
        .iter()
        .any(|v| v.0 == "NvramTest" && v.3 == b"hello from the firmware"));
    assert!(
        firmware.iter().any(|v| v.0 == "Boot0000"),
        "the firmware created its boot entries"
    );
    assert_same(&firmware, &exported(&vars));

    let image = fs::read(&vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    let check = nvram(&["check", vars.to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// The enrolled templates have Secure Boot on, and the firmware then refuses the unsigned
/// internal shell ("Security Violation"), so no startup.nsh could run. Switch it off the way
/// flash allows without an erase: SecureBootEnable's data byte 1 -> 0 clears a bit in place.
fn switch_secure_boot_off(vars: &Path) {
    let mut image = fs::read(vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    let Some(enable) = store.find("SecureBootEnable", None) else {
        return;
    };
    assert_eq!(enable.data, [1]);
    let at = enable.data_offset as usize;
    image[at] = 0;
    fs::write(vars, &image).unwrap();
}

fn boot_template(code: &str, template: &str) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join(template);
    fs::copy(debian_firmware(template), &vars).unwrap();
    switch_secure_boot_off(&vars);
    let firmware: VariableSet = boot_and_dump(code, &vars, &set_test_variables());
    assert!(firmware.iter().any(|v| v.0 == "NvramBytes" && v.2 == 0x3));
    assert_same(&firmware, &exported(&vars));
    let image = fs::read(&vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    assert!(
        store.records().len() > store.live_variables().len(),
        "the firmware's updates left replaced records behind"
    );
}

#[test]
fn reads_what_ovmf_wrote_to_the_2m_template() {
    boot_template("OVMF_CODE.fd", "OVMF_VARS.fd");
}

#[test]
fn reads_what_ovmf_wrote_to_the_2m_microsoft_template() {
    boot_template("OVMF_CODE.fd", "OVMF_VARS.ms.fd");
}

#[test]
fn reads_what_ovmf_wrote_to_the_4m_template() {
    boot_template("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd");
}

#[test]
fn reads_what_ovmf_wrote_to_the_4m_microsoft_template() {
    boot_template("OVMF_CODE_4M.fd", "OVMF_VARS_4M.ms.fd");
}

#[test]
fn reads_what_ovmf_wrote_to_the_4m_snakeoil_template() {
    boot_template("OVMF_CODE_4M.fd", "OVMF_VARS_4M.snakeoil.fd");
}

#[test]
fn reads_the_store_after_the_firmware_reclaimed_it() {
    // Rewriting a 1000-byte variable 80 times needs ~85 KB: more than the 56 KB store of the
    // 2M layout, so the firmware must reclaim (compact) through the fault-tolerant-write spare
    // (docs/varstore-format.md §8.3). The small layout keeps the boot short: every programmed
    // byte is an MMIO write that QEMU persists with a pwrite.
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    fs::copy(debian_firmware("OVMF_VARS.fd"), &vars).unwrap();
    let payload = hex::encode(vec![0x5Au8; 1000]);
    let commands = format!(
        "@echo -off\nfor %a run (1 80)\n  setvar NvramBig -guid {TEST_GUID} -nv -bs =H{payload} =S%a\nendfor\n{}",
        setvar_command("NvramAfter", TEST_GUID, 0x7, b"after reclaim")
    );
    let firmware: VariableSet = boot_and_dump("OVMF_CODE.fd", &vars, &commands);
    let big = firmware
        .iter()
        .find(|v| v.0 == "NvramBig")
        .expect("NvramBig");
    assert!(big.3.ends_with(b"80"), "the last rewrite wins");
    assert_same(&firmware, &exported(&vars));

    let image = fs::read(&vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    let ftw = store.ftw().expect("FTW working block");
    let reclaim = ftw
        .writes
        .first()
        .expect("the reclaim went through the FTW write queue");
    assert!(reclaim.complete);
    assert_eq!(reclaim.records[0].target_offset, 0x48);
    assert_eq!(reclaim.records[0].length, 0xDFB8);
    let copies = store
        .records()
        .iter()
        .filter(|r| r.name() == "NvramBig")
        .count();
    assert!(
        copies < 80,
        "dead copies were dropped by the reclaim ({copies} left)"
    );
}
