//! `nvram boot` and `varstore::boot` without firmware: built load options parse back, match
//! bytes the firmware wrote, and the CLI validates before it changes anything.

mod common;

use common::nvram;
use std::path::Path;
use varstore::boot::{self, LoadOptionSpec};
use varstore::decode::{device_path_to_text, LoadOption};
use varstore::{guid, Varstore};

fn ok(args: &[&str]) -> String {
    let out = nvram(args);
    assert!(
        out.status.success(),
        "nvram {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn list(vars: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["boot", "list", vars.to_str().unwrap(), "--json"])).unwrap()
}

/// The firmware's own Boot#### in Debian's enrolled template, rebuilt from their parsed parts,
/// come out byte for byte: same header, UCS-2 description and layout.
#[test]
fn rebuilds_the_firmware_written_options_byte_for_byte() {
    let image = std::fs::read(testkit::debian_firmware("OVMF_VARS_4M.ms.fd")).unwrap();
    let store = Varstore::parse(&image).unwrap();
    let mut seen = 0;
    for n in 0..=2u16 {
        let Some(record) = store.find(
            &boot::boot_variable_name(n),
            Some(guid::EFI_GLOBAL_VARIABLE),
        ) else {
            continue;
        };
        let data = record.data;
        let parsed = LoadOption::parse(data).unwrap();
        let path_len = usize::from(u16::from_le_bytes([data[4], data[5]]));
        let desc_end = 6 + 2 * (parsed.description.encode_utf16().count() + 1);
        let spec = LoadOptionSpec {
            attributes: parsed.attributes,
            description: parsed.description.clone(),
            file_path_list: data[desc_end..desc_end + path_len].to_vec(),
            optional_data: parsed.optional_data.clone(),
        };
        assert_eq!(spec.to_bytes().unwrap(), data, "Boot{n:04X}");
        seen += 1;
    }
    assert!(seen >= 2, "the template has Boot0000 and Boot0001");
}

#[test]
fn file_node_bytes() {
    let node = boot::file_path(r"\EFI\BOOT\TEST.EFI").unwrap();
    let mut expected = vec![0x04, 0x04, 42, 0];
    for c in r"\EFI\BOOT\TEST.EFI".encode_utf16().chain([0]) {
        expected.extend_from_slice(&c.to_le_bytes());
    }
    assert_eq!(node, expected);
}

#[test]
fn hard_drive_node_bytes() {
    let part = varstore::Guid::try_parse("11223344-5566-7788-99aa-bbccddeeff00").unwrap();
    let node = boot::hard_drive_gpt(1, part, 0x800, 0x100000);
    let expected = hex::decode(concat!(
        "04012a00",
        "01000000",
        "0008000000000000",
        "0000100000000000",
        "44332211665588779",
        "9aabbccddeeff00",
        "0202"
    ))
    .unwrap();
    assert_eq!(node, expected);
}

#[test]
fn uri_node_bytes() {
    let node = boot::uri("http://x/y").unwrap();
    assert_eq!(node, [&[3u8, 0x18, 14, 0][..], b"http://x/y"].concat());
}

#[test]
fn built_options_parse_back() {
    let part = varstore::Guid::try_parse("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
    let cases = [
        (
            "Debian",
            vec![
                boot::hard_drive_gpt(1, part, 0, 0),
                boot::file_path("/EFI/debian/shimx64.efi").unwrap(),
            ],
            r"HD(1,GPT,0FC63DAF-8483-4772-8E79-3D69D8477DE4,0x0,0x0)/\EFI\debian\shimx64.efi",
        ),
        (
            "Net ünïcode",
            vec![boot::uri("https://example.org/boot.efi").unwrap()],
            "Uri(https://example.org/boot.efi)",
        ),
    ];
    for (description, nodes, text) in cases {
        let path = boot::device_path(&nodes);
        assert_eq!(device_path_to_text(&path), text);
        let bytes = LoadOptionSpec::new(description, path).to_bytes().unwrap();
        let parsed = LoadOption::parse(&bytes).unwrap();
        assert_eq!(parsed.attributes, LoadOption::ACTIVE);
        assert_eq!(parsed.description, description);
        assert_eq!(parsed.device_path, text);
        assert!(parsed.optional_data.is_empty());
    }
}

#[test]
fn cli_add_order_remove() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("v.fd");
    let v = vars.to_str().unwrap();
    ok(&["create", v]);
    let add = |extra: &[&str]| ok(&[&["boot", "add", v][..], extra].concat());
    assert_eq!(
        add(&["--description", "A", "--file", r"\a.efi"]).trim(),
        "Boot0000"
    );
    assert_eq!(
        add(&["--description", "B", "--uri", "http://h/b", "--first"]).trim(),
        "Boot0001"
    );
    assert_eq!(
        add(&["--description", "C", "--file", "c.efi", "--next"]).trim(),
        "Boot0002"
    );
    let l = list(&vars);
    assert_eq!(l["boot_order"], serde_json::json!(["0001", "0000", "0002"]));
    assert_eq!(l["boot_next"], "0002");

    // Unknown or repeated entries are refused and change nothing.
    let before = std::fs::read(&vars).unwrap();
    assert!(!nvram(&["boot", "order", v, "0002,0007"]).status.success());
    assert!(!nvram(&["boot", "order", v, "0002,0002"]).status.success());
    assert!(!nvram(&["boot", "remove", v, "0009"]).status.success());
    assert_eq!(std::fs::read(&vars).unwrap(), before);

    ok(&["boot", "order", v, "0002,0000"]);
    assert_eq!(
        list(&vars)["boot_order"],
        serde_json::json!(["0002", "0000"])
    );

    ok(&["boot", "remove", v, "2"]);
    let l = list(&vars);
    assert_eq!(l["boot_order"], serde_json::json!(["0000"]));
    assert_eq!(l["boot_next"], serde_json::Value::Null);
    assert_eq!(l["entries"].as_array().unwrap().len(), 2);

    // The freed number is reused.
    assert_eq!(
        add(&["--description", "D", "--file", "d.efi"]).trim(),
        "Boot0002"
    );
    ok(&["check", v]);
}
