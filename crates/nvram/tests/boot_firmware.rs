//! OVMF uses the boot entries `nvram boot add` writes: with `--next` it tries the new entry
//! at the next boot (BdsDxe says so on the serial console), then falls back to BootOrder and
//! the shell, whose `bcfg boot dump` lists the entry as we wrote it; an entry naming a GPT
//! partition by GUID (`--partition`) boots the program from that partition of another disk;
//! a `--uri` entry is downloaded by OVMF's HTTP boot from a server in the test and started.
//!
//! Boots of Debian's OVMF_CODE_4M.fd under QEMU (a few seconds each).

mod common;

use common::nvram_ok;
use serde_json::Value;
use std::path::Path;
use testkit::{boot_ovmf, debian_firmware, OvmfBoot, Stack};
use varstore::decode::LoadOption;
use varstore::{boot, guid, Varstore};

fn boot_list(vars: &Path) -> Value {
    let out = nvram_ok(&["boot", "list", vars.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn boot_on(
    stack: Stack,
    vars: &Path,
    script: &str,
    files: Vec<(String, Vec<u8>)>,
) -> testkit::BootOutcome {
    let code = stack.firmware("OVMF_CODE_4M.fd");
    let mut boot = OvmfBoot::new(&code, vars, script);
    boot.stack = stack;
    boot.files = files;
    boot.timeout = std::time::Duration::from_secs(240);
    boot_ovmf(&boot).unwrap_or_else(|e| panic!("boot failed: {e}"))
}

#[test]
fn ovmf_2022_11_tries_an_added_boot_next_entry_and_lists_it() {
    boot_next_entry(Stack::Debian12);
}

#[test]
fn ovmf_2025_02_tries_an_added_boot_next_entry_and_lists_it() {
    boot_next_entry(Stack::Current);
}

fn boot_next_entry(stack: Stack) {
    let boot = |vars: &Path, script: &str, files| boot_on(stack, vars, script, files);
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.fd");
    let v = vars.to_str().unwrap();
    nvram_ok(&["create", v]);

    // A fresh store has no entries: the firmware creates its own (UiApp, the shell, the
    // disk) at the first boot.
    boot(&vars, "reset -s\n", Vec::new());
    let before = boot_list(&vars);
    let shell_in_order = before["entries"].as_array().unwrap().iter().any(|e| {
        e["in_order"] == true
            && e["description"]
                .as_str()
                .is_some_and(|d| d.contains("Shell"))
    });
    assert!(
        shell_in_order,
        "the firmware's shell entry is in BootOrder: {before:#}"
    );

    let out = nvram_ok(&[
        "boot",
        "add",
        v,
        "--next",
        "--description",
        "Test",
        "--file",
        r"\EFI\BOOT\TEST.EFI",
    ]);
    let name = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let number = name.strip_prefix("Boot").unwrap().to_string();
    let added = boot_list(&vars);
    assert_eq!(added["boot_next"], number.as_str());

    // The shell's own `bcfg boot add` writes the same File() node for the same path (after
    // the disk's full device path). The file exists (not a valid image, so BdsDxe fails to
    // start it and falls back to BootOrder) because bcfg refuses a missing one.
    let script = "bcfg boot add 40 fs0:\\EFI\\BOOT\\TEST.EFI ByShell\n\
                  bcfg boot dump -v >a fs0:\\bcfg.txt\nreset -s\n";
    let files = vec![("EFI/BOOT/TEST.EFI".to_string(), b"not a PE image".to_vec())];
    let outcome = boot(&vars, script, files);
    common::assert_bds_tried(&outcome.serial, &name, "Test");
    let dump = outcome
        .read_file("bcfg.txt")
        .unwrap_or_else(|| panic!("no bcfg output; serial log:\n{}", outcome.serial));
    let dump = String::from_utf8_lossy(&dump);
    let entry = dump
        .split("Option:")
        .find(|o| o.contains(&format!("Variable: {name}")))
        .unwrap_or_else(|| panic!("bcfg does not list {name}:\n{dump}"));
    assert!(entry.contains("Desc    - Test"), "{entry}");
    assert!(entry.contains(r"\EFI\BOOT\TEST.EFI"), "{entry}");

    // The firmware consumed BootNext and kept the entry in BootOrder.
    let after = boot_list(&vars);
    assert_eq!(after["boot_next"], Value::Null, "{after:#}");
    assert!(
        after["boot_order"]
            .as_array()
            .unwrap()
            .contains(&Value::from(number.as_str())),
        "{after:#}"
    );
    let image = std::fs::read(&vars).unwrap();
    let store = Varstore::parse(&image).unwrap();
    let by_shell = (0..=0xFFFFu16)
        .filter_map(|n| {
            store.find(
                &boot::boot_variable_name(n),
                Some(guid::EFI_GLOBAL_VARIABLE),
            )
        })
        .find(|r| LoadOption::parse(r.data).is_ok_and(|o| o.description == "ByShell"))
        .unwrap_or_else(|| panic!("bcfg added no entry; serial log:\n{}", outcome.serial));
    let ours = boot::file_path(r"\EFI\BOOT\TEST.EFI").unwrap();
    let expected_tail = [ours, boot::END_ENTIRE.to_vec()].concat();
    let path_end = by_shell.data.len(); // no optional data from bcfg
    assert_eq!(
        &by_shell.data[path_end - expected_tail.len()..],
        expected_tail.as_slice(),
        "{}",
        LoadOption::parse(by_shell.data).unwrap().device_path
    );
    eprintln!("boots took {:?} (second)", outcome.elapsed);
}

/// An EFI program that says on the console that it started (systemd-boot without entries).
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// The short-form `HD(…)/File(…)` entry `boot add --file … --partition GUID/N` writes is what
/// edk2's BDS expands by partition GUID: OVMF finds the program on the second disk's ESP and
/// starts it; an entry naming a partition GUID that no disk has fails with Not Found first.
#[test]
fn ovmf_boots_a_partition_entry_by_its_guid() {
    let dir = tempfile::tempdir().unwrap();
    let partition = "6a1f2c3d-4b5e-4f60-8172-839405a6b7c8";
    let disk = dir.path().join("esp.img");
    let program = std::fs::read(SYSTEMD_BOOT).expect("systemd-boot-efi installed");
    testkit::gpt_esp_disk(&disk, partition, &[("EFI/NVRAM/APP.EFI".into(), program)]).unwrap();

    let vars = dir.path().join("vm_VARS.fd");
    let v = vars.to_str().unwrap();
    nvram_ok(&["create", v]);
    let add = |description: &str, guid: &str| {
        let out = nvram_ok(&[
            "boot",
            "add",
            v,
            "--first",
            "--description",
            description,
            "--file",
            r"\EFI\NVRAM\APP.EFI",
            "--partition",
            &format!("{guid}/1"),
        ]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let good = add("On the ESP", partition);
    let bogus = add("Nowhere", "0f0e0d0c-0b0a-4908-8706-050403020100");

    let code = debian_firmware("OVMF_CODE_4M.fd");
    let mut boot = OvmfBoot::new(&code, &vars, "reset -s\n");
    boot.extra_args = vec![
        "-drive".into(),
        format!("if=none,id=esp,format=raw,file={}", disk.display()),
        "-device".into(),
        "virtio-blk-pci,drive=esp".into(),
    ];
    boot.timeout = std::time::Duration::from_secs(120);
    boot.stop_when = Some(|serial| serial.contains("systemd-boot") || serial.contains("Boot in"));
    let serial = match boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e) => e.serial().unwrap_or_default().to_string(),
    };
    let line = |needle: &str, what: &str| {
        serial
            .lines()
            .find(|l| l.contains("BdsDxe") && l.contains(needle) && l.contains(what))
            .map(str::to_string)
    };
    let failed = line(&format!("{bogus} \"Nowhere\""), "failed to load");
    assert!(
        failed.as_deref().is_some_and(|l| l.contains("Not Found")),
        "the entry for a missing partition did not fail first:\n{serial}"
    );
    let started = line(&format!("{good} \"On the ESP\""), "starting");
    assert!(
        started
            .as_deref()
            .is_some_and(|l| l.to_ascii_lowercase().contains(partition)),
        "BdsDxe did not start {good} from the partition:\n{serial}"
    );
    assert!(
        serial.contains("systemd-boot") || serial.contains("Boot in"),
        "the program on the ESP did not run:\n{serial}"
    );
}

/// What systemd-boot prints (its own string, `Unable to open root directory: %r`) when the
/// device it was loaded from has no file system, as with an image downloaded by HTTP boot.
const SYSTEMD_BOOT_NO_ROOT: &str = "Unable to open root directory";

/// Whether the boot of [`ovmf_boots_a_uri_entry_over_http`] is decided: systemd-boot ran, or
/// it did not and the test fails with the log. HTTP boot over IPv4 (the server's address) has
/// failed once the firmware moves on to IPv6, which then waits a minute for DHCPv6 that QEMU's
/// user network does not offer.
fn uri_boot_decided(serial: &str) -> bool {
    serial.contains(SYSTEMD_BOOT_NO_ROOT)
        || serial.contains("Boot in")
        || serial.contains("Start HTTP Boot over IPv6")
        || serial
            .lines()
            .any(|l| l.starts_with("BdsDxe: failed") && l.contains("\"Net\""))
}

/// The bare `Uri(…)` entry `boot add --uri URL --next` writes is what edk2's BDS hands to the
/// HTTP boot driver (`BmExpandUriDevicePath`): OVMF gets an address from QEMU's user network
/// by DHCP, downloads the program from our server on the host (10.0.2.2 to the guest) and
/// starts it, before the other entry in BootOrder. The program is systemd-boot, which stops
/// at once with its own message because a downloaded image has no file system behind it.
#[test]
fn ovmf_boots_a_uri_entry_over_http() {
    let program = std::fs::read(SYSTEMD_BOOT).expect("systemd-boot-efi installed");
    // The message the test waits for is systemd-boot's, not the firmware's.
    let no_root_utf16: Vec<u8> = SYSTEMD_BOOT_NO_ROOT
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(
        program
            .windows(no_root_utf16.len())
            .any(|w| w == no_root_utf16),
        "{SYSTEMD_BOOT} does not contain {SYSTEMD_BOOT_NO_ROOT:?}"
    );
    let server = testkit::HttpFileServer::start(vec![testkit::HttpFile::new(
        "/app.efi",
        "application/efi",
        program,
    )])
    .unwrap();
    let url = format!("http://10.0.2.2:{}/app.efi", server.port());

    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm_VARS.fd");
    let v = vars.to_str().unwrap();
    nvram_ok(&["create", v]);
    // First in BootOrder: without BootNext the firmware would try (and fail) this one first.
    let add = |args: &[&str]| {
        let out = nvram_ok(&[&["boot", "add", v][..], args].concat());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let decoy = add(&["--description", "Decoy", "--file", r"\EFI\NONE\NONE.EFI"]);
    let name = add(&["--next", "--description", "Net", "--uri", &url]);
    let number = name.strip_prefix("Boot").unwrap().to_string();
    let added = boot_list(&vars);
    assert_eq!(added["boot_next"], number.as_str(), "{added:#}");
    assert_eq!(
        added["boot_order"],
        serde_json::json!([decoy.strip_prefix("Boot").unwrap(), number]),
        "{added:#}"
    );

    let code = debian_firmware("OVMF_CODE_4M.fd");
    let mut boot = OvmfBoot::new(&code, &vars, "reset -s\n");
    // `romfile=` keeps QEMU's iPXE ROM out, so OVMF's own virtio-net and HTTP boot drivers run.
    boot.extra_args = ["-netdev", "user,id=n0", "-device"]
        .into_iter()
        .map(String::from)
        .chain([String::from("virtio-net-pci,netdev=n0,romfile=")])
        .collect();
    boot.timeout = std::time::Duration::from_secs(60);
    boot.stop_when = Some(uri_boot_decided);
    let serial = match boot_ovmf(&boot) {
        Ok(outcome) => {
            eprintln!("HTTP boot decided after {:?}", outcome.elapsed);
            outcome.serial
        }
        Err(e) => panic!("boot failed: {e}\nHTTP requests: {:?}", server.requests()),
    };
    let requests: Vec<String> = server.requests().iter().map(|r| r.line()).collect();

    let bds: Vec<&str> = serial
        .lines()
        .filter_map(|l| l.find("BdsDxe: ").map(|i| &l[i..]))
        .collect();
    let from = format!("{name} \"Net\" from Uri({url})");
    assert_eq!(
        bds.first().copied(),
        Some(format!("BdsDxe: loading {from}").as_str()),
        "BdsDxe did not load {name} (BootNext) first:\n{serial}\nHTTP requests: {requests:?}"
    );
    let started = format!("BdsDxe: starting {from}");
    let after_start = serial
        .find(&started)
        .map(|i| &serial[i + started.len()..])
        .unwrap_or_else(|| {
            panic!("BdsDxe did not start {name}:\n{serial}\nHTTP requests: {requests:?}")
        });
    assert!(
        requests.iter().any(|r| r == "GET /app.efi"),
        "the firmware did not fetch /app.efi from us: {requests:?}\n{serial}"
    );
    assert!(
        after_start.contains(SYSTEMD_BOOT_NO_ROOT) || after_start.contains("Boot in"),
        "systemd-boot did not run after BdsDxe started it:\n{serial}"
    );
    // BdsDxe deletes BootNext before it boots the entry.
    assert_eq!(boot_list(&vars)["boot_next"], Value::Null);
}
