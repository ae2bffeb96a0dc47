//! `nvram vms` and `apply --libvirt` against a real libvirtd (Debian 12's libvirt 9.0, the
//! QEMU 7.2 of the debian12 stack as emulator, TCG): libvirt picks OVMF from the firmware
//! descriptors and creates the store from the template; while the domain runs our edit is
//! refused; after `virsh destroy`, `apply --libvirt --all` applies the Microsoft 2023 rollout;
//! at the next start the firmware's own `dmpstore` prints exactly the KEK, db and dbx we wrote;
//! `nvram vms --json` tells all of it.
//!
//! `scripts/test` starts the daemons; without a reachable libvirtd these tests fail, unless
//! NVRAM_TESTS_WITHOUT_LIBVIRT=1 (`testkit::libvirt`). They run one at a time with the other
//! libvirt tests (`.config/nextest.toml`, group `libvirt`), since `--all` sees every domain.

mod common;

use common::path_str as p;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::libvirt::{unique_name, DomainXml, Libvirt};

const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const IMAGE_SECURITY: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

fn nvram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nvram")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The domain's entry in `nvram vms --json`.
fn vms_entry(uri: &str, name: &str) -> Value {
    let out = nvram(&["vms", "--connect", uri, "--json"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("vms --json is JSON");
    list.as_array()
        .expect("an array")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in nvram vms: {}", text(&out)))
        .clone()
}

/// The live variables of a store: name → data.
fn variables(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    let file = nvram::files::read_store(path).expect("read the store");
    let store = varstore::Varstore::parse(file.image()).expect("a varstore");
    store
        .live_variables()
        .iter()
        .map(|v| (v.name(), v.guid.to_string(), v.data.to_vec()))
        .collect()
}

fn data_of(vars: &[(String, String, Vec<u8>)], name: &str, guid: &str) -> Option<Vec<u8>> {
    vars.iter()
        .find(|(n, g, _)| n == name && g == guid)
        .map(|(_, _, d)| d.clone())
}

/// The variables the shell's `dmpstore NAME -guid GUID` printed on the console, as hex dumps
/// (`-sfo` would be one line, which the shell cuts at about 8,000 characters): (name, data).
/// Every dump must be complete: contiguous offsets, as many bytes as its `DataSize`.
fn console_variables(log: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize, Vec<u8>)> = None;
    let mut flush = |current: &mut Option<(String, usize, Vec<u8>)>| {
        if let Some((name, size, data)) = current.take() {
            assert_eq!(
                data.len(),
                size,
                "{name}: an incomplete dump on the console"
            );
            out.push((name, data));
        }
    };
    for line in log.lines().map(|l| l.trim_end_matches('\r').trim_start()) {
        if let Some(rest) = line.strip_prefix("Variable ") {
            flush(&mut current);
            // Variable NV+BS+RT+AT 'GUID-OR-NAME:KEK' DataSize = 0x5E1
            let quoted = rest.split('\'').nth(1).expect("a quoted GUID:NAME");
            let name = quoted.rsplit(':').next().unwrap().to_string();
            let size = rest.rsplit("DataSize = 0x").next().unwrap().trim();
            let size = usize::from_str_radix(size, 16).expect("a hex DataSize");
            current = Some((name, size, Vec::new()));
        } else if let Some((_, size, data)) = current.as_mut() {
            // 00000010: 01 02 03 04 05 06 07 08-09 0A 0B 0C 0D 0E 0F 10  *................*
            let Some((offset, rest)) = line.split_once(": ") else {
                continue;
            };
            let Ok(offset) = usize::from_str_radix(offset, 16) else {
                continue;
            };
            if offset != data.len() || offset >= *size {
                continue;
            }
            let digits: String = rest
                .split('*')
                .next()
                .unwrap()
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            data.extend(hex::decode(&digits).expect("hex bytes"));
        }
    }
    flush(&mut current);
    out
}

fn seen(vars: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    vars.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone())
}

