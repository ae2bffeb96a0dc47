//! The `--json` reports of the commands that stand in for virt-fw-vars' options (issue 16):
//! `shim set`, `shim sbat-level`, `secureboot sign-update`, `secureboot export-auth` and
//! `convert --to aws`. Each documented field is checked against what the command did to
//! the files (read back independently), not against the report itself.

mod common;

use common::vfv::{SECURITY_DB, SHIM};
use common::{nvram_ok, path_str as p, self_signed};
use serde_json::Value;
use std::fs;
use std::path::Path;
use testkit::debian_firmware;
use varstore::Varstore;

fn json(args: &[&str]) -> Value {
    let out = nvram_ok(args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("nvram {args:?}: not JSON ({e}): {}", common::stdout(&out)))
}

/// The store's live variables as (name, guid, data).
fn variables(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    let file = nvram::files::read_store(path).unwrap();
    let store = Varstore::parse(file.image()).unwrap();
    store
        .live_variables()
        .iter()
        .map(|v| (v.name(), v.guid.to_string(), v.data.to_vec()))
        .collect()
}

/// `shim set --json` and `shim sbat-level --json`: file, written, free_space,
/// reclaim_at_boot and `variables[]` with name, guid and change.
#[test]
fn vfv_shim_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("vars.fd");
    fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &store).unwrap();
    let s = p(&store);

    let set = json(&["shim", "set", s, "verbose", "--json"]);
    assert_eq!(set["file"], s, "{set}");
    assert_eq!(set["written"], true, "{set}");
    assert_eq!(set["reclaim_at_boot"], false, "{set}");
    let variable = &set["variables"][0];
    assert_eq!(variable["name"], "SHIM_VERBOSE", "{set}");
    assert_eq!(variable["guid"], SHIM, "{set}");
    assert_eq!(variable["change"], "added", "{set}");
    assert_eq!(set["variables"].as_array().unwrap().len(), 1, "{set}");
    assert!(variables(&store)
        .iter()
        .any(|(n, g, _)| n == "SHIM_VERBOSE" && g == SHIM));
    let free_after_set = set["free_space"].as_u64().expect("free_space");

    let image = fs::read(&store).unwrap();
    let again = json(&["shim", "set", s, "verbose", "--json"]);
    assert_eq!(again["written"], false, "{again}");
    assert_eq!(again["variables"][0]["change"], "unchanged", "{again}");
    assert_eq!(again["free_space"], set["free_space"], "{again}");
    assert_eq!(fs::read(&store).unwrap(), image, "nothing written");

    let level = b"sbat,1,2024010900\nshim,4\ngrub,3\n";
    let sbat = dir.path().join("sbat.txt");
    fs::write(&sbat, level).unwrap();
    let report = json(&["shim", "sbat-level", s, p(&sbat), "--json"]);
    assert_eq!(report["file"], s, "{report}");
    assert_eq!(report["written"], true, "{report}");
    assert_eq!(report["variables"][0]["name"], "SbatLevel", "{report}");
    assert_eq!(report["variables"][0]["guid"], SHIM, "{report}");
    assert_eq!(report["variables"][0]["change"], "added", "{report}");
    let free = report["free_space"].as_u64().expect("free_space");
    assert!(
        free + level.len() as u64 <= free_after_set,
        "the new variable's bytes are no longer free: {free} after {free_after_set}"
    );
    let stored = variables(&store);
    let sbat_level = stored
        .iter()
        .find(|(n, g, _)| n == "SbatLevel" && g == SHIM)
        .expect("SbatLevel");
    assert_eq!(sbat_level.2, level);

    let off = json(&["shim", "set", s, "verbose", "--off", "--json"]);
    assert_eq!(off["variables"][0]["change"], "deleted", "{off}");
}

