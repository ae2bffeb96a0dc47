//! `nvram set`, `nvram delete` and `nvram import` as a user runs them: data options, JSON
//! dialects, locks, and the rule that a refused edit leaves the file exactly as it was.

mod common;

use common::{nvram, path_str as p};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use varstore::{FirmwareVerdict, Varstore};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";

fn ok(args: &[&str]) -> String {
    let out = nvram(args);
    assert!(
        out.status.success(),
        "nvram {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn blank(dir: &Path) -> PathBuf {
    let path = dir.join("vars.fd");
    ok(&["create", path.to_str().unwrap()]);
    path
}

fn data_of(path: &Path, name: &str) -> Vec<u8> {
    let out = nvram(&["get", p(path), name, "--raw"]);
    assert!(out.status.success(), "{name}");
    out.stdout
}

fn healthy(path: &Path) {
    let image = fs::read(path).unwrap();
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    assert!(store.is_healthy(), "{:?}", store.findings());
}

/// The file's bytes and identity, to show that nothing was written.
fn fingerprint(path: &Path) -> (Vec<u8>, u64, i64) {
    let meta = fs::metadata(path).unwrap();
    (fs::read(path).unwrap(), meta.ino(), meta.mtime_nsec())
}

#[test]
fn set_stores_each_kind_of_data_and_reports_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let v = p(&vars);
    let msg = ok(&["set", v, "Timeout", "--u16", "5"]);
    assert!(
        msg.contains("Timeout 8be4df61-93ca-11d2-aa0d-00e098032b8c: added"),
        "{msg}"
    );
    assert_eq!(data_of(&vars, "Timeout"), [5, 0]);
    ok(&["set", v, "A", "--guid", TEST_GUID, "--u8", "0xff"]);
    ok(&["set", v, "B", "--guid", TEST_GUID, "--u32", "0x01020304"]);
    ok(&["set", v, "C", "--guid", TEST_GUID, "--string", "hé"]);
    ok(&["set", v, "D", "--guid", TEST_GUID, "--ascii", "en"]);
    ok(&[
        "set",
        v,
        "E",
        "--guid",
        TEST_GUID,
        "--data-hex",
        "de:ad be ef",
    ]);
    let file = dir.path().join("payload.bin");
    fs::write(&file, [9u8; 300]).unwrap();
    ok(&[
        "set",
        v,
        "F",
        "--guid",
        TEST_GUID,
        "--data-file",
        p(&file),
        "--attr",
        "nv,bs",
    ]);
    assert_eq!(data_of(&vars, "A"), [0xFF]);
    assert_eq!(data_of(&vars, "B"), [4, 3, 2, 1]);
    assert_eq!(data_of(&vars, "C"), [b'h', 0, 0xE9, 0, 0, 0]);
    assert_eq!(data_of(&vars, "D"), b"en\0");
    assert_eq!(data_of(&vars, "E"), [0xDE, 0xAD, 0xBE, 0xEF]);
    assert_eq!(data_of(&vars, "F"), [9u8; 300]);
    let json: Value = serde_json::from_slice(&nvram(&["get", v, "F", "--json"]).stdout).unwrap();
    assert_eq!(json["attr"], 3);

    let before = fingerprint(&vars);
    let msg = ok(&["set", v, "Timeout", "--u16", "5"]);
    assert!(msg.contains("unchanged"), "{msg}");
    assert_eq!(
        fingerprint(&vars),
        before,
        "an unchanged set does not rewrite the file"
    );

    let msg = ok(&["set", v, "Timeout", "--u16", "6", "--strategy", "compact"]);
    assert!(msg.contains("replaced (store compacted)"), "{msg}");
    assert_eq!(data_of(&vars, "Timeout"), [6, 0]);
    healthy(&vars);
}

#[test]
fn the_append_strategy_only_clears_bits_and_delete_marks_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("ms.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", &vars).unwrap();
    let v = p(&vars);
    let before = fs::read(&vars).unwrap();
    ok(&["set", v, "Timeout", "--u16", "9"]);
    ok(&["set", v, "New", "--guid", TEST_GUID, "--string", "x"]);
    ok(&["delete", v, "Lang"]);
    let after = fs::read(&vars).unwrap();
    let set_bits = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| *a & !*b != 0)
        .count();
    assert_eq!(set_bits, 0, "append only clears bits");
    healthy(&vars);
    assert!(!nvram(&["get", v, "Lang"]).status.success());
}

