//! `nvram convert` against real QEMU and firmware (issue 12, part 3).
//!
//! - The migration users need: a VM's 2M store (`OVMF_VARS.fd`, layout `ovmf-2m`) that OVMF
//!   2022.11's `OVMF_CODE.fd` has booted and written, converted with `--layout ovmf-4m`, boots
//!   `OVMF_CODE_4M.fd` of edk2 2022.11 (QEMU 7.2) and of edk2 2025.02 (QEMU 10.0; Debian 13
//!   has no 2M build any more), whose `dmpstore` lists every variable of the source with the
//!   same attributes and data (the exceptions the firmware makes at every boot are explained
//!   where they are allowed). Converted straight into a qcow2 image (`--to qcow2`), the store
//!   holds the same flash image and boots OVMF 2025.02 as `format=qcow2`.
//! - The Secure Boot state moves with it: Debian 12's enrolled 2M template converted to
//!   `ovmf-4m` makes both stacks' `OVMF_CODE_4M.secboot.fd` start Microsoft-signed shim and
//!   refuse an unsigned loader.
//! - Between formats the flash image is carried as it is: raw → qcow2 → raw is byte-identical
//!   (and the qcow2 holds, as QEMU reads it, the raw image), raw → json → raw keeps every
//!   variable.
//! - A variable the target layout cannot hold fails the conversion, naming the variable, and
//!   no output file appears.

mod common;

