//! Parity with virt-fw-vars (issue 16): for each of its options that nvram covers with its own
//! commands, both tools edit the same store and the resulting variables are compared: data
//! and attributes byte for byte, timestamps where virt-fw-vars sets them deterministically.
//! One virt-fw-vars process per capability keeps the file fast.
//!
//! Where virt-fw-vars dates a variable with the wall clock (adding a hash to db or dbx), the
//! timestamps are compared to the second against the time window of the run: virt-fw-vars
//! also writes the microseconds into `EFI_TIME.Nanosecond`, nvram writes whole seconds.

mod common;

use common::vfv::{
    assert_same, copy_of, live, now_key, vfv, vfv_python, write, OWNER, SECURITY_DB, SHIM,
};
use common::{nvram_ok, path_str as p};
use nvram::certs::distro_certs;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{debian_firmware, virt_fw_vars};

const HASH_DB: &str = "0102030405060708091011121314151617181920212223242526272829303132";
const HASH_DBX: &str = "a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7b8b9c0c1c2c3c4c5c6c7c8c9d0d1d2";
const HASH_MOK: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// `add-db/add-dbx/add-mok --hash`, a revoked certificate in dbx and a MOK certificate equal
/// virt-fw-vars' `--add-db-hash`, `--add-dbx-cert`, `--add-dbx-hash`, `--add-mok` and
/// `--add-mok-hash` on Debian's Microsoft store; repeating changes nothing.
#[test]
fn vfv_hashes_revoked_certificates_and_mok_match() {
    let dir = tempfile::tempdir().unwrap();
    let source = debian_firmware("OVMF_VARS_4M.ms.fd");
    let revoked = write(
        dir.path(),
        "revoked.der",
        distro_certs::CANONICAL_MASTER_CA_2012,
    );
    let mok = write(
        dir.path(),
        "mok.der",
        distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
    );
    let ours = copy_of(dir.path(), &source, "ours.fd");
    let theirs = dir.path().join("theirs.fd");
    let start = now_key();
    vfv(&[
        "-i",
        p(&source),
        "-o",
        p(&theirs),
        "--add-db-hash",
        OWNER,
        HASH_DB,
        "--add-dbx-cert",
        OWNER,
        p(&revoked),
        "--add-dbx-hash",
        OWNER,
        HASH_DBX,
        "--add-mok",
        OWNER,
        p(&mok),
        "--add-mok-hash",
        OWNER,
        HASH_MOK,
    ]);
    let o = p(&ours);
    let edits: [&[&str]; 3] = [
        &[
            "secureboot",
            "add-db",
            o,
            "--hash",
            HASH_DB,
            "--owner",
            OWNER,
        ],
        &[
            "secureboot",
            "add-dbx",
            o,
            p(&revoked),
            "--hash",
            HASH_DBX,
            "--owner",
            OWNER,
        ],
        &[
            "secureboot",
            "add-mok",
            o,
            p(&mok),
            "--hash",
            HASH_MOK,
            "--owner",
            OWNER,
        ],
    ];
    for args in edits {
        nvram_ok(args);
    }
    let end = now_key();
    assert_same(&ours, &theirs, &["db", "dbx"], (start, end));
    let mok_list = &live(&ours)[&("MokList".to_string(), SHIM.to_string())];
    assert_eq!(
        (mok_list.0, mok_list.2),
        (0x3, None),
        "MokList: NV+BS, no time"
    );
    let image = fs::read(&ours).unwrap();
    for args in edits {
        nvram_ok(args);
    }
    assert_eq!(
        fs::read(&ours).unwrap(),
        image,
        "a second run changes nothing"
    );
}

