//! The real firmware accepts what `nvram set`, `nvram delete` and `nvram import` write: OVMF
//! boots from the edited store, its own `dmpstore` lists exactly the variables we wrote, and
//! it neither compacts the store nor starts a fault-tolerant write because of us.
//!
//! Three boots of Debian's OVMF under QEMU (a few seconds each): append strategy, compact
//! strategy, and an import of virt-fw-vars' JSON into a blank store.

mod common;

use common::{nvram_ok, path_str};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use testkit::{debian_firmware, Arch, Stack};
use varstore::{FirmwareVerdict, Varstore};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";
const SECURE_BOOT_ENABLE_GUID: &str = "f0a30bc7-af08-4556-99c4-001009c93a44";

/// (name, guid) -> (attributes, data)
type Variables = BTreeMap<(String, String), (u32, Vec<u8>)>;

/// Boots OVMF on `vars` and returns the non-volatile variables its `dmpstore` lists.
fn boot_and_dump(vars: &Path) -> Variables {
    boot_and_dump_on(Stack::Debian12, vars)
}

/// [`boot_and_dump`] with the OVMF and QEMU of `stack`.
fn boot_and_dump_on(stack: Stack, vars: &Path) -> Variables {
    by_key(common::boot_and_dump_on(
        stack,
        Arch::X86_64,
        "OVMF_CODE_4M.fd",
        vars,
        "",
    ))
}

/// The live variables as `nvram export` sees them.
fn exported(vars: &Path) -> Variables {
    by_key(common::exported(vars))
}

fn by_key(vars: Vec<common::Variable>) -> Variables {
    vars.into_iter()
        .map(|(name, guid, attr, data)| ((name, guid), (attr, data)))
        .collect()
}

/// Bytes of the variable area that were written before the boot and changed other than by
/// clearing bits: a compaction (reclaim) or an FTW restart would move or rewrite them, an
/// ordinary SetVariable only appends and clears state bits.
fn rewritten_bytes(before: &[u8], after: &[u8]) -> usize {
    let store = Varstore::parse(before).unwrap();
    let end = store.free_offset() as usize;
    before[..end]
        .iter()
        .zip(&after[..end])
        .filter(|(b, a)| *a & !*b != 0)
        .count()
}