/// Starts the domain and waits until the shell has run `startup.nsh` to its end marker (a
/// key press cuts the shell's 5-second countdown short); returns the console log.
fn start_and_wait(libvirt: &Libvirt, uuid: &str, log: &Path) -> String {
    // Only this boot's output: whether libvirt appends or truncates, the file starts empty.
    std::fs::write(log, "").unwrap();
    let started = Instant::now();
    libvirt.virsh(&["start", uuid]);
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut key_sent = false;
    loop {
        let console = testkit::libvirt::console_text(&std::fs::read(log).unwrap_or_default());
        if console.contains("nvram-test-end\r") || console.contains("nvram-test-end\n") {
            eprintln!("boot to the end of startup.nsh: {:?}", started.elapsed());
            return console;
        }
        if !key_sent && console.contains("any other key to continue") {
            key_sent = libvirt.try_virsh(&["send-key", uuid, "KEY_ENTER"]).is_ok();
        }
        assert!(
            Instant::now() < deadline,
            "the shell did not finish startup.nsh; console:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn libvirt_picks_ovmf_we_roll_out_microsoft_2023_and_the_firmware_sees_it() {
    let Some(libvirt) = Libvirt::require() else {
        return;
    };
    let uri = libvirt.uri().to_string();
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("{:>6.1} s: {what}", t0.elapsed().as_secs_f64());
    let dir = libvirt.tempdir();
    let disk = dir.path().join("startup.img");
    let log = dir.path().join("serial.log");
    testkit::make_startup_disk(
        &disk,
        &format!(
            "echo nvram-test-begin\n\
             dmpstore KEK -guid {EFI_GLOBAL}\n\
             dmpstore db -guid {IMAGE_SECURITY}\n\
             dmpstore dbx -guid {IMAGE_SECURITY}\n\
             echo nvram-test-end\n"
        ),
    )
    .unwrap();
    let name = unique_name("rollout");
    let mut xml = DomainXml::efi(&name, &log);
    xml.disk = Some(disk);
    let domain = libvirt.define(&xml);
    let store = Path::new("/var/lib/libvirt/qemu/nvram").join(format!("{name}_VARS.fd"));

    // Defined, never started: libvirt 9.0 keeps <os firmware='efi'> without <nvram>; we name
    // the store it will create, which does not exist yet.
    let entry = vms_entry(&uri, &name);
    assert_eq!(entry["state"], "shut off", "{entry:#}");
    assert_eq!(entry["active"], false);
    assert_eq!(entry["firmware"], "efi");
    assert_eq!(entry["type"], "qemu");
    assert_eq!(entry["arch"], "x86_64");
    assert_eq!(entry["nvram"]["path"], p(&store));
    assert_eq!(entry["nvram"]["implicit"], true);
    assert_eq!(entry["health"]["status"], "missing", "{entry:#}");
    assert!(!store.exists());

    step("defined");
    // First start: libvirt picks 60-edk2-x86_64.json and copies its template.
    let console = start_and_wait(&libvirt, domain.uuid(), &log);
    assert!(console.contains("nvram-test-begin"), "{console}");
    assert!(
        console_variables(&console).is_empty(),
        "a fresh OVMF_VARS_4M.fd has no KEK, db or dbx: {console}"
    );
    let template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    let entry = vms_entry(&uri, &name);
    assert_eq!(entry["state"], "running", "{entry:#}");
    assert_eq!(entry["active"], true);
    assert_eq!(
        entry["loader"]["path"], "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "{entry:#}"
    );
    assert_eq!(entry["loader"]["readonly"], true);
    assert_eq!(entry["loader"]["type"], "pflash");
    assert_eq!(entry["nvram"]["path"], p(&store));
    assert_eq!(entry["nvram"]["template"], p(template));
    assert_eq!(entry["nvram"]["implicit"], false);
    assert_eq!(entry["nvram"]["format"], "raw");
    assert_eq!(entry["health"]["status"], "healthy", "{entry:#}");
    assert_eq!(entry["health"]["found_format"], "raw");
    assert_eq!(entry["health"]["template_ok"], true);
    assert_eq!(entry["health"]["check"]["layout"], "ovmf-4m");

    step("first boot");
    // While it runs, our edit is refused: by libvirt's state, and by QEMU's lock on the file.
    let before = std::fs::read(&store).unwrap();
    let rollout = ["--add-microsoft", "2023", "--add-microsoft-dbx", "2023"];
    let mut args = vec!["apply", "--libvirt", "--connect", &uri, "--domain", &name];
    args.extend(rollout);
    let out = nvram(&args);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        report.trim(),
        format!(
            "skipped {} (domain {name}): the domain is running: not edited",
            p(&store)
        ),
        "{}",
        text(&out)
    );
    let mut args = vec!["apply", "--json"];
    args.extend(rollout);
    args.push(p(&store));
    let out = nvram(&args);
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["result"], "skipped", "{}", text(&out));
    assert!(
        results[0]["detail"]
            .as_str()
            .unwrap()
            .contains("lock (QEMU)"),
        "{}",
        text(&out)
    );
    let mut args = vec!["upgrade", "--libvirt", "--connect", &uri, "--domain", &name];
    args.extend(["--template", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"]);
    let out = nvram(&args);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("skipped "),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "a running store was edited"
    );
    assert_eq!(libvirt.state(domain.uuid()), "running");

    step("refused while running");
    // Stopped: apply --libvirt --all rolls 2023 out to it.
    libvirt.virsh(&["destroy", domain.uuid()]);
    let mut args = vec!["apply", "--libvirt", "--connect", &uri, "--all", "--json"];
    args.extend(rollout);
    let out = nvram(&args);
    assert!(out.status.success(), "{}", text(&out));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == name.as_str())
        .unwrap_or_else(|| panic!("no result for {name}: {}", text(&out)));
    assert_eq!(ours["result"], "changed", "{ours:#}");
    assert_eq!(ours["file"], p(&store));
    assert_eq!(
        ours["detail"], "KEK: added (+1); db: added (+3); dbx: added (+291)",
        "{ours:#}"
    );
    let status = nvram(&["secureboot", "status", p(&store), "--json"]);
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status_text.contains("Microsoft Corporation KEK 2K CA 2023"),
        "{status_text}"
    );
    let written = variables(&store);
    let kek = data_of(&written, "KEK", EFI_GLOBAL).expect("KEK written");
    let db = data_of(&written, "db", IMAGE_SECURITY).expect("db written");
    let dbx = data_of(&written, "dbx", IMAGE_SECURITY).expect("dbx written");

    step("applied");
    // A second run changes nothing.
    let out = nvram(&args);
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let again = results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(again["result"], "unchanged", "{again:#}");

    // vms tells the stopped domain with its store, healthy (libvirt 9.0 dropped <nvram> from
    // the inactive XML again: the path is libvirt's default).
    let entry = vms_entry(&uri, &name);
    assert_eq!(entry["state"], "shut off", "{entry:#}");
    assert_eq!(entry["nvram"]["path"], p(&store));
    assert_eq!(entry["health"]["status"], "healthy", "{entry:#}");

    step("vms after apply");
    // Next start: the firmware reads what we wrote, byte for byte.
    let console = start_and_wait(&libvirt, domain.uuid(), &log);
    let printed = console_variables(&console);
    assert_eq!(
        printed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["KEK", "db", "dbx"],
        "{console}"
    );
    assert!(
        seen(&printed, "KEK") == Some(kek),
        "the firmware's KEK differs"
    );
    assert!(
        seen(&printed, "db") == Some(db),
        "the firmware's db differs"
    );
    assert!(
        seen(&printed, "dbx") == Some(dbx),
        "the firmware's dbx differs"
    );
    let entry = vms_entry(&uri, &name);
    assert_eq!(entry["state"], "running");
    assert_eq!(entry["health"]["status"], "healthy", "{entry:#}");
    step("second boot");
    libvirt.virsh(&["destroy", domain.uuid()]);
    drop(domain);
    step("undefined");
    assert!(!store.exists(), "undefine --nvram removes the store");
}