/// `secureboot sign-update --json` (file, name, guid, mode, attributes, time, entries,
/// signer, size, dmpstore) and `secureboot export-auth --json` (signed_by and `files[]` with
/// file, name and size), unsigned and signed.
#[test]
fn vfv_sign_update_and_export_auth_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = self_signed(dir.path(), "kek", "Report Test KEK");
    let (_, extra) = self_signed(dir.path(), "extra", "Report Test db");
    let out = dir.path().join("db.auth");
    let report = json(&[
        "secureboot",
        "sign-update",
        "db",
        p(&cert),
        p(&extra),
        "--key",
        p(&key),
        "--cert",
        p(&cert),
        "-o",
        p(&out),
        "--time",
        "2026-01-31T12:00:00Z",
        "--json",
    ]);
    assert_eq!(report["file"], p(&out), "{report}");
    assert_eq!(report["name"], "db", "{report}");
    assert_eq!(report["guid"], SECURITY_DB, "{report}");
    assert_eq!(report["mode"], "replace", "{report}");
    // NV, BS, RT and TIME_BASED_AUTHENTICATED_WRITE_ACCESS (UEFI 2.10 §8.2).
    assert_eq!(report["attributes"], 0x27, "{report}");
    assert_eq!(report["time"], "2026-01-31T12:00:00Z", "{report}");
    assert_eq!(report["entries"], 2, "{report}");
    assert_eq!(report["signer"], "CN=Report Test KEK", "{report}");
    assert_eq!(report["dmpstore"], false, "{report}");
    let auth = fs::read(&out).unwrap();
    assert_eq!(report["size"], auth.len(), "{report}");
    // EFI_TIME of the header: 2026-01-31 12:00:00.
    assert_eq!(&auth[..7], &[0xea, 0x07, 1, 31, 12, 0, 0]);

    let appended = dir.path().join("db-append.auth");
    let report = json(&[
        "secureboot",
        "sign-update",
        "db",
        p(&extra),
        "--append",
        "--key",
        p(&key),
        "--cert",
        p(&cert),
        "-o",
        p(&appended),
        "--json",
    ]);
    assert_eq!(report["mode"], "append", "{report}");
    // ... plus EFI_VARIABLE_APPEND_WRITE.
    assert_eq!(report["attributes"], 0x67, "{report}");
    assert_eq!(report["entries"], 1, "{report}");

    let store = debian_firmware("OVMF_VARS_4M.ms.fd");
    for (name, signed) in [("unsigned", false), ("signed", true)] {
        let target = dir.path().join(name);
        let mut args = vec!["secureboot", "export-auth", p(&store), p(&target), "--json"];
        if signed {
            args.extend(["--key", p(&key), "--cert", p(&cert)]);
        }
        let report = json(&args);
        let expected_signer = if signed {
            Value::from("CN=Report Test KEK")
        } else {
            Value::Null
        };
        assert_eq!(report["signed_by"], expected_signer, "{report}");
        let files = report["files"].as_array().expect("files");
        let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["PK", "KEK", "db", "dbx"], "{report}");
        for f in files {
            let path = Path::new(f["file"].as_str().unwrap());
            assert_eq!(
                path,
                target.join(format!("{}.auth", f["name"].as_str().unwrap()))
            );
            assert_eq!(f["size"], fs::metadata(path).unwrap().len(), "{f}");
        }
        assert_eq!(fs::read_dir(&target).unwrap().count(), 4);
    }
}

/// `convert --to aws --json`: input, output, from, to, from_layout, to_layout, variables and
/// relaid; the variable count is the store's, read back from the AWS file.
#[test]
fn vfv_convert_to_aws_report() {
    let dir = tempfile::tempdir().unwrap();
    let source = debian_firmware("OVMF_VARS_4M.ms.fd");
    let aws = dir.path().join("vars.aws");
    let report = json(&["convert", p(&source), p(&aws), "--to", "aws", "--json"]);
    assert_eq!(report["input"], p(&source), "{report}");
    assert_eq!(report["output"], p(&aws), "{report}");
    assert_eq!(report["from"], "raw", "{report}");
    assert_eq!(report["to"], "aws", "{report}");
    assert_eq!(report["from_layout"], "ovmf-4m", "{report}");
    assert_eq!(report["to_layout"], Value::Null, "{report}");
    assert_eq!(report["relaid"], false, "{report}");
    let count = variables(&source).len();
    assert!(count > 5, "{count}");
    assert_eq!(report["variables"], count, "{report}");
    assert_eq!(variables(&aws).len(), count);
}