/// `add-dbx --replace UPDATE.auth` equals virt-fw-vars' `--set-dbx`: dbx is the update's
/// lists, dated with the update's own timestamp, and nothing else changes.
#[test]
fn vfv_set_dbx_replaces_with_the_updates_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let source = debian_firmware("OVMF_VARS_4M.ms.fd");
    let update = write(
        dir.path(),
        "dbxupdate.auth",
        nvram::certs::microsoft_dbx::DBX_2011_X86_64,
    );
    let ours = copy_of(dir.path(), &source, "ours.fd");
    let theirs = dir.path().join("theirs.fd");
    vfv(&["-i", p(&source), "-o", p(&theirs), "--set-dbx", p(&update)]);
    nvram_ok(&["secureboot", "add-dbx", p(&ours), p(&update), "--replace"]);
    let now = now_key();
    assert_same(&ours, &theirs, &[], (now, now));
    let dbx = &live(&ours)[&("dbx".to_string(), SECURITY_DB.to_string())];
    assert_ne!(
        dbx.1,
        live(&source)[&("dbx".to_string(), SECURITY_DB.to_string())].1
    );
}

/// `nvram shim set` and `nvram shim sbat-level` write what virt-fw-vars'
/// `--set-shim-debug`, `--set-shim-verbose`, `--set-fallback-verbose`,
/// `--set-fallback-no-reboot` and `--set-sbat-level` write; `--off` removes a switch again.
#[test]
fn vfv_shim_settings_and_sbat_level_match() {
    let dir = tempfile::tempdir().unwrap();
    let source = debian_firmware("OVMF_VARS_4M.fd");
    let sbat = write(
        dir.path(),
        "sbatlevel.txt",
        b"sbat,1,2024010900\nshim,4\ngrub,3\ngrub.debian,4\n",
    );
    let ours = copy_of(dir.path(), &source, "ours.fd");
    let theirs = dir.path().join("theirs.fd");
    vfv(&[
        "-i",
        p(&source),
        "-o",
        p(&theirs),
        "--set-shim-debug",
        "--set-shim-verbose",
        "--set-fallback-verbose",
        "--set-fallback-no-reboot",
        "--set-sbat-level",
        p(&sbat),
    ]);
    for setting in ["debug", "verbose", "fallback-verbose", "fallback-no-reboot"] {
        nvram_ok(&["shim", "set", p(&ours), setting]);
    }
    nvram_ok(&["shim", "sbat-level", p(&ours), p(&sbat)]);
    let now = now_key();
    assert_same(&ours, &theirs, &[], (now, now));
    nvram_ok(&["shim", "set", p(&ours), "debug", "--off"]);
    let after = live(&ours);
    assert!(!after.contains_key(&("SHIM_DEBUG".to_string(), SHIM.to_string())));
    assert!(after.contains_key(&("SHIM_VERBOSE".to_string(), SHIM.to_string())));
}