use common::{
    assert_qcow2_clean, assert_read_back, boot_and_dump_format, exported, nvram, nvram_ok,
    path_str, qcow2_payload_by_qemu, qemu_img_ok, stderr, Variable,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use testkit::Stack;
use varstore::{FirmwareVerdict, Varstore};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";
const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The 2M layout's and the 4M layout's flash image sizes (`OVMF_VARS.fd`, `OVMF_VARS_4M.fd`).
const OVMF_2M_VARS_SIZE: u64 = 0x20000;
const OVMF_4M_VARS_SIZE: u64 = 0x84000;

/// (name, guid) -> (attributes, data)
type Variables = BTreeMap<(String, String), (u32, Vec<u8>)>;

fn by_key(vars: Vec<Variable>) -> Variables {
    vars.into_iter()
        .map(|(name, guid, attr, data)| ((name, guid), (attr, data)))
        .collect()
}

fn key(name: &str, guid: &str) -> (String, String) {
    (name.to_string(), guid.to_string())
}

/// UCS-2 with the terminating NUL, as UEFI stores strings.
fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Boots `code` of `stack` on the raw store `vars` and returns the non-volatile variables
/// its `dmpstore` lists.
fn boot(stack: Stack, code: &str, vars: &Path) -> Variables {
    let (vars, outcome): (Vec<Variable>, _) =
        boot_and_dump_format(stack, code, vars, "raw", "", Vec::new());
    eprintln!("{} {code} boot took {:?}", stack.name(), outcome.elapsed);
    by_key(vars)
}

/// The high 32 bits of the monotonic counter that OVMF keeps in `MTC`.
fn mtc(vars: &Variables) -> u32 {
    let (_, data) = vars
        .get(&key("MTC", "eb704011-1402-11d3-8e77-00a0c969723b"))
        .unwrap_or_else(|| panic!("no MTC: {:?}", vars.keys()));
    u32::from_le_bytes(data[..].try_into().expect("MTC is a UINT32"))
}

/// The instances of a multi-instance device path (the nodes between end nodes).
fn device_path_instances(path: &[u8]) -> Vec<Vec<u8>> {
    let mut instances = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at + 4 <= path.len() {
        let len = u16::from_le_bytes([path[at + 2], path[at + 3]]) as usize;
        assert!(
            len >= 4 && at + len <= path.len(),
            "bad device path {path:02x?}"
        );
        if path[at] == 0x7f {
            instances.push(path[start..at].to_vec());
            start = at + len;
        }
        at += len;
    }
    assert_eq!(at, path.len(), "bad device path {path:02x?}");
    instances
}

/// Every variable of `source` must be in `target` with the same attributes and data, except
/// what OVMF changes at every boot whatever the store:
///
/// - `MTC`, the high half of the monotonic counter, which the firmware increments at each
///   boot (so the target's must be larger);
/// - `MemoryTypeInformation`, the pages of each memory type the firmware used at its last
///   boot, which BdsDxe rewrites when a boot needed more: the 4M build's larger variable
///   store makes its runtime variable cache (`EfiRuntimeServicesData`, type 6) bigger than
///   the 2M build's. The list keeps its attributes and its memory types in the same order.
/// - `ConIn`, `ConOut` and `ErrOut`, whose device paths BdsDxe extends with the consoles it
///   finds at every boot (`EfiBootManagerUpdateConsoleVariable`): edk2 2025.02 adds the serial
///   console once more with another terminal type. Every console of the source must still be
///   there, with the same attributes.
///
/// Variables only the target has are ones the target firmware adds (its boot did not happen
/// on the source) and are allowed.
fn assert_carried_over(source: &Variables, target: &Variables, what: &str) {
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    for (k, v) in source {
        if k.0 == "MTC" {
            continue;
        }
        if k.0 == "MemoryTypeInformation" {
            let t = target.get(k).unwrap_or_else(|| panic!("{what}: no {k:?}"));
            // EFI_MEMORY_TYPE_INFORMATION: pairs of UINT32 (type, pages).
            let types =
                |d: &[u8]| -> Vec<u8> { d.chunks(8).flat_map(|c| c[..4].to_vec()).collect() };
            assert_eq!(t.0, v.0, "{what}: {k:?} attributes");
            assert_eq!(types(&t.1), types(&v.1), "{what}: {k:?} memory types");
            continue;
        }
        if ["ConIn", "ConOut", "ErrOut"].contains(&k.0.as_str()) && k.1 == GLOBAL_GUID {
            let t = target.get(k).unwrap_or_else(|| panic!("{what}: no {k:?}"));
            assert_eq!(t.0, v.0, "{what}: {k:?} attributes");
            let kept = device_path_instances(&t.1);
            for instance in device_path_instances(&v.1) {
                assert!(
                    kept.contains(&instance),
                    "{what}: {k:?} lost the console {}: {}",
                    hex::encode(&instance),
                    hex::encode(&t.1)
                );
            }
            continue;
        }
        match target.get(k) {
            None => missing.push(k),
            Some(t) if t != v => differ.push((k, hex::encode(&v.1), hex::encode(&t.1))),
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty() && differ.is_empty(),
        "{what}: source variables missing after the conversion and boot: {missing:?}\n\
         changed (source, target): {differ:#?}"
    );
    assert!(
        mtc(target) > mtc(source),
        "{what}: the monotonic counter went on"
    );
}

/// A VM's 2M store, written by OVMF 2022.11, moves to the 4M build of edk2 2022.11 and of
/// edk2 2025.02: `nvram convert --layout ovmf-4m` carries every variable, the firmware of
/// each boots it and lists them all.
#[test]
fn a_2m_store_ovmf_wrote_converted_to_4m_boots_ovmf_2022_11_and_2025_02_4m_with_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("vm_VARS.fd");
    let s = path_str(&source);
    nvram_ok(&[
        "prepare",
        "--nvram",
        s,
        "--template",
        path_str(&Stack::Debian12.firmware("OVMF_VARS.fd")),
    ]);
    let text = "set before the 2M boot";
    nvram_ok(&[
        "set",
        s,
        "NvramMigrated",
        "--guid",
        TEST_GUID,
        "--attr",
        "nv,bs,rt",
        "--string",
        text,
    ]);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    nvram_ok(&[
        "set",
        s,
        "NvramBytes",
        "--guid",
        TEST_GUID,
        "--attr",
        "nv,bs",
        "--data-hex",
        &hex::encode(&bytes),
    ]);
    let firmware_2m = boot(Stack::Debian12, "OVMF_CODE.fd", &source);
    assert_eq!(
        firmware_2m.get(&key("NvramMigrated", TEST_GUID)),
        Some(&(0x7, ucs2(text)))
    );
    assert_eq!(
        firmware_2m.get(&key("NvramBytes", TEST_GUID)),
        Some(&(0x3, bytes))
    );
    assert!(
        firmware_2m.contains_key(&key("BootOrder", GLOBAL_GUID))
            && firmware_2m.contains_key(&key("PlatformLang", GLOBAL_GUID)),
        "the firmware wrote its variables: {:?}",
        firmware_2m.keys()
    );
    // nvram reads the source as the firmware left it.
    assert_read_back(
        &firmware_2m
            .iter()
            .map(|((n, g), (a, d))| (n.clone(), g.clone(), *a, d.clone()))
            .collect(),
        &source,
    );
    assert_eq!(fs::metadata(&source).unwrap().len(), OVMF_2M_VARS_SIZE);
    let source_before = fs::read(&source).unwrap();

    let converted = dir.path().join("vm_VARS_4M.fd");
    let out = nvram_ok(&[
        "convert",
        s,
        path_str(&converted),
        "--layout",
        "ovmf-4m",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["from_layout"], "ovmf-2m", "{report:#}");
    assert_eq!(report["to_layout"], "ovmf-4m", "{report:#}");
    assert_eq!(report["variables"], firmware_2m.len(), "{report:#}");
    assert!(
        fs::read(&source).unwrap() == source_before,
        "the source is unchanged"
    );
    assert_eq!(fs::metadata(&converted).unwrap().len(), OVMF_4M_VARS_SIZE);
    let store = fs::read(&converted).unwrap();
    let parsed = Varstore::parse(&store).unwrap();
    assert_eq!(parsed.layout().map(|l| l.name), Some("ovmf-4m"));
    assert_eq!(parsed.verdict(), FirmwareVerdict::Accept);
    assert_eq!(
        by_key(exported(&converted)),
        firmware_2m,
        "the converted store holds what the firmware left in the source"
    );

    for stack in Stack::ALL {
        let vars = dir.path().join(format!("{}_VARS_4M.fd", stack.name()));
        fs::copy(&converted, &vars).unwrap();
        let firmware_4m = boot(stack, "OVMF_CODE_4M.fd", &vars);
        assert_carried_over(
            &firmware_2m,
            &firmware_4m,
            &format!("edk2 of {}", stack.name()),
        );
        // And nvram reads what the 4M firmware wrote after the converted records.
        assert_read_back(
            &firmware_4m
                .iter()
                .map(|((n, g), (a, d))| (n.clone(), g.clone(), *a, d.clone()))
                .collect(),
            &vars,
        );
    }

    // The same migration into a qcow2 image in one step: QEMU finds the very flash image of
    // the raw conversion in it, and OVMF 2025.02 boots it as `format=qcow2`.
    let qcow2 = dir.path().join("vm_VARS_4M.qcow2");
    nvram_ok(&[
        "convert",
        s,
        path_str(&qcow2),
        "--layout",
        "ovmf-4m",
        "--to",
        "qcow2",
    ]);
    assert_qcow2_clean(&qcow2, "nvram convert --to qcow2 --layout ovmf-4m");
    assert!(
        qcow2_payload_by_qemu(&qcow2) == store,
        "the qcow2 conversion holds the raw conversion's image"
    );
    let (firmware_qcow2, _): (Vec<Variable>, _) = boot_and_dump_format(
        Stack::Current,
        "OVMF_CODE_4M.fd",
        &qcow2,
        "qcow2",
        "",
        Vec::new(),
    );
    let firmware_qcow2 = by_key(firmware_qcow2);
    assert_carried_over(&firmware_2m, &firmware_qcow2, "edk2 2025.02, qcow2");
    assert_qcow2_clean(&qcow2, "the boot");
    assert_eq!(by_key(exported(&qcow2)), firmware_qcow2);
}

/// A store with firmware writes and stale records to convert between formats: the 4M
/// Microsoft template (Secure Boot databases, time-based authenticated variables) edited by
/// appending, so that it holds replaced records and a deleted one.
fn edited_4m_store(path: &Path) {
    fs::copy(Stack::Current.firmware("OVMF_VARS_4M.ms.fd"), path).unwrap();
    let p = path_str(path);
    for value in ["1", "2", "3"] {
        nvram_ok(&["set", p, "NvramCount", "--guid", TEST_GUID, "--u8", value]);
    }
    nvram_ok(&[
        "set",
        p,
        "NvramText",
        "--guid",
        TEST_GUID,
        "--string",
        "kept in every format",
    ]);
    nvram_ok(&["set", p, "NvramGone", "--guid", TEST_GUID, "--u8", "9"]);
    nvram_ok(&["delete", p, "NvramGone", "--guid", TEST_GUID]);
    let store = fs::read(path).unwrap();
    let parsed = Varstore::parse(&store).unwrap();
    assert!(parsed.records().len() > parsed.live_variables().len() + 3);
}

/// `nvram export`'s document for `path`.
fn export_doc(path: &Path) -> Value {
    serde_json::from_slice(&nvram_ok(&["export", path_str(path)]).stdout).unwrap()
}

#[test]
fn raw_to_qcow2_to_raw_is_byte_identical_and_qemu_reads_the_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("a.fd");
    edited_4m_store(&raw);
    let original = fs::read(&raw).unwrap();

    let qcow2 = dir.path().join("b.qcow2");
    nvram_ok(&["convert", path_str(&raw), path_str(&qcow2), "--to", "qcow2"]);
    let info: Value =
        serde_json::from_str(&qemu_img_ok(&["info", "--output=json", path_str(&qcow2)])).unwrap();
    assert_eq!(info["format"], "qcow2", "{info:#}");
    assert_eq!(info["virtual-size"], OVMF_4M_VARS_SIZE, "{info:#}");
    assert_qcow2_clean(&qcow2, "nvram convert --to qcow2");
    assert!(
        qcow2_payload_by_qemu(&qcow2) == original,
        "QEMU reads the raw image, deleted records and all, out of the qcow2"
    );
    assert_eq!(export_doc(&qcow2), export_doc(&raw));

    let back = dir.path().join("c.fd");
    nvram_ok(&["convert", path_str(&qcow2), path_str(&back), "--to", "raw"]);
    assert!(
        fs::read(&back).unwrap() == original,
        "raw → qcow2 → raw is byte-identical"
    );
    // The input's format is the default target: the qcow2 copied stays a qcow2.
    let copy = dir.path().join("d.qcow2");
    nvram_ok(&["convert", path_str(&qcow2), path_str(&copy)]);
    assert!(qcow2_payload_by_qemu(&copy) == original);
}

#[test]
fn raw_to_json_to_raw_keeps_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("a.fd");
    edited_4m_store(&raw);
    let json = dir.path().join("b.json");
    nvram_ok(&["convert", path_str(&raw), path_str(&json), "--to", "json"]);
    let doc: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert!(doc.is_object(), "{doc}");
    assert_eq!(export_doc(&json), export_doc(&raw));

    // Without a layout a JSON store cannot become a flash image: refused, nothing written.
    let back = dir.path().join("c.fd");
    let out = nvram(&["convert", path_str(&json), path_str(&back), "--to", "raw"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("layout"), "{}", stderr(&out));
    assert!(!back.exists());

    nvram_ok(&[
        "convert",
        path_str(&json),
        path_str(&back),
        "--to",
        "raw",
        "--layout",
        "ovmf-4m",
    ]);
    assert_eq!(fs::metadata(&back).unwrap().len(), OVMF_4M_VARS_SIZE);
    assert_eq!(export_doc(&back), export_doc(&raw));
    let names: BTreeSet<String> = export_doc(&back)["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["PK", "KEK", "db", "dbx", "NvramCount", "NvramText"] {
        assert!(names.contains(name), "{name} missing: {names:?}");
    }
    assert!(!names.contains("NvramGone"));
    let store = fs::read(&back).unwrap();
    let parsed = Varstore::parse(&store).unwrap();
    assert_eq!(parsed.verdict(), FirmwareVerdict::Accept);
}

/// The 2M layout's firmware takes variables up to 0x2000 bytes (name and data; 0x2800 for
/// authenticated ones); a 4M store's larger one cannot go there.
#[test]
fn a_variable_too_large_for_the_2m_layout_fails_the_conversion_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.fd");
    let s = path_str(&source);
    nvram_ok(&["create", s, "--layout", "ovmf-4m"]);
    nvram_ok(&["set", s, "NvramSmall", "--guid", TEST_GUID, "--u8", "1"]);
    nvram_ok(&[
        "set",
        s,
        "NvramTooBigFor2M",
        "--guid",
        TEST_GUID,
        "--attr",
        "nv,bs",
        "--data-hex",
        &hex::encode(vec![0x5a; 0x3000]),
    ]);
    let before = fs::read(&source).unwrap();
    for (target, to) in [("small.fd", "raw"), ("small.qcow2", "qcow2")] {
        let output = dir.path().join(target);
        let out = nvram(&[
            "convert",
            s,
            path_str(&output),
            "--layout",
            "ovmf-2m",
            "--to",
            to,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("NvramTooBigFor2M"),
            "the error names the variable: {}",
            stderr(&out)
        );
        assert!(!output.exists(), "{target} was written");
    }
    assert!(fs::read(&source).unwrap() == before);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "big.fd")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Without it the same store converts (the refusal was about that variable).
    nvram_ok(&["delete", s, "NvramTooBigFor2M", "--guid", TEST_GUID]);
    let output = dir.path().join("small.fd");
    nvram_ok(&["convert", s, path_str(&output), "--layout", "ovmf-2m"]);
    assert_eq!(fs::metadata(&output).unwrap().len(), OVMF_2M_VARS_SIZE);
    assert_eq!(
        by_key(exported(&output)).get(&key("NvramSmall", TEST_GUID)),
        Some(&(0x7, vec![1]))
    );
}