/// What must hold after every boot: the firmware and nvram read the store alike, the store is
/// healthy with an empty FTW queue, and nothing we wrote was compacted or rewritten.
fn check_after_boot(vars: &Path, before: &[u8], firmware: &Variables) {
    let ours = exported(vars);
    let only_fw: Vec<_> = firmware.keys().filter(|k| !ours.contains_key(*k)).collect();
    let only_ours: Vec<_> = ours.keys().filter(|k| !firmware.contains_key(*k)).collect();
    let differ: Vec<_> = firmware
        .iter()
        .filter(|(k, v)| ours.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        only_fw.is_empty() && only_ours.is_empty() && differ.is_empty(),
        "dmpstore and nvram export disagree after the boot: only dmpstore {only_fw:?}, only nvram {only_ours:?}, different {differ:?}"
    );
    let after = fs::read(vars).unwrap();
    let store = Varstore::parse(&after).unwrap();
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    assert!(store.is_healthy(), "{:?}", store.findings());
    let ftw = store.ftw().expect("FTW working block");
    assert!(
        ftw.writes.is_empty(),
        "the firmware used the FTW queue (a reclaim): {:?}",
        ftw.writes
    );
    assert_eq!(
        rewritten_bytes(before, &after),
        0,
        "the firmware rewrote the records we wrote (a reclaim)"
    );
    let check = common::nvram(&["check", path_str(vars)]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

fn key(name: &str, guid: &str) -> (String, String) {
    (name.to_string(), guid.to_string())
}

/// Sets and deletes variables in a copy of the enrolled 4M template with `strategy`, boots,
/// and compares.
fn edit_template_and_boot(stack: Stack, strategy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.fd");
    fs::copy(stack.firmware("OVMF_VARS_4M.ms.fd"), &vars).unwrap();
    let v = path_str(&vars);
    let s = ["--strategy", strategy];
    // Secure Boot off, or the firmware refuses the unsigned shell: an edit like any other.
    nvram_ok(
        &[
            &[
                "set",
                v,
                "SecureBootEnable",
                "--guid",
                SECURE_BOOT_ENABLE_GUID,
            ],
            &["--attr", "nv,bs", "--u8", "0"][..],
            &s,
        ]
        .concat(),
    );
    nvram_ok(
        &[
            &[
                "set",
                v,
                "NvramText",
                "--guid",
                TEST_GUID,
                "--string",
                "hello, firmware",
            ][..],
            &s,
        ]
        .concat(),
    );
    nvram_ok(
        &[
            &[
                "set",
                v,
                "NvramBytes",
                "--guid",
                TEST_GUID,
                "--attr",
                "nv,bs",
            ][..],
            &["--data-hex", &hex::encode((0..=255u8).collect::<Vec<_>>())],
            &s,
        ]
        .concat(),
    );
    nvram_ok(
        &[
            &[
                "set",
                v,
                "NvramNumber",
                "--guid",
                TEST_GUID,
                "--u32",
                "0x12345678",
            ][..],
            &s,
        ]
        .concat(),
    );
    // Replaced twice, so the append strategy leaves replaced copies behind.
    nvram_ok(
        &[
            &["set", v, "NvramNumber", "--guid", TEST_GUID, "--u32", "7"][..],
            &s,
        ]
        .concat(),
    );
    // A deletion: of a template variable where the template has one the firmware does not
    // re-create (2022.11's iSCSI "Attempt 8"; 2025.02's template no longer has it), else of one
    // we set first.
    let deleted = match stack {
        Stack::Debian12 => key("Attempt 8", "59324945-ec44-4c0d-b1cd-9db139df070c"),
        Stack::Current => {
            nvram_ok(
                &[
                    &["set", v, "NvramGone", "--guid", TEST_GUID, "--u8", "1"][..],
                    &s,
                ]
                .concat(),
            );
            key("NvramGone", TEST_GUID)
        }
    };
    nvram_ok(&[&["delete", v, &deleted.0, "--guid", &deleted.1][..], &s].concat());
    let before = fs::read(&vars).unwrap();
    let written = exported(&vars);
    assert!(!written.contains_key(&deleted));

    let firmware = boot_and_dump_on(stack, &vars);
    for name in ["NvramText", "NvramBytes", "NvramNumber"] {
        let k = key(name, TEST_GUID);
        assert_eq!(firmware.get(&k), written.get(&k), "{name}");
    }
    assert_eq!(
        firmware[&key("NvramNumber", TEST_GUID)],
        (7, 7u32.to_le_bytes().to_vec())
    );
    assert_eq!(
        firmware.get(&key("SecureBootEnable", SECURE_BOOT_ENABLE_GUID)),
        Some(&(3, vec![0]))
    );
    assert!(
        !firmware.contains_key(&deleted),
        "the deleted variable stays deleted"
    );
    // Everything the firmware did not rewrite at boot is as we left it: the Secure Boot
    // databases with their timestamps, and 2022.11's iSCSI attempts.
    let kept: &[&str] = match stack {
        Stack::Debian12 => &["PK", "KEK", "db", "dbx", "Attempt 1", "Attempt 7"],
        Stack::Current => &["PK", "KEK", "db", "dbx"],
    };
    for name in kept {
        let ours = written
            .iter()
            .find(|(k, _)| k.0 == *name)
            .unwrap_or_else(|| panic!("{name} is not in the template"));
        assert_eq!(firmware.get(ours.0), Some(ours.1), "{name}");
    }
    check_after_boot(&vars, &before, &firmware);
}

#[test]
fn ovmf_2022_11_boots_a_template_edited_with_the_append_strategy() {
    edit_template_and_boot(Stack::Debian12, "append");
}

#[test]
fn ovmf_2022_11_boots_a_template_edited_with_the_compact_strategy() {
    edit_template_and_boot(Stack::Debian12, "compact");
}

#[test]
fn ovmf_2025_02_boots_a_template_edited_with_the_append_strategy() {
    edit_template_and_boot(Stack::Current, "append");
}

#[test]
fn ovmf_2025_02_boots_a_template_edited_with_the_compact_strategy() {
    edit_template_and_boot(Stack::Current, "compact");
}

#[test]
fn ovmf_boots_a_blank_store_with_virt_fw_vars_json_imported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("vars.json");
    let peer = Command::new(testkit::virt_fw_vars())
        .arg("--input")
        .arg(debian_firmware("OVMF_VARS_4M.ms.fd"))
        .arg("--output-json")
        .arg(&json)
        .output()
        .expect("run virt-fw-vars");
    assert!(
        peer.status.success(),
        "{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    // Secure Boot off in the JSON, or the firmware refuses the unsigned shell.
    let mut doc: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    for v in doc["variables"].as_array_mut().unwrap() {
        if v["name"] == "SecureBootEnable" {
            v["data"] = "00".into();
        }
    }
    fs::write(&json, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let vars = dir.path().join("vm_VARS.fd");
    nvram_ok(&["create", path_str(&vars)]);
    nvram_ok(&["import", path_str(&vars), "--json", path_str(&json)]);
    let before = fs::read(&vars).unwrap();
    let imported = exported(&vars);
    assert_eq!(imported.len(), 31, "every variable of the template");
    let timed = Varstore::parse(&before)
        .unwrap()
        .find("db", None)
        .and_then(|r| r.time());
    assert!(timed.is_some(), "db keeps its timestamp");

    let firmware = boot_and_dump(&vars);
    for name in [
        "PK",
        "KEK",
        "db",
        "dbx",
        "Attempt 1",
        "SecureBootEnable",
        "certdb",
    ] {
        let ours = imported.iter().find(|(k, _)| k.0 == name).unwrap();
        assert_eq!(firmware.get(ours.0), Some(ours.1), "{name}");
    }
    let lost: Vec<_> = imported
        .keys()
        .filter(|k| !firmware.contains_key(*k))
        .collect();
    assert!(lost.is_empty(), "the firmware lost {lost:?}");
    check_after_boot(&vars, &before, &firmware);
}
