//! `nvram prepare`, `nvram reset` and `nvram firmware` against Debian's real templates and
//! firmware descriptors, descriptor directories written by the tests, an nvram pflash device
//! holding its file, and a real (paused) QEMU holding its locks.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{debian, path_str as s, stderr};
use serde_json::Value;
use testkit::Stack;

fn nvram(args: &[&str]) -> Output {
    nvram_env(args, &[])
}

/// Runs nvram with extra environment; `NVRAM_FIRMWARE_DIRS` is cleared unless given, so the
/// tests do not depend on the caller's environment. QEMU 7.2 is first on `PATH`, as an installed
/// QEMU would be, for the machine aliases nvram resolves by asking `qemu-system-ARCH`.
fn nvram_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvram"));
    cmd.args(args)
        .env("PATH", path_with_qemu())
        .env_remove("NVRAM_FIRMWARE_DIRS")
        .env_remove("XDG_CONFIG_HOME");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run nvram")
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "nvram failed ({}): {}",
        out.status,
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn prepare(vars: &Path, template: &Path, incoming: bool) -> Output {
    let mut args = vec!["prepare", "--nvram", s(vars), "--template", s(template)];
    if incoming {
        args.push("--incoming");
    }
    args.push("--json");
    nvram(&args)
}

/// The image QEMU's device left after a real OVMF boot: a store with live, deleted and
/// replaced records.
fn firmware_written_store() -> Vec<u8> {
    testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"))
}

#[test]
fn an_absent_store_is_copied_from_the_template_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    for (template, layout) in [
        ("OVMF_VARS_4M.fd", "ovmf-4m"),
        ("OVMF_VARS_4M.ms.fd", "ovmf-4m"),
        ("OVMF_VARS.fd", "ovmf-2m"),
        ("AAVMF_VARS.ms.fd", "aavmf"),
    ] {
        let vars = dir.path().join(format!("{template}.vm"));
        let report = ok_json(prepare(&vars, &debian(template), false));
        assert_eq!(report["outcome"], "created");
        assert_eq!(report["layout"], layout);
        assert_eq!(
            fs::read(&vars).unwrap(),
            fs::read(debian(template)).unwrap()
        );
        assert_eq!(mode(&vars), 0o600);
    }
    // Debian's blank AAVMF template is 64 MiB of zeroes: copied as it is.
    let vars = dir.path().join("aavmf-blank.vm");
    let report = ok_json(prepare(&vars, &debian("AAVMF_VARS.fd"), false));
    assert_eq!(report["layout"], "unformatted");
    assert_eq!(fs::metadata(&vars).unwrap().len(), 64 << 20);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn an_absent_store_for_an_incoming_migration_gets_the_template_size_only() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("incoming.fd");
    let out = prepare(&vars, &debian("OVMF_VARS_4M.fd"), true);
    let report = ok_json(out);
    assert_eq!(report["outcome"], "created-for-incoming");
    assert_eq!(report["size"], 0x84000);
    assert_eq!(fs::read(&vars).unwrap(), vec![0u8; 0x84000]);
    assert_eq!(mode(&vars), 0o600);

    // The human report says what was done and why the contents do not matter.
    let vars2 = dir.path().join("incoming2.fd");
    let out = nvram(&[
        "prepare",
        "--incoming",
        "--nvram",
        s(&vars2),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
    ]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("for an incoming migration"),
        "{}",
        stderr(&out)
    );

    // If the migration never happened, a normal start refuses the blank file…
    let out = prepare(&vars, &debian("OVMF_VARS_4M.fd"), false);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("not a variable store"), "{error}");
    assert!(error.contains("nvram reset"), "{error}");
    // …and `reset` makes it a fresh store, keeping the old contents.
    ok_json(nvram(&[
        "reset",
        "--nvram",
        s(&vars),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
        "--json",
    ]));
    assert_eq!(
        fs::read(&vars).unwrap(),
        fs::read(debian("OVMF_VARS_4M.fd")).unwrap()
    );
    let out = prepare(&vars, &debian("OVMF_VARS_4M.fd"), false);
    assert_eq!(ok_json(out)["outcome"], "verified");
}

#[test]
fn an_existing_store_is_left_alone_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("used.fd");
    let image = firmware_written_store();
    fs::write(&vars, &image).unwrap();
    fs::set_permissions(&vars, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::metadata(&vars).unwrap().modified().unwrap();
    for incoming in [false, true] {
        let report = ok_json(prepare(&vars, &debian("OVMF_VARS_4M.fd"), incoming));
        let expected = if incoming {
            "verified-size"
        } else {
            "verified"
        };
        assert_eq!(report["outcome"], expected);
        assert_eq!(report["locks"], serde_json::json!([]));
    }
    // The secure-boot template has the same layout: also fine.
    ok_json(prepare(&vars, &debian("OVMF_VARS_4M.ms.fd"), false));
    assert_eq!(fs::read(&vars).unwrap(), image);
    assert_eq!(fs::metadata(&vars).unwrap().modified().unwrap(), before);
    assert_eq!(mode(&vars), 0o640);

    // A firmware-formatted AAVMF store fits Debian's blank AAVMF template (same size).
    let aavmf = dir.path().join("aavmf.fd");
    fs::copy(debian("AAVMF_VARS.ms.fd"), &aavmf).unwrap();
    ok_json(prepare(&aavmf, &debian("AAVMF_VARS.fd"), false));
}