#[test]
fn delete_reports_missing_and_ambiguous_names() {
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let v = p(&vars);
    let out = nvram(&["delete", v, "Nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no variable Nope"));
    ok(&["set", v, "Twin", "--guid", TEST_GUID, "--u8", "1"]);
    ok(&["set", v, "Twin", "--u8", "2"]);
    let out = nvram(&["delete", v, "Twin"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one with --guid"));
    ok(&[
        "delete",
        v,
        "Twin",
        "--guid",
        "EfiGlobalVariable",
        "--strategy",
        "compact",
    ]);
    assert_eq!(data_of(&vars, "Twin"), [1]);
    healthy(&vars);
}

#[test]
fn refused_edits_leave_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let v = p(&vars);
    ok(&["set", v, "Keep", "--guid", TEST_GUID, "--u8", "1"]);
    let before = fingerprint(&vars);
    for (args, expect) in [
        (vec!["--attr", "rt", "--u8", "1"], "volatile"),
        (vec!["--attr", "nv,rt", "--u8", "1"], "rt requires bs"),
        (vec!["--attr", "nv", "--u8", "1"], "nv alone"),
        (vec!["--attr", "nv,bs,hr", "--u8", "1"], "hr"),
        (vec!["--attr", "nv,bs,aw", "--u8", "1"], "aw"),
        (vec!["--data-hex", ""], "empty data"),
        (vec!["--data-hex", "0"], "--data-hex"),
        (vec!["--u8", "256"], "--u8"),
        (vec!["--data-hex", &"00".repeat(0x8400)], "limit of 33792"),
    ] {
        let mut full = vec!["set", v, "X", "--guid", TEST_GUID];
        full.extend(args);
        let out = nvram(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
        assert!(err.contains(expect), "{full:?}: {err}");
        assert_eq!(fingerprint(&vars), before, "{full:?} changed the file");
    }
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn a_file_locked_by_a_running_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let before = fingerprint(&vars);
    // What pflash's FileStorage holds while a VM runs on the file.
    let holder = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&vars)
        .unwrap();
    rustix::fs::flock(
        &holder,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .unwrap();
    let json = dir.path().join("one.json");
    fs::write(
        &json,
        format!(r#"{{"version":2,"variables":[{{"name":"X","guid":"{TEST_GUID}","attr":7,"data":"01"}}]}}"#),
    )
    .unwrap();
    for args in [
        vec!["set", p(&vars), "X", "--u8", "1"],
        vec!["delete", p(&vars), "X", "--guid", TEST_GUID],
        vec!["import", p(&vars), "--json", p(&json)],
    ] {
        let out = nvram(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{}: locked by another process (a running VM?)",
                p(&vars)
            )),
            "{args:?}: {err}"
        );
        assert_eq!(fingerprint(&vars), before);
    }
    drop(holder);
    ok(&["set", p(&vars), "X", "--u8", "1"]);
}

#[test]
fn a_pending_fault_tolerant_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let mut image = fs::read(&vars).unwrap();
    let q = 0x41020;
    image[q] = 0xFC;
    image[q + 24..q + 32].copy_from_slice(&1u64.to_le_bytes());
    image[q + 32..q + 40].fill(0);
    image[q + 40] = 0xFD;
    fs::write(&vars, &image).unwrap();
    let out = nvram(&["set", p(&vars), "X", "--u8", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fault-tolerant write is unfinished"), "{err}");
    assert_eq!(fs::read(&vars).unwrap(), image);
}

#[test]
fn import_reads_qemu_virt_fw_vars_and_python_uefivars_json() {
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let json = dir.path().join("vars.json");
    // QEMU's uefi-vars: `time` for AT variables, `digest` for non-Secure-Boot ones.
    fs::write(
        &json,
        format!(
            r#"{{"version": 2, "variables": [
  {{"name": "Plain", "guid": "{TEST_GUID}", "attr": 7, "data": "0A0b"}},
  {{"name": "Signed", "guid": "{TEST_GUID}", "attr": 39, "data": "01",
    "time": "e907030a023527000000000000000000", "digest": "00112233"}},
  {{"name": "Python", "guid": "{TEST_GUID}", "attr": 39, "data": "02",
    "timestamp": "e807010203040500000000000000000"}}
]}}"#
        ),
    )
    .unwrap();
    let before = fingerprint(&vars);
    let out = nvram(&["import", p(&vars), "--json", p(&json)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "31 hex digits are refused: {err}"
    );
    assert!(err.contains("variable 2 (Python): time"), "{err}");
    assert_eq!(
        fingerprint(&vars),
        before,
        "nothing is imported on an error"
    );

    let text = fs::read_to_string(&json).unwrap().replace(
        "e807010203040500000000000000000",
        "e8070102030405000000000000000000",
    );
    fs::write(&json, text).unwrap();
    let msg = ok(&["import", p(&vars), "--json", p(&json)]);
    assert!(msg.contains("3 added"), "{msg}");
    assert!(
        msg.contains("Signed: QEMU's certificate digest was dropped"),
        "{msg}"
    );
    let exported: Value = serde_json::from_slice(&nvram(&["export", p(&vars)]).stdout).unwrap();
    let vars_out = exported["variables"].as_array().unwrap();
    assert_eq!(vars_out[0]["data"], "0a0b");
    assert_eq!(vars_out[1]["time"], "e907030a023527000000000000000000");
    assert_eq!(vars_out[2]["time"], "e8070102030405000000000000000000");
    let msg = ok(&["import", p(&vars), "--json", p(&json)]);
    assert!(msg.contains("3 unchanged"), "{msg}");
    healthy(&vars);
}

