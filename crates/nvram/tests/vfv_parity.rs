//! Parity with virt-fw-vars (issue 16): for each of its options that nvram covers with its own
//! commands, both tools edit the same store and the resulting variables are compared: data
//! and attributes byte for byte, timestamps where virt-fw-vars sets them deterministically.
//! One virt-fw-vars process per capability keeps the file fast.
//!
//! Where virt-fw-vars dates a variable with the wall clock (adding a hash to db or dbx), the
//! timestamps are compared to the second against the time window of the run: virt-fw-vars
//! also writes the microseconds into `EFI_TIME.Nanosecond`, nvram writes whole seconds.

mod common;

use common::{nvram_ok, path_str as p};
use nvram::certs::distro_certs;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{debian_firmware, virt_fw_vars};
use varstore::Varstore;

/// (name, guid) -> (attributes, data, timestamp)
type Live = BTreeMap<(String, String), (u32, Vec<u8>, Option<[u8; 16]>)>;

const OWNER: &str = "11223344-5566-7788-99aa-bbccddeeff00";
const SHIM: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
const SECURITY_DB: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

fn live(path: &Path) -> Live {
    let file = nvram::files::read_store(path).unwrap();
    let store = Varstore::parse(file.image()).unwrap();
    store
        .live_variables()
        .iter()
        .map(|v| {
            (
                (v.name(), v.guid.to_string()),
                (v.attributes.0, v.data.to_vec(), v.time().map(|t| t.0)),
            )
        })
        .collect()
}

fn vfv(args: &[&str]) {
    let out = Command::new(virt_fw_vars()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "virt-fw-vars {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_of(dir: &Path, source: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(source, &path).unwrap();
    path
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// An `EFI_TIME` to the second: year, month, day, hour, minute, second.
type Seconds = (u16, u8, u8, u8, u8, u8);

/// The seconds-resolution key of an `EFI_TIME`.
fn seconds(t: &[u8; 16]) -> Seconds {
    (
        u16::from_le_bytes([t[0], t[1]]),
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
    )
}

fn now_key() -> Seconds {
    seconds(&nvram::certs::now().0)
}

/// Asserts that the two stores hold the same variables with the same attributes and data;
/// timestamps equal, or for the variables in `clocked` both within `window`.
fn assert_same(ours: &Path, theirs: &Path, clocked: &[&str], window: (Seconds, Seconds)) {
    let (a, b) = (live(ours), live(theirs));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same variables"
    );
    for (key, x) in &a {
        let y = &b[key];
        assert_eq!(x.0, y.0, "{key:?}: attributes");
        assert_eq!(hex::encode(&x.1), hex::encode(&y.1), "{key:?}: data");
        if clocked.contains(&key.0.as_str()) {
            for t in [x.2, y.2] {
                let t = seconds(&t.expect("a timestamp"));
                assert!(
                    window.0 <= t && t <= window.1,
                    "{key:?}: {t:?} outside {window:?}"
                );
            }
        } else {
            assert_eq!(x.2, y.2, "{key:?}: timestamp");
        }
    }
}

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
    // A second run creates nothing and overwrites nothing.
    let again = common::stdout(&nvram_ok(&[
        "secureboot",
        "extract-certs",
        p(&store),
        "-o",
        p(&ours),
        "--json",
    ]));
    assert!(!again.contains("\"skipped\": false"), "{again}");
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
    let python = virt_fw_vars().with_file_name("python3");
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
