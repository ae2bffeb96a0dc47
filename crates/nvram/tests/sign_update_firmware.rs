//! The Secure Boot firmware (OVMF_CODE_4M.secboot.fd, q35 with SMM) applies a db update
//! signed by `nvram secureboot sign-update` from inside the running guest, and refuses a
//! tampered one and one signed by a key that is not in KEK.
//!
//! The store trusts key A (PK, KEK and db, enrolled with `nvram secureboot enroll`). The
//! disk's loader is the UEFI shell (Debian's efi-shell-x64) signed with A; a second copy
//! signed with key B sits next to it. The shell's startup script, in one boot:
//! 1. writes a db update (replacing db with A and B) whose data has one byte flipped, then
//!    starts the B-signed shell;
//! 2. writes the same update signed by key C (which the store does not know), then starts the
//!    B-signed shell;
//! 3. writes the intact update signed by A, then starts the B-signed shell.
//!
//! Only the last write succeeds, and only after it does the B-signed shell run (it prints a
//! marker): the firmware verified our PKCS#7 signature against KEK, and the image check uses
//! the db the guest wrote. The shell's `setvar` keeps an existing variable's attributes, so
//! the update is written with db's 0x27 (time-based authenticated): a replacing update.
//!
//! Needs `openssl`, `sbsign` and the unpacked efi-shell-x64 (scripts/install-test-deps).

mod common;

use common::{enroll_own_key, nvram_ok, path_str, sbsign, self_signed};
use std::fs;
use std::path::Path;
use std::time::Duration;
use testkit::{boot_ovmf, BootError, OvmfBoot, Stack};

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

/// The `setvar` line writing `auth` to db (existing, so written with its attributes 0x27),
/// with its status on the console.
fn setvar_step(script: &mut String, name: &str, auth: &[u8]) {
    script.push_str(&format!("echo step-{name}-begin\n"));
    script.push_str(&format!(
        "setvar db -guid d719b2cb-3d3a-4596-a3bc-dad00e67656f =H{}\n",
        hex::encode_upper(auth)
    ));
    script.push_str(&format!("echo step-{name}-end %lasterror%\n"));
}

/// Starts the B-signed shell, which prints [`B_RAN`] if the firmware lets it run. The shell
/// ends a script at an image it cannot start, so this is the script's last step but
/// `reset -s`.
const START_B: &str =
    "fs0:\\EFI\\B\\SHELLB.EFI -nostartup -noversion -exit echo image-signed-by-B-ran\n";

/// The console text from `step-NAME-begin` to `step-NAME-end`, with the status after it.
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
    let line_end = rest[stop..].find('\n').map_or(rest.len(), |n| stop + n);
    &rest[..line_end]
}

/// The B-signed shell ran, or the firmware refused it and the script ended there.
fn b_ran_or_refused(serial: &str) -> bool {
    serial.contains(B_RAN) || serial.contains("Script Error Status")
}

/// Boots the A-signed shell from the disk with `script` as its startup.nsh, the B-signed
/// shell next to it, until [`b_ran_or_refused`]; returns the console.
fn boot(stack: Stack, vars: &Path, script: &str, shell_a: &[u8], shell_b: &[u8]) -> String {
    let code = stack.firmware("OVMF_CODE_4M.secboot.fd");
    let mut boot = OvmfBoot::new(&code, vars, script);
    boot.stack = stack;
    boot.smm = true;
    boot.timeout = Duration::from_secs(180);
    boot.stop_when = Some(b_ran_or_refused);
    boot.files = vec![
        ("EFI/BOOT/BOOTX64.EFI".to_string(), shell_a.to_vec()),
        ("EFI/B/SHELLB.EFI".to_string(), shell_b.to_vec()),
    ];
    match boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e @ BootError::Setup(_)) => panic!("{e}"),
        Err(e) => panic!("{e}\n{}", e.serial().unwrap_or_default()),
    }
}

/// The number of entries in the store's db.
fn db_entries(vars: &Path) -> usize {
    let status = nvram_ok(&["secureboot", "status", path_str(vars), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let db = status["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "db")
        .unwrap()
        .clone();
    db["entries"].as_array().map_or(0, Vec::len)
}

fn firmware_applies_signed_db_update(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key_a, cert_a) = self_signed(d, "a", "nvram test key A");
    let (key_b, cert_b) = self_signed(d, "b", "nvram test key B");
    let (key_c, cert_c) = self_signed(d, "c", "nvram test key C (unknown)");

    let vars = d.join("vars.fd");
    fs::write(&vars, fs::read(stack.firmware("OVMF_VARS_4M.fd")).unwrap()).unwrap();
    enroll_own_key(&vars, &cert_a);

    let shell = d.join("shellx64.efi");
    fs::write(&shell, shell_x64()).unwrap();
    let shell_a = sbsign(&key_a, &cert_a, &shell, &d.join("shell-a.efi"));
    let shell_b = sbsign(&key_b, &cert_b, &shell, &d.join("shell-b.efi"));

    let sign = |key: &Path, cert: &Path, out: &str| {
        let out = d.join(out);
        nvram_ok(&[
            "secureboot",
            "sign-update",
            "db",
            path_str(&cert_a),
            path_str(&cert_b),
            "--key",
            path_str(key),
            "--cert",
            path_str(cert),
            "-o",
            path_str(&out),
            // Later than db's timestamp (the newest certificate's notBefore, the same second
            // as this signature when the test runs fast): a replacing update must be newer.
            "--time",
            "2030-01-01T00:00:00Z",
        ]);
        fs::read(out).unwrap()
    };
    let good = sign(&key_a, &cert_a, "good.auth");
    let wrong_key = sign(&key_c, &cert_c, "wrong-key.auth");
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 0x01;

    // Boot 1: both bad updates are refused, so the B-signed shell is refused too.
    let mut script = String::from("@echo -off\n");
    setvar_step(&mut script, "tampered", &tampered);
    setvar_step(&mut script, "wrongkey", &wrong_key);
    script.push_str(START_B);
    script.push_str("reset -s\n");
    let serial = boot(stack, &vars, &script, &shell_a, &shell_b);
    for refused in ["tampered", "wrongkey"] {
        let text = section(&serial, refused);
        assert!(
            text.contains("setvar: Unable to set") && text.contains("end 0xF"),
            "step {refused}: the firmware took the update:\n{serial}"
        );
    }
    assert!(
        !serial.contains(B_RAN) && serial.contains("Script Error Status"),
        "the B-signed image was not refused with B missing from db:\n{serial}"
    );
    assert_eq!(db_entries(&vars), 1, "db changed by a refused update");

    // Boot 2: the intact update is taken, and the B-signed shell runs.
    let mut script = String::from("@echo -off\n");
    setvar_step(&mut script, "good", &good);
    script.push_str(START_B);
    script.push_str("reset -s\n");
    let serial = boot(stack, &vars, &script, &shell_a, &shell_b);
    let text = section(&serial, "good");
    assert!(
        !text.contains("Unable to set") && text.contains("end 0x0"),
        "the firmware refused the signed update:\n{serial}"
    );
    assert!(
        serial.contains(B_RAN),
        "the B-signed image did not run after the update:\n{serial}"
    );
    // The store holds what the guest wrote: A and B in db.
    assert_eq!(db_entries(&vars), 2);
}

#[test]
fn ovmf_2025_02_applies_signed_db_update_and_refuses_bad_ones() {
    firmware_applies_signed_db_update(Stack::Current);
}

#[test]
fn ovmf_2022_11_applies_signed_db_update_and_refuses_bad_ones() {
    firmware_applies_signed_db_update(Stack::Debian12);
}