#[test]
fn a_wrong_size_is_refused_with_both_sizes_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("small.fd");
    fs::copy(debian("OVMF_VARS.fd"), &vars).unwrap();
    for incoming in [false, true] {
        let out = prepare(&vars, &debian("OVMF_VARS_4M.fd"), incoming);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let message = stderr(&out);
        for needle in [
            s(&vars),
            "size mismatch",
            "131072",
            "0x20000",
            "540672",
            "0x84000",
        ] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
        if incoming {
            assert!(message.contains("fail the migration"), "{message}");
        }
    }
    // Without --json the refusal still goes to stderr, and stdout stays empty.
    let out = nvram(&[
        "prepare",
        "--nvram",
        s(&vars),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        fs::read(&vars).unwrap(),
        fs::read(debian("OVMF_VARS.fd")).unwrap()
    );
}

#[test]
fn a_store_of_the_right_size_but_another_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A 2M-build store padded to the 4M size: parses, but FvLength and store size differ.
    let mut image = fs::read(debian("OVMF_VARS.fd")).unwrap();
    image.resize(0x84000, 0xFF);
    let vars = dir.path().join("padded.fd");
    fs::write(&vars, &image).unwrap();
    let out = prepare(&vars, &debian("OVMF_VARS_4M.fd"), false);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("layout mismatch"), "{message}");
    assert!(message.contains("FvLength 0x20000"), "{message}");
    assert!(message.contains("ovmf-4m"), "{message}");
    // For an incoming migration only the size counts.
    ok_json(prepare(&vars, &debian("OVMF_VARS_4M.fd"), true));

    // Garbage of the right size.
    let garbage = dir.path().join("garbage.fd");
    fs::write(&garbage, vec![0x5a; 0x84000]).unwrap();
    let out = prepare(&garbage, &debian("OVMF_VARS_4M.fd"), false);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a variable store"));

    // A template that is not a varstore is an error (exit 2) naming it.
    let bogus = dir.path().join("bogus-template.fd");
    fs::write(
        &bogus,
        b"definitely not a firmware volume, but long enough to look at it....",
    )
    .unwrap();
    let out = prepare(&dir.path().join("new.fd"), &bogus, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(s(&bogus)), "{}", stderr(&out));
    assert!(!dir.path().join("new.fd").exists());
    let out = prepare(
        &dir.path().join("new.fd"),
        &dir.path().join("missing"),
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}

