//! Interoperability with the real firmware, both ways: OVMF boots from stores that
//! `nvram create` made, and `nvram` reads exactly what OVMF wrote (compared with the firmware's
//! own `dmpstore -all`), including after a forced reclaim. On both stacks: edk2 2022.11 under
//! QEMU 7.2 and edk2 2025.02 under QEMU 10.0 (which no longer ships the 2M layout).

mod common;

use common::{assert_read_back, boot_and_dump_on, nvram, Variable};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use testkit::{setvar_command, Arch, Stack};
use varstore::Varstore;

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";

type VariableSet = BTreeSet<Variable>;

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
fn ovmf_2022_11_boots_from_a_store_made_by_nvram_create_and_nvram_reads_what_it_wrote() {
    boot_created_store(Stack::Debian12);
}

#[test]
fn ovmf_2025_02_boots_from_a_store_made_by_nvram_create_and_nvram_reads_what_it_wrote() {
    boot_created_store(Stack::Current);
}

fn boot_and_dump(stack: Stack, code: &str, vars: &Path, commands: &str) -> VariableSet {
    boot_and_dump_on(stack, Arch::X86_64, code, vars, commands)
}

fn boot_created_store(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.fd");
    let out = nvram(&["create", vars.to_str().unwrap()]);
    assert!(out.status.success());
    let firmware = boot_and_dump(stack, "OVMF_CODE_4M.fd", &vars, &set_test_variables());
    assert!(firmware
        .iter()
        .any(|v| v.0 == "NvramTest" && v.3 == b"hello from the firmware"));
    assert!(
        firmware.iter().any(|v| v.0 == "Boot0000"),
        "the firmware created its boot entries"
    );
    assert_read_back(&firmware, &vars);
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

fn boot_template(stack: Stack, code: &str, template: &str) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join(template);
    fs::copy(stack.firmware(template), &vars).unwrap();
    switch_secure_boot_off(&vars);
    let firmware = boot_and_dump(stack, code, &vars, &set_test_variables());
    assert!(firmware.iter().any(|v| v.0 == "NvramBytes" && v.2 == 0x3));
    let image = assert_read_back(&firmware, &vars);
    let store = Varstore::parse(&image).unwrap();
    assert!(
        store.records().len() > store.live_variables().len(),
        "the firmware's updates left replaced records behind"
    );
}

#[test]
fn reads_what_ovmf_2022_11_wrote_to_the_2m_template() {
    boot_template(Stack::Debian12, "OVMF_CODE.fd", "OVMF_VARS.fd");
}

#[test]
fn reads_what_ovmf_2022_11_wrote_to_the_2m_microsoft_template() {
    boot_template(Stack::Debian12, "OVMF_CODE.fd", "OVMF_VARS.ms.fd");
}

#[test]
fn reads_what_ovmf_2022_11_wrote_to_the_4m_template() {
    boot_template(Stack::Debian12, "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd");
}

#[test]
fn reads_what_ovmf_2022_11_wrote_to_the_4m_microsoft_template() {
    boot_template(Stack::Debian12, "OVMF_CODE_4M.fd", "OVMF_VARS_4M.ms.fd");
}

#[test]
fn reads_what_ovmf_2022_11_wrote_to_the_4m_snakeoil_template() {
    boot_template(
        Stack::Debian12,
        "OVMF_CODE_4M.fd",
        "OVMF_VARS_4M.snakeoil.fd",
    );
}

#[test]
fn reads_what_ovmf_2025_02_wrote_to_the_4m_template() {
    boot_template(Stack::Current, "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd");
}

#[test]
fn reads_what_ovmf_2025_02_wrote_to_the_4m_microsoft_template() {
    boot_template(Stack::Current, "OVMF_CODE_4M.fd", "OVMF_VARS_4M.ms.fd");
}

#[test]
fn reads_what_ovmf_2025_02_wrote_to_the_4m_snakeoil_template() {
    boot_template(
        Stack::Current,
        "OVMF_CODE_4M.fd",
        "OVMF_VARS_4M.snakeoil.fd",
    );
}