/// AWS EC2 stores: `nvram convert --to aws` writes what virt-fw-vars' `--output-aws` writes,
/// byte for byte; nvram reads that file, turns it into an edk2 store and back into the same
/// bytes; and an edit of the AWS file in place equals virt-fw-vars' edit with `-o`.
#[test]
fn vfv_aws_round_trip_and_edit_match() {
    let dir = tempfile::tempdir().unwrap();
    let source = debian_firmware("OVMF_VARS_4M.ms.fd");
    let theirs = dir.path().join("theirs.aws");
    let theirs_edited = dir.path().join("theirs-edited.aws");
    vfv(&["-i", p(&source), "--output-aws", p(&theirs)]);
    vfv(&[
        "-i",
        p(&theirs),
        "-o",
        p(&theirs_edited),
        "--set-shim-verbose",
    ]);
    let ours = dir.path().join("ours.aws");
    nvram_ok(&["convert", p(&source), p(&ours), "--to", "aws"]);
    assert_eq!(
        fs::read_to_string(&ours).unwrap(),
        fs::read_to_string(&theirs).unwrap(),
        "edk2 -> AWS"
    );
    let edk2 = dir.path().join("back.fd");
    nvram_ok(&[
        "convert",
        p(&theirs),
        p(&edk2),
        "--to",
        "raw",
        "--layout",
        "ovmf-4m",
    ]);
    let again = dir.path().join("again.aws");
    nvram_ok(&["convert", p(&edk2), p(&again), "--to", "aws"]);
    assert_eq!(
        fs::read(&again).unwrap(),
        fs::read(&theirs).unwrap(),
        "AWS -> edk2 -> AWS"
    );
    let now = now_key();
    assert_same(&edk2, &source, &[], (now, now));
    // Read by content in every command: an edit in place keeps the format.
    let edited = copy_of(dir.path(), &theirs, "edited.aws");
    nvram_ok(&["shim", "set", p(&edited), "verbose"]);
    assert_eq!(
        fs::read(&edited).unwrap(),
        fs::read(&theirs_edited).unwrap(),
        "edit of an AWS store"
    );
    let listed = common::stdout(&nvram_ok(&["list", p(&edited)]));
    assert!(listed.contains("SHIM_VERBOSE"), "{listed}");

    // Hashes and MOK on an AWS store, in place, equal virt-fw-vars' `--output-aws`.
    let mok = write(
        dir.path(),
        "mok.der",
        distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
    );
    let theirs_hashed = dir.path().join("theirs-hashed.aws");
    let start = now_key();
    vfv(&[
        "-i",
        p(&theirs),
        "--output-aws",
        p(&theirs_hashed),
        "--add-db-hash",
        OWNER,
        HASH_DB,
        "--add-mok",
        OWNER,
        p(&mok),
        "--add-mok-hash",
        OWNER,
        HASH_MOK,
    ]);
    let hashed = copy_of(dir.path(), &theirs, "hashed.aws");
    let h = p(&hashed);
    nvram_ok(&[
        "secureboot",
        "add-db",
        h,
        "--hash",
        HASH_DB,
        "--owner",
        OWNER,
    ]);
    nvram_ok(&["secureboot", "add-mok", h, p(&mok), "--owner", OWNER]);
    nvram_ok(&[
        "apply",
        "--add-mok-hash",
        HASH_MOK,
        "--add-owner",
        OWNER,
        "--",
        h,
    ]);
    let end = now_key();
    assert_same(&hashed, &theirs_hashed, &["db"], (start, end));
    assert_eq!(
        fs::read(&hashed).unwrap()[..4],
        fs::read(&theirs).unwrap()[..4],
        "still an AWS store"
    );
}

