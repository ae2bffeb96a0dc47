//! Real OVMF boots under QEMU. These need qemu-system-x86, ovmf, mtools and
//! dosfstools installed and fail (never skip) without them.

use std::time::Duration;

use testkit::{
    boot_ovmf, debian_firmware, parse_dmpstore, setvar_command, BootError, OvmfBoot, ATTR_BS,
    ATTR_NV, ATTR_RT,
};

const GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Sets variables with `setvar_command`, dumps the store in both formats and
/// checks that the dumps parse and agree with what was set.
#[test]
fn setvar_then_dmpstore_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("OVMF_VARS_4M.fd");
    std::fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
    let code = debian_firmware("OVMF_CODE_4M.fd");

    // Every byte value, including NUL, '"', '%', '^' and 0xff, which the shell
    // would mangle if they were not hex-encoded.
    let all_bytes: Vec<u8> = (0..=255).collect();
    // Many hex-dump lines, and volatile (BS only). (Data much bigger than
    // this makes the shell noticeably slower: 3000 bytes cost ~3 s more.)
    let big: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    let script = [
        setvar_command(
            "NvramTestAll",
            GUID,
            ATTR_NV | ATTR_BS | ATTR_RT,
            &all_bytes,
        ),
        setvar_command("NvramTestBig", GUID, ATTR_BS, &big),
        // Data that reads like the shell's hex-number syntax must stay bytes.
        setvar_command("NvramTestNv", GUID, ATTR_NV | ATTR_BS, b"0x12"),
        r"dmpstore -all >a fs0:\dump.txt".to_owned(),
        r"dmpstore -all -sfo >a fs0:\sfo.txt".to_owned(),
        "reset -s".to_owned(),
    ]
    .join("\n");

    let mut boot = OvmfBoot::new(&code, &vars, &script);
    boot.files
        .push(("extra/dir/hello.bin".to_owned(), b"hello".to_vec()));
    let outcome = boot_ovmf(&boot).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "OVMF boot took {:.1?} (countdown skipped: {})",
        outcome.elapsed, outcome.skipped_countdown
    );
    assert!(
        outcome.serial.contains("Shell> reset -s"),
        "{}",
        outcome.serial
    );
    // The key press works: the countdown stops at its first tick or two.
    assert!(outcome.skipped_countdown, "{}", outcome.serial);
    assert!(
        !outcome.serial.contains("in 1 seconds"),
        "{}",
        outcome.serial
    );
    assert_eq!(outcome.read_file("extra/dir/hello.bin").unwrap(), b"hello");
    assert_eq!(outcome.read_file("no-such-file"), None);

    for file in ["dump.txt", "sfo.txt"] {
        let text = outcome
            .read_file(file)
            .unwrap_or_else(|| panic!("the script did not write {file}:\n{}", outcome.serial));
        let dumped = parse_dmpstore(&String::from_utf8(text).unwrap())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let find = |name: &str, guid: &str| {
            dumped
                .iter()
                .find(|v| v.name == name && v.guid == guid)
                .unwrap_or_else(|| panic!("{file}: no {guid}:{name}"))
        };
        let all = find("NvramTestAll", GUID);
        assert_eq!((all.attributes, &all.data), (0x7, &all_bytes), "{file}");
        let big_var = find("NvramTestBig", GUID);
        assert_eq!((big_var.attributes, &big_var.data), (0x2, &big), "{file}");
        let nv = find("NvramTestNv", GUID);
        assert_eq!((nv.attributes, &nv.data[..]), (0x3, &b"0x12"[..]), "{file}");
        for name in ["Boot0000", "BootOrder", "PlatformLang"] {
            assert_eq!(find(name, GLOBAL).attributes, 0x7, "{file}: {name}");
        }
    }
}

/// A script that never resets runs into the timeout, and the error carries
/// the serial log. (The timeout leaves OVMF, which prints nothing on the
/// serial console for its first ~2 s under TCG, ample time to get that far.)
#[test]
fn timeout_kills_qemu_and_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("OVMF_VARS_4M.fd");
    std::fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
    let code = debian_firmware("OVMF_CODE_4M.fd");
    let mut boot = OvmfBoot::new(&code, &vars, "echo no reset here\n");
    boot.timeout = Duration::from_secs(20);
    match boot_ovmf(&boot) {
        Err(err @ BootError::Timeout { .. }) => {
            assert!(err.serial().is_some_and(|s| s.contains("BdsDxe")), "{err}");
            assert!(err.to_string().contains("--- serial console ---"));
            let echoed = err.serial().is_some_and(|s| s.contains("no reset here"));
            println!("script ran before the timeout: {echoed}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}
