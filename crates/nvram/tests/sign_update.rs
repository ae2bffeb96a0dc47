//! `nvram secureboot sign-update` and `export-auth` against independent peers: OpenSSL (the
//! library edk2 verifies PKCS#7 with) checks our signature over the bytes the UEFI
//! specification says are signed, and virt-fw-vars' `--output-auth` writes the same unsigned
//! files as `export-auth`. The firmware itself is in tests/sign_update_firmware.rs.

mod common;

use common::{enroll_own_key, nvram, nvram_ok, path_str, run_tool, self_signed, stderr};
use std::fs;
use std::path::Path;
use std::process::Command;
use testkit::{debian_firmware, require_tool, virt_fw_vars};
use varstore::secureboot::{SignatureDb, CERT_TYPE_PKCS7};

/// An `.auth` file taken apart by the layout of UEFI 2.10 §8.2.2 (not by nvram's code).
struct Auth {
    time: [u8; 16],
    pkcs7: Vec<u8>,
    data: Vec<u8>,
}

fn split(auth: &[u8]) -> Auth {
    let length = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
    assert_eq!(&auth[20..22], &[0x00, 0x02], "wRevision 0x0200");
    assert_eq!(&auth[22..24], &[0xf1, 0x0e], "WIN_CERT_TYPE_EFI_GUID");
    assert_eq!(
        &auth[24..40],
        &CERT_TYPE_PKCS7.to_bytes(),
        "EFI_CERT_TYPE_PKCS7_GUID"
    );
    Auth {
        time: auth[..16].try_into().unwrap(),
        pkcs7: auth[40..16 + length].to_vec(),
        data: auth[16 + length..].to_vec(),
    }
}

/// What the specification says the signature covers, built here independently.
fn message(name: &str, guid: &str, attributes: u32, auth: &Auth) -> Vec<u8> {
    let mut m: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    m.extend_from_slice(&varstore::guid::Guid::try_parse(guid).unwrap().to_bytes());
    m.extend_from_slice(&attributes.to_le_bytes());
    m.extend_from_slice(&auth.time);
    m.extend_from_slice(&auth.data);
    m
}

/// `openssl smime -verify` of the detached `SignedData` over `content`, trusting only
/// `ca`; edk2 wraps a bare `SignedData` in a `ContentInfo` the same way before OpenSSL sees it.
fn openssl_verifies(dir: &Path, pkcs7: &[u8], content: &[u8], ca: &Path) -> bool {
    use cms::content_info::ContentInfo;
    use x509_cert::der::{Any, Decode, Encode};
    let wrapped = ContentInfo {
        content_type: x509_cert::der::oid::db::rfc5911::ID_SIGNED_DATA,
        content: Any::from_der(pkcs7).unwrap(),
    }
    .to_der()
    .unwrap();
    let (p7, data) = (dir.join("sig.p7"), dir.join("content.bin"));
    fs::write(&p7, wrapped).unwrap();
    fs::write(&data, content).unwrap();
    let out = Command::new(require_tool("openssl"))
        .args(["smime", "-verify", "-binary", "-inform", "DER", "-in"])
        .arg(&p7)
        .arg("-content")
        .arg(&data)
        .arg("-CAfile")
        .arg(ca)
        .args(["-out", "/dev/null"])
        .output()
        .unwrap();
    out.status.success()
}

const DB_GUID: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

#[test]
fn openssl_verifies_signed_db_append_and_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = self_signed(d, "kek", "nvram KEK");
    let (_, new_cert) = self_signed(d, "new", "nvram new db cert");
    let (_, other) = self_signed(d, "other", "nvram other");
    // The same key as PKCS#1 PEM, which is read as well.
    let pkcs1 = d.join("kek-pkcs1.key");
    run_tool(
        &require_tool("openssl"),
        &[
            "rsa",
            "-traditional",
            "-in",
            path_str(&key),
            "-out",
            path_str(&pkcs1),
        ],
    );
    for (signing_key, name) in [(&key, "pkcs8.auth"), (&pkcs1, "pkcs1.auth")] {
        let out = d.join(name);
        nvram_ok(&[
            "secureboot",
            "sign-update",
            "db",
            path_str(&new_cert),
            "--append",
            "--key",
            path_str(signing_key),
            "--cert",
            path_str(&cert),
            "--time",
            "2027-03-04T05:06:07Z",
            "-o",
            path_str(&out),
        ]);
        let auth = split(&fs::read(&out).unwrap());
        assert_eq!(
            auth.time,
            [0xeb, 0x07, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let pem = fs::read_to_string(&new_cert).unwrap();
        let der = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1;
        let db = SignatureDb::parse(&auth.data).unwrap();
        assert!(db.contains_x509(&der) && db.certificates().count() == 1);
        // edk2 looks for SHA-256 at a fixed place of the SignedData (digestAlgorithms' first
        // OID value at offset 13, after a two-byte length) and refuses anything else.
        assert_eq!(auth.pkcs7[1], 0x82);
        assert_eq!(
            &auth.pkcs7[13..22],
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]
        );

        // An append is signed with EFI_VARIABLE_APPEND_WRITE in the attributes.
        let signed = message("db", DB_GUID, 0x67, &auth);
        assert!(openssl_verifies(d, &auth.pkcs7, &signed, &cert), "{name}");
        assert!(!openssl_verifies(
            d,
            &auth.pkcs7,
            &message("db", DB_GUID, 0x27, &auth),
            &cert
        ));
        assert!(!openssl_verifies(
            d,
            &auth.pkcs7,
            &message("KEK", DB_GUID, 0x67, &auth),
            &cert
        ));
        let mut tampered = signed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(!openssl_verifies(d, &auth.pkcs7, &tampered, &cert));
        assert!(!openssl_verifies(d, &auth.pkcs7, &signed, &other));
    }
}

