//! Varstores kept as qcow2 images, against real QEMU and firmware (issue 12, part 1), on both
//! stacks (QEMU 7.2 + OVMF 2022.11, QEMU 10.0 + OVMF 2025.02; `OVMF_CODE_4M.fd`, 4M store):
//!
//! - a store from `nvram --format qcow2 create`, edited with `nvram set` and `nvram boot add
//!   --next`, boots with `-drive if=pflash,format=qcow2`: the firmware's `dmpstore` shows our
//!   variables with our data and BdsDxe tries our entry; afterwards nvram reads from the qcow2
//!   file exactly what the firmware wrote (what QEMU's own `qemu-img convert` gets out of the
//!   image says the same), including the variables the firmware creates at its first boot;
//! - a store from `nvram --format qcow2 prepare --template` holds the template byte for byte;
//!   with internal snapshots taken between our edits (`qemu-img snapshot -c`), every edit keeps
//!   them, `qemu-img snapshot -a` brings back each snapshot's variables, and the firmware boots
//!   the restored image and sees the old values;
//! - `qemu-img check` finds the image clean after each of our edits and after QEMU wrote it;
//! - qcow2 images nvram cannot keep a store in (backing file, external data file, encryption)
//!   are refused by reading and editing commands, naming the feature, with exit status 2 and
//!   the files untouched;
//! - while QEMU 7.2 or 10.0 has the qcow2 store open (`-S`), `nvram set` refuses it, naming
//!   QEMU's lock, and changes nothing.
//!
//! Four boots of OVMF (a few seconds each) and `qemu-img` 10.0 (Debian's qemu-utils), which
//! must be installed.

mod common;

use common::{
    assert_bds_tried, assert_qcow2_clean, assert_same_variables, boot_and_dump_format, exported,
    nvram, nvram_ok, path_str, qcow2_payload_by_qemu, qemu_img_ok, stderr, stdout, Variable,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use testkit::Stack;
use varstore::{FirmwareVerdict, Varstore};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";
const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The size of the 4M layout's flash image (`OVMF_VARS_4M.fd`).
const OVMF_4M_VARS_SIZE: u64 = 540672;

type VariableSet = BTreeSet<Variable>;

/// UCS-2 with the terminating NUL, as UEFI stores strings (written out here rather than
/// taken from nvram, so that a wrong encoding in nvram fails the test).
fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn find<'a>(vars: &'a VariableSet, name: &str, guid: &str) -> Option<&'a Variable> {
    vars.iter().find(|v| v.0 == name && v.1 == guid)
}

/// `qemu-img info --output=json` of `image`.
fn info(image: &Path) -> Value {
    serde_json::from_str(&qemu_img_ok(&["info", "--output=json", path_str(image)])).unwrap()
}

/// Asserts that `image` is a qcow2 image holding a flash image of the 4M layout's size.
fn assert_qcow2_4m(image: &Path) {
    let info = info(image);
    assert_eq!(info["format"], "qcow2", "{info:#}");
    assert_eq!(info["virtual-size"], OVMF_4M_VARS_SIZE, "{info:#}");
}

/// What must hold of a qcow2 store after QEMU and the firmware wrote it: the image is clean,
/// nvram lists exactly the variables the firmware's `dmpstore` listed, and the flash image
/// QEMU itself gets out of the qcow2 file (`qemu-img convert`) holds the same variables, in a
/// store the firmware accepts as it is.
fn assert_firmware_read_back(firmware: &VariableSet, vars: &Path) {
    assert_qcow2_clean(vars, "the boot");
    assert_same_variables(firmware, &exported(vars));
    let payload = qcow2_payload_by_qemu(vars);
    assert_eq!(payload.len() as u64, OVMF_4M_VARS_SIZE);
    let store = Varstore::parse(&payload).unwrap();
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:?}",
        store.findings()
    );
    let by_qemu: VariableSet = store
        .live_variables()
        .iter()
        .map(|r| {
            (
                r.name(),
                r.guid.to_string(),
                r.attributes.0,
                r.data.to_vec(),
            )
        })
        .collect();
    assert_same_variables(firmware, &by_qemu);
    let check = nvram(&["check", path_str(vars)]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}