#[test]
fn import_of_virt_fw_vars_json_reproduces_the_store_and_replace_all_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ms.json");
    let peer = Command::new(testkit::virt_fw_vars())
        .arg("--input")
        .arg("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        .arg("--output-json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        peer.status.success(),
        "{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    let vars = blank(dir.path());
    ok(&["set", p(&vars), "Extra", "--guid", TEST_GUID, "--u8", "1"]);
    ok(&[
        "import",
        p(&vars),
        "--json",
        p(&json),
        "--replace-all",
        "--strategy",
        "compact",
    ]);
    let ours: Value = serde_json::from_slice(&nvram(&["export", p(&vars)]).stdout).unwrap();
    let theirs: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let set = |doc: &Value| {
        let mut v: Vec<String> = doc["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(set(&ours), set(&theirs));
    healthy(&vars);
    let store_image = fs::read(&vars).unwrap();
    let store = Varstore::parse(&store_image).unwrap();
    assert_eq!(store.records().len(), 31, "compact: live records only");
}

/// A VM's varstore belongs to the VMM's user (libvirt-qemu, 0600). Root editing it replaces
/// the file; the replacement must keep owner and mode, or the VM could not open its own
/// varstore at the next start.
#[test]
fn an_edit_by_root_keeps_the_owner_and_mode_of_the_vms_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    assert_eq!(
        fs::metadata(&vars).unwrap().uid(),
        0,
        "this test needs root to own files as another user (CI runs as root)"
    );
    // Debian's libvirt-qemu user and kvm group ids, as they would be on a host.
    std::os::unix::fs::chown(&vars, Some(64055), Some(108)).unwrap();
    fs::set_permissions(&vars, fs::Permissions::from_mode(0o600)).unwrap();
    let inode = fs::metadata(&vars).unwrap().ino();
    ok(&["set", p(&vars), "Timeout", "--u16", "3"]);
    let meta = fs::metadata(&vars).unwrap();
    assert_ne!(meta.ino(), inode, "the file was replaced");
    assert_eq!((meta.uid(), meta.gid()), (64055, 108), "owner after set");
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode after set");
    nvram(&["apply", "--set", "Lang=ascii:eng", p(&vars)]);
    let meta = fs::metadata(&vars).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (64055, 108), "owner after apply");
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode after apply");
    assert_eq!(data_of(&vars, "Lang"), b"eng\0");
}

/// `delete_by_name` finds the GUID in the store it edits, under `edit_file`'s lock: the
/// variable deleted is the one of that name in the file as it is when locked (not as some
/// earlier read saw it), a name held by two vendors is refused with both GUIDs and leaves the
/// file byte for byte, and a name no longer there is `NotFound`.
#[test]
fn delete_by_name_resolves_in_the_locked_store() {
    use nvram::edit::{delete_by_name, edit_file, DeleteError, EditFileError};
    use varstore::edit::{Change, Strategy};
    use varstore::{guid::EFI_GLOBAL_VARIABLE, Attributes, Guid};

    let dir = tempfile::tempdir().unwrap();
    let vars = blank(dir.path());
    let vendor = Guid::try_parse(TEST_GUID).unwrap();
    let set = |guid: Guid| {
        edit_file(&vars, |e| {
            e.set("Twin", guid, Attributes(7), &[1], None, Strategy::Append)
        })
        .unwrap();
    };
    set(EFI_GLOBAL_VARIABLE);
    // What an unlocked look-up would have found before another writer moved the variable.
    let stale = Varstore::parse(&fs::read(&vars).unwrap())
        .unwrap()
        .live_variables()[0]
        .guid;
    assert_eq!(stale, EFI_GLOBAL_VARIABLE);
    set(vendor);
    edit_file(&vars, |e| {
        e.delete("Twin", EFI_GLOBAL_VARIABLE, Strategy::Append)
    })
    .unwrap();

    set(EFI_GLOBAL_VARIABLE);
    let twice = fs::read(&vars).unwrap();
    let refused = edit_file(&vars, |e| delete_by_name(e, "Twin", None, Strategy::Append));
    match refused {
        Err(EditFileError::Edit {
            error: DeleteError::Ambiguous { guids, .. },
            ..
        }) => {
            assert_eq!(guids.len(), 2);
            assert!(guids.contains(&vendor) && guids.contains(&EFI_GLOBAL_VARIABLE));
        }
        other => panic!("expected an ambiguous name, got {other:?}"),
    }
    assert_eq!(
        fs::read(&vars).unwrap(),
        twice,
        "a refused delete writes nothing"
    );
    edit_file(&vars, |e| {
        e.delete("Twin", EFI_GLOBAL_VARIABLE, Strategy::Append)
    })
    .unwrap();

    let deleted = edit_file(&vars, |e| delete_by_name(e, "Twin", None, Strategy::Append)).unwrap();
    assert_eq!(
        deleted.value.0, vendor,
        "the vendor's copy, the one in the file now"
    );
    assert_eq!(deleted.value.1.change, Change::Deleted);
    let gone = edit_file(&vars, |e| delete_by_name(e, "Twin", None, Strategy::Append));
    assert!(
        matches!(
            gone,
            Err(EditFileError::Edit {
                error: DeleteError::NotFound { .. },
                ..
            })
        ),
        "{gone:?}"
    );
}
