//! `nvram secureboot`: enrolment byte-identical to virt-fw-vars, additions that keep every
//! entry and add no duplicate, the Microsoft 2023 rollout on Debian's `OVMF_VARS_4M.ms.fd`,
//! the distribution CA certificates nvram carries equal to the Debian packages' files.

mod common;

use common::{nvram_ok, path_str as p};
use nvram::certs::distro_certs;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use testkit::{debian_firmware, require_tool, unpacked_debian_file, virt_fw_vars};
use varstore::secureboot::{efi_time, CERT_TYPE_PKCS7};
use varstore::Varstore;

/// (name, guid) -> (attributes, data, timestamp)
type Live = BTreeMap<(String, String), (u32, Vec<u8>, Option<[u8; 16]>)>;

fn live(path: &Path) -> Live {
    let image = fs::read(path).unwrap();
    let store = Varstore::parse(&image).unwrap();
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

fn make_cert(dir: &Path, name: &str) -> std::path::PathBuf {
    let cert = dir.join(format!("{name}.pem"));
    let out = Command::new(require_tool("openssl"))
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
        ])
        .args(["-days", "3650", "-subj", &format!("/CN={name}")])
        .args([
            "-keyout",
            p(&dir.join(format!("{name}.key"))),
            "-out",
            p(&cert),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert
}

/// Runs virt-fw-vars and asserts it succeeded.
fn virt_fw_vars_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "virt-fw-vars: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn status(path: &Path) -> Value {
    serde_json::from_slice(&nvram_ok(&["secureboot", "status", p(path), "--json"]).stdout).unwrap()
}

fn microsoft_present(status: &Value, name: &str) -> bool {
    status["microsoft"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()["present"]
        .as_bool()
        .unwrap()
}

const SB_VARS: [(&str, &str); 6] = [
    ("PK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
    ("KEK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
    ("db", "d719b2cb-3d3a-4596-a3bc-dad00e67656f"),
    ("dbx", "d719b2cb-3d3a-4596-a3bc-dad00e67656f"),
    ("SecureBootEnable", "f0a30bc7-af08-4556-99c4-001009c93a44"),
    ("CustomMode", "c076ec0c-7028-4399-a072-71ee5c448b9f"),
];

/// Compares data, attributes and timestamps of the Secure Boot variables.
fn assert_same_secure_boot_variables(ours: &Path, theirs: &Path) {
    let (a, b) = (live(ours), live(theirs));
    for (name, guid) in SB_VARS {
        let key = (name.to_string(), guid.to_string());
        let x = a
            .get(&key)
            .unwrap_or_else(|| panic!("nvram did not write {name}"));
        let y = b
            .get(&key)
            .unwrap_or_else(|| panic!("virt-fw-vars did not write {name}"));
        assert_eq!(x.0, y.0, "{name}: attributes");
        assert_eq!(hex::encode(&x.1), hex::encode(&y.1), "{name}: data");
        assert_eq!(x.2, y.2, "{name}: timestamp");
    }
    for key in a.keys() {
        assert!(
            b.contains_key(key),
            "nvram wrote {key:?}, virt-fw-vars did not"
        );
    }
}

#[test]
fn enroll_matches_virt_fw_vars() {
    let dir = tempfile::tempdir().unwrap();
    let pk = make_cert(dir.path(), "nvram test PK");
    let kek = make_cert(dir.path(), "nvram test KEK");
    let db = make_cert(dir.path(), "nvram test db");
    let blank = debian_firmware("OVMF_VARS_4M.fd");
    let owner = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";

    // Own certificates and the dummy dbx.
    let ours = dir.path().join("ours.fd");
    fs::copy(&blank, &ours).unwrap();
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&ours),
        "--pk",
        p(&pk),
        "--kek",
        p(&kek),
        "--db",
        p(&db),
    ]);
    let theirs = dir.path().join("theirs.fd");
    virt_fw_vars_ok(
        Command::new(virt_fw_vars())
            .args(["-i", p(&blank), "-o", p(&theirs)])
            .args(["--set-pk", owner, p(&pk), "--add-kek", owner, p(&kek)])
            .args(["--add-db", owner, p(&db), "--secure-boot"]),
    );
    assert_same_secure_boot_variables(&ours, &theirs);

    // One certificate as PK and KEK plus all of Microsoft's KEK and db certificates.
    let ours = dir.path().join("ours-ms.fd");
    fs::copy(&blank, &ours).unwrap();
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&ours),
        "--pk",
        p(&pk),
        "--kek",
        p(&pk),
        "--microsoft",
        "all",
    ]);
    let theirs = dir.path().join("theirs-ms.fd");
    virt_fw_vars_ok(
        Command::new(virt_fw_vars())
            .args(["-i", p(&blank), "-o", p(&theirs), "--enroll-cert", p(&pk)])
            .args([
                "--microsoft-kek",
                "all",
                "--microsoft-db",
                "all",
                "--secure-boot",
            ]),
    );
    assert_same_secure_boot_variables(&ours, &theirs);
    let s = status(&ours);
    assert_eq!(s["setup_mode"], false);
    assert_eq!(s["secure_boot_at_next_boot"], true);
    assert_eq!(s["microsoft_2023_ready"], true);
}

