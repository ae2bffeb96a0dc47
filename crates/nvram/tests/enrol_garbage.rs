//! Inputs that must not be enrolled or imported (issue 14): a signature list whose X.509 entry
//! is random bytes, an `.auth` file without signature lists, an empty signature list, and an
//! import file that lists a variable twice. Each is refused by `secureboot enroll`,
//! `add-kek`/`add-db`/`add-dbx` and the same edits of `apply`, with a message naming the input
//! (and the list and entry, or both positions), and the store is left as it was.

mod common;

use common::{nvram, path_str as p, stderr};
use nvram::certs::{bundled, SignatureInput};
use std::fs;
use std::path::{Path, PathBuf};
use varstore::guid;
use varstore::secureboot::{efi_time, CERT_TYPE_PKCS7};

/// One signature list of `signature_type` with one entry per item of `entries`.
fn signature_list(signature_type: guid::Guid, entry_len: usize, entries: &[&[u8]]) -> Vec<u8> {
    let mut out = signature_type.to_bytes().to_vec();
    let entry_size = 16 + entry_len;
    out.extend_from_slice(&((28 + entry_size * entries.len()) as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entry_size as u32).to_le_bytes());
    for e in entries {
        assert_eq!(e.len(), entry_len);
        out.extend_from_slice(&guid::MICROSOFT_OWNER.to_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// 116 bytes that are no certificate (a fixed xorshift sequence).
fn random_116() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..116)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 40-byte `.auth` file: EFI_TIME and a WIN_CERTIFICATE_UEFI_GUID header with no
/// certificate data, and nothing after it.
fn empty_auth() -> Vec<u8> {
    let mut auth = efi_time(2024, 1, 2, 3, 4, 5).0.to_vec();
    auth.extend_from_slice(&24u32.to_le_bytes());
    auth.extend_from_slice(&0x0200u16.to_le_bytes());
    auth.extend_from_slice(&0x0EF1u16.to_le_bytes());
    auth.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
    assert_eq!(auth.len(), 40);
    auth
}

struct Files {
    _dir: tempfile::TempDir,
    vars: PathBuf,
    pk: PathBuf,
    garbage: PathBuf,
    empty_auth: PathBuf,
    empty_esl: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    let vars = at("vars.fd");
    fs::write(
        &vars,
        varstore::Layout::by_name("ovmf-4m").unwrap().create(),
    )
    .unwrap();
    let pk = at("pk.der");
    fs::write(&pk, bundled::MICROSOFT_PK_2023).unwrap();
    let garbage = at("garbage.esl");
    // A good first list, so the bad entry is list 1.
    let mut esl = signature_list(guid::CERT_SHA256, 32, &[&[0x11; 32]]);
    esl.extend(signature_list(guid::CERT_X509, 116, &[&random_116()]));
    fs::write(&garbage, esl).unwrap();
    let empty_auth_path = at("empty.auth");
    fs::write(&empty_auth_path, empty_auth()).unwrap();
    let empty_esl = at("empty.esl");
    fs::write(&empty_esl, signature_list(guid::CERT_SHA256, 32, &[])).unwrap();
    Files {
        vars,
        pk,
        garbage,
        empty_auth: empty_auth_path,
        empty_esl,
        _dir: dir,
    }
}

/// Runs nvram, asserts it failed with every one of `expected` in its message and left `vars`
/// unchanged.
fn refused(vars: &Path, args: &[&str], expected: &[&str]) {
    let before = fs::read(vars).unwrap();
    let out = nvram(args);
    let message = stderr(&out);
    assert!(!out.status.success(), "nvram {args:?} succeeded: {message}");
    for e in expected {
        assert!(
            message.contains(e),
            "nvram {args:?}: {e:?} not in: {message}"
        );
    }
    assert!(
        fs::read(vars).unwrap() == before,
        "nvram {args:?} changed the store"
    );
}

const BAD_ENTRY: &str =
    "signature list 1, entry 0: the X.509 entry (116 bytes) is not a certificate";
const EMPTY_AUTH: &str = ".auth file without a single signature";
const EMPTY_ESL: &str = "signature lists without a single signature";

#[test]
fn enroll_refuses_unparsable_certificates_and_empty_inputs() {
    let f = files();
    let (vars, pk) = (p(&f.vars), p(&f.pk));
    let garbage = p(&f.garbage);
    refused(
        &f.vars,
        &["secureboot", "enroll", vars, "--pk", garbage],
        &[garbage, BAD_ENTRY],
    );
    for flag in ["--kek", "--db", "--dbx"] {
        refused(
            &f.vars,
            &["secureboot", "enroll", vars, "--pk", pk, flag, garbage],
            &[garbage, BAD_ENTRY],
        );
        refused(
            &f.vars,
            &[
                "secureboot",
                "enroll",
                vars,
                "--pk",
                pk,
                flag,
                p(&f.empty_auth),
            ],
            &[p(&f.empty_auth), EMPTY_AUTH],
        );
        refused(
            &f.vars,
            &[
                "secureboot",
                "enroll",
                vars,
                "--pk",
                pk,
                flag,
                p(&f.empty_esl),
            ],
            &[p(&f.empty_esl), EMPTY_ESL],
        );
    }
    // The store is still in setup mode: nothing was enrolled on the way.
    let image = fs::read(&f.vars).unwrap();
    assert!(varstore::Varstore::parse(&image)
        .unwrap()
        .live_variables()
        .is_empty());
}

#[test]
fn additions_refuse_unparsable_certificates_and_empty_inputs() {
    let f = files();
    let vars = p(&f.vars);
    for command in ["add-kek", "add-db", "add-dbx"] {
        refused(
            &f.vars,
            &["secureboot", command, vars, p(&f.garbage)],
            &[p(&f.garbage), BAD_ENTRY],
        );
        refused(
            &f.vars,
            &["secureboot", command, vars, p(&f.empty_auth)],
            &[p(&f.empty_auth), EMPTY_AUTH],
        );
        refused(
            &f.vars,
            &["secureboot", command, vars, p(&f.empty_esl)],
            &[p(&f.empty_esl), EMPTY_ESL],
        );
    }
}

#[test]
fn apply_refuses_unparsable_certificates_and_empty_inputs() {
    let f = files();
    let vars = p(&f.vars);
    refused(
        &f.vars,
        &["apply", "--enroll-pk", p(&f.garbage), vars],
        &[p(&f.garbage), BAD_ENTRY],
    );
    refused(
        &f.vars,
        &[
            "apply",
            "--enroll-pk",
            p(&f.pk),
            "--enroll-db",
            p(&f.garbage),
            vars,
        ],
        &[p(&f.garbage), BAD_ENTRY],
    );
    refused(
        &f.vars,
        &[
            "apply",
            "--enroll-pk",
            p(&f.pk),
            "--enroll-dbx",
            p(&f.empty_auth),
            vars,
        ],
        &[p(&f.empty_auth), EMPTY_AUTH],
    );
    for flag in ["--add-kek", "--add-db", "--add-dbx"] {
        refused(
            &f.vars,
            &["apply", flag, p(&f.garbage), vars],
            &[p(&f.garbage), BAD_ENTRY],
        );
        refused(
            &f.vars,
            &["apply", flag, p(&f.empty_esl), vars],
            &[p(&f.empty_esl), EMPTY_ESL],
        );
    }
}

/// The library refuses the same inputs built in memory, without a file to name.
#[test]
fn the_library_refuses_unparsable_certificates() {
    use nvram::secureboot::{add, enroll, Addition, Database, EnrollPlan, SecureBootError};
    use varstore::edit::{Editor, Strategy};
    let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    let mut editor = Editor::new(&image).unwrap();
    let garbage = SignatureInput::Certificates(vec![random_116()]);
    let err = enroll(&mut editor, &EnrollPlan::with_pk(garbage.clone())).unwrap_err();
    assert!(
        matches!(
            err,
            SecureBootError::BadInput {
                database: "PK",
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    let mut plan = EnrollPlan::with_pk(SignatureInput::Certificates(vec![
        bundled::MICROSOFT_PK_2023.to_vec(),
    ]));
    plan.db = vec![SignatureInput::Certificates(vec![
        bundled::MICROSOFT_DB_UEFI_2023.to_vec(),
    ])];
    plan.db.push(garbage.clone());
    let err = enroll(&mut editor, &plan).unwrap_err();
    assert!(
        matches!(
            err,
            SecureBootError::BadInput {
                database: "db",
                index: 1,
                ..
            }
        ),
        "{err}"
    );
    let mut addition = Addition::to(Database::Kek);
    addition.inputs.push(garbage);
    let err = add(&mut editor, &addition, Strategy::Append).unwrap_err();
    assert!(
        matches!(
            err,
            SecureBootError::BadInput {
                database: "KEK",
                ..
            }
        ),
        "{err}"
    );
    assert!(editor.finish() == image);
}

/// A variable listed twice (same name, same GUID in any case) is refused in every dialect the
/// importer reads, naming both positions; by `import` and by `apply --import`.
#[test]
fn import_refuses_a_variable_listed_twice() {
    let f = files();
    let vars = p(&f.vars);
    let g = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    let upper = g.to_uppercase();
    let time = "e807010203040500000000000000000000";
    let dialects = [
        // QEMU's uefi-vars (with a digest) and virt-fw-vars: "time".
        format!(
            r#"{{"version": 2, "variables": [
              {{"name": "A", "guid": "{g}", "attr": 7, "data": "01"}},
              {{"name": "Dup", "guid": "{g}", "attr": 39, "data": "02", "time": "{}", "digest": "00"}},
              {{"name": "B", "guid": "{g}", "attr": 7, "data": "03"}},
              {{"name": "Dup", "guid": "{upper}", "attr": 39, "data": "04", "time": "{}"}}]}}"#,
            &time[..32],
            &time[..32]
        ),
        // python-uefivars: "timestamp", no version.
        format!(
            r#"{{"variables": [
              {{"name": "A", "guid": "{g}", "attr": 7, "data": "01"}},
              {{"name": "Dup", "guid": "{g}", "attr": 7, "data": "02", "timestamp": "{}"}},
              {{"name": "B", "guid": "{g}", "attr": 7, "data": "03"}},
              {{"name": "Dup", "guid": "{g}", "attr": 7, "data": "04"}}]}}"#,
            "0".repeat(32)
        ),
    ];
    for (i, json) in dialects.iter().enumerate() {
        let path = f.vars.with_file_name(format!("dup{i}.json"));
        fs::write(&path, json).unwrap();
        let expected = [p(&path), "variables 1 and 3 are both Dup"];
        refused(&f.vars, &["import", vars, "--json", p(&path)], &expected);
        refused(&f.vars, &["apply", "--import", p(&path), vars], &expected);
    }
}
