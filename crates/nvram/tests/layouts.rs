//! Every built-in layout against the real templates of both firmware stacks: Debian 12's edk2
//! 2022.11 (`/usr/share/OVMF`, `/usr/share/AAVMF`) and Debian 13's edk2 2025.02 (unpacked in
//! `target/peers/edk2-2025.02`, with the riscv64 and loongarch64 firmware).
//!
//! What the files say (and these tests hold):
//!
//! | layout        | Debian 12 template          | Debian 13 template          | file     |
//! |---------------|-----------------------------|-----------------------------|----------|
//! | `ovmf-4m`     | `OVMF_VARS_4M.fd`           | `OVMF_VARS_4M.fd`           | 528 KiB  |
//! | `ovmf-2m`     | `OVMF_VARS.fd`              | (not shipped: 4M only)      | 128 KiB  |
//! | `aavmf`       | `AAVMF_VARS.fd`: all zeros  | `AAVMF_VARS.fd`             | 64 MiB   |
//! | `riscv64`     | (not shipped)               | `RISCV_VIRT_VARS.fd`        | 32 MiB   |
//! | `loongarch64` | (not shipped)               | `QEMU_VARS.fd`              | 16 MiB   |
//!
//! `create` is byte-identical to every formatted template. Debian 12's blank AAVMF template is
//! unformatted: ArmVirt's flash driver formats it at first boot, with a volume header of its
//! own (Attributes 0xE36, a block map of the whole 64 MiB bank: 256 blocks of 256 KiB), as
//! Debian 12's `AAVMF_VARS.ms.fd` shows; Debian 13 ships the build's template instead
//! (Attributes 0x4FEFF, 3 blocks of 256 KiB). Both have the same volume length, store,
//! FTW working block, spare and padding, and the firmware checks neither Attributes nor the
//! block map, so both are the one `aavmf` layout; `create --layout aavmf` makes Debian 13's
//! template, and `check` reports Debian 12's zeros as an unformatted `aavmf` flash the
//! firmware accepts.
//!
//! This file does not share `tests/common`: it needs only the binary and testkit's paths.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::Stack;

fn nvram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .output()
        .expect("run nvram")
}

fn nvram_ok(args: &[&str]) -> Output {
    let out = nvram(args);
    assert!(
        out.status.success(),
        "nvram {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: not JSON on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every formatted blank template: (layout, stack, file).
const BLANK_TEMPLATES: &[(&str, Stack, &str)] = &[
    ("ovmf-4m", Stack::Debian12, "OVMF_VARS_4M.fd"),
    ("ovmf-2m", Stack::Debian12, "OVMF_VARS.fd"),
    ("ovmf-4m", Stack::Current, "OVMF_VARS_4M.fd"),
    ("aavmf", Stack::Current, "AAVMF_VARS.fd"),
    ("riscv64", Stack::Current, "RISCV_VIRT_VARS.fd"),
    ("loongarch64", Stack::Current, "QEMU_VARS.fd"),
];

#[test]
fn create_is_byte_identical_to_the_blank_templates_of_both_stacks() {
    let dir = tempfile::tempdir().unwrap();
    for &(layout, stack, file) in BLANK_TEMPLATES {
        let template = stack.firmware(file);
        let path = dir.path().join(format!("{layout}-{}.fd", stack.name()));
        nvram_ok(&["create", "--layout", layout, s(&path)]);
        let ours = fs::read(&path).unwrap();
        let theirs = fs::read(&template).unwrap();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{layout} vs {}",
            template.display()
        );
        if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!(
                "{layout} differs from {} first at offset 0x{at:X}",
                template.display()
            );
        }
        // The library makes the same bytes as the command.
        let built_in = varstore::Layout::by_name(layout).unwrap();
        assert!(built_in.create() == theirs, "Layout::create of {layout}");
        fs::remove_file(&path).unwrap();
    }
}