/// `nvram secureboot hashes` lists the SHA-256 entries virt-fw-vars' `--hashes` prints (in
/// the same order), and `nvram secureboot extract-certs` writes the PEM files virt-fw-vars'
/// `--extract-certs` writes: same names, same bytes, MokList included.
#[test]
fn vfv_hashes_and_extracted_certificates_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = copy_of(
        dir.path(),
        &debian_firmware("OVMF_VARS_4M.ms.fd"),
        "store.fd",
    );
    let mok = write(
        dir.path(),
        "mok.der",
        distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
    );
    let report: serde_json::Value = serde_json::from_slice(
        &nvram_ok(&[
            "secureboot",
            "add-mok",
            p(&store),
            p(&mok),
            "--hash",
            HASH_MOK,
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(report["variables"][0]["guid"], SHIM, "{report}");
    assert_eq!(report["variables"][0]["added"], 2, "{report}");
    nvram_ok(&["secureboot", "add-dbx", p(&store), "--microsoft", "2023"]);
    let theirs = dir.path().join("theirs");
    let ours = dir.path().join("ours");
    fs::create_dir(&theirs).unwrap();
    fs::create_dir(&ours).unwrap();
    let out = Command::new(virt_fw_vars())
        .args(["-i", p(&store), "--extract-certs", "-p", "-v", "--hashes"])
        .current_dir(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect();
    let listed: serde_json::Value =
        serde_json::from_slice(&nvram_ok(&["secureboot", "hashes", p(&store), "--json"]).stdout)
            .unwrap();
    let ours_hashes: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "sha256")
        .map(|h| h["sha256"].as_str().unwrap().to_string())
        .collect();
    assert!(
        printed.len() > 200,
        "the dbx update's hashes: {}",
        printed.len()
    );
    assert!(ours_hashes.contains(&HASH_MOK.to_string()));
    assert_eq!(ours_hashes, printed);

    nvram_ok(&["secureboot", "extract-certs", p(&store), "-o", p(&ours)]);
    let files = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let (a, b) = (files(&ours), files(&theirs));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a, b);
    assert!(
        a.keys().any(|n| n.starts_with("MokList-")),
        "{:?}",
        a.keys()
    );
    // A second run creates nothing and overwrites nothing, and reports every certificate.
    let again: serde_json::Value = serde_json::from_slice(
        &nvram_ok(&[
            "secureboot",
            "extract-certs",
            p(&store),
            "-o",
            p(&ours),
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    let entries = again.as_array().expect("a JSON array");
    assert_eq!(entries.len(), a.len(), "one entry per certificate: {again}");
    let mut reported: Vec<String> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["skipped"], true, "{e}");
            let path = Path::new(e["path"].as_str().expect("a path"));
            path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    reported.sort();
    assert_eq!(reported, a.keys().cloned().collect::<Vec<_>>());
    assert_eq!(fs::read_dir(&ours).unwrap().count(), a.len());
}

/// Every `--microsoft-db` profile: `add-db --microsoft-db PROFILE` on a blank store writes the
/// db (data and timestamp) that virt-firmware's own `add_microsoft_keys` builds for it (one
/// Python process for all nine), and `enroll --external-management` equals virt-fw-vars'
/// `--enroll-mgmt` (PK with the external-management entry, Microsoft's KEK, a profile's db,
/// the dummy dbx).
#[test]
fn vfv_microsoft_db_profiles_and_enroll_mgmt_match() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = [
        "win11",
        "win23",
        "win+rom23",
        "uefi11",
        "uefi23",
        "uefi+rom23",
        "redhat",
        "redhat+rom",
        "all",
    ];
    let python = vfv_python();
    let script = format!(
        "from virt.firmware.efi import efivar\n\
         for p in {profiles:?}:\n\
         \x20   vl = efivar.EfiVarList()\n\
         \x20   vl.add_microsoft_keys(ms_db=p)\n\
         \x20   print(p, vl['db'].data.hex(), vl['db'].bytes_time().hex())\n"
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: BTreeMap<String, (String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), (f[1].to_string(), f[2].to_string()))
        })
        .collect();
    assert_eq!(theirs.len(), profiles.len());
    let blank = debian_firmware("OVMF_VARS_4M.fd");
    let db_key = ("db".to_string(), SECURITY_DB.to_string());
    for profile in profiles {
        let store = copy_of(dir.path(), &blank, &format!("{profile}.fd"));
        nvram_ok(&["secureboot", "add-db", p(&store), "--microsoft-db", profile]);
        let db = &live(&store)[&db_key];
        assert_eq!(hex::encode(&db.1), theirs[profile].0, "{profile}: db");
        assert_eq!(
            hex::encode(db.2.unwrap()),
            theirs[profile].1,
            "{profile}: time"
        );
    }

    let ours = copy_of(dir.path(), &blank, "mgmt-ours.fd");
    let theirs_store = dir.path().join("mgmt-theirs.fd");
    vfv(&[
        "-i",
        p(&blank),
        "-o",
        p(&theirs_store),
        "--enroll-mgmt",
        "--microsoft-kek",
        "all",
        "--microsoft-db",
        "uefi+rom23",
        "--sb",
    ]);
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&ours),
        "--external-management",
        "--microsoft",
        "all",
        "--microsoft-db",
        "uefi+rom23",
    ]);
    let now = now_key();
    assert_same(&ours, &theirs_store, &[], (now, now));
    let status: serde_json::Value =
        serde_json::from_slice(&nvram_ok(&["secureboot", "status", p(&ours), "--json"]).stdout)
            .unwrap();
    assert_eq!(status["setup_mode"], false, "{status}");
}