#[test]
fn reads_the_store_after_ovmf_2025_02_reclaimed_it() {
    // edk2 2025.02 has only the 4M layout: a 256 KiB variable area. nvram fills 224 KB of it
    // with deleted records (7 copies of a 32000-byte variable, the last one deleted); the
    // firmware finds too little free space when it starts and reclaims through the
    // fault-tolerant-write spare (docs/varstore-format.md §8.3), then runs three rewrites of a
    // 1000-byte variable. Filling the store with firmware writes instead would take minutes:
    // every programmed byte is an MMIO write under TCG.
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    fs::copy(Stack::Current.firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
    fill_with_deleted_records(&vars, 32000, 7);
    let firmware = force_reclaim(Stack::Current, "OVMF_CODE_4M.fd", &vars, 3);
    assert_reclaimed(&firmware, &vars, 3, 0x40000 - 0x48);
}

#[test]
fn reads_the_store_after_ovmf_2022_11_reclaimed_it() {
    // The 2M layout's 56 KB variable area: 42 KB of deleted records (6 × 7000 bytes; 8 KiB is
    // that build's largest variable).
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    fs::copy(Stack::Debian12.firmware("OVMF_VARS.fd"), &vars).unwrap();
    fill_with_deleted_records(&vars, 7000, 6);
    let firmware = force_reclaim(Stack::Debian12, "OVMF_CODE.fd", &vars, 3);
    assert_reclaimed(&firmware, &vars, 3, 0xDFB8);
}

/// `copies` times `nvram set --strategy append` of a `len`-byte NvramJunk, then `nvram
/// delete`: the store keeps every copy as a deleted record, as the firmware's own updates do.
fn fill_with_deleted_records(vars: &Path, len: usize, copies: u8) {
    let dir = vars.parent().unwrap();
    for copy in 0..copies {
        let data = dir.join("junk.bin");
        fs::write(&data, vec![copy; len]).unwrap();
        let out = nvram(&[
            "set",
            vars.to_str().unwrap(),
            "NvramJunk",
            "--guid",
            TEST_GUID,
            "--attr",
            "nv,bs",
            "--data-file",
            data.to_str().unwrap(),
            "--strategy",
            "append",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = nvram(&[
        "delete",
        vars.to_str().unwrap(),
        "NvramJunk",
        "--guid",
        TEST_GUID,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = fs::read(vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    let junk = store
        .records()
        .iter()
        .filter(|r| r.name() == "NvramJunk")
        .count();
    assert_eq!(
        junk, copies as usize,
        "every copy is still in the store, deleted"
    );
}

/// Rewrites NvramBig (1000 bytes) `times` times, then sets NvramAfter, and returns what the
/// firmware's dmpstore lists afterwards.
fn force_reclaim(stack: Stack, code: &str, vars: &Path, times: u32) -> VariableSet {
    let payload = hex::encode(vec![0x5Au8; 1000]);
    let commands = format!(
        "@echo -off\nfor %a run (1 {times})\n  setvar NvramBig -guid {TEST_GUID} -nv -bs =H{payload} =S%a\nendfor\n{}",
        setvar_command("NvramAfter", TEST_GUID, 0x7, b"after reclaim")
    )
    ;
    boot_and_dump(stack, code, vars, &commands)
}

/// The firmware and nvram agree after a reclaim that went through the FTW queue and compacted
/// the whole variable area (`area_len` bytes after the store header).
fn assert_reclaimed(firmware: &VariableSet, vars: &Path, times: u32, area_len: u64) {
    let big = firmware
        .iter()
        .find(|v| v.0 == "NvramBig")
        .expect("NvramBig");
    assert!(
        big.3.ends_with(times.to_string().as_bytes()),
        "the last rewrite wins"
    );
    assert!(firmware.iter().any(|v| v.0 == "NvramAfter"));
    let image = assert_read_back(firmware, vars);
    let store = Varstore::parse(&image).unwrap();
    let ftw = store.ftw().expect("FTW working block");
    let reclaim = ftw
        .writes
        .first()
        .expect("the reclaim went through the FTW write queue");
    assert!(reclaim.complete);
    assert_eq!(reclaim.records[0].target_offset, 0x48);
    assert_eq!(reclaim.records[0].length, area_len);
    // With the store this full the firmware reclaims as soon as it starts (before the script
    // runs), so the reclaim is seen by what it dropped: every deleted record nvram wrote.
    assert!(
        store.records().iter().all(|r| r.name() != "NvramJunk"),
        "the deleted records nvram wrote were dropped by the reclaim"
    );
}