#[test]
fn refuses_unusable_keys_and_updates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = self_signed(d, "a", "nvram a");
    let (_, other) = self_signed(d, "b", "nvram b");
    let out = d.join("x.auth");
    let sign = |args: &[&str]| {
        let mut all = vec!["secureboot", "sign-update"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", path_str(&out)]);
        nvram(&all)
    };
    let (k, c, o) = (path_str(&key), path_str(&cert), path_str(&other));

    let mismatch = sign(&["db", c, "--key", k, "--cert", o]);
    assert!(!mismatch.status.success());
    assert!(
        stderr(&mismatch).contains("does not belong"),
        "{}",
        stderr(&mismatch)
    );

    let encrypted = d.join("enc.key");
    run_tool(
        &require_tool("openssl"),
        &[
            "pkcs8",
            "-topk8",
            "-in",
            k,
            "-out",
            path_str(&encrypted),
            "-passout",
            "pass:x",
        ],
    );
    let refused = sign(&["db", c, "--key", path_str(&encrypted), "--cert", c]);
    assert!(
        stderr(&refused).contains("encrypted"),
        "{}",
        stderr(&refused)
    );

    let pk_append = sign(&["pk", c, "--append", "--key", k, "--cert", c]);
    assert!(
        stderr(&pk_append).contains("only ever replaced"),
        "{}",
        stderr(&pk_append)
    );
    let two_pks = sign(&["pk", c, o, "--key", k, "--cert", c]);
    assert!(
        stderr(&two_pks).contains("exactly one"),
        "{}",
        stderr(&two_pks)
    );
    assert!(!out.exists(), "a refused update left a file");

    // Replacing with nothing is a signed deletion: header and signature, no data.
    nvram_ok(&[
        "secureboot",
        "sign-update",
        "pk",
        "--key",
        k,
        "--cert",
        c,
        "-o",
        path_str(&out),
    ]);
    let auth = split(&fs::read(&out).unwrap());
    assert!(auth.data.is_empty());
    assert!(openssl_verifies(
        d,
        &auth.pkcs7,
        &message("PK", "8be4df61-93ca-11d2-aa0d-00e098032b8c", 0x27, &auth),
        &cert
    ));
}

/// The unsigned files are virt-fw-vars' byte for byte; signed ones carry the same data, our
/// timestamp and a signature OpenSSL accepts.
#[test]
fn export_auth_matches_virt_fw_vars_output_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = self_signed(d, "pk", "nvram PK");
    let vars = d.join("vars.fd");
    fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
    enroll_own_key(&vars, &cert);
    nvram_ok(&[
        "secureboot",
        "add-db",
        path_str(&vars),
        "--microsoft",
        "2023",
    ]);

    let theirs = d.join("theirs");
    run_tool(
        &virt_fw_vars(),
        &["-i", path_str(&vars), "--output-auth", path_str(&theirs)],
    );
    let ours = d.join("ours");
    nvram_ok(&[
        "secureboot",
        "export-auth",
        path_str(&vars),
        path_str(&ours),
    ]);
    for name in ["PK", "KEK", "db", "dbx"] {
        let file = format!("{name}.auth");
        let (a, b) = (
            fs::read(theirs.join(&file)).unwrap(),
            fs::read(ours.join(&file)).unwrap(),
        );
        assert!(a == b, "{file} differs from virt-fw-vars'");
        assert_eq!(split(&b).pkcs7.len(), 0, "{file}: unsigned");
    }

    let signed = d.join("signed");
    nvram_ok(&[
        "secureboot",
        "export-auth",
        path_str(&vars),
        path_str(&signed),
        "--key",
        path_str(&key),
        "--cert",
        path_str(&cert),
    ]);
    for (name, guid) in [
        ("PK", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        ("db", DB_GUID),
    ] {
        let file = format!("{name}.auth");
        let unsigned = split(&fs::read(ours.join(&file)).unwrap());
        let auth = split(&fs::read(signed.join(&file)).unwrap());
        assert_eq!(auth.data, unsigned.data, "{file}");
        assert!(
            openssl_verifies(d, &auth.pkcs7, &message(name, guid, 0x27, &auth), &cert),
            "{file}"
        );
    }
}
