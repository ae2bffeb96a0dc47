//! The seed design (docs/design.md) end to end with real QEMU and OVMF under TCG, on both
//! stacks (QEMU 7.2 + edk2 2022.11, QEMU 10.0 + edk2 2025.02): `nvram prepare` does the
//! management layer's half, QEMU's pflash device the rest.
//!
//! - A normal start from a prepared store keeps what the firmware writes.
//! - Live migration: the destination's store, created by `prepare --incoming` with the
//!   template's size only, ends byte-identical to the source's; with `-S` it is only written
//!   when the destination first runs (`cont`).
//! - A wrong size: `prepare --incoming` refuses it before QEMU starts, whereas QEMU itself
//!   starts and only fails at migration time (`Size mismatch`), the source running on.
//! - A running QEMU's locks make `nvram reset` refuse the file.
//!
//! Every QEMU is a `QemuVm`, killed when dropped, including on a failed assertion.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use common::{nvram, path_str as s};
use testkit::{
    boot_ovmf, debian_firmware, free_local_port, make_startup_disk, setvar_command, OvmfBoot,
    QemuVm, Stack, VmConfig,
};

const GUID: &str = "6b1e3a2c-5d4f-4e8a-9c7b-2f1d0e3c4b5a";
const TEMPLATE: &str = "OVMF_VARS_4M.fd";
const CODE: &str = "OVMF_CODE_4M.fd";

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "nvram failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `nvram get` of the test variable, as hex.
fn get_hex(vars: &Path, name: &str) -> String {
    let out = ok(nvram(&["get", s(vars), name, "--guid", GUID, "--hex"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn prepare(vars: &Path, template: &Path, incoming: bool) -> serde_json::Value {
    let mut args = vec![
        "prepare",
        "--nvram",
        s(vars),
        "--template",
        s(template),
        "--json",
    ];
    if incoming {
        args.push("--incoming");
    }
    serde_json::from_slice(&ok(nvram(&args)).stdout).unwrap()
}

/// Polls until `cond` holds or panics with `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_fresh_start_from_a_prepared_store_keeps_what_the_firmware_writes_qemu_7_2() {
    fresh_start(Stack::Debian12);
}

#[test]
fn a_fresh_start_from_a_prepared_store_keeps_what_the_firmware_writes_qemu_10_0() {
    fresh_start(Stack::Current);
}

fn fresh_start(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.fd");
    // The template comes from the stack's firmware descriptors, as a VM manager would choose
    // it for a q35 VM without SMM.
    let machine = format!("pc-q35-{}", stack.qemu_version());
    let out = ok(nvram(&[
        "prepare",
        "--nvram",
        s(&vars),
        "--firmware",
        "auto",
        "--firmware-dir",
        s(&stack.firmware_descriptor_dir()),
        "--arch",
        "x86_64",
        "--machine",
        &machine,
        "--no-feature",
        "requires-smm",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "created");
    assert_eq!(report["firmware"]["name"], "60-edk2-x86_64.json");
    let code = PathBuf::from(
        report["firmware"]["executable"]["filename"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(code, stack.firmware(CODE));
    assert_eq!(
        fs::read(&vars).unwrap(),
        fs::read(stack.firmware(TEMPLATE)).unwrap()
    );

    let script = format!(
        "{}\nreset -s\n",
        setvar_command("SeedStart", GUID, 0x7, b"fresh")
    );
    let mut boot = OvmfBoot::new(&code, &vars, &script);
    boot.stack = stack;
    let outcome = boot_ovmf(&boot).unwrap_or_else(|e| panic!("boot failed: {e}"));
    assert!(outcome.skipped_countdown);
    assert_eq!(get_hex(&vars, "SeedStart"), hex(b"fresh"));

    // Starting the VM again: the store is left alone and still fits its template.
    let again = prepare(&vars, &stack.firmware(TEMPLATE), false);
    assert_eq!(again["outcome"], "verified");
    assert_eq!(get_hex(&vars, "SeedStart"), hex(b"fresh"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts an incoming VM on a free 127.0.0.1 port; returns it and the migration URI.
fn start_incoming(
    stack: Stack,
    code: &Path,
    vars: &Path,
    disk: &Path,
    paused: bool,
) -> (QemuVm, String) {
    let uri = format!("tcp:127.0.0.1:{}", free_local_port().unwrap());
    let mut config = VmConfig::new(code, vars, disk);
    config.stack = stack;
    config.incoming = Some(uri.clone());
    config.paused = paused;
    let vm = QemuVm::start(&config).unwrap_or_else(|e| panic!("destination: {e}"));
    (vm, uri)
}

fn migrate(source: &mut QemuVm, uri: &str) -> serde_json::Value {
    source
        .qmp
        .execute("migrate", serde_json::json!({ "uri": uri }))
        .unwrap();
    source.qmp.wait_migration(Duration::from_secs(60)).unwrap()
}

#[test]
fn live_migration_with_prepared_incoming_stores_and_a_refused_wrong_size_qemu_7_2() {
    live_migration(Stack::Debian12);
}

#[test]
fn live_migration_with_prepared_incoming_stores_and_a_refused_wrong_size_qemu_10_0() {
    live_migration(Stack::Current);
}

fn live_migration(stack: Stack) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let template = stack.firmware(TEMPLATE);
    let code = stack.firmware(CODE);

    // The source: a normal start. The script sets a variable and then idles without
    // resetting, so that the VM is migrated while the shell runs.
    let src_vars = path("src_VARS.fd");
    assert_eq!(prepare(&src_vars, &template, false)["outcome"], "created");
    let script = format!(
        "@echo -off\n{}\necho SEED-VARIABLE-SET\n:idle\nstall 200000\ngoto idle\n",
        setvar_command("SeedMigrated", GUID, 0x7, b"travels")
    );
    make_startup_disk(&path("src.img"), &script).unwrap();
    // Each VM gets its own copy of the same disk (no shared storage).
    for name in ["wrong.img", "dst1.img", "dst2.img"] {
        fs::copy(path("src.img"), path(name)).unwrap();
    }
    let src_disk = path("src.img");
    let mut source_config = VmConfig::new(&code, &src_vars, &src_disk);
    source_config.stack = stack;
    let mut source = QemuVm::start(&source_config).unwrap_or_else(|e| panic!("source: {e}"));
    source
        .wait_serial("SEED-VARIABLE-SET\r", Duration::from_secs(120))
        .unwrap();
    // QEMU writes every programmed byte to the file at once.
    assert_eq!(get_hex(&src_vars, "SeedMigrated"), hex(b"travels"));

    // (c) A destination store of the wrong size (a store of Debian 12's 2M build, 128 KiB;
    // edk2 2025.02 no longer ships that layout, which is how such stores come to exist).
    let wrong = path("wrong_VARS.fd");
    prepare(&wrong, &debian_firmware("OVMF_VARS.fd"), false);
    let wrong_before = fs::read(&wrong).unwrap();
    let out = nvram(&[
        "prepare",
        "--incoming",
        "--nvram",
        s(&wrong),
        "--template",
        s(&template),
    ]);
    let message = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{message}");
    for needle in [
        "size mismatch",
        "131072",
        "0x20000",
        "540672",
        "0x84000",
        s(&wrong),
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    // QEMU itself starts happily with that file and fails only when the state arrives.
    let (mut dst_wrong, uri) = start_incoming(stack, &code, &wrong, &path("wrong.img"), false);
    let info = migrate(&mut source, &uri);
    assert_eq!(info["status"], "failed", "{info}");
    let status = dst_wrong.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the destination should exit with an error: {status:?}"
    );
    let stderr = dst_wrong.stderr();
    eprintln!(
        "QEMU {} destination said: {}",
        stack.qemu_version(),
        stderr.trim()
    );
    assert!(
        stderr.contains("Size mismatch: system.flash1: 0x84000 != 0x20000"),
        "QEMU's destination said: {stderr}"
    );
    drop(dst_wrong);
    assert_eq!(source.qmp.status().unwrap(), "running");
    assert_eq!(
        fs::read(&wrong).unwrap(),
        wrong_before,
        "the wrong file was written"
    );

    // (b) A live migration to a destination prepared with --incoming: size only.
    let dst1_vars = path("dst1_VARS.fd");
    let report = prepare(&dst1_vars, &template, true);
    assert_eq!(report["outcome"], "created-for-incoming");
    assert_eq!(fs::read(&dst1_vars).unwrap(), vec![0u8; 0x84000]);
    let (mut dst1, uri) = start_incoming(stack, &code, &dst1_vars, &path("dst1.img"), false);
    let info = migrate(&mut source, &uri);
    assert_eq!(info["status"], "completed", "{info}");
    wait_until("the destination to run", Duration::from_secs(30), || {
        dst1.qmp.status().unwrap() == "running"
    });
    let src_image = fs::read(&src_vars).unwrap();
    wait_until(
        "the destination's store to equal the source's",
        Duration::from_secs(10),
        || fs::read(&dst1_vars).unwrap() == src_image,
    );
    assert_eq!(source.qmp.status().unwrap(), "postmigrate");
    let list = ok(nvram(&["list", s(&dst1_vars)]));
    assert!(String::from_utf8_lossy(&list.stdout).contains("SeedMigrated"));
    assert_eq!(get_hex(&dst1_vars, "SeedMigrated"), hex(b"travels"));
    drop(source);

    // A running QEMU holds OFD locks on its store: reset refuses to touch it.
    let out = nvram(&[
        "reset",
        "--nvram",
        s(&dst1_vars),
        "--template",
        s(&template),
    ]);
    let message = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(message.contains("in use"), "{message}");
    assert!(message.contains("OFD"), "{message}");
    assert_eq!(fs::read(&dst1_vars).unwrap(), src_image);
    assert!(!path("dst1_VARS.fd.bak").exists());

    // (b, -S) Migrating on to a destination started paused: its file is written only when it
    // first runs, after `cont`.
    let dst2_vars = path("dst2_VARS.fd");
    prepare(&dst2_vars, &template, true);
    let (mut dst2, uri) = start_incoming(stack, &code, &dst2_vars, &path("dst2.img"), true);
    // While it waits for the migration, QEMU has not activated its images and holds no lock.
    assert!(nvram::files::lock_holders(&dst2_vars).is_empty());
    let info = migrate(&mut dst1, &uri);
    assert_eq!(info["status"], "completed", "{info}");
    wait_until(
        "the paused destination to finish loading",
        Duration::from_secs(30),
        || dst2.qmp.status().unwrap() == "paused",
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read(&dst2_vars).unwrap(),
        vec![0u8; 0x84000],
        "the paused destination wrote its store before `cont`"
    );
    dst2.qmp.execute("cont", serde_json::json!({})).unwrap();
    wait_until(
        "the store to be written after cont",
        Duration::from_secs(10),
        || fs::read(&dst2_vars).unwrap() == src_image,
    );
    assert_eq!(dst2.qmp.status().unwrap(), "running");
    assert_eq!(get_hex(&dst2_vars, "SeedMigrated"), hex(b"travels"));
    // The guest runs on at the destination.
    dst2.qmp.execute("stop", serde_json::json!({})).unwrap();
    eprintln!(
        "seed migration scenario ({}) took {:?}",
        stack.name(),
        started.elapsed()
    );
}
