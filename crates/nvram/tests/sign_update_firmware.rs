//! The Secure Boot firmware (OVMF_CODE_4M.secboot.fd, q35 with SMM) applies db updates signed
//! by `nvram secureboot sign-update`, replacing and appending, from inside the running guest,
//! and refuses a tampered one, one signed by a key that is not in KEK, and a replacing update
//! replayed as an append.
//!
//! The store trusts key A (PK, KEK and db, enrolled with `nvram secureboot enroll`). The
//! disk's loader is the UEFI shell (Debian's efi-shell-x64) signed with A; a second copy
//! signed with key B sits next to it. The shell's `dmpstore -all -l FILE` hands each update
//! to `SetVariable` with the attributes in the file (0x27 replace, 0x67 append) and prints the
//! firmware's status when refused.
//!
//! 1. First boot: the three bad updates are refused with Security Violation, db is unchanged,
//!    and the B-signed shell is refused.
//! 2. Second boot: a replacing db update (db := A, D, signed by A as KEK), a KEK append (+ E,
//!    signed by A as PK) and a db append (+ B, signed by the new KEK E) are taken, and the
//!    B-signed shell then runs (it prints a marker); the store's db is A, D, B, its KEK A, E.
//!
//! So the firmware verified our PKCS#7 signatures against KEK, over the attributes as well as
//! the data, and its image checks use the db the guest wrote.
//!
//! Needs `openssl`, `sbsign` and the unpacked efi-shell-x64 (scripts/install-test-deps).

mod common;

use common::{enroll_own_key, nvram_ok, path_str, sbsign, self_signed};
use nvram::secureboot::{dmpstore_record, Database, UpdateMode};
use std::fs;
use std::path::Path;
use std::time::Duration;
use testkit::{boot_ovmf, BootError, OvmfBoot, Stack};
use varstore::secureboot::SignatureDb;

/// Printed by the B-signed shell: only if the firmware let it run.
const B_RAN: &str = "image-signed-by-B-ran";

fn shell_x64() -> Vec<u8> {
    let path = testkit::peers().join("efi-shell-x64/usr/share/efi-shell-x64/shellx64.efi");
    fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the UEFI shell is unpacked by scripts/install-test-deps",
            path.display()
        )
    })
}

/// Loads the dmpstore file `file` (on the FAT disk's root) between two markers.
fn load_step(script: &mut String, name: &str, file: &str) {
    script.push_str(&format!("echo step-{name}-begin\n"));
    script.push_str(&format!("dmpstore -all -l fs0:\\{file}\n"));
    script.push_str(&format!("echo step-{name}-end\n"));
}

/// Starts the B-signed shell, which prints [`B_RAN`] if the firmware lets it run. The shell
/// ends a script at an image it cannot start, so this is the script's last step but
/// `reset -s`.
const START_B: &str =
    "fs0:\\EFI\\B\\SHELLB.EFI -nostartup -noversion -exit echo image-signed-by-B-ran\n";

/// The console text from `step-NAME-begin` to `step-NAME-end`.
fn section<'a>(serial: &'a str, name: &str) -> &'a str {
    let begin = format!("step-{name}-begin");
    let end = format!("step-{name}-end");
    let start = serial
        .find(&begin)
        .unwrap_or_else(|| panic!("no {begin} on the console:\n{serial}"));
    let rest = &serial[start..];
    let stop = rest
        .find(&end)
        .unwrap_or_else(|| panic!("no {end} on the console:\n{serial}"));
    &rest[..stop]
}

/// The B-signed shell ran, or the firmware refused it and the script ended there.
fn b_ran_or_refused(serial: &str) -> bool {
    serial.contains(B_RAN) || serial.contains("Script Error Status")
}