#[test]
fn ovmf_2022_11_boots_an_edited_qcow2_store_from_nvram_create_and_nvram_reads_it_back() {
    created_store(Stack::Debian12);
}

#[test]
fn ovmf_2025_02_boots_an_edited_qcow2_store_from_nvram_create_and_nvram_reads_it_back() {
    created_store(Stack::Current);
}

fn created_store(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.qcow2");
    let v = path_str(&vars);
    nvram_ok(&["--format", "qcow2", "create", v]);
    assert_qcow2_4m(&vars);
    assert_qcow2_clean(&vars, "nvram create");
    assert!(exported::<Vec<_>>(&vars).is_empty(), "a blank store");

    let text = "edited inside a qcow2 image";
    nvram_ok(&[
        "set",
        v,
        "NvramText",
        "--guid",
        TEST_GUID,
        "--attr",
        "nv,bs,rt",
        "--string",
        text,
    ]);
    assert_qcow2_clean(&vars, "nvram set --string");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    nvram_ok(&[
        "set",
        v,
        "NvramBytes",
        "--guid",
        TEST_GUID,
        "--attr",
        "nv,bs",
        "--data-hex",
        &hex::encode(&bytes),
    ]);
    assert_qcow2_clean(&vars, "nvram set --data-hex");
    let description = "qcow2 next";
    let out = nvram_ok(&[
        "boot",
        "add",
        v,
        "--next",
        "--description",
        description,
        "--file",
        r"\EFI\BOOT\TEST.EFI",
    ]);
    assert_qcow2_clean(&vars, "nvram boot add");
    let entry = stdout(&out).trim().to_string();
    assert!(entry.starts_with("Boot"), "{entry}");
    assert_qcow2_4m(&vars);
    let before: VariableSet = exported(&vars);

    // The file exists but is no PE image: BdsDxe tries the entry, fails and goes on to the
    // firmware's own entries (the shell).
    let files = vec![("EFI/BOOT/TEST.EFI".to_string(), b"not a PE image".to_vec())];
    let (firmware, outcome): (VariableSet, _) =
        boot_and_dump_format(stack, "OVMF_CODE_4M.fd", &vars, "qcow2", "", files);

    // The firmware saw our edits.
    let seen = find(&firmware, "NvramText", TEST_GUID)
        .unwrap_or_else(|| panic!("dmpstore lacks NvramText: {firmware:?}"));
    assert_eq!((seen.2, &seen.3), (0x7, &ucs2(text)));
    let seen = find(&firmware, "NvramBytes", TEST_GUID)
        .unwrap_or_else(|| panic!("dmpstore lacks NvramBytes: {firmware:?}"));
    assert_eq!((seen.2, &seen.3), (0x3, &bytes));
    assert_bds_tried(&outcome.serial, &entry, description);
    let option = find(&firmware, &entry, GLOBAL_GUID)
        .unwrap_or_else(|| panic!("dmpstore lacks {entry}: {firmware:?}"));
    let wanted = ucs2(description);
    assert!(
        option.3.windows(wanted.len()).any(|w| w == wanted),
        "{entry} does not hold our description: {:02x?}",
        option.3
    );
    // It consumed BootNext.
    assert!(find(&firmware, "BootNext", GLOBAL_GUID).is_none());

    // And nvram reads what it wrote into the qcow2 file.
    assert_qcow2_4m(&vars);
    assert_firmware_read_back(&firmware, &vars);
    let created: BTreeSet<&str> = firmware
        .iter()
        .filter(|v| !before.iter().any(|b| b.0 == v.0 && b.1 == v.1))
        .map(|v| v.0.as_str())
        .collect();
    // (BootOrder is ours: `boot add` made it.)
    for name in ["PlatformLang", "ConOut", "ConIn", "MTC"] {
        assert!(
            created.contains(name),
            "the firmware created {name} at its first boot; it created {created:?}"
        );
    }
    assert!(
        created.iter().any(|n| n.starts_with("Boot0")),
        "the firmware added boot entries of its own: {created:?}"
    );
    eprintln!("{} boot took {:?}", stack.name(), outcome.elapsed);
}