#[test]
fn any_name_bios_domains_damaged_stores_and_errors() {
    let Some(libvirt) = Libvirt::require() else {
        return;
    };
    let uri = libvirt.uri().to_string();
    let dir = libvirt.tempdir();
    // A name with quotes, XML and shell metacharacters and a space: never through a shell.
    let odd = unique_name("odd 'q\"<&>;$(x)`");
    let odd_store = dir.path().join("odd_VARS.fd");
    let out = nvram(&["create", p(&odd_store)]);
    assert!(out.status.success(), "{}", text(&out));
    let mut xml = DomainXml::efi(&odd, &dir.path().join("odd.log"));
    xml.nvram = Some((odd_store.clone(), None));
    let odd_domain = libvirt.define(&xml);

    let damaged = unique_name("damaged");
    let damaged_store = dir.path().join("damaged_VARS.fd");
    std::fs::write(&damaged_store, vec![0x5a; 540672]).unwrap();
    let mut xml = DomainXml::efi(&damaged, &dir.path().join("damaged.log"));
    xml.loader = Some("/usr/share/OVMF/OVMF_CODE_4M.fd".into());
    xml.nvram = Some((
        damaged_store.clone(),
        Some("/usr/share/OVMF/OVMF_VARS_4M.fd".into()),
    ));
    let damaged_domain = libvirt.define(&xml);

    let bios = unique_name("bios");
    let bios_domain = libvirt.define_xml(
        &bios,
        &format!(
            "<domain type='qemu'><name>{bios}</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
             <emulator>{}</emulator></devices></domain>",
            testkit::Stack::Debian12.qemu("x86_64").display()
        ),
    );

    let entry = vms_entry(&uri, &odd);
    assert_eq!(entry["uuid"], odd_domain.uuid());
    assert_eq!(entry["nvram"]["path"], p(&odd_store));
    assert_eq!(entry["nvram"]["implicit"], false);
    assert_eq!(entry["health"]["status"], "healthy", "{entry:#}");
    let entry = vms_entry(&uri, &damaged);
    assert_eq!(entry["uuid"], damaged_domain.uuid());
    assert_eq!(entry["health"]["status"], "not-a-varstore", "{entry:#}");
    assert_eq!(entry["health"]["template_ok"], false, "{entry:#}");
    let entry = vms_entry(&uri, &bios);
    assert_eq!(entry["uuid"], bios_domain.uuid());
    assert_eq!(entry["nvram"], Value::Null);
    assert_eq!(entry["health"], Value::Null);

    // The damaged store makes vms exit 1, and its text names the problem.
    let out = nvram(&["vms", "--connect", &uri, "--domain", &damaged]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("health: not-a-varstore"),
        "{}",
        text(&out)
    );
    let out = nvram(&["vms", "--connect", &uri, "--domain", &odd]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // apply --domain with the odd name edits exactly its store; a BIOS domain named fails.
    let out = nvram(&[
        "apply",
        "--libvirt",
        "--connect",
        &uri,
        "--domain",
        &odd,
        "--domain",
        &bios,
        "--json",
        "--set",
        "Timeout=u16:7",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2, "{}", text(&out));
    let by = |n: &str| results.iter().find(|r| r["domain"] == n).unwrap();
    assert_eq!(by(&odd)["result"], "changed");
    assert_eq!(by(&bios)["result"], "failed");
    assert_eq!(by(&bios)["detail"], "the domain has no UEFI varstore");
    assert_eq!(
        data_of(&variables(&odd_store), "Timeout", EFI_GLOBAL),
        Some(vec![7, 0])
    );

    // A name no domain has, and an unreachable URI: errors naming them; nothing edited.
    let out = nvram(&[
        "apply",
        "--libvirt",
        "--connect",
        &uri,
        "--domain",
        "nvram-test-no-such",
        "--set",
        "Timeout=u16:8",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("domain nvram-test-no-such: no such domain"),
        "{}",
        text(&out)
    );
    let out = nvram(&["apply", "--libvirt", "--set", "Timeout=u16:8"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("<--domain <NAME>|--all>"),
        "{}",
        text(&out)
    );
    let out = nvram(&["vms", "--connect", "test+unix:///nonexistent/socket"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("virsh -c test+unix:///nonexistent/socket"),
        "{}",
        text(&out)
    );
    assert_eq!(
        data_of(&variables(&odd_store), "Timeout", EFI_GLOBAL),
        Some(vec![7, 0])
    );
}