/// Boots the A-signed shell from the disk with `script` as its startup.nsh, the B-signed
/// shell and `files` next to it, until [`b_ran_or_refused`]; returns the console.
fn boot(
    stack: Stack,
    vars: &Path,
    script: &str,
    shells: &[Vec<u8>; 2],
    files: &[(&str, Vec<u8>)],
) -> String {
    let code = stack.firmware("OVMF_CODE_4M.secboot.fd");
    let mut boot = OvmfBoot::new(&code, vars, script);
    boot.stack = stack;
    boot.smm = true;
    boot.timeout = Duration::from_secs(180);
    boot.stop_when = Some(b_ran_or_refused);
    boot.files = vec![
        ("EFI/BOOT/BOOTX64.EFI".to_string(), shells[0].clone()),
        ("EFI/B/SHELLB.EFI".to_string(), shells[1].clone()),
    ];
    boot.files.extend(
        files
            .iter()
            .map(|(name, data)| (name.to_string(), data.clone())),
    );
    match boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e @ BootError::Setup(_)) => panic!("{e}"),
        Err(e) => panic!("{e}\n{}", e.serial().unwrap_or_default()),
    }
}

/// The subjects of the certificates in the store's `database`, in order.
fn subjects(vars: &Path, database: Database) -> Vec<String> {
    let image = fs::read(vars).unwrap();
    let store = varstore::Varstore::parse(&image).unwrap();
    let db = store
        .live_variables()
        .into_iter()
        .find(|v| v.name() == database.name() && v.guid == database.guid())
        .expect("the database in the store");
    SignatureDb::parse(db.data)
        .unwrap()
        .certificates()
        .map(|der| varstore::secureboot::certificate_subject(der).unwrap())
        .collect()
}