/// `nvram set NAME --true/--false` writes what virt-fw-vars' `--set-true`/`--set-false`
/// write (one byte; the GUID and attributes it gives the name), and `nvram import --json`
/// of a JSON dump sets what `--set-json` sets.
#[test]
fn vfv_set_true_false_and_set_json_match() {
    let dir = tempfile::tempdir().unwrap();
    let blank = debian_firmware("OVMF_VARS_4M.fd");
    let json = dir.path().join("ms.json");
    let dump = nvram_ok(&["export", p(&debian_firmware("OVMF_VARS_4M.ms.fd"))]);
    fs::write(&json, &dump.stdout).unwrap();
    let theirs = dir.path().join("theirs.fd");
    vfv(&[
        "-i",
        p(&blank),
        "-o",
        p(&theirs),
        "--set-true",
        "SHIM_VERBOSE",
        "--set-true",
        "FB_NO_REBOOT",
        "--set-false",
        "MyFlag",
        "--set-json",
        p(&json),
    ]);
    let ours = copy_of(dir.path(), &blank, "ours.fd");
    nvram_ok(&["set", p(&ours), "SHIM_VERBOSE", "--true"]);
    nvram_ok(&["set", p(&ours), "FB_NO_REBOOT", "--true"]);
    nvram_ok(&["set", p(&ours), "MyFlag", "--false"]);
    nvram_ok(&["import", p(&ours), "--json", p(&json)]);
    let now = now_key();
    assert_same(&ours, &theirs, &[], (now, now));
    let vars = live(&ours);
    assert_eq!(vars[&("SHIM_VERBOSE".into(), SHIM.into())].1, [1]);
    assert!(vars.len() > 10, "the dump's variables: {}", vars.len());

    // virt-fw-vars' own dump (`--output-json`) fed to both tools.
    let edited = copy_of(dir.path(), &blank, "edited.fd");
    nvram_ok(&["set", p(&edited), "SHIM_VERBOSE", "--true"]);
    nvram_ok(&["secureboot", "add-mok", p(&edited), "--hash", HASH_MOK]);
    let their_json = dir.path().join("theirs.json");
    vfv(&["-i", p(&edited), "--output-json", p(&their_json)]);
    let theirs = dir.path().join("theirs-from-their-json.fd");
    vfv(&[
        "-i",
        p(&blank),
        "-o",
        p(&theirs),
        "--set-json",
        p(&their_json),
    ]);
    let ours = copy_of(dir.path(), &blank, "ours-from-their-json.fd");
    nvram_ok(&["import", p(&ours), "--json", p(&their_json)]);
    let now = now_key();
    assert_same(&ours, &theirs, &[], (now, now));
    let vars = live(&ours);
    assert!(vars.contains_key(&("MokList".into(), SHIM.into())));
    assert_eq!(vars[&("SHIM_VERBOSE".into(), SHIM.into())].1, [1]);
}

/// A fleet edit: `nvram apply` with MOK, hash, SBAT level and shim switch flags gives every
/// store what virt-fw-vars gives one with the matching options; a second run changes nothing.
#[test]
fn vfv_apply_mok_hashes_sbat_and_shim_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = debian_firmware("OVMF_VARS_4M.ms.fd");
    let mok = write(
        dir.path(),
        "mok.der",
        distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
    );
    let sbat = write(
        dir.path(),
        "sbat.txt",
        b"sbat,1,2023012900\nshim,2\ngrub,3\n",
    );
    let theirs = dir.path().join("theirs.fd");
    let start = now_key();
    vfv(&[
        "-i",
        p(&source),
        "-o",
        p(&theirs),
        "--set-shim-verbose",
        "--set-fallback-no-reboot",
        "--set-sbat-level",
        p(&sbat),
        "--add-db-hash",
        OWNER,
        HASH_DB,
        "--add-dbx-hash",
        OWNER,
        HASH_DBX,
        "--add-mok",
        OWNER,
        p(&mok),
        "--add-mok-hash",
        OWNER,
        HASH_MOK,
    ]);
    let files: Vec<PathBuf> = (0..3)
        .map(|i| copy_of(dir.path(), &source, &format!("vm{i}.fd")))
        .collect();
    let mut args = vec![
        "apply",
        "--add-mok",
        p(&mok),
        "--add-db-hash",
        HASH_DB,
        "--add-dbx-hash",
        HASH_DBX,
        "--add-mok-hash",
        HASH_MOK,
        "--add-owner",
        OWNER,
        "--shim-on",
        "verbose",
        "--shim-on",
        "fallback-no-reboot",
        "--shim-sbat-level",
        p(&sbat),
        "--",
    ];
    args.extend(files.iter().map(|f| p(f)));
    nvram_ok(&args);
    let end = now_key();
    for f in &files {
        assert_same(f, &theirs, &["db", "dbx"], (start, end));
    }
    let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    nvram_ok(&args);
    let after: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    assert_eq!(before, after, "a second run changes nothing");

    // `--shim-off` deletes the switch, as virt-fw-vars' `-d` does.
    let theirs_off = dir.path().join("theirs-off.fd");
    vfv(&["-i", p(&theirs), "-o", p(&theirs_off), "-d", "SHIM_VERBOSE"]);
    let mut off = vec!["apply", "--shim-off", "verbose", "--"];
    off.extend(files.iter().map(|f| p(f)));
    nvram_ok(&off);
    for f in &files {
        let vars = live(f);
        assert!(!vars.contains_key(&("SHIM_VERBOSE".to_string(), SHIM.to_string())));
        assert!(vars.contains_key(&("FB_NO_REBOOT".to_string(), SHIM.to_string())));
        assert_same(f, &theirs_off, &["db", "dbx"], (start, end));
    }
}