#[test]
fn debian_12_ships_aavmf_unformatted_and_debian_13_formatted() {
    let old = fs::read(Stack::Debian12.firmware("AAVMF_VARS.fd")).unwrap();
    let new = fs::read(Stack::Current.firmware("AAVMF_VARS.fd")).unwrap();
    assert_eq!(old.len(), 64 << 20);
    assert_eq!(new.len(), 64 << 20);
    assert!(
        old.iter().all(|&b| b == 0),
        "Debian 12's AAVMF_VARS.fd is no longer all zeros"
    );
    // Debian 13's is the build's template and what `create --layout aavmf` makes (above).
    let blank = varstore::Layout::by_name("aavmf").unwrap().create();
    assert!(blank == new);
    // Debian 12's AAVMF_VARS.ms.fd was formatted by the firmware itself: its volume header
    // differs in Attributes, Checksum and the block map only; store header, FTW working
    // block, spare and padding are the template's.
    let ms = fs::read(Stack::Debian12.firmware("AAVMF_VARS.ms.fd")).unwrap();
    let u32_at =
        |image: &[u8], at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
    assert_eq!(u32_at(&ms, 0x2C), 0xE36, "firmware-written Attributes");
    assert_eq!(u32_at(&blank, 0x2C), 0x4_FEFF, "template Attributes");
    assert_eq!((u32_at(&ms, 0x38), u32_at(&ms, 0x3C)), (0x100, 0x40000));
    assert_eq!((u32_at(&blank, 0x38), u32_at(&blank, 0x3C)), (3, 0x40000));
    for (range, what) in [
        (0x00..0x2C, "FV header up to Attributes"),
        (0x30..0x32, "HeaderLength"),
        (0x34..0x38, "ExtHeaderOffset, Reserved, Revision"),
        (0x40..0x64, "block map terminator and store header"),
    ] {
        assert_eq!(ms[range.clone()], blank[range], "{what}");
    }
    assert!(ms[0x40000..] == blank[0x40000..], "FTW, spare and padding");
    // Both are healthy stores of the one aavmf layout.
    for image in [&ms, &blank] {
        let store = varstore::Varstore::parse(image).unwrap();
        assert_eq!(store.layout().map(|l| l.name), Some("aavmf"));
        assert!(store.is_healthy());
    }
}

/// Every template of both stacks: (stack, file, layout, status).
const TEMPLATES: &[(Stack, &str, &str, &str)] = &[
    (Stack::Debian12, "OVMF_VARS.fd", "ovmf-2m", "healthy"),
    (Stack::Debian12, "OVMF_VARS.ms.fd", "ovmf-2m", "healthy"),
    (Stack::Debian12, "OVMF_VARS_4M.fd", "ovmf-4m", "healthy"),
    (Stack::Debian12, "OVMF_VARS_4M.ms.fd", "ovmf-4m", "healthy"),
    (
        Stack::Debian12,
        "OVMF_VARS_4M.snakeoil.fd",
        "ovmf-4m",
        "healthy",
    ),
    (Stack::Debian12, "AAVMF_VARS.fd", "aavmf", "unformatted"),
    (Stack::Debian12, "AAVMF_VARS.ms.fd", "aavmf", "healthy"),
    (
        Stack::Debian12,
        "AAVMF_VARS.snakeoil.fd",
        "aavmf",
        "healthy",
    ),
    (Stack::Current, "OVMF_VARS_4M.fd", "ovmf-4m", "healthy"),
    (Stack::Current, "OVMF_VARS_4M.ms.fd", "ovmf-4m", "healthy"),
    (
        Stack::Current,
        "OVMF_VARS_4M.snakeoil.fd",
        "ovmf-4m",
        "healthy",
    ),
    (Stack::Current, "AAVMF_VARS.fd", "aavmf", "healthy"),
    (Stack::Current, "AAVMF_VARS.ms.fd", "aavmf", "healthy"),
    (Stack::Current, "AAVMF_VARS.snakeoil.fd", "aavmf", "healthy"),
    (Stack::Current, "RISCV_VIRT_VARS.fd", "riscv64", "healthy"),
    (Stack::Current, "QEMU_VARS.fd", "loongarch64", "healthy"),
];

#[test]
fn check_names_the_layout_of_every_template_of_both_stacks() {
    for &(stack, file, layout, status) in TEMPLATES {
        let path = stack.firmware(file);
        let what = format!("{} {file}", stack.name());

        let out = nvram(&["check", s(&path), "--json"]);
        assert_eq!(out.status.code(), Some(0), "{what}");
        let doc = json(&out);
        assert_eq!(doc["layout"], layout, "{what}: {doc}");
        assert_eq!(doc["status"], status, "{what}: {doc}");
        assert_eq!(doc["verdict"], "accept", "{what}: {doc}");
        // Healthy allows notices: Debian 12's AAVMF_VARS.ms.fd has non-0xFF record padding.
        assert!(
            doc["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["severity"] == "notice"),
            "{what}: {doc}"
        );

        let out = nvram(&["check", s(&path)]);
        assert_eq!(out.status.code(), Some(0), "{what}");
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.ends_with(&format!(": {status} ({layout} layout)")),
            "{what}: {text}"
        );
    }
}

