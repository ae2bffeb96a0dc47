//! Helpers shared by the integration tests of the `nvram` binary.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod vfv;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::{
    boot_ovmf, debian_firmware, parse_dmpstore, require_tool, Arch, OvmfBoot, Stack, ATTR_NV,
};

/// One variable: (name, guid, attributes, data).
pub type Variable = (String, String, u32, Vec<u8>);

/// Runs the `nvram` binary with `args`.
pub fn nvram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .output()
        .expect("run nvram")
}

/// Runs the `nvram` binary with `args` and asserts that it succeeded.
pub fn nvram_ok(args: &[&str]) -> Output {
    let out = nvram(args);
    assert!(
        out.status.success(),
        "nvram {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn debian(name: &str) -> PathBuf {
    debian_firmware(name)
}

/// Boots OVMF (`code` from Debian 12's firmware) with `vars` in place, runs `commands` (if
/// any), dumps every variable with the firmware's own `dmpstore` and returns the non-volatile
/// ones (the ones that live in the flash), collected in `dmpstore`'s order.
pub fn boot_and_dump<C: FromIterator<Variable>>(code: &str, vars: &Path, commands: &str) -> C {
    boot_and_dump_on(Stack::Debian12, Arch::X86_64, code, vars, commands)
}

/// [`boot_and_dump`] with the firmware `code` of `stack` for `arch`, under the stack's QEMU.
pub fn boot_and_dump_on<C: FromIterator<Variable>>(
    stack: Stack,
    arch: Arch,
    code: &str,
    vars: &Path,
    commands: &str,
) -> C {
    let code = stack.firmware(code);
    let dump = "dmpstore -all -sfo >a fs0:\\dump.txt\nreset -s\n";
    let script = if commands.is_empty() {
        dump.to_string()
    } else {
        format!("{commands}\n{dump}")
    };
    let mut boot = OvmfBoot::new(&code, vars, &script);
    boot.stack = stack;
    boot.arch = arch;
    boot.timeout = std::time::Duration::from_secs(240);
    let outcome = boot_ovmf(&boot).unwrap_or_else(|e| panic!("boot failed: {e}"));
    let dump = outcome
        .read_file("dump.txt")
        .unwrap_or_else(|| panic!("the script wrote no dump; serial log:\n{}", outcome.serial));
    parse_dmpstore(&String::from_utf8_lossy(&dump))
        .expect("dmpstore output parses")
        .into_iter()
        .filter(|v| v.attributes & ATTR_NV != 0)
        .map(|v| (v.name, v.guid, v.attributes, v.data))
        .collect()
}

/// The live variables as `nvram export` sees them, collected in its order.
pub fn exported<C: FromIterator<Variable>>(vars: &Path) -> C {
    let out = nvram_ok(&["export", path_str(vars)]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["guid"].as_str().unwrap().to_string(),
                v["attr"].as_u64().unwrap() as u32,
                hex::decode(v["data"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Asserts that the firmware's `dmpstore` and nvram list the same variables, naming the
/// differences.
pub fn assert_same_variables(firmware: &BTreeSet<Variable>, ours: &BTreeSet<Variable>) {
    let missing: Vec<_> = firmware.difference(ours).map(|v| (&v.0, &v.1)).collect();
    let extra: Vec<_> = ours.difference(firmware).map(|v| (&v.0, &v.1)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "firmware and nvram disagree.\n  only in dmpstore: {missing:?}\n  only in nvram: {extra:?}"
    );
}

/// Runs `program` with `args` and asserts that it succeeded, showing its stderr otherwise.
pub fn run_tool(program: &Path, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new RSA-2048 key and self-signed certificate `NAME.key`/`NAME.pem` in `dir` (openssl).
pub fn self_signed(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let subject = format!("/CN={cn}");
    run_tool(
        &require_tool("openssl"),
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            &subject,
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&cert),
        ],
    );
    (key, cert)
}

/// `input` signed for Secure Boot with `key`/`cert` (sbsign), written to `output` and returned.
pub fn sbsign(key: &Path, cert: &Path, input: &Path, output: &Path) -> Vec<u8> {
    run_tool(
        &require_tool("sbsign"),
        &[
            "--key",
            path_str(key),
            "--cert",
            path_str(cert),
            "--output",
            path_str(output),
            path_str(input),
        ],
    );
    std::fs::read(output).unwrap()
}

/// Asserts that the firmware's boot manager tried the boot entry `name` ("Boot0003") with
/// `description`: BdsDxe says so on the serial console, whether the entry then starts or not.
pub fn assert_bds_tried(serial: &str, name: &str, description: &str) {
    let tried = format!("{name} \"{description}\"");
    assert!(
        serial
            .lines()
            .any(|l| l.contains("BdsDxe") && l.contains(&tried)),
        "BdsDxe did not try {name}; serial log:\n{serial}"
    );
}

/// Asserts that nvram reads exactly what the firmware's `dmpstore` listed from `vars` and that
/// the firmware will accept the store as it is; returns the image for further checks.
pub fn assert_read_back(firmware: &BTreeSet<Variable>, vars: &Path) -> Vec<u8> {
    assert_same_variables(firmware, &exported(vars));
    let image = std::fs::read(vars).unwrap();
    let store = varstore::Varstore::parse(&image).unwrap();
    assert_eq!(
        store.verdict(),
        varstore::FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    image
}

/// `nvram secureboot enroll` with `cert` as PK, KEK and db: a store whose Secure Boot trusts
/// exactly what that key signs.
pub fn enroll_own_key(vars: &Path, cert: &Path) {
    let c = path_str(cert);
    nvram_ok(&[
        "secureboot",
        "enroll",
        path_str(vars),
        "--pk",
        c,
        "--kek",
        c,
        "--db",
        c,
    ]);
}

/// A boot of `stack`'s firmware `code` (x86_64) with `vars` attached in QEMU's block format
/// `vars_format` (`"raw"`, `"qcow2"`) and `files` on the FAT disk: runs `commands` (if any),
/// dumps every variable with `dmpstore` and returns the non-volatile ones in `dmpstore`'s
/// order, with the boot's outcome (serial log).
pub fn boot_and_dump_format<C: FromIterator<Variable>>(
    stack: Stack,
    code: &str,
    vars: &Path,
    vars_format: &str,
    commands: &str,
    files: Vec<(String, Vec<u8>)>,
) -> (C, testkit::BootOutcome) {
    let code = stack.firmware(code);
    let dump = "dmpstore -all -sfo >a fs0:\\dump.txt\nreset -s\n";
    let script = if commands.is_empty() {
        dump.to_string()
    } else {
        format!("{commands}\n{dump}")
    };
    let mut boot = OvmfBoot::new(&code, vars, &script).with_vars_format(vars_format);
    boot.stack = stack;
    boot.files = files;
    boot.timeout = std::time::Duration::from_secs(240);
    let outcome = boot_ovmf(&boot).unwrap_or_else(|e| panic!("boot failed: {e}"));
    let dump = outcome
        .read_file("dump.txt")
        .unwrap_or_else(|| panic!("the script wrote no dump; serial log:\n{}", outcome.serial));
    let variables = parse_dmpstore(&String::from_utf8_lossy(&dump))
        .expect("dmpstore output parses")
        .into_iter()
        .filter(|v| v.attributes & ATTR_NV != 0)
        .map(|v| (v.name, v.guid, v.attributes, v.data))
        .collect();
    (variables, outcome)
}

/// Runs QEMU's `qemu-img` (which must be installed: the test fails otherwise) with `args` and
/// returns its output, whatever its status.
pub fn qemu_img(args: &[&str]) -> Output {
    Command::new(require_tool("qemu-img"))
        .args(args)
        .output()
        .expect("run qemu-img")
}

/// Runs `qemu-img` with `args` and asserts that it succeeded; returns its stdout.
pub fn qemu_img_ok(args: &[&str]) -> String {
    let out = qemu_img(args);
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts that `qemu-img check` finds the qcow2 image `image` clean (no corruption, no
/// leaked cluster: exit status 0), saying after what (`when`) otherwise.
pub fn assert_qcow2_clean(image: &Path, when: &str) {
    let out = qemu_img(&["check", "-f", "qcow2", path_str(image)]);
    assert!(
        out.status.code() == Some(0) && stdout(&out).contains("No errors were found"),
        "qemu-img check of {} after {when} (status {:?}):\n{}{}",
        image.display(),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// The flash image inside the qcow2 image `image`, as QEMU itself reads it
/// (`qemu-img convert -O raw`).
pub fn qcow2_payload_by_qemu(image: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("payload.raw");
    qemu_img_ok(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        path_str(image),
        path_str(&raw),
    ]);
    std::fs::read(&raw).unwrap()
}