/// Debian's Microsoft-signed shim (shim-signed).
const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// An unsigned EFI program (systemd-boot-efi).
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// The firmware refused an image because of the Secure Boot databases: "Security Violation"
/// in edk2 2022.11, "Access Denied" in 2025.02.
fn refused(line: &str) -> bool {
    line.contains("Security Violation") || line.contains("Access Denied")
}

/// shim, started without grub next to it, complains about the missing second stage; or the
/// firmware refused it.
fn shim_ran_or_refused(serial: &str) -> bool {
    serial.contains("start_image() returned") || serial.lines().any(refused)
}

/// systemd-boot (without loader entries) started, or the firmware refused it.
fn systemd_boot_ran_or_refused(serial: &str) -> bool {
    serial.contains("systemd-boot")
        || serial.contains("Boot in")
        || serial.contains("No loader")
        || serial.lines().any(refused)
}

/// Boots the Secure Boot build of `stack` on `vars` with `loader` as the disk's
/// `\EFI\BOOT\BOOTX64.EFI` until `stop_when` holds; returns the serial log.
fn secure_boot(stack: Stack, vars: &Path, loader: Vec<u8>, stop_when: fn(&str) -> bool) -> String {
    let code = stack.firmware("OVMF_CODE_4M.secboot.fd");
    let mut boot = testkit::OvmfBoot::new(&code, vars, "reset -s\n");
    boot.stack = stack;
    boot.smm = true;
    boot.files = vec![("EFI/BOOT/BOOTX64.EFI".to_string(), loader)];
    boot.stop_when = Some(stop_when);
    boot.timeout = std::time::Duration::from_secs(120);
    let started = std::time::Instant::now();
    let serial = match testkit::boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e @ testkit::BootError::Setup(_)) => panic!("{e}"),
        Err(e) => e.serial().unwrap_or_default().to_string(),
    };
    eprintln!("{} secure boot took {:?}", stack.name(), started.elapsed());
    serial
}