fn firmware_applies_signed_db_updates(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key_a, cert_a) = self_signed(d, "a", "nvram test key A");
    let (key_b, cert_b) = self_signed(d, "b", "nvram test key B");
    let (key_c, cert_c) = self_signed(d, "c", "nvram test key C (unknown)");
    let (_, cert_d) = self_signed(d, "d", "nvram test cert D");
    let (key_e, cert_e) = self_signed(d, "e", "nvram test KEK E");

    let vars = d.join("vars.fd");
    fs::write(&vars, fs::read(stack.firmware("OVMF_VARS_4M.fd")).unwrap()).unwrap();
    enroll_own_key(&vars, &cert_a);

    let shell = d.join("shellx64.efi");
    fs::write(&shell, shell_x64()).unwrap();
    let shells = [
        sbsign(&key_a, &cert_a, &shell, &d.join("shell-a.efi")),
        sbsign(&key_b, &cert_b, &shell, &d.join("shell-b.efi")),
    ];

    let sign_for =
        |database: &str, inputs: &[&Path], key: &Path, cert: &Path, extra: &[&str], out: &str| {
            let out = d.join(out);
            let mut args = vec!["secureboot", "sign-update", database];
            args.extend(inputs.iter().map(|p| path_str(p)));
            args.extend_from_slice(&["--key", path_str(key), "--cert", path_str(cert)]);
            args.extend_from_slice(&["-o", path_str(&out)]);
            args.extend_from_slice(extra);
            nvram_ok(&args);
            fs::read(out).unwrap()
        };
    let sign = |inputs: &[&Path], key: &Path, cert: &Path, extra: &[&str], out: &str| {
        sign_for("db", inputs, key, cert, extra, out)
    };
    // Later than db's timestamp (the newest certificate's notBefore, possibly this very
    // second): a replacing update must be newer. The append carries the current time, which
    // the firmware takes although it is earlier than db's after the replace.
    let later = ["--time", "2030-01-01T00:00:00Z"];
    let dmpstore = ["--time", "2030-01-01T00:00:00Z", "--dmpstore"];
    let replace_auth = sign(&[&cert_a, &cert_d], &key_a, &cert_a, &later, "replace.auth");
    let replace = sign(
        &[&cert_a, &cert_d],
        &key_a,
        &cert_a,
        &dmpstore,
        "replace.dmp",
    );
    // KEK gains E (signed by the PK, A); B is then added to db with E's signature.
    let kek_append = sign_for(
        "kek",
        &[&cert_e],
        &key_a,
        &cert_a,
        &["--append", "--dmpstore"],
        "kek.dmp",
    );
    let append = sign(
        &[&cert_b],
        &key_e,
        &cert_e,
        &["--append", "--dmpstore"],
        "append.dmp",
    );
    let wrong_key = sign(
        &[&cert_a, &cert_b],
        &key_c,
        &cert_c,
        &dmpstore,
        "wrong-key.dmp",
    );
    let mut tampered_auth = replace_auth.clone();
    *tampered_auth.last_mut().unwrap() ^= 0x01;
    let tampered = dmpstore_record(
        "db",
        Database::Db.guid(),
        UpdateMode::Replace.attributes(),
        &tampered_auth,
    );
    let as_append = dmpstore_record(
        "db",
        Database::Db.guid(),
        UpdateMode::Append.attributes(),
        &replace_auth,
    );
    // --dmpstore wraps the same payload (RSA PKCS#1 v1.5 and our signed attributes are
    // deterministic, so even the signature is the same).
    let replace_attributes = UpdateMode::Replace.attributes();
    assert_eq!(
        replace,
        dmpstore_record("db", Database::Db.guid(), replace_attributes, &replace_auth)
    );

    // Boot 1: the bad updates are refused, so the B-signed shell is refused too.
    let mut script = String::from("@echo -off\n");
    load_step(&mut script, "tampered", "TAMPERED.DMP");
    load_step(&mut script, "wrongkey", "WRONGKEY.DMP");
    load_step(&mut script, "asappend", "ASAPPEND.DMP");
    script.push_str(START_B);
    script.push_str("reset -s\n");
    let files = [
        ("TAMPERED.DMP", tampered),
        ("WRONGKEY.DMP", wrong_key),
        ("ASAPPEND.DMP", as_append),
    ];
    let serial = boot(stack, &vars, &script, &shells, &files);
    for refused in ["tampered", "wrongkey", "asappend"] {
        let text = section(&serial, refused);
        assert!(
            text.contains("Failed to set variable") && text.contains("Security Violation"),
            "step {refused}: the firmware did not refuse the update:\n{serial}"
        );
    }
    assert!(
        !serial.contains(B_RAN) && serial.contains("Script Error Status"),
        "the B-signed image was not refused with B missing from db:\n{serial}"
    );
    assert_eq!(
        subjects(&vars, Database::Db),
        ["nvram test key A"],
        "db changed by a refused update"
    );

    // Boot 2: the db replace, the KEK append and the db append signed by the new KEK are
    // taken, and the B-signed shell runs.
    let mut script = String::from("@echo -off\n");
    load_step(&mut script, "replace", "REPLACE.DMP");
    load_step(&mut script, "kek", "KEK.DMP");
    load_step(&mut script, "append", "APPEND.DMP");
    script.push_str(START_B);
    script.push_str("reset -s\n");
    let files = [
        ("REPLACE.DMP", replace),
        ("KEK.DMP", kek_append),
        ("APPEND.DMP", append),
    ];
    let serial = boot(stack, &vars, &script, &shells, &files);
    for taken in ["replace", "kek", "append"] {
        let text = section(&serial, taken);
        assert!(
            !text.contains("Failed"),
            "step {taken}: the firmware refused the signed update:\n{serial}"
        );
    }
    assert!(
        serial.contains(B_RAN),
        "the B-signed image did not run after the updates:\n{serial}"
    );
    assert_eq!(
        subjects(&vars, Database::Db),
        ["nvram test key A", "nvram test cert D", "nvram test key B"]
    );
    assert_eq!(
        subjects(&vars, Database::Kek),
        ["nvram test key A", "nvram test KEK E"]
    );
}

#[test]
fn ovmf_2025_02_applies_signed_db_updates_and_refuses_bad_ones() {
    firmware_applies_signed_db_updates(Stack::Current);
}

#[test]
fn ovmf_2022_11_applies_signed_db_updates_and_refuses_bad_ones() {
    firmware_applies_signed_db_updates(Stack::Debian12);
}