/// `enroll --platform redhat|microsoft` equals virt-fw-vars' `--enroll-redhat` and
/// `--enroll-microsoft` (with a KEK year and a db profile chosen).
#[test]
fn vfv_enroll_vendor_platforms_match() {
    let dir = tempfile::tempdir().unwrap();
    let blank = debian_firmware("OVMF_VARS_4M.fd");
    for (platform, ours_extra, theirs_extra) in [
        (
            "redhat",
            &["--microsoft", "all"][..],
            &["--enroll-redhat"][..],
        ),
        (
            "microsoft",
            &["--microsoft", "2023", "--microsoft-db", "win23"][..],
            &[
                "--enroll-microsoft",
                "--microsoft-kek",
                "2023",
                "--microsoft-db",
                "win23",
            ][..],
        ),
    ] {
        let ours = copy_of(dir.path(), &blank, &format!("{platform}-ours.fd"));
        let theirs = dir.path().join(format!("{platform}-theirs.fd"));
        let mut args = vec!["-i", p(&blank), "-o", p(&theirs), "--sb"];
        args.extend(theirs_extra);
        vfv(&args);
        let mut args = vec!["secureboot", "enroll", p(&ours), "--platform", platform];
        args.extend(ours_extra);
        nvram_ok(&args);
        let now = now_key();
        assert_same(&ours, &theirs, &[], (now, now));
    }
}

/// `add-db --distro windows|ms-uefi|ms-uefi-rom` adds what virt-fw-vars'
/// `--distro-keys windows|ms-uefi|ms-uefi-rom` adds (Microsoft's CAs, owned by OVMF's GUID).
#[test]
fn vfv_microsoft_distro_keys_match() {
    let dir = tempfile::tempdir().unwrap();
    let blank = debian_firmware("OVMF_VARS_4M.fd");
    let theirs = dir.path().join("theirs.fd");
    vfv(&[
        "-i",
        p(&blank),
        "-o",
        p(&theirs),
        "--distro-keys",
        "windows",
        "--distro-keys",
        "ms-uefi",
        "--distro-keys",
        "ms-uefi-rom",
    ]);
    let ours = copy_of(dir.path(), &blank, "ours.fd");
    nvram_ok(&[
        "secureboot",
        "add-db",
        p(&ours),
        "--distro",
        "windows",
        "--distro",
        "ms-uefi",
        "--distro",
        "ms-uefi-rom",
    ]);
    let now = now_key();
    assert_same(&ours, &theirs, &[], (now, now));
    let db = &live(&ours)[&("db".to_string(), SECURITY_DB.to_string())];
    assert!(
        db.1.len() > 5 * 1000,
        "five certificates: {} bytes",
        db.1.len()
    );
}