#[test]
fn ovmf_2022_11_boots_a_qcow2_store_from_a_template_restored_from_an_internal_snapshot() {
    template_snapshots(Stack::Debian12);
}

#[test]
fn ovmf_2025_02_boots_a_qcow2_store_from_a_template_restored_from_an_internal_snapshot() {
    template_snapshots(Stack::Current);
}

/// `nvram get --json`'s data, or `None` if there is no such variable (exit status 1).
fn get(vars: &Path, name: &str) -> Option<Vec<u8>> {
    let out = nvram(&["get", path_str(vars), name, "--guid", TEST_GUID, "--json"]);
    match out.status.code() {
        Some(1) => None,
        Some(0) => {
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
            Some(hex::decode(doc["data"].as_str().unwrap()).unwrap())
        }
        _ => panic!("nvram get {name}: {}", stderr(&out)),
    }
}

/// The tags `qemu-img snapshot -l` lists.
fn snapshot_tags(image: &Path) -> Vec<String> {
    let list = qemu_img_ok(&["snapshot", "-l", path_str(image)]);
    let mut lines = list.lines().skip_while(|l| !l.starts_with("ID"));
    assert!(lines.next().is_some(), "no snapshot table:\n{list}");
    lines
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

fn template_snapshots(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let template = stack.firmware("OVMF_VARS_4M.fd");
    let vars = dir.path().join("vm_VARS.qcow2");
    let v = path_str(&vars);
    nvram_ok(&[
        "--format",
        "qcow2",
        "prepare",
        "--nvram",
        v,
        "--template",
        path_str(&template),
    ]);
    assert_qcow2_4m(&vars);
    assert_qcow2_clean(&vars, "nvram prepare");
    assert!(
        qcow2_payload_by_qemu(&vars) == fs::read(&template).unwrap(),
        "the qcow2 image holds the template as it is"
    );

    let set_u32 = |name: &str, value: u32| {
        nvram_ok(&[
            "set",
            v,
            name,
            "--guid",
            TEST_GUID,
            "--attr",
            "nv,bs,rt",
            "--u32",
            &value.to_string(),
        ]);
        assert_qcow2_clean(&vars, &format!("nvram set {name}={value}"));
    };
    set_u32("NvramState", 0x1111_1111);
    qemu_img_ok(&["snapshot", "-c", "before", v]);
    let before_vars: VariableSet = exported(&vars);

    set_u32("NvramState", 0x2222_2222);
    nvram_ok(&[
        "set",
        v,
        "NvramLater",
        "--guid",
        TEST_GUID,
        "--string",
        "after the first snapshot",
    ]);
    assert_qcow2_clean(&vars, "nvram set NvramLater");
    assert_eq!(snapshot_tags(&vars), ["before"], "our edits kept it");
    qemu_img_ok(&["snapshot", "-c", "after", v]);
    set_u32("NvramState", 0x3333_3333);
    nvram_ok(&["delete", v, "NvramLater", "--guid", TEST_GUID]);
    assert_qcow2_clean(&vars, "nvram delete");
    assert_eq!(snapshot_tags(&vars), ["before", "after"]);
    assert_eq!(
        get(&vars, "NvramState"),
        Some(0x3333_3333u32.to_le_bytes().into())
    );
    assert_eq!(get(&vars, "NvramLater"), None);

    qemu_img_ok(&["snapshot", "-a", "after", v]);
    assert_qcow2_clean(&vars, "qemu-img snapshot -a after");
    assert_eq!(
        get(&vars, "NvramState"),
        Some(0x2222_2222u32.to_le_bytes().into())
    );
    assert_eq!(
        get(&vars, "NvramLater"),
        Some(ucs2("after the first snapshot"))
    );
    qemu_img_ok(&["snapshot", "-a", "before", v]);
    assert_qcow2_clean(&vars, "qemu-img snapshot -a before");
    assert_eq!(
        get(&vars, "NvramState"),
        Some(0x1111_1111u32.to_le_bytes().into())
    );
    assert_eq!(get(&vars, "NvramLater"), None);
    assert_eq!(exported::<VariableSet>(&vars), before_vars);

    // The firmware boots the restored image and sees the old variables.
    let (firmware, outcome): (VariableSet, _) =
        boot_and_dump_format(stack, "OVMF_CODE_4M.fd", &vars, "qcow2", "", Vec::new());
    let state = find(&firmware, "NvramState", TEST_GUID)
        .unwrap_or_else(|| panic!("dmpstore lacks NvramState: {firmware:?}"));
    assert_eq!(
        (state.2, &state.3[..]),
        (0x7, &0x1111_1111u32.to_le_bytes()[..])
    );
    assert!(find(&firmware, "NvramLater", TEST_GUID).is_none());
    assert_firmware_read_back(&firmware, &vars);
    assert_eq!(
        snapshot_tags(&vars),
        ["before", "after"],
        "QEMU kept the snapshots"
    );

    // nvram edits the image QEMU wrote, still keeping the snapshots.
    set_u32("NvramState", 0x4444_4444);
    assert_eq!(snapshot_tags(&vars), ["before", "after"]);
    qemu_img_ok(&["snapshot", "-a", "after", v]);
    assert_eq!(
        get(&vars, "NvramState"),
        Some(0x2222_2222u32.to_le_bytes().into())
    );
    qemu_img_ok(&["snapshot", "-a", "before", v]);
    assert_eq!(exported::<VariableSet>(&vars), before_vars);
    assert_qcow2_clean(&vars, "the last qemu-img snapshot -a before");
    eprintln!("{} boot took {:?}", stack.name(), outcome.elapsed);
}

/// qcow2 features a varstore cannot be kept with: a backing file, an external data file and
/// encryption. `qemu-img` makes each from a valid store; `nvram list`, `export` and `set`
/// refuse them with exit status 2, naming the feature, and change no file.
#[test]
fn qcow2_images_with_a_backing_file_an_external_data_file_or_encryption_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let base = p("base.fd");
    nvram_ok(&["create", path_str(&base)]);
    nvram_ok(&[
        "set",
        path_str(&base),
        "NvramText",
        "--guid",
        TEST_GUID,
        "--string",
        "in the base",
    ]);

    let backed = p("backed.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        path_str(&base),
        path_str(&backed),
    ]);
    let info_backed = info(&backed);
    assert_eq!(
        info_backed["backing-filename"],
        path_str(&base),
        "{info_backed:#}"
    );

    let external = p("external.qcow2");
    let data_file = p("external.raw");
    qemu_img_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        &format!("data_file={},data_file_raw=on", path_str(&data_file)),
        path_str(&base),
        path_str(&external),
    ]);
    let info_external = info(&external);
    assert_eq!(
        info_external["format-specific"]["data"]["data-file"],
        path_str(&data_file),
        "{info_external:#}"
    );
    // QEMU pads the data file to whole clusters.
    let base_bytes = fs::read(&base).unwrap();
    assert!(
        fs::read(&data_file).unwrap().starts_with(&base_bytes),
        "the data file holds the store"
    );

    let encrypted = p("encrypted.qcow2");
    qemu_img_ok(&[
        "convert",
        "--object",
        "secret,id=sec0,data=nvram-test",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        path_str(&base),
        path_str(&encrypted),
    ]);
    assert_eq!(info(&encrypted)["encrypted"], true);

    let cases = [
        (&backed, "backing file"),
        (&external, "external data file"),
        (&encrypted, "encryption"),
    ];
    let watched = [&base, &backed, &external, &data_file, &encrypted];
    let contents = |files: &[&std::path::PathBuf]| -> Vec<Vec<u8>> {
        files.iter().map(|f| fs::read(f).unwrap()).collect()
    };
    let unchanged = contents(&watched);
    for (image, feature) in cases {
        let i = path_str(image);
        let commands: [&[&str]; 4] = [
            &["list", i],
            &["export", i],
            &["set", i, "NvramNew", "--guid", TEST_GUID, "--u8", "1"],
            &["delete", i, "NvramText", "--guid", TEST_GUID],
        ];
        for args in commands {
            let out = nvram(args);
            let message = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "nvram {args:?} on a qcow2 image with {feature}: {message}"
            );
            assert!(
                message.contains(feature) && message.contains(i),
                "nvram {args:?}: the error names the file and the {feature}: {message}"
            );
            assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
            assert!(
                contents(&watched) == unchanged,
                "nvram {args:?} changed a file"
            );
        }
    }
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // QEMU itself reads these images (the refusal is nvram's choice, not a broken file).
    assert!(
        qcow2_payload_by_qemu(&backed) == base_bytes,
        "QEMU reads the backed image"
    );
}

