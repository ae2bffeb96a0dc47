//! `nvram libvirt-hook`: the decisions, run as libvirt runs the hook (arguments and the
//! domain XML on stdin) against stores in a temporary directory, `--install`, and the hook
//! installed into the system libvirt daemon (Debian 12's libvirt 9.0): `virsh start` refused
//! on a damaged and on a wrong-sized store with our message in virsh's error, while
//! `virsh start --reset-nvram` and a healthy store start.

mod common;

use common::{debian, path_str as s, stderr, stdout};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::libvirt::{daemon_pid, unique_name, DomainXml, Libvirt, LIBVIRTD_PID_FILE};

const UUID: &str = "6a1c63fe-3d7f-4b5c-9c55-0d3f3e2c1a01";

/// Runs `nvram libvirt-hook ARGS…` with `xml` on stdin, descriptors from `firmware_dirs`
/// only (none: an empty list, so Debian's own are not consulted unless given).
fn hook(args: &[&str], xml: &str, firmware_dirs: &[&Path]) -> Output {
    let dirs = std::env::join_paths(firmware_dirs).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .arg("libvirt-hook")
        .args(args)
        .env("NVRAM_FIRMWARE_DIRS", dirs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nvram");
    // The hook may stop reading early (an input over its limit): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(xml.as_bytes());
    child.wait_with_output().unwrap()
}

/// A domain XML as libvirt 9.0 writes it at `start begin`: the code image, the store and
/// its template resolved.
fn domain_xml(name: &str, code: &Path, nvram: &Path, template: Option<&Path>) -> String {
    let template = template.map_or(String::new(), |t| format!(" template='{}'", t.display()));
    format!(
        "<domain type='qemu' id='7'><name>{name}</name><uuid>{UUID}</uuid>\
         <memory unit='KiB'>262144</memory>\
         <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\
         <loader readonly='yes' type='pflash'>{}</loader>\
         <nvram{template}>{}</nvram><boot dev='hd'/></os>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>",
        code.display(),
        nvram.display()
    )
}

struct Dir {
    _temp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    template: PathBuf,
    code: PathBuf,
}

impl Dir {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        let template = root.join("OVMF_VARS_4M.fd");
        fs::copy(debian("OVMF_VARS_4M.fd"), &template).unwrap();
        Dir {
            state: root.join("state"),
            code: debian("OVMF_CODE_4M.fd"),
            template,
            root,
            _temp: temp,
        }
    }

    fn store(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.root.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    fn xml(&self, nvram: &Path) -> String {
        domain_xml("vm1", &self.code, nvram, Some(&self.template))
    }

    /// Runs the hook for `operation sub-operation` with this directory's state dir.
    fn run(&self, operation: &str, sub: &str, xml: &str) -> Output {
        hook(
            &["--state-dir", s(&self.state), "vm1", operation, sub, "-"],
            xml,
            &[],
        )
    }
}

fn template_bytes() -> Vec<u8> {
    fs::read(debian("OVMF_VARS_4M.fd")).unwrap()
}

/// A store with a broken firmware volume header checksum: the size and layout are right.
fn damaged() -> Vec<u8> {
    let mut bytes = template_bytes();
    bytes[0x32] ^= 0xff;
    bytes
}

fn assert_refused(out: &Output, path: &Path, words: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains(s(path)) && err.contains(words),
        "expected {} and {words:?} in: {err}",
        path.display()
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
}

fn assert_passed(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
}

#[test]
fn healthy_store_passes_silently() {
    let dir = Dir::new();
    let vars = dir.store("vm1_VARS.fd", &template_bytes());
    let out = dir.run("start", "begin", &dir.xml(&vars));
    assert_passed(&out);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // The same with Debian's descriptors consulted: OVMF_CODE_4M.fd's template is the 4M one.
    let out = hook(
        &["--state-dir", s(&dir.state), "vm1", "start", "begin", "-"],
        &dir.xml(&vars),
        &[Path::new("/usr/share/qemu/firmware")],
    );
    assert_passed(&out);
    // A qcow2 store is read by content.
    let qcow2 = dir.root.join("vm1_VARS.qcow2");
    common::nvram_ok(&["convert", s(&vars), s(&qcow2), "--to", "qcow2"]);
    assert_passed(&dir.run("start", "begin", &dir.xml(&qcow2)));
}

#[test]
fn damaged_store_is_refused_naming_the_file() {
    let dir = Dir::new();
    let vars = dir.store("vm1_VARS.fd", &damaged());
    let out = dir.run("start", "begin", &dir.xml(&vars));
    assert_refused(&out, &vars, "damaged");
    assert!(stderr(&out).starts_with("nvram: refusing to start domain vm1: "));
    // A blank (zero-filled) store of the right size: OVMF does not boot from it.
    let zeros = dir.store("zeros.fd", &vec![0; template_bytes().len()]);
    let out = dir.run("start", "begin", &dir.xml(&zeros));
    assert_refused(&out, &zeros, "blank");
}

#[test]
fn wrong_size_is_refused() {
    let dir = Dir::new();
    // A healthy 2M OVMF store where the template is the 4M one.
    let small = dir.root.join("small.fd");
    common::nvram_ok(&["create", "--layout", "ovmf-2m", s(&small)]);
    let out = dir.run("start", "begin", &dir.xml(&small));
    assert_refused(&out, &small, "size mismatch");
    assert!(stderr(&out).contains("131072 bytes"), "{}", stderr(&out));
    // The advice is the binary's, given once (the library's message carries none).
    assert_eq!(
        stderr(&out).matches("reset-nvram").count(),
        1,
        "{}",
        stderr(&out)
    );
}

#[test]
fn store_that_the_code_images_descriptor_does_not_fit_is_refused() {
    let dir = Dir::new();
    // A descriptor saying that our code image goes with a 2M template, while the XML's
    // template (and the store) are 4M.
    let two_m = dir.root.join("OVMF_VARS_2M.fd");
    common::nvram_ok(&["create", "--layout", "ovmf-2m", s(&two_m)]);
    let code = dir.store("CODE.fd", b"code");
    let descriptors = dir.root.join("firmware");
    fs::create_dir(&descriptors).unwrap();
    let descriptor = descriptors.join("60-test.json");
    fs::write(
        &descriptor,
        serde_json::json!({
            "description": "test", "interface-types": ["uefi"],
            "mapping": {"device": "flash", "mode": "split",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": two_m, "format": "raw"}},
            "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
            "features": [], "tags": []
        })
        .to_string(),
    )
    .unwrap();
    let vars = dir.store("vm1_VARS.fd", &template_bytes());
    let xml = domain_xml("vm1", &code, &vars, Some(&dir.template));
    let args = ["--state-dir", s(&dir.state), "vm1", "start", "begin", "-"];
    let out = hook(&args, &xml, &[&descriptors]);
    assert_refused(&out, &vars, "size mismatch");
    assert!(stderr(&out).contains(s(&descriptor)), "{}", stderr(&out));
    // Without a template in the XML the descriptor's is the one checked.
    let xml = domain_xml("vm1", &code, &vars, None);
    assert_refused(&hook(&args, &xml, &[&descriptors]), &vars, "size mismatch");
}

#[test]
fn absent_store_passes() {
    let dir = Dir::new();
    let vars = dir.root.join("vm1_VARS.fd");
    let out = dir.run("start", "begin", &dir.xml(&vars));
    assert_passed(&out);
    assert!(!vars.exists(), "the hook never creates the store");
}

#[test]
fn incoming_migration_checks_the_size_only() {
    let dir = Dir::new();
    let size = template_bytes().len();
    // Zeroes of the right size (what `nvram prepare --incoming` leaves): a normal start is
    // refused, the start that follows `migrate begin` is not (the contents come with the
    // migration).
    let zeros = dir.store("vm1_VARS.fd", &vec![0; size]);
    let xml = dir.xml(&zeros);
    assert_refused(&dir.run("start", "begin", &xml), &zeros, "blank");
    assert_passed(&dir.run("migrate", "begin", &xml));
    assert_passed(&dir.run("prepare", "begin", &xml));
    assert_passed(&dir.run("start", "begin", &xml));
    // The marker is consumed: the next start is a normal one again.
    assert_refused(&dir.run("start", "begin", &xml), &zeros, "blank");

    // A wrong size is refused at `migrate begin` already, before libvirt starts anything…
    let small = dir.store("small.fd", &vec![0; 131072]);
    let out = dir.run("migrate", "begin", &dir.xml(&small));
    assert_refused(&out, &small, "size mismatch");
    assert!(
        stderr(&out).contains("refusing the incoming migration of domain vm1")
            && stderr(&out).contains("fail the migration"),
        "{}",
        stderr(&out)
    );
    // Starting with a reset store is no remedy for an incoming migration: the destination
    // is prepared again.
    assert!(
        !stderr(&out).contains("reset-nvram")
            && stderr(&out).matches("nvram prepare --incoming").count() == 1,
        "{}",
        stderr(&out)
    );
    // …and at the start that follows when `migrate begin` could not tell (the migrated XML
    // named no template; libvirt resolves it before `start begin`).
    let bare = domain_xml("vm1", &dir.code, &small, None);
    assert_passed(&dir.run("migrate", "begin", &bare));
    let out = dir.run("start", "begin", &dir.xml(&small));
    assert_refused(&out, &small, "fail the migration");

    // `restore begin` (virsh restore) announces an incoming start the same way.
    assert_passed(&dir.run("restore", "begin", &xml));
    assert_passed(&dir.run("start", "begin", &xml));
    // `release end` drops a marker that a failed incoming start left.
    assert_passed(&dir.run("migrate", "begin", &xml));
    assert_passed(&dir.run("release", "end", &xml));
    assert_refused(&dir.run("start", "begin", &xml), &zeros, "blank");
}

#[test]
fn other_operations_pass_silently_without_reading_the_store() {
    let dir = Dir::new();
    let vars = dir.store("vm1_VARS.fd", &damaged());
    let xml = dir.xml(&vars);
    for (op, sub) in [
        ("prepare", "begin"),
        ("start", "end"),
        ("started", "begin"),
        ("stopped", "end"),
        ("release", "end"),
        ("reconnect", "begin"),
        ("attach", "begin"),
        ("migrate", "end"),
        ("define", "-"),
        ("something-new", "-"),
    ] {
        let out = dir.run(op, sub, &xml);
        assert_passed(&out);
        assert!(out.stderr.is_empty(), "{op} {sub}: {}", stderr(&out));
    }
    // Nor is a domain outside --domain checked.
    let out = hook(
        &["--domain", "web-*", "--state-dir", s(&dir.state)],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "OBJECT … are required");
    let out = hook(
        &[
            "--domain",
            "web-*",
            "--state-dir",
            s(&dir.state),
            "vm1",
            "start",
            "begin",
            "-",
        ],
        &xml,
        &[],
    );
    assert_passed(&out);
    let out = hook(
        &[
            "--domain",
            "vm*",
            "--state-dir",
            s(&dir.state),
            "vm1",
            "start",
            "begin",
            "-",
        ],
        &xml,
        &[],
    );
    assert_refused(&out, &vars, "damaged");
    // A domain without a flash store (BIOS) has nothing to check.
    let bios = format!(
        "<domain type='qemu'><name>vm1</name><uuid>{UUID}</uuid><os><type>hvm</type></os></domain>"
    );
    assert_passed(&dir.run("start", "begin", &bios));
}

#[test]
fn unusable_input_stops_the_start() {
    let dir = Dir::new();
    let out = dir.run("start", "begin", "not xml");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not XML"), "{}", stderr(&out));
    let out = dir.run("start", "begin", "<network/>");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Larger than any domain XML: refused, not read to the end.
    let big = format!("<domain>{}</domain>", " ".repeat(17 << 20));
    let out = dir.run("start", "begin", &big);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("too large"), "{}", stderr(&out));
}

#[test]
fn install_is_idempotent() {
    let dir = Dir::new();
    let hooks = dir.root.join("hooks");
    let install = |extra: &[&str]| {
        let mut args = vec!["libvirt-hook", "--install", "--hooks-dir", s(&hooks)];
        args.extend_from_slice(extra);
        common::nvram(&args)
    };
    let first = install(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let script = hooks.join("qemu.d/nvram");
    assert!(
        stdout(&first).starts_with(&format!("installed {}", script.display()))
            && stdout(&first).contains("SIGHUP"),
        "{}",
        stdout(&first)
    );
    let mode = fs::metadata(&script).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let text = fs::read_to_string(&script).unwrap();
    let binary = fs::canonicalize(env!("CARGO_BIN_EXE_nvram")).unwrap();
    assert!(
        text.starts_with("#!/bin/sh\n")
            && text.contains(&format!("exec '{}' libvirt-hook", binary.display())),
        "{text}"
    );
    let second = install(&[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).starts_with(&format!("unchanged {}", script.display())),
        "{}",
        stdout(&second)
    );
    assert_eq!(fs::read_to_string(&script).unwrap(), text);
    // Other options: the hook is updated, then unchanged again.
    let third = install(&["--domain", "vm*"]);
    assert!(stdout(&third).starts_with("updated "), "{}", stdout(&third));
    let fourth = install(&["--domain", "vm*"]);
    assert!(
        stdout(&fourth).starts_with("unchanged "),
        "{}",
        stdout(&fourth)
    );

    // The installed script is the hook: libvirt runs it with the four arguments.
    let vars = dir.store("vm1_VARS.fd", &damaged());
    let mut child = Command::new(&script)
        .args(["vm1", "start", "begin", "-"])
        .env("NVRAM_FIRMWARE_DIRS", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dir.xml(&vars).as_bytes())
        .unwrap();
    assert_refused(&child.wait_with_output().unwrap(), &vars, "damaged");

    // A symlink in its place is refused, not followed.
    fs::remove_file(&script).unwrap();
    std::os::unix::fs::symlink(dir.root.join("elsewhere"), &script).unwrap();
    let out = install(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.root.join("elsewhere").exists());
}

// ---------------------------------------------------------------------------------------
// With the system libvirt daemon (testkit::libvirt: scripts/test starts it).

const HOOKS: &str = "/etc/libvirt/hooks";

/// The domains of this test: the installed hook checks only these, so that the domains of
/// other tests on the same daemon are left alone.
const PREFIX: &str = "hook";
const GLOB: &str = "nvram-test-hook-*";

/// libvirt 9.0 looks for hook scripts when the daemon starts and when it reloads (SIGHUP:
/// the daemon's reload handler calls the hooks' `virHookInitialize` again).
fn reload_daemon() {
    let pid = daemon_pid(LIBVIRTD_PID_FILE)
        .or_else(|| daemon_pid("/run/virtqemud.pid"))
        .expect("no running libvirtd or virtqemud (scripts/test starts libvirtd)");
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Installs the hook (limited to [`GLOB`]) and removes it again on drop, leaving
/// /etc/libvirt/hooks as it was, and makes the daemon notice both.
struct InstalledHook {
    created_dir: bool,
}

impl InstalledHook {
    fn install() -> Self {
        let dir = Path::new(HOOKS).join("qemu.d");
        let script = dir.join("nvram");
        assert!(
            !script.exists(),
            "{} exists: an nvram hook is installed on this machine; not touching it",
            script.display()
        );
        let created_dir = !dir.exists();
        let out = common::nvram(&["libvirt-hook", "--install", "--domain", GLOB]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).starts_with("installed "), "{}", stdout(&out));
        reload_daemon();
        InstalledHook { created_dir }
    }
}

impl Drop for InstalledHook {
    fn drop(&mut self) {
        let dir = Path::new(HOOKS).join("qemu.d");
        let _ = fs::remove_file(dir.join("nvram"));
        if self.created_dir {
            let _ = fs::remove_dir(&dir);
        }
        reload_daemon();
    }
}

/// Starts the domain until the hook refuses it: the daemon reloads asynchronously after
/// SIGHUP, so a start may still run without hooks (it is then stopped and retried).
fn start_until_refused(libvirt: &Libvirt, uuid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match libvirt.try_virsh(&["start", uuid]) {
            Err(e) => return e,
            Ok(_) => {
                libvirt.virsh(&["destroy", uuid]);
                assert!(
                    Instant::now() < deadline,
                    "the daemon never ran the hook (no reload after SIGHUP?)"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

/// One domain through every case: `virsh define` is what costs most here.
#[test]
fn libvirt_runs_the_hook_at_start() {
    let started = Instant::now();
    let Some(libvirt) = Libvirt::require() else {
        return;
    };
    let dir = libvirt.tempdir();
    let name = unique_name(PREFIX);
    let vm = libvirt.define(&DomainXml::efi(&name, &dir.path().join("serial.log")));
    let uuid = vm.uuid();
    let store = nvram::libvirt::nvram_dir(libvirt.uri()).join(format!("{name}_VARS.fd"));
    let _hook = InstalledHook::install();

    // Damaged (the template libvirt picks for `firmware='efi'` on Debian 12 has the 4M
    // layout, as all of Debian 12's x86_64 descriptors do; only a checksum is broken).
    fs::write(&store, damaged()).unwrap();
    let err = start_until_refused(&libvirt, uuid);
    let ours = format!(
        "nvram: refusing to start domain {name}: {}: damaged",
        store.display()
    );
    assert!(err.contains(&ours), "virsh's error lacks {ours:?}: {err}");
    eprintln!("virsh start, damaged store: {err}");

    // Wrong size: a healthy 2M store.
    fs::remove_file(&store).unwrap();
    common::nvram_ok(&["create", "--layout", "ovmf-2m", s(&store)]);
    let err = libvirt
        .try_virsh(&["start", uuid])
        .expect_err("a wrong-sized store started");
    let ours = format!(
        "nvram: refusing to start domain {name}: {}: size mismatch: the file has 131072 bytes",
        store.display()
    );
    assert!(err.contains(&ours), "virsh's error lacks {ours:?}: {err}");

    // --reset-nvram: libvirt replaces the store before `start begin`, so the hook sees the
    // template's copy and lets it start.
    fs::write(&store, damaged()).unwrap();
    libvirt.virsh(&["start", "--reset-nvram", uuid]);
    libvirt.virsh(&["destroy", uuid]);
    assert_eq!(fs::read(&store).unwrap().len(), template_bytes().len());
    // Healthy now: a plain start goes through.
    libvirt.virsh(&["start", uuid]);
    libvirt.virsh(&["destroy", uuid]);

    // No store: libvirt creates it from the template, the hook checks that copy.
    fs::remove_file(&store).unwrap();
    libvirt.virsh(&["start", uuid]);
    libvirt.virsh(&["destroy", uuid]);
    eprintln!("libvirt test: {:?}", started.elapsed());
}