#[test]
fn symlinks_in_the_final_component_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.fd");
    fs::copy(debian("OVMF_VARS_4M.fd"), &target).unwrap();
    let link = dir.path().join("link.fd");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.path().join("dangling.fd");
    std::os::unix::fs::symlink(dir.path().join("nowhere.fd"), &dangling).unwrap();
    let template = debian("OVMF_VARS_4M.fd");
    for path in [&link, &dangling] {
        for incoming in [false, true] {
            let out = prepare(path, &template, incoming);
            assert_eq!(out.status.code(), Some(2));
            assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
        }
        let out = nvram(&["reset", "--nvram", s(path), "--template", s(&template)]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    }
    assert!(!dir.path().join("nowhere.fd").exists());
    assert!(!dir.path().join("link.fd.bak").exists());
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn reset_replaces_atomically_and_keeps_numbered_backups() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm.fd");
    let used = firmware_written_store();
    fs::write(&vars, &used).unwrap();
    fs::set_permissions(&vars, fs::Permissions::from_mode(0o640)).unwrap();
    let template = debian("OVMF_VARS_4M.fd");
    let reset = |extra: &[&str]| {
        let mut args = vec![
            "reset",
            "--nvram",
            s(&vars),
            "--template",
            s(&template),
            "--json",
        ];
        args.extend_from_slice(extra);
        ok_json(nvram(&args))
    };

    let report = reset(&[]);
    let backup = dir.path().join("vm.fd.bak");
    assert_eq!(report["backup"], s(&backup));
    assert_eq!(fs::read(&backup).unwrap(), used);
    assert_eq!(mode(&backup), 0o600, "backups are owner-only");
    assert_eq!(fs::read(&vars).unwrap(), fs::read(&template).unwrap());
    assert_eq!(mode(&vars), 0o640, "the store keeps its mode");

    // A second reset never overwrites the first backup.
    fs::write(&vars, b"second").unwrap();
    let report = reset(&[]);
    assert_eq!(report["backup"], s(&dir.path().join("vm.fd.bak.1")));
    assert_eq!(fs::read(&backup).unwrap(), used);
    assert_eq!(fs::read(dir.path().join("vm.fd.bak.1")).unwrap(), b"second");

    let report = reset(&["--no-backup"]);
    assert_eq!(report["backup"], Value::Null);
    assert!(!dir.path().join("vm.fd.bak.2").exists());

    // A symlink squatting on the backup name is not followed: the next name is used.
    let victim = dir.path().join("victim");
    std::os::unix::fs::symlink(&victim, dir.path().join("vm.fd.bak.2")).unwrap();
    let report = reset(&[]);
    assert_eq!(report["backup"], s(&dir.path().join("vm.fd.bak.3")));
    assert!(!victim.exists());

    // An absent store is simply created.
    fs::remove_file(&vars).unwrap();
    let report = reset(&[]);
    assert_eq!(report["backup"], Value::Null);
    assert_eq!(mode(&vars), 0o600);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn reset_refuses_a_store_held_by_a_pflash_device() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("running.fd");
    fs::copy(debian("OVMF_VARS_4M.fd"), &vars).unwrap();
    fs::write(&vars, firmware_written_store()).unwrap();
    let device = pflash::FileStorage::open(&vars, 0x84000, false, pflash::Durability::None)
        .expect("open like a VMM");
    let out = nvram(&[
        "reset",
        "--nvram",
        s(&vars),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains(s(&vars)), "{message}");
    assert!(message.contains("in use"), "{message}");
    assert!(message.contains("flock"), "{message}");
    assert_eq!(fs::read(&vars).unwrap(), firmware_written_store());
    assert!(!dir.path().join("running.fd.bak").exists());
    // prepare only reads: it reports the lock but does not fail.
    let out = prepare(&vars, &debian("OVMF_VARS_4M.fd"), false);
    let report = ok_json(out);
    assert_eq!(report["locks"][0]["kind"], "FLOCK");
    drop(device);
    ok_json(nvram(&[
        "reset",
        "--nvram",
        s(&vars),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
        "--json",
    ]));
}

#[test]
fn reset_refuses_a_store_qemu_has_open_even_paused() {
    // No guest code runs (-S): QEMU only opens and locks its images.
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("qemu.fd");
    let disk = dir.path().join("disk.img");
    fs::copy(debian("OVMF_VARS_4M.fd"), &vars).unwrap();
    fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let code = debian("OVMF_CODE_4M.fd");
    let mut config = testkit::VmConfig::new(&code, &vars, &disk);
    config.paused = true;
    let mut vm = testkit::QemuVm::start(&config).unwrap();
    assert_eq!(vm.qmp.status().unwrap(), "prelaunch");
    let holders = nvram::files::lock_holders(&vars);
    assert!(
        holders.iter().any(|h| h.kind == "OFDLCK"),
        "QEMU's locks: {holders:?}"
    );
    let out = nvram(&[
        "reset",
        "--nvram",
        s(&vars),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
        "--no-backup",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("in use"), "{message}");
    assert!(message.contains("OFD byte-range lock (QEMU)"), "{message}");
    let report = ok_json(prepare(&vars, &debian("OVMF_VARS_4M.fd"), false));
    assert!(!report["locks"].as_array().unwrap().is_empty());
    drop(vm);
    ok_json(nvram(&[
        "reset",
        "--nvram",
        s(&vars),
        "--template",
        s(&debian("OVMF_VARS_4M.fd")),
        "--json",
    ]));
}

// ---- firmware descriptors ----

#[test]
fn debian_descriptors_are_listed_shown_and_selected() {
    let list = ok_json(nvram(&["firmware", "list", "--json"]));
    let names: Vec<&str> = list["firmware"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in [
        "40-edk2-x86_64-secure-enrolled.json",
        "50-edk2-x86_64-secure.json",
        "60-edk2-x86_64.json",
        "60-edk2-aarch64.json",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by file name");

    let show = ok_json(nvram(&["firmware", "show", "60-edk2-x86_64", "--json"]));
    assert_eq!(
        show["descriptor"]["mapping"]["nvram-template"]["filename"],
        "/usr/share/OVMF/OVMF_VARS_4M.fd"
    );
    let out = nvram(&["firmware", "show", "99-nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("99-nope"));

    let dir = tempfile::tempdir().unwrap();
    let pick = |extra: &[&str]| -> Value {
        let vars = dir.path().join(format!("vm{}.fd", extra.join("_")));
        let mut args = vec![
            "prepare",
            "--nvram",
            s(&vars),
            "--firmware",
            "auto",
            "--json",
        ];
        args.extend_from_slice(extra);
        ok_json(nvram(&args))
    };
    // Like libvirt: the first descriptor that fits, in file-name order.
    let chosen = pick(&["--arch", "x86_64", "--machine", "pc-q35-7.2"]);
    assert_eq!(
        chosen["firmware"]["name"],
        "40-edk2-x86_64-secure-enrolled.json"
    );
    assert_eq!(chosen["template"], "/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
    let chosen = pick(&[
        "--arch",
        "x86_64",
        "--machine",
        "pc-q35-7.2",
        "--no-feature",
        "enrolled-keys",
    ]);
    assert_eq!(chosen["firmware"]["name"], "50-edk2-x86_64-secure.json");
    // i440fx has only the plain build.
    let chosen = pick(&["--arch", "x86_64", "--machine", "pc-i440fx-7.2"]);
    assert_eq!(chosen["firmware"]["name"], "60-edk2-x86_64.json");
    let chosen = pick(&[
        "--arch",
        "aarch64",
        "--machine",
        "virt-7.2",
        "--no-feature",
        "secure-boot",
    ]);
    assert_eq!(chosen["template"], "/usr/share/AAVMF/AAVMF_VARS.fd");
    assert_eq!(chosen["layout"], "unformatted");
    let chosen = pick(&["--arch", "aarch64", "--feature", "enrolled-keys"]);
    assert_eq!(chosen["template"], "/usr/share/AAVMF/AAVMF_VARS.ms.fd");

    // Nothing fits: an error listing why each one was passed over.
    let out = nvram(&[
        "prepare",
        "--nvram",
        s(&dir.path().join("none.fd")),
        "--firmware",
        "auto",
        "--arch",
        "x86_64",
        "--machine",
        "pc-q35-7.2",
        "--feature",
        "intel-tdx",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("no firmware descriptor fits"), "{message}");
    assert!(
        message.contains("60-edk2-x86_64.json: lacks feature intel-tdx"),
        "{message}"
    );
    assert!(
        message.contains("60-edk2-aarch64.json: not for x86_64"),
        "{message}"
    );
    assert!(!dir.path().join("none.fd").exists());
}

const TEMPLATE_4M: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn descriptor(
    description: &str,
    mapping: Value,
    arch: &str,
    machines: &[&str],
    features: &[&str],
) -> String {
    serde_json::json!({
        "description": description,
        "interface-types": ["uefi"],
        "mapping": mapping,
        "targets": [{"architecture": arch, "machines": machines}],
        "features": features,
        "tags": ["test"],
    })
    .to_string()
}

fn split(code: &str, vars: &str, format: &str) -> Value {
    serde_json::json!({
        "device": "flash",
        "executable": {"filename": code, "format": format},
        "nvram-template": {"filename": vars, "format": format},
    })
}

/// Three directories standing for /usr/share, /etc and ~/.config.
struct Dirs {
    _root: tempfile::TempDir,
    system: PathBuf,
    etc: PathBuf,
    user: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let [system, etc, user] = ["share", "etc", "user"].map(|d| root.path().join(d));
        for d in [&system, &etc, &user] {
            fs::create_dir_all(d).unwrap();
        }
        Dirs {
            _root: root,
            system,
            etc,
            user,
        }
    }

    fn env(&self) -> String {
        std::env::join_paths([&self.system, &self.etc, &self.user])
            .unwrap()
            .into_string()
            .unwrap()
    }
}

#[test]
fn descriptor_directories_override_mask_and_filter() {
    let d = Dirs::new();
    let w = |dir: &Path, name: &str, text: &str| fs::write(dir.join(name), text).unwrap();
    let plain = split("/usr/share/OVMF/OVMF_CODE_4M.fd", TEMPLATE_4M, "raw");
    w(
        &d.system,
        "50-vendor.json",
        &descriptor(
            "vendor",
            plain.clone(),
            "x86_64",
            &["pc-q35-*"],
            &["acpi-s3"],
        ),
    );
    // Overridden by /etc: a different template.
    w(
        &d.system,
        "60-overridden.json",
        &descriptor("system", plain.clone(), "x86_64", &["pc-q35-*"], &[]),
    );
    w(
        &d.etc,
        "60-overridden.json",
        &descriptor(
            "admin",
            split("/x/CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", "raw"),
            "x86_64",
            &["pc-q35-*"],
            &[],
        ),
    );
    // Masked by an empty file in the user's directory.
    w(
        &d.system,
        "10-masked.json",
        &descriptor("masked", plain.clone(), "x86_64", &["pc-q35-*"], &[]),
    );
    w(&d.user, "10-masked.json", "");
    // Stateless, qcow2, arm64, unknown features/members/mapping, a broken file, not JSON.
    w(
        &d.system,
        "20-stateless.json",
        &descriptor(
            "stateless",
            serde_json::json!({"device": "flash", "mode": "stateless", "executable": {"filename": "/x/OVMF.fd", "format": "raw"}}),
            "x86_64",
            &["pc-q35-*"],
            &["amd-sev-snp"],
        ),
    );
    w(
        &d.system,
        "30-qcow2.json",
        &descriptor(
            "qcow2",
            split("/x/CODE.qcow2", "/x/VARS.qcow2", "qcow2"),
            "x86_64",
            &["pc-q35-*"],
            &[],
        ),
    );
    w(
        &d.system,
        "40-arm64.json",
        &descriptor(
            "arm64",
            split(
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
                "raw",
            ),
            "aarch64",
            &["virt-*"],
            &["secure-boot", "enrolled-keys"],
        ),
    );
    let mut future: Value = serde_json::from_str(&descriptor(
        "future",
        plain.clone(),
        "x86_64",
        &["pc-q35-*"],
        &["quantum-boot", "secure-boot"],
    ))
    .unwrap();
    future["some-new-member"] = serde_json::json!({"x": 1});
    future["mapping"]["new-flag"] = true.into();
    w(&d.etc, "45-future.json", &future.to_string());
    w(
        &d.user,
        "46-new-device.json",
        &descriptor(
            "new device",
            serde_json::json!({"device": "igvm", "filename": "/x/f.igvm"}),
            "x86_64",
            &["pc-q35-*"],
            &[],
        ),
    );
    w(&d.user, "05-broken.json", "{ this is not json");
    w(&d.user, "06-not-a-descriptor.json", r#"{"hello": "world"}"#);
    w(&d.system, "README", "not a .json file: ignored");

    let env = d.env();
    let env = [("NVRAM_FIRMWARE_DIRS", env.as_str())];
    let out = nvram_env(&["firmware", "list", "--json"], &env);
    let warnings = stderr(&out);
    let list = ok_json(out);
    let names: Vec<&str> = list["firmware"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "20-stateless.json",
            "30-qcow2.json",
            "40-arm64.json",
            "45-future.json",
            "46-new-device.json",
            "50-vendor.json",
            "60-overridden.json"
        ]
    );
    let overridden = &list["firmware"][6];
    assert_eq!(overridden["descriptor"]["description"], "admin");
    assert_eq!(overridden["path"], s(&d.etc.join("60-overridden.json")));
    // Broken files are skipped with a warning naming them, not fatal.
    for name in ["05-broken.json", "06-not-a-descriptor.json"] {
        assert!(warnings.contains(name), "{warnings}");
    }
    assert_eq!(list["skipped"].as_array().unwrap().len(), 2);

    let select = |extra: &[&str]| -> Output {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("vm.fd");
        let mut args = vec![
            "prepare",
            "--nvram",
            s(&vars),
            "--firmware",
            "auto",
            "--json",
        ];
        args.extend_from_slice(extra);
        nvram_env(&args, &env)
    };
    // Stateless (no template) and qcow2 are passed over for a raw varstore; the future
    // descriptor's unknown feature and members do not matter.
    let chosen = ok_json(select(&["--arch", "x86_64", "--machine", "pc-q35-7.2"]));
    assert_eq!(chosen["firmware"]["name"], "45-future.json");
    let chosen = ok_json(select(&[
        "--arch",
        "x86_64",
        "--machine",
        "pc-q35-7.2",
        "--no-feature",
        "secure-boot",
    ]));
    assert_eq!(chosen["firmware"]["name"], "50-vendor.json");
    let chosen = ok_json(select(&[
        "--arch",
        "x86_64",
        "--machine",
        "pc-q35-7.2",
        "--no-feature",
        "secure-boot",
        "--no-feature",
        "acpi-s3",
    ]));
    assert_eq!(chosen["firmware"]["name"], "60-overridden.json");
    assert_eq!(chosen["template"], "/usr/share/OVMF/OVMF_VARS.fd");
    assert_eq!(chosen["layout"], "ovmf-2m");
    let chosen = ok_json(select(&[
        "--arch",
        "aarch64",
        "--machine",
        "virt-7.2",
        "--feature",
        "secure-boot",
    ]));
    assert_eq!(chosen["firmware"]["name"], "40-arm64.json");
    assert_eq!(chosen["layout"], "aavmf");
    // The same with --firmware-dir instead of the environment.
    let out = nvram(&[
        "firmware",
        "list",
        "--json",
        "--arch",
        "aarch64",
        "--firmware-dir",
        s(&d.system),
        "--firmware-dir",
        s(&d.etc),
        "--firmware-dir",
        s(&d.user),
    ]);
    let names: Vec<String> = ok_json(out)["firmware"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["40-arm64.json"]);
    // Filters that list what prepare would skip.
    let out = nvram_env(&["firmware", "list", "--json", "--format", "qcow2"], &env);
    assert_eq!(ok_json(out)["firmware"][0]["name"], "30-qcow2.json");
    let out = nvram_env(&["firmware", "list", "--json", "--mode", "stateless"], &env);
    assert_eq!(ok_json(out)["firmware"][0]["name"], "20-stateless.json");
    // A mode descriptors do not have is refused by the argument parser, naming the others.
    let out = nvram_env(&["firmware", "list", "--mode", "splitt"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("split, combined, stateless"),
        "{}",
        stderr(&out)
    );
    // Naming a descriptor without a usable template is a clear error.
    let out = select_named(&env, "20-stateless");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no nvram-template (flash/stateless mapping)"),
        "{}",
        stderr(&out)
    );
    // A qcow2 template is used (its file here does not exist, so reading it fails).
    let out = select_named(&env, "30-qcow2.json");
    assert!(
        stderr(&out).contains("cannot use the template: /x/VARS.qcow2: cannot open"),
        "{}",
        stderr(&out)
    );
    let out = select_named(&env, "10-masked.json");
    assert!(
        stderr(&out).contains("no firmware descriptor named \"10-masked.json\""),
        "{}",
        stderr(&out)
    );
    // The human listing.
    let out = nvram_env(
        &[
            "firmware",
            "list",
            "--arch",
            "x86_64",
            "--machine",
            "pc-q35-7.2",
        ],
        &env,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("20-stateless.json"),
        "{text}"
    );
    assert!(!text.contains("40-arm64"), "{text}");
}

fn select_named(env: &[(&str, &str)], name: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm.fd");
    nvram_env(&["prepare", "--nvram", s(&vars), "--firmware", name], env)
}

#[test]
fn the_users_config_directory_overrides_the_system_descriptors() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("cfg");
    fs::create_dir_all(config.join("qemu/firmware")).unwrap();
    // The user's file of the same name replaces Debian's plain x86_64 descriptor…
    fs::write(
        config.join("qemu/firmware/60-edk2-x86_64.json"),
        descriptor(
            "mine",
            split(
                "/usr/share/OVMF/OVMF_CODE.fd",
                "/usr/share/OVMF/OVMF_VARS.fd",
                "raw",
            ),
            "x86_64",
            &["pc-q35-*"],
            &[],
        ),
    )
    .unwrap();
    // …and an empty one hides the enrolled one.
    fs::write(
        config.join("qemu/firmware/40-edk2-x86_64-secure-enrolled.json"),
        "",
    )
    .unwrap();
    let env = [("XDG_CONFIG_HOME", s(&config)), ("HOME", s(home.path()))];
    let list = ok_json(nvram_env(&["firmware", "list", "--json"], &env));
    assert_eq!(list["dirs"][2], s(&config.join("qemu/firmware")));
    let names: Vec<&str> = list["firmware"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"40-edk2-x86_64-secure-enrolled.json"));
    let show = ok_json(nvram_env(
        &["firmware", "show", "60-edk2-x86_64.json", "--json"],
        &env,
    ));
    assert_eq!(show["descriptor"]["description"], "mine");
    // Without XDG_CONFIG_HOME, ~/.config is used.
    let list = ok_json(nvram_env(
        &["firmware", "list", "--json"],
        &[("HOME", s(home.path()))],
    ));
    assert_eq!(
        list["dirs"][2],
        s(&home.path().join(".config/qemu/firmware"))
    );
}

// ---- machine-type aliases, resolved by the real QEMU ----

/// What `binary -machine help` says `alias` stands for, read here independently of nvram's
/// parser (QEMU prints `q35   Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)`).
/// `PATH` with the Debian 12 stack's `qemu-system-*` first.
fn path_with_qemu() -> std::ffi::OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::iter::once(Stack::Debian12.qemu_bin_dir()).chain(std::env::split_paths(&inherited));
    std::env::join_paths(dirs).expect("PATH entries without ':'")
}

fn qemu_alias(binary: &str, alias: &str) -> String {
    let out = Command::new(Stack::Debian12.qemu_bin_dir().join(binary))
        .args(["-machine", "help"])
        .output()
        .unwrap_or_else(|e| panic!("run {binary}: {e}"));
    assert!(
        out.status.success(),
        "{binary} -machine help: {}",
        stderr(&out)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(alias))
        .unwrap_or_else(|| panic!("{binary} lists no {alias}:\n{text}"));
    let target = line
        .rsplit_once("(alias of ")
        .and_then(|(_, t)| t.trim_end().strip_suffix(')'))
        .unwrap_or_else(|| panic!("{alias} is no alias: {line}"));
    assert_ne!(target, alias);
    target.to_string()
}

fn names(list: &Value) -> Vec<String> {
    list["firmware"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn firmware_list_resolves_machine_aliases_with_qemu() {
    for (binary, arch, alias, prefix, expected) in [
        (
            "qemu-system-x86_64",
            "x86_64",
            "q35",
            "pc-q35-",
            "40-edk2-x86_64-secure-enrolled.json",
        ),
        (
            "qemu-system-x86_64",
            "x86_64",
            "pc",
            "pc-i440fx-",
            "60-edk2-x86_64.json",
        ),
        (
            "qemu-system-aarch64",
            "aarch64",
            "virt",
            "virt-",
            "40-edk2-aarch64-secure-enrolled.json",
        ),
    ] {
        let versioned = qemu_alias(binary, alias);
        assert!(versioned.starts_with(prefix), "{alias} is {versioned}");
        let list = |machine: &str| {
            nvram(&[
                "firmware",
                "list",
                "--json",
                "--arch",
                arch,
                "--machine",
                machine,
            ])
        };
        let out = list(alias);
        let note = stderr(&out);
        assert!(
            note.contains(&format!("machine {alias} is {versioned} ({binary})")),
            "{note}"
        );
        let by_alias = ok_json(out);
        let out = list(&versioned);
        assert!(!stderr(&out).contains("note"), "{}", stderr(&out));
        let by_version = ok_json(out);
        assert!(!names(&by_version).is_empty(), "{by_version}");
        assert!(
            names(&by_version).iter().any(|n| n == expected),
            "{expected} not for {versioned}: {by_version}"
        );
        assert_eq!(
            names(&by_alias),
            names(&by_version),
            "{alias} = {versioned}"
        );
        assert_eq!(by_alias["criteria"], by_version["criteria"]);
        let criteria = by_alias["criteria"].as_str().unwrap();
        assert!(
            criteria.contains(&format!("machine {versioned}")),
            "{criteria}"
        );
        // The human listing too.
        let text = |machine: &str| {
            let out = nvram(&["firmware", "list", "--arch", arch, "--machine", machine]);
            assert!(out.status.success(), "{}", stderr(&out));
            out.stdout
        };
        assert_eq!(text(alias), text(&versioned));
    }
    // i440fx has only the plain build, q35 all three: the aliases are not mixed up.
    let pc = ok_json(nvram(&[
        "firmware",
        "list",
        "--json",
        "--arch",
        "x86_64",
        "--machine",
        "pc",
    ]));
    assert_eq!(names(&pc), ["60-edk2-x86_64.json"]);
}

#[test]
fn prepare_with_a_machine_alias_picks_the_same_template() {
    let q35 = qemu_alias("qemu-system-x86_64", "q35");
    let virt = qemu_alias("qemu-system-aarch64", "virt");
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut pick = |args: &[&str]| -> Value {
        n += 1;
        let vars = dir.path().join(format!("vm{n}.fd"));
        let mut all = vec![
            "prepare",
            "--nvram",
            s(&vars),
            "--firmware",
            "auto",
            "--json",
        ];
        all.extend_from_slice(args);
        let report = ok_json(nvram(&all));
        assert_eq!(report["outcome"], "created");
        let template = report["template"].as_str().unwrap();
        assert_eq!(fs::read(&vars).unwrap(), fs::read(template).unwrap());
        report
    };
    for (arch, alias, versioned, extra) in [
        ("x86_64", "q35", &q35, &[][..]),
        (
            "x86_64",
            "q35",
            &q35,
            &["--no-feature", "enrolled-keys"][..],
        ),
        ("x86_64", "q35", &q35, &["--no-feature", "requires-smm"][..]),
        (
            "aarch64",
            "virt",
            &virt,
            &["--no-feature", "secure-boot"][..],
        ),
        (
            "aarch64",
            "virt",
            &virt,
            &["--feature", "enrolled-keys"][..],
        ),
    ] {
        let mut args = vec!["--arch", arch, "--machine", alias];
        args.extend_from_slice(extra);
        let by_alias = pick(&args);
        args[3] = versioned;
        let by_version = pick(&args);
        assert_eq!(by_alias["firmware"], by_version["firmware"], "{args:?}");
        assert_eq!(by_alias["template"], by_version["template"], "{args:?}");
        // The report says which machine type the firmware was selected for.
        assert_eq!(by_alias["machine"], versioned.as_str());
        assert_eq!(by_version["machine"], versioned.as_str());
    }
    // The human report has the note on stderr and the usual lines.
    let vars = dir.path().join("human.fd");
    let out = nvram(&[
        "prepare",
        "--nvram",
        s(&vars),
        "--firmware",
        "auto",
        "--arch",
        "x86_64",
        "--machine",
        "q35",
        "--no-feature",
        "requires-smm",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "nvram: note: machine q35 is {q35} (qemu-system-x86_64)"
        )),
        "{message}"
    );
    assert!(
        message.contains("firmware: 60-edk2-x86_64.json"),
        "{message}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_machine_type_fails_clearly_and_touches_nothing() {
    let q35 = qemu_alias("qemu-system-x86_64", "q35");
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm.fd");
    for json in [false, true] {
        let mut args = vec![
            "prepare",
            "--nvram",
            s(&vars),
            "--firmware",
            "auto",
            "--arch",
            "x86_64",
            "--machine",
            "nosuch",
        ];
        if json {
            args.push("--json");
        }
        let out = nvram(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        let message = stderr(&out);
        for needle in [
            "qemu-system-x86_64 has no machine type \"nosuch\"",
            &format!("q35 = {q35}"),
        ] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
    }
    let out = nvram(&[
        "firmware",
        "list",
        "--arch",
        "x86_64",
        "--machine",
        "nosuch",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("has no machine type \"nosuch\""),
        "{}",
        stderr(&out)
    );
    // An aarch64 alias is no x86_64 machine type.
    let out = nvram(&["firmware", "list", "--arch", "x86_64", "--machine", "virt"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn the_qemu_binary_can_be_given_and_is_needed_only_for_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm.fd");
    let missing = dir.path().join("no-qemu");
    let prepare_with = |machine: &str, qemu: &Path| {
        nvram(&[
            "prepare",
            "--nvram",
            s(&vars),
            "--firmware",
            "auto",
            "--arch",
            "x86_64",
            "--machine",
            machine,
            "--qemu",
            s(qemu),
            "--json",
        ])
    };
    // No QEMU to ask: the error names the binary and the versioned form to use instead.
    let out = prepare_with("q35", &missing);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    for needle in [
        "cannot resolve machine type \"q35\"",
        s(&missing),
        "give the versioned machine type",
        "pc-q35-",
    ] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    assert!(!vars.exists());
    // A versioned name is used as it is: QEMU is not run.
    let report = ok_json(prepare_with("pc-q35-7.2", &missing));
    assert_eq!(report["machine"], "pc-q35-7.2");
    fs::remove_file(&vars).unwrap();

    // --qemu is the binary asked: a stand-in that knows q35 as pc-q35-2.4 and has no virt.
    let fake = dir.path().join("fake-qemu");
    fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1 $2\" = \"-machine help\" ] || exit 1\ncat <<'END'\n\
         Supported machines are:\n\
         q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-2.4)\n\
         pc-q35-2.4           Standard PC (Q35 + ICH9, 2009)\n\
         END\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let out = prepare_with("q35", &fake);
    assert!(
        stderr(&out).contains(&format!("machine q35 is pc-q35-2.4 ({})", s(&fake))),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok_json(out)["machine"], "pc-q35-2.4");
    let out = nvram(&[
        "firmware",
        "list",
        "--json",
        "--arch",
        "x86_64",
        "--machine",
        "virt",
        "--qemu",
        s(&fake),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{} has no machine type \"virt\"", s(&fake))),
        "{}",
        stderr(&out)
    );
    // --template takes no firmware criteria.
    let out = nvram(&[
        "prepare",
        "--nvram",
        s(&dir.path().join("other.fd")),
        "--template",
        TEMPLATE_4M,
        "--qemu",
        s(&fake),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

// ---- Debian 13's descriptors: every architecture edk2 ships for QEMU ----

/// `usr/share` of Debian 13's unpacked edk2 2025.02 packages.
fn current_usr_share() -> PathBuf {
    Stack::Current.firmware_dirs()[0]
        .parent()
        .expect("firmware dirs are under usr/share")
        .to_path_buf()
}

/// Debian 13's descriptors as the packages ship them (`usr/share/qemu/firmware`).
fn current_packaged_descriptors() -> PathBuf {
    let dir = current_usr_share().join("qemu/firmware");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/install-test-deps (scripts/test does)",
        dir.display()
    );
    dir
}

/// A copy of Debian 13's packaged descriptors in `dir`, their `filename`s moved from
/// `/usr/share/…` to where the stack is unpacked: this machine's `/usr/share` holds Debian 12's
/// firmware, which has no riscv64 or loongarch64 build.
fn current_descriptors_unpacked(dir: &Path) -> PathBuf {
    let usr_share = current_usr_share();
    let out = dir.join("firmware");
    fs::create_dir_all(&out).unwrap();
    for entry in fs::read_dir(current_packaged_descriptors()).unwrap() {
        let path = entry.unwrap().path();
        let mut doc: Value = serde_json::from_slice(&fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for file in ["executable", "nvram-template"] {
            let Some(name) = doc["mapping"][file]["filename"].as_str() else {
                continue;
            };
            let relative = Path::new(name)
                .strip_prefix("/usr/share")
                .unwrap_or_else(|_| {
                    panic!("{}: {file} {name} is not under /usr/share", path.display())
                });
            doc["mapping"][file]["filename"] = usr_share.join(relative).to_str().unwrap().into();
        }
        fs::write(out.join(path.file_name().unwrap()), doc.to_string()).unwrap();
    }
    out
}

#[test]
fn debian_13_descriptors_cover_every_architecture_and_instantiate_their_layouts() {
    let real = current_packaged_descriptors();
    // Listing needs only the descriptors; the versioned machine types (the descriptors'
    // globs are `virt*`, `virt-*`, `pc-q35-*`) keep QEMU out of it.
    for (arch, machine, expected) in [
        ("riscv64", "virt-10.0", &["60-edk2-riscv64.json"][..]),
        ("loongarch64", "virt-10.0", &["60-edk2-loongarch64.json"]),
        (
            "aarch64",
            "virt-10.0",
            &[
                "40-edk2-aarch64-secure-enrolled.json",
                "50-edk2-aarch64-secure.json",
                "60-edk2-aarch64.json",
            ],
        ),
        (
            "x86_64",
            "pc-q35-10.0",
            &[
                "40-edk2-x86_64-secure-enrolled.json",
                "50-edk2-x86_64-secure.json",
                "60-edk2-x86_64.json",
            ],
        ),
    ] {
        for machine in [None, Some(machine)] {
            let mut args = vec![
                "firmware",
                "list",
                "--firmware-dir",
                s(&real),
                "--arch",
                arch,
            ];
            args.extend(machine.iter().flat_map(|m| ["--machine", *m]));
            args.push("--json");
            assert_eq!(names(&ok_json(nvram(&args))), expected, "{args:?}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let descriptors = current_descriptors_unpacked(dir.path());
    for (arch, machine, descriptor, template, layout) in [
        (
            "riscv64",
            "virt-10.0",
            "60-edk2-riscv64.json",
            "RISCV_VIRT_VARS.fd",
            "riscv64",
        ),
        (
            "loongarch64",
            "virt-10.0",
            "60-edk2-loongarch64.json",
            "QEMU_VARS.fd",
            "loongarch64",
        ),
        (
            "aarch64",
            "virt-10.0",
            "40-edk2-aarch64-secure-enrolled.json",
            "AAVMF_VARS.ms.fd",
            "aavmf",
        ),
        (
            "x86_64",
            "pc-q35-10.0",
            "40-edk2-x86_64-secure-enrolled.json",
            "OVMF_VARS_4M.ms.fd",
            "ovmf-4m",
        ),
    ] {
        let template = Stack::Current.firmware(template);
        let vars = dir.path().join(format!("{arch}_VARS.fd"));
        let run = || {
            ok_json(nvram(&[
                "prepare",
                "--nvram",
                s(&vars),
                "--firmware",
                "auto",
                "--firmware-dir",
                s(&descriptors),
                "--arch",
                arch,
                "--machine",
                machine,
                "--json",
            ]))
        };
        let report = run();
        assert_eq!(report["firmware"]["name"], descriptor, "{arch}: {report}");
        assert_eq!(report["template"], s(&template), "{arch}: {report}");
        assert_eq!(report["layout"], layout, "{arch}: {report}");
        assert_eq!(report["outcome"], "created", "{arch}: {report}");
        assert!(
            fs::read(&vars).unwrap() == fs::read(&template).unwrap(),
            "{arch}: the varstore is not a copy of {}",
            template.display()
        );
        assert_eq!(mode(&vars), 0o600, "{arch}");
        // Run again: the existing store is verified against the same template and layout.
        let report = run();
        assert_eq!(report["outcome"], "verified", "{arch}: {report}");
        assert_eq!(report["layout"], layout, "{arch}: {report}");
        fs::remove_file(&vars).unwrap();
    }
}

/// A descriptor whose images are qcow2 (as Fedora ships them, 4 KiB clusters): `prepare
/// --template-format qcow2` picks it over the raw one, copies the qcow2 template as it is,
/// verifies it next time, and refuses a raw store where the descriptor says qcow2; the global
/// --format makes a raw template's store qcow2 instead.
#[test]
fn qcow2_templates_from_descriptors_are_instantiated_as_qcow2() {
    let d = Dirs::new();
    let template = d.system.join("OVMF_VARS_4M.qcow2");
    let made = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
        ])
        .arg(TEMPLATE_4M)
        .arg(&template)
        .status()
        .expect("qemu-img (qemu-utils) is needed for this test");
    assert!(made.success());
    let code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    for (name, vars, format) in [
        ("50-raw.json", TEMPLATE_4M, "raw"),
        ("60-qcow2.json", s(&template), "qcow2"),
    ] {
        let text = descriptor(
            format,
            split(code, vars, format),
            "x86_64",
            &["pc-q35-*"],
            &[],
        );
        fs::write(d.system.join(name), text).unwrap();
    }
    let env = [("NVRAM_FIRMWARE_DIRS", d.env())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let vm = d.user.join("vm_VARS.qcow2");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "prepare",
            "--json",
            "--firmware",
            "auto",
            "--arch",
            "x86_64",
        ]
        .map(String::from)
        .to_vec();
        a.extend(["--machine", "pc-q35-7.2", "--nvram", s(&vm)].map(String::from));
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        nvram_env(&a, &env)
    };
    let made = ok_json(run(&["--template-format", "qcow2"]));
    assert_eq!(made["outcome"], "created");
    assert_eq!(made["format"], "qcow2");
    assert_eq!(made["firmware"]["name"], "60-qcow2.json");
    assert_eq!(made["layout"], "ovmf-4m");
    assert_eq!(fs::read(&vm).unwrap(), fs::read(&template).unwrap());
    let again = ok_json(run(&["--template-format", "qcow2"]));
    assert_eq!(again["outcome"], "verified");
    let listed = nvram(&["list", "--json", s(&vm)]);
    assert!(listed.status.success(), "{}", stderr(&listed));

    // A raw store where the qcow2 descriptor is chosen: QEMU would open it as qcow2.
    fs::remove_file(&vm).unwrap();
    fs::copy(TEMPLATE_4M, &vm).unwrap();
    let out = run(&["--template-format", "qcow2"]);
    // 1: a verification failure, as for a wrong size or layout.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("format mismatch: the file is a raw store but qcow2 is expected"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&vm).unwrap(), fs::read(TEMPLATE_4M).unwrap());

    // Without --template-format the raw descriptor is chosen; --format qcow2 wraps its
    // template, and qemu-img sees a healthy image of the template's size.
    fs::remove_file(&vm).unwrap();
    let mut a = vec!["--format".to_string(), "qcow2".to_string()];
    a.extend(args(&[]));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let made = ok_json(nvram_env(&a, &env));
    assert_eq!(made["firmware"]["name"], "50-raw.json");
    assert_eq!(made["format"], "qcow2");
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&vm)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let export = |p: &Path| nvram(&["export", s(p)]).stdout;
    assert_eq!(export(&vm), export(Path::new(TEMPLATE_4M)));
}