#[test]
fn qemu_7_2_holds_a_qcow2_store_and_nvram_set_refuses_it() {
    held_by_qemu(Stack::Debian12);
}

#[test]
fn qemu_10_0_holds_a_qcow2_store_and_nvram_set_refuses_it() {
    held_by_qemu(Stack::Current);
}

/// While QEMU has the qcow2 store open as its pflash drive (paused before any guest code
/// runs: QEMU only opens and locks its images), `nvram set` refuses it, naming QEMU's lock,
/// and changes nothing; reading works. Once QEMU is gone, the edit goes through.
fn held_by_qemu(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.qcow2");
    let disk = dir.path().join("disk.img");
    let v = path_str(&vars);
    nvram_ok(&["--format", "qcow2", "create", v]);
    nvram_ok(&["set", v, "NvramHeld", "--guid", TEST_GUID, "--u8", "1"]);
    fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let code = stack.firmware("OVMF_CODE_4M.fd");
    let mut config = testkit::VmConfig::new(&code, &vars, &disk).with_vars_format("qcow2");
    config.paused = true;
    config.stack = stack;
    let mut vm = testkit::QemuVm::start(&config).unwrap();
    assert_eq!(vm.qmp.status().unwrap(), "prelaunch");
    let blocks = vm
        .qmp
        .execute("query-block", serde_json::json!({}))
        .unwrap();
    assert!(
        blocks.as_array().unwrap().iter().any(|b| {
            b["inserted"]["drv"] == "qcow2" && b["inserted"]["file"].as_str() == Some(v)
        }),
        "QEMU opened the store as qcow2: {blocks:#}"
    );
    let before = fs::read(&vars).unwrap();
    let out = nvram(&["set", v, "NvramHeld", "--guid", TEST_GUID, "--u8", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("locked") && message.contains("OFD byte-range lock (QEMU)"),
        "{message}"
    );
    // nvram's own flock, taken before QEMU's lock refused it, is not named as a holder.
    assert!(!message.contains("flock"), "{message}");
    assert!(fs::read(&vars).unwrap() == before, "the file changed");
    assert_eq!(get(&vars, "NvramHeld"), Some(vec![1]));
    drop(vm);
    nvram_ok(&["set", v, "NvramHeld", "--guid", TEST_GUID, "--u8", "2"]);
    assert_eq!(get(&vars, "NvramHeld"), Some(vec![2]));
    assert_qcow2_clean(&vars, "nvram set after QEMU exited");
}