/// The certificates behind `--distro debian|ubuntu` are the ones Debian ships: Debian's own
/// CA as its shim is built with it, Canonical's as the refind package carries it.
#[test]
fn distro_certificates_equal_debian_packages() {
    let debian = fs::read("/usr/share/shim/debian-uefi-ca.der").expect("shim-unsigned installed");
    assert!(
        debian == distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
        "crates/nvram/certs/debian-secure-boot-ca-2016.der differs from shim-unsigned's \
         /usr/share/shim/debian-uefi-ca.der"
    );
    let canonical = fs::read(unpacked_debian_file(
        "etc/refind.d/keys/canonical-uefi-ca.cer",
    ))
    .unwrap();
    assert!(
        canonical == distro_certs::CANONICAL_MASTER_CA_2012,
        "crates/nvram/certs/canonical-master-ca-2012.der differs from refind's \
         canonical-uefi-ca.cer"
    );
}

/// `--distro` enrols what virt-fw-vars' `--distro-keys` enrols, byte for byte.
#[test]
fn enroll_distro_matches_virt_fw_vars() {
    let dir = tempfile::tempdir().unwrap();
    let pk = make_cert(dir.path(), "nvram test PK");
    let blank = debian_firmware("OVMF_VARS_4M.fd");
    let owner = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";
    let ours = dir.path().join("ours.fd");
    fs::copy(&blank, &ours).unwrap();
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&ours),
        "--pk",
        p(&pk),
        "--kek",
        p(&pk),
        "--distro",
        "debian",
        "--distro",
        "ubuntu",
        "--distro",
        "rh-uefi",
    ]);
    let theirs = dir.path().join("theirs.fd");
    virt_fw_vars_ok(
        Command::new(virt_fw_vars())
            .args(["-i", p(&blank), "-o", p(&theirs)])
            .args(["--set-pk", owner, p(&pk), "--add-kek", owner, p(&pk)])
            .args(["--distro-keys", "debian", "--distro-keys", "ubuntu"])
            .args(["--distro-keys", "rh-uefi", "--secure-boot"]),
    );
    assert_same_secure_boot_variables(&ours, &theirs);
    let db: Vec<String> = status(&ours)["databases"][2]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        db,
        [
            "Debian Secure Boot CA",
            "Canonical Ltd. Master Certificate Authority",
            "Red Hat UEFI CA 2024"
        ]
    );
}