#[test]
fn a_blank_flash_is_accepted_only_where_the_firmware_formats_it() {
    let dir = tempfile::tempdir().unwrap();
    // VirtNorFlashDxe (aarch64, riscv64, loongarch64) formats a blank flash; OVMF does not.
    for (layout, size, code, verdict) in [
        ("aavmf", 64usize << 20, 0, "accept"),
        ("riscv64", 32 << 20, 0, "accept"),
        ("loongarch64", 16 << 20, 0, "accept"),
        ("ovmf-4m", 0x84000, 1, "refuse"),
        ("ovmf-2m", 0x20000, 1, "refuse"),
    ] {
        for fill in [0x00u8, 0xFF] {
            let path = dir.path().join(format!("{layout}-{fill:02x}.fd"));
            fs::write(&path, vec![fill; size]).unwrap();
            let out = nvram(&["check", s(&path), "--json"]);
            let doc = json(&out);
            assert_eq!(out.status.code(), Some(code), "{layout} {fill:02X}: {doc}");
            assert_eq!(doc["status"], "unformatted", "{layout}: {doc}");
            assert_eq!(doc["layout"], layout, "{layout}: {doc}");
            assert_eq!(doc["verdict"], verdict, "{layout}: {doc}");
            fs::remove_file(&path).unwrap();
        }
    }
    // A blank file of no layout's size: no layout named, and refused.
    let path = dir.path().join("odd.fd");
    fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    let doc = json(&nvram(&["check", s(&path), "--json"]));
    assert_eq!(doc["layout"], Value::Null, "{doc}");
    assert_eq!(doc["verdict"], "refuse", "{doc}");
}

/// A store of each new layout, made by `create`, with one variable set.
fn store_with_timeout(dir: &Path, layout: &str) -> PathBuf {
    let path = dir.join(format!("{layout}.fd"));
    nvram_ok(&["create", "--layout", layout, s(&path)]);
    nvram_ok(&["set", s(&path), "Timeout", "--u16", "7"]);
    path
}

#[test]
fn variables_are_set_listed_read_exported_and_imported_on_riscv64_and_loongarch64() {
    let dir = tempfile::tempdir().unwrap();
    for (layout, size) in [("riscv64", 32u64 << 20), ("loongarch64", 16 << 20)] {
        let path = store_with_timeout(dir.path(), layout);
        assert_eq!(fs::metadata(&path).unwrap().len(), size, "{layout}");

        let list = json(&nvram_ok(&["list", s(&path), "--json"]));
        let vars = list["variables"].as_array().unwrap();
        assert_eq!(vars.len(), 1, "{layout}: {list}");
        assert_eq!(vars[0]["name"], "Timeout");
        assert_eq!(vars[0]["value"], "7 s");

        let got = json(&nvram_ok(&["get", s(&path), "Timeout", "--json"]));
        assert_eq!(got["data"], "0700", "{layout}: {got}");

        let exported = json(&nvram_ok(&["export", s(&path)]));
        assert_eq!(
            exported,
            serde_json::json!({"version": 2, "variables": [{
                "name": "Timeout",
                "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c",
                "attr": 7,
                "data": "0700",
            }]}),
            "{layout}"
        );

        // The export goes into a fresh store of the same layout and comes out the same.
        let json_path = dir.path().join(format!("{layout}.json"));
        fs::write(&json_path, serde_json::to_vec(&exported).unwrap()).unwrap();
        let copy = dir.path().join(format!("{layout}-copy.fd"));
        nvram_ok(&["create", "--layout", layout, s(&copy)]);
        nvram_ok(&["import", "--json", s(&json_path), s(&copy)]);
        assert!(
            fs::read(&copy).unwrap() == fs::read(&path).unwrap(),
            "{layout}: import of the export differs from the original"
        );

        let check = json(&nvram_ok(&["check", s(&path), "--json"]));
        assert_eq!(check["status"], "healthy", "{layout}: {check}");
        assert_eq!(check["layout"], layout, "{layout}: {check}");
        assert_eq!(check["live"], 1, "{layout}: {check}");

        // The layout's variable size limit (PcdMaxVariableSize 0x2000) applies.
        let big = "00".repeat(0x2000);
        let out = nvram(&["set", s(&path), "Big", "--data-hex", &big]);
        assert!(!out.status.success(), "{layout}: 8 KiB of data accepted");
        let before = fs::read(&path).unwrap();
        nvram_ok(&["delete", s(&path), "Timeout"]);
        assert!(fs::read(&path).unwrap() != before);
        let list = json(&nvram_ok(&["list", s(&path), "--json"]));
        assert_eq!(list["variables"], serde_json::json!([]), "{layout}");
    }
}

#[test]
fn microsoft_dbx_is_refused_for_architectures_microsoft_publishes_none_for() {
    let dir = tempfile::tempdir().unwrap();
    for layout in ["riscv64", "loongarch64"] {
        let path = store_with_timeout(dir.path(), layout);
        let before = fs::read(&path).unwrap();
        for which in ["2011", "2023", "all"] {
            let out = nvram(&["secureboot", "add-dbx", s(&path), "--microsoft", which]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{layout} {which}: {err}");
            assert!(
                err.contains("only for x86_64 and aarch64") && err.contains(layout),
                "{layout} {which}: {err}"
            );
            assert!(
                fs::read(&path).unwrap() == before,
                "{layout}: the store changed"
            );
        }
        // Microsoft's KEK and db certificates are not per architecture: they still go in.
        nvram_ok(&["secureboot", "add-db", s(&path), "--microsoft", "2023"]);
    }
}