/// The Secure Boot state moves with the store: Debian 12's enrolled 2M template (its PK,
/// Microsoft's KEK and db, time-based authenticated variables), converted to `ovmf-4m`,
/// makes the Secure Boot build `OVMF_CODE_4M.secboot.fd` of edk2 2022.11 and 2025.02 start
/// Microsoft-signed shim (db holds Microsoft's UEFI CA) and refuse an unsigned loader (user
/// mode, enforcing); the databases are still there, unchanged, after the boots.
#[test]
fn an_enrolled_2m_store_converted_to_4m_keeps_secure_boot_on_ovmf_2022_11_and_2025_02() {
    let dir = tempfile::tempdir().unwrap();
    let source = Stack::Debian12.firmware("OVMF_VARS.ms.fd");
    let converted = dir.path().join("ms_VARS_4M.fd");
    nvram_ok(&[
        "convert",
        path_str(&source),
        path_str(&converted),
        "--layout",
        "ovmf-4m",
    ]);
    let source_vars = by_key(exported(&source));
    assert_eq!(by_key(exported(&converted)), source_vars);
    let export = export_doc(&converted);
    let time_of = |doc: &Value, name: &str| {
        doc["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["time"].clone())
    };
    for name in ["PK", "KEK", "db", "dbx"] {
        let time = time_of(&export, name);
        assert!(
            time.as_ref().is_some_and(|t| t.is_string()),
            "{name} has its timestamp: {export:#}"
        );
        assert_eq!(time, time_of(&export_doc(&source), name), "{name}");
    }

    let shim = fs::read(SHIM).expect("shim-signed installed");
    let unsigned = fs::read(SYSTEMD_BOOT).expect("systemd-boot-efi installed");
    for stack in Stack::ALL {
        let vars = dir.path().join(format!("{}_VARS_4M.fd", stack.name()));
        fs::copy(&converted, &vars).unwrap();
        let serial = secure_boot(stack, &vars, shim.clone(), shim_ran_or_refused);
        assert!(
            serial.contains("start_image() returned") && !serial.lines().any(refused),
            "{}: shim did not start:\n{serial}",
            stack.name()
        );
        let serial = secure_boot(stack, &vars, unsigned.clone(), systemd_boot_ran_or_refused);
        assert!(
            serial
                .lines()
                .any(|l| l.contains("Non-Block Boot Device") && refused(l)),
            "{}: the unsigned loader was not refused:\n{serial}",
            stack.name()
        );
        let after = by_key(exported(&vars));
        for name in ["PK", "KEK", "db", "dbx", "SecureBootEnable"] {
            let of = |vars: &Variables| {
                vars.iter()
                    .find(|(k, _)| k.0 == name)
                    .map(|(_, v)| v.clone())
            };
            assert!(of(&source_vars).is_some(), "{name}");
            assert_eq!(of(&after), of(&source_vars), "{}: {name}", stack.name());
        }
    }
}

/// `--layout` names a flash image: a JSON input converted with it and without `--to` becomes a
/// raw store of that layout (a variable too large for it fails by name), and a JSON target
/// with a layout is refused.
#[test]
fn a_layout_makes_a_json_input_a_flash_image() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("vars.json");
    let nv = env!("CARGO_BIN_EXE_nvram");
    let run =
        |args: &[&std::ffi::OsStr]| std::process::Command::new(nv).args(args).output().unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);
    let out = run(&[
        &os("convert"),
        &os("--to"),
        &os("json"),
        &os("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
        json.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flash = dir.path().join("vars.fd");
    let out = run(&[
        &os("convert"),
        json.as_os_str(),
        flash.as_os_str(),
        &os("--layout"),
        &os("ovmf-4m"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = run(&[&os("check"), &os("--json"), flash.as_os_str()]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["format"], "raw");
    assert_eq!(report["layout"], "ovmf-4m");
    let again = dir.path().join("again.json");
    let out = run(&[
        &os("convert"),
        json.as_os_str(),
        again.as_os_str(),
        &os("--to"),
        &os("json"),
        &os("--layout"),
        &os("ovmf-2m"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("a layout applies only to a raw or qcow2 target"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!again.exists());
}