/// `add-db --distro` adds to Microsoft's db without touching anything else; only db takes it.
#[test]
fn add_db_distro_keeps_microsoft_entries() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    fs::copy(debian_firmware("OVMF_VARS_4M.ms.fd"), &vars).unwrap();
    let before = live(&vars);
    let db_key = (
        "db".to_string(),
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f".to_string(),
    );
    nvram_ok(&["secureboot", "add-db", p(&vars), "--distro", "debian"]);
    let after = live(&vars);
    for (key, value) in &before {
        if *key != db_key {
            assert_eq!(after.get(key), Some(value), "{key:?} changed");
        }
    }
    let old_db = &before[&db_key].1;
    let new_db = &after[&db_key].1;
    assert_eq!(
        &new_db[..old_db.len()],
        &old_db[..],
        "db entries were not kept"
    );
    let added = varstore::secureboot::SignatureDb::parse(&new_db[old_db.len()..]).unwrap();
    assert!(added.contains_x509(distro_certs::DEBIAN_SECURE_BOOT_CA_2016));

    let image = fs::read(&vars).unwrap();
    nvram_ok(&["secureboot", "add-db", p(&vars), "--distro", "debian"]);
    assert_eq!(
        fs::read(&vars).unwrap(),
        image,
        "a second add rewrote the file"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(["secureboot", "add-kek", p(&vars), "--distro", "debian"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add-db"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&vars).unwrap(), image);
}

#[test]
fn microsoft_2023_rollout_on_debian_ms_store() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("ms.fd");
    fs::copy(debian_firmware("OVMF_VARS_4M.ms.fd"), &vars).unwrap();
    let before_vars = live(&vars);
    let before = status(&vars);
    let text = String::from_utf8(nvram_ok(&["secureboot", "status", p(&vars)]).stdout).unwrap();
    assert!(text.contains("Microsoft 2023 rollout"), "{text}");
    // Debian 12's store has Microsoft's 2011 certificates only.
    assert_eq!(before["microsoft_2023_ready"], false);
    assert!(microsoft_present(
        &before,
        "Microsoft Corporation KEK CA 2011"
    ));
    assert!(!microsoft_present(
        &before,
        "Microsoft Corporation KEK 2K CA 2023"
    ));

    nvram_ok(&["secureboot", "add-kek", p(&vars), "--microsoft", "2023"]);
    nvram_ok(&["secureboot", "add-db", p(&vars), "--microsoft", "2023"]);
    let after = status(&vars);
    for name in [
        "Microsoft Corporation KEK 2K CA 2023",
        "Windows UEFI CA 2023",
        "Microsoft UEFI CA 2023",
    ] {
        assert!(microsoft_present(&after, name), "{name} missing after add");
    }
    assert_eq!(after["microsoft_2023_ready"], true);
    // What was there stays, in order, and nothing else changed.
    let after_vars = live(&vars);
    for (key, value) in &before_vars {
        let now = &after_vars[key];
        if key.0 == "KEK" || key.0 == "db" {
            assert!(
                now.1.starts_with(&value.1),
                "{key:?} lost or reordered entries"
            );
            assert!(
                now.2 >= value.2 || value.2.is_none(),
                "{key:?} timestamp went back"
            );
        } else {
            assert_eq!(now, value, "{key:?} changed");
        }
    }
    assert_eq!(before_vars.len(), after_vars.len());
    for (b, a) in before["databases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["databases"].as_array().unwrap())
    {
        assert!(a["entries"].as_array().unwrap().len() >= b["entries"].as_array().unwrap().len());
    }
    // Again: nothing to add, so the file is not rewritten.
    let image = fs::read(&vars).unwrap();
    nvram_ok(&["secureboot", "add-kek", p(&vars), "--microsoft", "2023"]);
    nvram_ok(&["secureboot", "add-db", p(&vars), "--microsoft", "2023"]);
    assert_eq!(fs::read(&vars).unwrap(), image);
}

#[test]
fn add_keeps_entries_and_skips_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "cert A");
    let b = make_cert(dir.path(), "cert B");
    let vars = dir.path().join("vars.fd");
    fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&vars),
        "--pk",
        p(&a),
        "--db",
        p(&a),
    ]);
    nvram_ok(&["secureboot", "add-db", p(&vars), p(&b), p(&a)]);
    let image = fs::read(&vars).unwrap();
    nvram_ok(&["secureboot", "add-db", p(&vars), p(&b)]);
    assert_eq!(
        fs::read(&vars).unwrap(),
        image,
        "adding a present certificate rewrote the file"
    );
    let s = status(&vars);
    let db: Vec<String> = s["databases"][2]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(db, ["cert A", "cert B"]);

    // An .auth file: header skipped, its time used (the newest of the sources).
    let mut list = Vec::new();
    list.extend_from_slice(&varstore::guid::CERT_SHA256.to_bytes());
    list.extend_from_slice(&(28u32 + 48).to_le_bytes());
    list.extend_from_slice(&0u32.to_le_bytes());
    list.extend_from_slice(&48u32.to_le_bytes());
    list.extend_from_slice(&varstore::guid::MICROSOFT_OWNER.to_bytes());
    list.extend_from_slice(&[0x5a; 32]);
    let time = efi_time(2031, 2, 3, 4, 5, 6);
    let mut auth = time.0.to_vec();
    auth.extend_from_slice(&(24u32 + 2).to_le_bytes());
    auth.extend_from_slice(&0x0200u16.to_le_bytes());
    auth.extend_from_slice(&0x0EF1u16.to_le_bytes());
    auth.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
    auth.extend_from_slice(&[0x30, 0x00]);
    auth.extend_from_slice(&list);
    let auth_path = dir.path().join("dbxupdate.auth");
    fs::write(&auth_path, &auth).unwrap();
    nvram_ok(&["secureboot", "add-dbx", p(&vars), p(&auth_path)]);
    let dbx = &live(&vars)[&(
        "dbx".to_string(),
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f".to_string(),
    )];
    assert_eq!(dbx.0, 0x27);
    assert_eq!(dbx.2, Some(time.0));
    let sigs = varstore::decode::signature_lists(&dbx.1).unwrap();
    assert_eq!(
        sigs.len(),
        1,
        "the hash joins the dummy entry's SHA-256 list"
    );
    assert_eq!(sigs[0].entries.len(), 2);

    // Garbage input is refused and nothing changes.
    let junk = dir.path().join("junk.bin");
    fs::write(&junk, b"not a certificate").unwrap();
    let image = fs::read(&vars).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(["secureboot", "add-db", p(&vars), p(&junk)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(fs::read(&vars).unwrap(), image);
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn enroll_generates_pk() {
    use std::os::unix::fs::PermissionsExt;
    use varstore::guid;

    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    nvram_ok(&["create", p(&vars)]);
    let started = std::time::Instant::now();
    let out = nvram_ok(&["secureboot", "enroll", p(&vars), "--generate-pk", "Test PK"]);
    eprintln!("enroll --generate-pk took {:?}", started.elapsed());
    let (key, cert) = (
        dir.path().join("vars.fd.pk.key"),
        dir.path().join("vars.fd.pk.crt"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(p(&key)) && stderr.contains(p(&cert)),
        "{stderr}"
    );

    // The PK holds exactly one X.509 entry: the certificate written, with CN=Test PK.
    let image = fs::read(&vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    let live = store.live_variables();
    let pk = live
        .iter()
        .find(|v| v.name() == "PK" && v.guid == guid::EFI_GLOBAL_VARIABLE)
        .expect("PK enrolled");
    assert_eq!(pk.attributes.0, 0x27);
    let db = varstore::secureboot::SignatureDb::parse(pk.data).unwrap();
    assert_eq!(db.lists.len(), 1);
    assert_eq!(db.lists[0].signature_type, guid::CERT_X509);
    assert_eq!(db.lists[0].entries.len(), 1);
    let der = &db.lists[0].entries[0].1;
    let description = varstore::decode::describe_signature(guid::CERT_X509, der);
    assert!(description.contains("CN=Test PK"), "{description}");
    let status = status(&vars);
    assert_eq!(status["setup_mode"], false);
    assert_eq!(status["secure_boot_at_next_boot"], true);

    // The files: PEM certificate (the enrolled one), a valid PKCS#8 key that matches it,
    // both owner-only.
    let subject = openssl(&["x509", "-in", p(&cert), "-noout", "-subject"]);
    assert!(
        subject.contains("CN = Test PK") || subject.contains("CN=Test PK"),
        "{subject}"
    );
    let cert_der = Command::new(require_tool("openssl"))
        .args(["x509", "-in", p(&cert), "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(&cert_der, der, "the certificate file is the enrolled PK");
    let text = openssl(&["x509", "-in", p(&cert), "-noout", "-text"]);
    for needle in [
        "sha256WithRSAEncryption",
        "(2048 bit)",
        "CA:TRUE",
        "Certificate Sign",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    openssl(&["rsa", "-in", p(&key), "-check", "-noout"]);
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----\n"));
    for path in [&key, &cert] {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let cert_modulus = openssl(&["x509", "-in", p(&cert), "-noout", "-modulus"]);
    let key_modulus = openssl(&["rsa", "-in", p(&key), "-noout", "-modulus"]);
    assert!(cert_modulus.starts_with("Modulus="), "{cert_modulus}");
    assert_eq!(cert_modulus, key_modulus, "the certificate is for the key");

    // Again with the same output paths: refused, nothing touched.
    let before = (
        fs::read(&vars).unwrap(),
        fs::read(&key).unwrap(),
        fs::read(&cert).unwrap(),
    );
    let again = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args([
            "secureboot",
            "enroll",
            p(&vars),
            "--generate-pk",
            "Other PK",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let after = (
        fs::read(&vars).unwrap(),
        fs::read(&key).unwrap(),
        fs::read(&cert).unwrap(),
    );
    assert!(before == after, "a refused --generate-pk changed something");

    // --pk-key-out; a symlink there is refused (and not followed); --pk excludes it.
    let target = dir.path().join("target");
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for args in [
        vec!["--generate-pk", "Other PK", "--pk-key-out", p(&link)],
        vec!["--generate-pk", "Other PK", "--pk", p(&cert)],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nvram"))
            .args(["secureboot", "enroll", p(&vars)])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(fs::read(&vars).unwrap(), before.0, "{args:?}");
    }
    assert!(!target.exists());
    let own = dir.path().join("own.key");
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&vars),
        "--generate-pk",
        "Own PK",
        "--pk-key-out",
        p(&own),
    ]);
    let own_cert = dir.path().join("own.crt");
    let subject = openssl(&["x509", "-in", p(&own_cert), "-noout", "-subject"]);
    assert!(subject.contains("Own PK"), "{subject}");
    assert_eq!(
        openssl(&["x509", "-in", p(&own_cert), "-noout", "-modulus"]),
        openssl(&["rsa", "-in", p(&own), "-noout", "-modulus"])
    );
    assert_ne!(fs::read(&vars).unwrap(), before.0);

    // A store that cannot be edited leaves no key behind.
    let missing = dir.path().join("missing.fd");
    let lost = dir.path().join("lost.key");
    let out = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(["secureboot", "enroll", p(&missing), "--generate-pk", "X"])
        .args(["--pk-key-out", p(&lost)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!lost.exists() && !dir.path().join("lost.crt").exists());
}

/// `add-dbx --microsoft` adds Microsoft's revocation list for the store's architecture, as
/// virt-fw-vars' `--add-dbx` does with the same update file: byte-identical dbx (data,
/// attributes, timestamp), nothing else touched, a second run unchanged.
#[test]
fn add_dbx_microsoft_matches_virt_fw_vars_per_architecture() {
    use nvram::certs::microsoft_dbx;
    let dir = tempfile::tempdir().unwrap();
    let dbx_key = (
        "dbx".to_string(),
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f".to_string(),
    );
    for (template, update) in [
        ("OVMF_VARS_4M.ms.fd", microsoft_dbx::DBX_2023_X86_64),
        ("AAVMF_VARS.ms.fd", microsoft_dbx::DBX_2023_AARCH64),
    ] {
        let source = debian_firmware(template);
        let ours = dir.path().join(format!("ours-{template}"));
        fs::copy(&source, &ours).unwrap();
        nvram_ok(&["secureboot", "add-dbx", p(&ours), "--microsoft", "2023"]);
        let auth = dir.path().join("dbxupdate.auth");
        fs::write(&auth, update).unwrap();
        let theirs = dir.path().join(format!("theirs-{template}"));
        virt_fw_vars_ok(Command::new(virt_fw_vars()).args([
            "-i",
            p(&source),
            "-o",
            p(&theirs),
            "--add-dbx",
            p(&auth),
        ]));
        let (a, b, before) = (live(&ours), live(&theirs), live(&source));
        let (x, y) = (&a[&dbx_key], &b[&dbx_key]);
        assert_eq!(x.0, y.0, "{template}: dbx attributes");
        assert_eq!(x.2, y.2, "{template}: dbx timestamp");
        assert_eq!(hex::encode(&x.1), hex::encode(&y.1), "{template}: dbx data");
        assert!(
            x.1.len() > before[&dbx_key].1.len() + 1000,
            "{template}: the revocation list was not added"
        );
        for (key, value) in &before {
            if *key != dbx_key {
                assert_eq!(a.get(key), Some(value), "{template}: {key:?} changed");
            }
        }
        let image = fs::read(&ours).unwrap();
        nvram_ok(&["secureboot", "add-dbx", p(&ours), "--microsoft", "2023"]);
        assert_eq!(fs::read(&ours).unwrap(), image, "{template}: second add");
    }
    // The other architecture's list is not the same: the layout chose.
    assert_ne!(
        microsoft_dbx::DBX_2023_X86_64,
        microsoft_dbx::DBX_2023_AARCH64
    );
}
