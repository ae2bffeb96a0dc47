//! The `nvram` command against Debian's real OVMF/AAVMF images and the real virt-fw-vars.

mod common;

use common::{debian, nvram, stderr, stdout};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const FORMATTED_IMAGES: &[&str] = &[
    "OVMF_VARS.fd",
    "OVMF_VARS.ms.fd",
    "OVMF_VARS_4M.fd",
    "OVMF_VARS_4M.ms.fd",
    "OVMF_VARS_4M.snakeoil.fd",
    "AAVMF_VARS.ms.fd",
];

#[test]
fn create_is_byte_identical_to_debian_templates() {
    let dir = tempfile::tempdir().unwrap();
    for (layout, template) in [("ovmf-4m", "OVMF_VARS_4M.fd"), ("ovmf-2m", "OVMF_VARS.fd")] {
        let path = dir.path().join(format!("{layout}.fd"));
        let out = nvram(&["create", "--layout", layout, path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            fs::read(&path).unwrap() == fs::read(debian(template)).unwrap(),
            "{layout} differs from Debian's {template}"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{layout} must be owner-only");
    }
    // The default layout is ovmf-4m.
    let path = dir.path().join("default.fd");
    assert!(nvram(&["create", path.to_str().unwrap()]).status.success());
    assert_eq!(
        fs::read(&path).unwrap(),
        fs::read(debian("OVMF_VARS_4M.fd")).unwrap()
    );
}

#[test]
fn aavmf_layout_matches_the_firmware_formatted_debian_store_outside_the_variables() {
    // Debian 12's blank AAVMF_VARS.fd is all zeros (the firmware formats it at first boot); the
    // formatted AAVMF_VARS.ms.fd shows the layout: 64 MiB, FTW working block at 0x40000, spare
    // at 0x80000, zero padding from 0xC0000. (Its volume header is the one the firmware writes;
    // byte-identity with Debian 13's formatted template is in tests/layouts.rs.)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aavmf.fd");
    assert!(
        nvram(&["create", "--layout", "aavmf", path.to_str().unwrap()])
            .status
            .success()
    );
    let ours = fs::read(&path).unwrap();
    let debian = fs::read(debian("AAVMF_VARS.ms.fd")).unwrap();
    assert_eq!(ours.len(), debian.len());
    assert_eq!(
        ours[0x40000..],
        debian[0x40000..],
        "FTW, spare and padding differ"
    );
    assert_eq!(
        ours[0x48..0x64],
        debian[0x48..0x64],
        "variable store header differs"
    );
    assert!(ours[0x64..0x40000].iter().all(|&b| b == 0xFF));
    let check = nvram(&["check", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}

#[test]
fn create_refuses_to_overwrite_or_follow_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    fs::write(&path, b"precious").unwrap();
    let out = nvram(&["create", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(fs::read(&path).unwrap(), b"precious");

    let out = nvram(&[
        "create",
        "--force",
        "--layout",
        "ovmf-2m",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(&path).unwrap(),
        fs::read(debian("OVMF_VARS.fd")).unwrap()
    );

    let target = dir.path().join("elsewhere");
    fs::write(&target, b"not yours").unwrap();
    let link = dir.path().join("link.fd");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for force in [false, true] {
        let mut args = vec!["create", link.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let out = nvram(&args);
        assert_eq!(out.status.code(), Some(2), "force={force}");
        assert_eq!(fs::read(&target).unwrap(), b"not yours");
    }
    let out = nvram(&[
        "create",
        "--layout",
        "ovmf-9m",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ovmf-4m, ovmf-2m, aavmf"),
        "{}",
        stderr(&out)
    );
}

/// (name, guid, attr, data, time) of every variable in a JSON variable list.
fn variable_set(json: &Value) -> BTreeSet<(String, String, u64, String, Option<String>)> {
    assert_eq!(json["version"], 2);
    json["variables"]
        .as_array()
        .expect("variables array")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["guid"].as_str().unwrap().to_string(),
                v["attr"].as_u64().unwrap(),
                v["data"].as_str().unwrap().to_string(),
                v.get("time").and_then(Value::as_str).map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn export_equals_virt_fw_vars_for_every_debian_image() {
    let dir = tempfile::tempdir().unwrap();
    for name in FORMATTED_IMAGES {
        let image = debian(name);
        let peer_json = dir.path().join(format!("{name}.peer.json"));
        let peer = Command::new(testkit::virt_fw_vars())
            .arg("-i")
            .arg(&image)
            .arg("--output-json")
            .arg(&peer_json)
            .output()
            .unwrap();
        assert!(
            peer.status.success(),
            "virt-fw-vars failed on {name}: {}",
            stderr(&peer)
        );
        let peer: Value = serde_json::from_slice(&fs::read(&peer_json).unwrap()).unwrap();

        let ours_path = dir.path().join(format!("{name}.json"));
        let out = nvram(&[
            "export",
            image.to_str().unwrap(),
            "-o",
            ours_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let ours: Value = serde_json::from_slice(&fs::read(&ours_path).unwrap()).unwrap();
        let (ours, peer) = (variable_set(&ours), variable_set(&peer));
        assert!(!peer.is_empty() || name.ends_with("VARS.fd") || name.ends_with("4M.fd"));
        assert_eq!(ours, peer, "{name}: export differs from virt-fw-vars");

        // Stdout gives the same document.
        let out = nvram(&["export", image.to_str().unwrap()]);
        let stdout_doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(variable_set(&stdout_doc), ours);
    }
}

#[test]
fn export_never_touches_an_existing_output_or_writes_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.json");
    fs::write(&out_path, b"keep").unwrap();
    let image = debian("OVMF_VARS_4M.ms.fd");
    let out = nvram(&[
        "export",
        image.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read(&out_path).unwrap(), b"keep");

    let bad = dir.path().join("bad.fd");
    let mut bytes = fs::read(&image).unwrap();
    bytes[0x28] = b'X'; // no "_FVH"
    fs::write(&bad, &bytes).unwrap();
    let new_out = dir.path().join("new.json");
    let out = nvram(&[
        "export",
        bad.to_str().unwrap(),
        "-o",
        new_out.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bad.fd") && stderr(&out).contains("0x28"),
        "{}",
        stderr(&out)
    );
    assert!(!new_out.exists());
}

#[test]
fn list_shows_live_variables_with_decoded_values() {
    let image = debian("OVMF_VARS_4M.ms.fd");
    let out = nvram(&["list", image.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let vars = doc["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 31);
    let find = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(
        find("Boot0001")["flags"],
        serde_json::json!(["nv", "bs", "rt"])
    );
    let boot1 = find("Boot0001")["value"].as_str().unwrap();
    assert!(
        boot1.contains("UEFI QEMU HARDDISK") && boot1.contains("Sata(0x0,0xFFFF,0x0)"),
        "{boot1}"
    );
    let db = find("db")["value"].as_str().unwrap();
    assert!(
        db.starts_with("2 entries") && db.contains("Microsoft Corporation UEFI CA 2011"),
        "{db}"
    );
    assert!(find("PK")["value"]
        .as_str()
        .unwrap()
        .contains("Debian UEFI Secure Boot"));
    assert_eq!(find("Timeout")["value"], "0 s");
    assert_eq!(find("Lang")["value"], "\"eng\"");
    assert_eq!(find("SecureBootEnable")["value"], "1");
    assert_eq!(find("db")["time"], "2025-03-10 02:53:39");

    let out = nvram(&["list", image.to_str().unwrap(), "--all", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = doc["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 57);
    assert_eq!(states.iter().filter(|s| **s == "added").count(), 31);
    assert_eq!(states.iter().filter(|s| **s == "replaced").count(), 25);
    assert_eq!(states.iter().filter(|s| **s == "deleted").count(), 1);

    let text = stdout(&nvram(&["list", image.to_str().unwrap()]));
    assert_eq!(text.lines().count(), 31);
    assert!(
        !text.lines().any(|l| l.contains("BootOrder")),
        "BootOrder is deleted in this image"
    );
    assert!(text.contains("\"EFI Internal Shell\""));
}

/// `nvram list` against `virt-fw-vars --print` on every Debian image: the same variables, the
/// same sizes where the peer prints a size, and the same text where both show a string.
#[test]
fn list_names_the_variables_virt_fw_vars_prints() {
    for name in FORMATTED_IMAGES {
        let image = debian(name);
        let peer = Command::new(testkit::virt_fw_vars())
            .arg("-i")
            .arg(&image)
            .arg("--print")
            .output()
            .unwrap();
        assert!(peer.status.success(), "{name}: {}", stderr(&peer));
        let peer_text = stdout(&peer);
        let mut peer_names = Vec::new();
        for line in peer_text.lines() {
            let Some((var, value)) = line.split_once(": ") else {
                continue;
            };
            peer_names.push(var.trim_end().to_string());
            let ours = nvram(&["get", image.to_str().unwrap(), var.trim_end(), "--raw"]);
            if let Some(size) = value
                .strip_prefix("blob: ")
                .and_then(|v| v.strip_suffix(" bytes"))
            {
                assert_eq!(ours.stdout.len().to_string(), size, "{name}: {line}");
            }
            if let Some(text) = value.strip_prefix("ascii: ") {
                let ours = String::from_utf8_lossy(&ours.stdout);
                assert_eq!(
                    format!("\"{}\"", ours.trim_end_matches('\0')),
                    text,
                    "{name}: {line}"
                );
            }
        }
        let out = nvram(&["list", image.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<String> = doc["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let text = stdout(&nvram(&["list", image.to_str().unwrap()]));
        assert_eq!(
            text.lines().count(),
            names.len(),
            "{name}: text and JSON lists differ"
        );
        names.sort();
        peer_names.sort();
        assert_eq!(
            names, peer_names,
            "{name}: list differs from virt-fw-vars --print"
        );
    }
}

#[test]
fn get_prints_one_variable_in_each_format() {
    let image = debian("OVMF_VARS_4M.ms.fd");
    let image = image.to_str().unwrap();
    let out = nvram(&["get", image, "Timeout", "--hex"]);
    assert_eq!(stdout(&out), "0000\n");
    let out = nvram(&["get", image, "PlatformLang", "--raw"]);
    assert_eq!(out.stdout, b"en\0");
    let out = nvram(&[
        "get",
        image,
        "db",
        "--guid",
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
        "--json",
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["attr"], 39);
    assert_eq!(json["time"], "e907030a023527000000000000000000");
    let text = stdout(&nvram(&[
        "get",
        image,
        "Boot0000",
        "--guid",
        "EfiGlobalVariable",
    ]));
    assert!(
        text.contains("\"UiApp\"") && text.contains("00000000  "),
        "{text}"
    );

    let out = nvram(&["get", image, "NoSuchVariable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no variable NoSuchVariable"));
    let out = nvram(&[
        "get",
        image,
        "db",
        "--guid",
        "8be4df61-93ca-11d2-aa0d-00e098032b8c",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "db is not under EFI_GLOBAL_VARIABLE"
    );
    let out = nvram(&["get", image, "db", "--guid", "not-a-guid"]);
    assert_eq!(out.status.code(), Some(2));
}

fn check(path: &Path) -> (Option<i32>, Value) {
    let out = nvram(&["check", path.to_str().unwrap(), "--json"]);
    let doc =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    (out.status.code(), doc)
}

#[test]
fn check_reports_health_and_what_the_firmware_will_do() {
    for name in FORMATTED_IMAGES {
        let (code, doc) = check(&debian(name));
        assert_eq!(code, Some(0), "{name}: {doc}");
        assert_eq!(doc["verdict"], "accept");
    }
    let (code, doc) = check(&debian("AAVMF_VARS.fd"));
    assert_eq!(
        (code, doc["status"].as_str()),
        (Some(0), Some("unformatted"))
    );

    let dir = tempfile::tempdir().unwrap();
    let template = fs::read(debian("OVMF_VARS_4M.ms.fd")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    };

    let mut bad_checksum = template.clone();
    bad_checksum[0x32] ^= 0x01;
    let (code, doc) = check(&write("checksum.fd", &bad_checksum));
    assert_eq!(code, Some(1));
    assert_eq!(doc["verdict"], "refuse");
    assert_eq!(doc["findings"][0]["offset"], 0x32);
    assert_eq!(doc["findings"][0]["field"], "FV header Checksum");

    let mut garbage = template.clone();
    garbage[0x30000] = 0x00;
    let (code, doc) = check(&write("garbage.fd", &garbage));
    assert_eq!(code, Some(1));
    assert_eq!(doc["verdict"], "reclaim-at-boot");
    assert_eq!(doc["findings"][0]["offset"], 0x30000);

    let mut format = template.clone();
    format[0x5C] = 0x00;
    let (code, doc) = check(&write("format.fd", &format));
    assert_eq!((code, doc["verdict"].as_str()), (Some(1), Some("refuse")));

    let (code, doc) = check(&write("zeros.fd", &vec![0u8; 540672]));
    assert_eq!(
        (code, doc["status"].as_str()),
        (Some(1), Some("unformatted"))
    );

    let (code, doc) = check(&write(
        "text.fd",
        &b"hello world, not a varstore".repeat(10),
    ));
    assert_eq!(
        (code, doc["status"].as_str()),
        (Some(2), Some("not-a-varstore"))
    );

    let out = nvram(&["check", dir.path().join("missing.fd").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.fd"), "{}", stderr(&out));

    let text = stdout(&nvram(&[
        "check",
        dir.path().join("checksum.fd").to_str().unwrap(),
    ]));
    assert!(
        text.contains("offset 0x32 (FV header Checksum)") && text.contains("firmware: refuse"),
        "{text}"
    );
}

#[test]
fn an_unformatted_flash_is_reported_as_such_not_as_a_tool_error() {
    let blank = debian("AAVMF_VARS.fd");
    let out = nvram(&["list", blank.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("unformatted"), "{}", stderr(&out));
    let out = nvram(&["export", blank.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, serde_json::json!({"version": 2, "variables": []}));
}
