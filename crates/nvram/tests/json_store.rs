//! QEMU's JSON variable store (`nvram::jsonstore`) against the real thing: QEMU 10.0's
//! `uefi-vars-x64` device, which validates its `jsonfile` when it starts and rewrites it.
//!
//! Every test that needs QEMU fails (never passes) when QEMU 10.0 is missing:
//! `scripts/install-test-deps` puts it in `target/peers/qemu-10.0`.

use nvram::jsonstore::{self, JsonStore, JsonStoreError, DEFAULT_MAX_STORAGE};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::{boot_ovmf, debian_firmware, OvmfBoot, Stack};
use varstore::edit::{Editor, Strategy};
use varstore::{guid, Attributes, EfiTime, Guid, Varstore};

const TEST_GUID: Guid = Guid::parse_or_panic("4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01");
const CUSTOM_MODE_GUID: Guid = Guid::parse_or_panic("c076ec0c-7028-4399-a072-71ee5c448b9f");

/// (name, guid, attributes, data, timestamp of an `at` variable)
type Live = (String, Guid, u32, Vec<u8>, Option<[u8; 16]>);

fn live(image: &[u8]) -> Vec<Live> {
    let store = Varstore::parse(image).expect("a store");
    store
        .live_variables()
        .iter()
        .map(|r| {
            let time = r
                .attributes
                .is_time_based_authenticated()
                .then(|| r.timestamp.map_or([0; 16], |t| t.0));
            (r.name(), r.guid, r.attributes.0, r.data.to_vec(), time)
        })
        .collect()
}

/// What QEMU did with a `jsonfile`.
struct Run {
    /// The file as QEMU left it (it rewrites it at start).
    file: Vec<u8>,
    /// QEMU's `used_storage` once started, from its migration stream, when asked for.
    used_storage: Option<u64>,
}

/// QEMU 10.0 paused (`-S`, no guest runs) with `uefi-vars-x64` on `file` and QMP on its
/// stdin/stdout.
fn spawn_uefi_vars(file: &std::path::Path, stderr: Stdio) -> std::process::Child {
    let qemu = Stack::Current.qemu("x86_64");
    Command::new(&qemu)
        .args([
            "-machine",
            "q35,accel=tcg",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-S", "-m", "64", "-qmp", "stdio", "-device"])
        .arg(format!("uefi-vars-x64,jsonfile={}", file.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", qemu.display()))
}

/// Starts QEMU 10.0's `uefi-vars-x64` on a copy of `json` (`-S`: no guest runs), waits until
/// QMP answers (the device is realized and reset by then), optionally migrates to a file to
/// read the device's `used_storage`, and quits. `Err` carries QEMU's exit status and stderr
/// when it refused the file.
fn run_qemu(json: &[u8], measure: bool) -> Result<Run, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vars.json");
    std::fs::write(&file, json).unwrap();
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = spawn_uefi_vars(&file, std::fs::File::create(&stderr_path).unwrap().into());
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    // The next QMP reply (not an event); None when QEMU has exited.
    let reply = |rx: &mpsc::Receiver<String>| -> Option<serde_json::Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).ok()?;
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            if v.get("return").is_some() || v.get("error").is_some() {
                return Some(v);
            }
        }
    };
    let mut send = |cmd: &str| {
        let _ = writeln!(stdin, "{cmd}");
        let _ = stdin.flush();
    };
    send(r#"{"execute": "qmp_capabilities"}"#);
    let up = reply(&rx).is_some();
    let mut used_storage = None;
    if up && measure {
        let stream = dir.path().join("migration.bin");
        send(&format!(
            r#"{{"execute": "migrate", "arguments": {{"uri": "exec:cat > {}"}}}}"#,
            stream.display()
        ));
        reply(&rx).expect("migrate answered");
        loop {
            send(r#"{"execute": "query-migrate"}"#);
            let status = reply(&rx).expect("query-migrate answered")["return"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            match status.as_str() {
                "completed" => break,
                "failed" | "cancelled" => panic!("migration {status}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        used_storage = Some(used_storage_of(&std::fs::read(&stream).unwrap()));
    }
    if up {
        send(r#"{"execute": "quit"}"#);
    }
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("QEMU did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::fs::File::open(&stderr_path)
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    if !status.success() || !up {
        return Err(format!("QEMU exited with {status}: {}", stderr.trim()));
    }
    assert!(stderr.trim().is_empty(), "QEMU warned: {stderr}");
    Ok(Run {
        file: std::fs::read(&file).unwrap(),
        used_storage,
    })
}

/// The device's `used_storage` in a migration stream: the `uefi-vars-sysbus` section (QEMU
/// 10.0's vmstate order: instance and version ids, sts u16, buf_size, buf_addr_lo/hi,
/// pio_xfer_offset u32, the PIO buffer (buf_size bytes), four bools, then used_storage u64,
/// all big-endian).
fn used_storage_of(stream: &[u8]) -> u64 {
    let id = b"\x10uefi-vars-sysbus";
    let at = stream
        .windows(id.len())
        .position(|w| w == id)
        .expect("a uefi-vars section in the migration stream")
        + id.len();
    let u32_at = |o: usize| u32::from_be_bytes(stream[o..o + 4].try_into().unwrap());
    let buf_size = u32_at(at + 8 + 2) as usize;
    let used = at + 8 + 2 + 4 * 4 + buf_size + 4;
    u64::from_be_bytes(stream[used..used + 8].try_into().unwrap())
}

fn accepted(json: &[u8]) -> Run {
    run_qemu(json, false).unwrap_or_else(|e| panic!("QEMU refused our JSON: {e}"))
}

/// A store OVMF (Debian 12, QEMU 7.2) wrote itself: the blank 4M template after one boot.
fn ovmf_written() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    std::fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
    let code = debian_firmware("OVMF_CODE_4M.fd");
    boot_ovmf(&OvmfBoot::new(&code, &vars, "reset -s\n")).expect("OVMF boots");
    std::fs::read(&vars).unwrap()
}

fn ms_template() -> Vec<u8> {
    std::fs::read(debian_firmware("OVMF_VARS_4M.ms.fd")).unwrap()
}

/// What QEMU's start changes: CustomMode and VendorKeysNv (EFI_GLOBAL_VARIABLE) are set again
/// and so move to the end.
fn without_start_additions(vars: &[Live]) -> Vec<Live> {
    vars.iter()
        .filter(|v| {
            !(v.0 == "CustomMode" && v.1 == CUSTOM_MODE_GUID
                || v.0 == "VendorKeysNv" && v.1 == guid::EFI_GLOBAL_VARIABLE)
        })
        .cloned()
        .collect()
}

/// QEMU took `ours` (a JSON file nvram wrote) as nvram meant it: what it wrote back holds
/// the same variables, plus its start-up changes; and nvram's rendering of QEMU's file is
/// QEMU's file byte for byte.
fn assert_qemu_read_it_as_meant(ours: &[u8], run: &Run) {
    let (_, our_image) = JsonStore::open(ours).unwrap();
    let (qemu_store, qemu_image) = JsonStore::open(&run.file).unwrap();
    let theirs = live(&qemu_image);
    assert_eq!(
        without_start_additions(&theirs),
        without_start_additions(&live(&our_image))
    );
    let n = theirs.len();
    assert_eq!(
        (&theirs[n - 2].0[..], &theirs[n - 1].0[..]),
        ("CustomMode", "VendorKeysNv")
    );
    assert_eq!(
        qemu_store.save(&qemu_image).unwrap(),
        run.file,
        "nvram renders QEMU's file differently"
    );
}

#[test]
fn qemu_accepts_to_json_of_the_ms_template_and_of_an_ovmf_written_store() {
    for (what, image) in [
        ("Debian 12 OVMF_VARS_4M.ms.fd", ms_template()),
        (
            "Debian 13 OVMF_VARS_4M.ms.fd",
            std::fs::read(Stack::Current.firmware("OVMF_VARS_4M.ms.fd")).unwrap(),
        ),
        ("a store OVMF wrote", ovmf_written()),
    ] {
        let json = jsonstore::to_json(&image).unwrap();
        let (_, back) = JsonStore::open(&json).unwrap();
        assert_eq!(live(&back), live(&image), "{what}: round trip");
        let run = accepted(&json);
        assert_qemu_read_it_as_meant(&json, &run);
        eprintln!("{what}: {} variables accepted", live(&image).len());
    }
}

/// A JSON file with what QEMU holds but a flash editor would not create: a certificate
/// digest, a hardware error record, an `nv,rt` variable (created by an OS after
/// ExitBootServices).
fn json_with_qemu_specials() -> Vec<u8> {
    let ms = jsonstore::to_json(&ms_template()).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&ms).unwrap();
    let list = v["variables"].as_array_mut().unwrap();
    list.push(
        serde_json::json!({"name": "MyAuthVar", "guid": TEST_GUID.to_string(),
        "attr": 0x27, "data": "c0ffee", "time": "E9070B1C0A0B0C000000000000000000",
        "digest": "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff"}),
    );
    list.push(
        serde_json::json!({"name": "HwErrRec0001", "guid": TEST_GUID.to_string(),
        "attr": 0xF, "data": "0102"}),
    );
    list.push(
        serde_json::json!({"name": "OsRuntimeOnly", "guid": TEST_GUID.to_string(),
        "attr": 0x5, "data": "03"}),
    );
    serde_json::to_vec_pretty(&v).unwrap()
}

#[test]
fn qemu_accepts_stores_edited_through_the_image() {
    let json = json_with_qemu_specials();
    accepted(&json); // the input itself is one QEMU takes
    let (store, image) = JsonStore::open(&json).unwrap();
    assert!(store.notes().is_empty(), "{:?}", store.notes());
    let mut editor = Editor::new(&image).unwrap();
    editor.set_limits(JsonStore::limits());
    let global = guid::EFI_GLOBAL_VARIABLE;
    editor
        .set(
            "NvramTest",
            TEST_GUID,
            Attributes(7),
            b"hello",
            None,
            Strategy::Append,
        )
        .unwrap();
    editor.delete("Timeout", global, Strategy::Append).unwrap();
    editor
        .set(
            "Lang",
            global,
            Attributes(7),
            b"fra\0",
            None,
            Strategy::Append,
        )
        .unwrap();
    editor
        .delete("OsRuntimeOnly", TEST_GUID, Strategy::Append)
        .unwrap();
    // The largest variable the device's 64 KiB buffer carries, and one byte more.
    let name = "Big";
    let most = jsonstore::MAX_NAME_AND_DATA as usize - 2 * (name.len() + 1);
    let err = editor
        .set(
            name,
            TEST_GUID,
            Attributes(7),
            &vec![0xA5; most + 1],
            None,
            Strategy::Append,
        )
        .unwrap_err();
    assert!(err.to_string().contains("65520"), "{err}");
    editor
        .set(
            name,
            TEST_GUID,
            Attributes(7),
            &vec![0xA5; most],
            None,
            Strategy::Append,
        )
        .unwrap();
    // Append Microsoft's 2023 CAs to db, as `nvram secureboot add-db --microsoft 2023` does.
    let mut addition = nvram::secureboot::Addition::to(nvram::secureboot::Database::Db);
    addition.microsoft = Some(nvram::secureboot::Microsoft::Y2023);
    let change = nvram::secureboot::add(&mut editor, &addition, Strategy::Append).unwrap();
    assert_eq!(change.added, 3, "{change:?}");
    let edited = editor.finish();
    let saved = store.save(&edited).unwrap();
    let text = String::from_utf8(saved.clone()).unwrap();
    assert!(text.contains(
        r#""digest": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#
    ));
    assert!(!text.contains("OsRuntimeOnly") && text.contains("HwErrRec0001"));
    let run = accepted(&saved);
    assert_qemu_read_it_as_meant(&saved, &run);
    let (qemu_store, qemu_image) = JsonStore::open(&run.file).unwrap();
    assert_eq!(
        qemu_store.digest("MyAuthVar", TEST_GUID),
        Some("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
        "QEMU kept the digest"
    );
    let db = live(&qemu_image).into_iter().find(|v| v.0 == "db").unwrap();
    assert_eq!(
        db.3,
        Varstore::parse(&edited)
            .unwrap()
            .find("db", None)
            .unwrap()
            .data
    );
}

#[test]
fn qemu_writes_its_own_json_for_an_empty_file() {
    let run = accepted(b"");
    let (store, image) = JsonStore::open(&run.file).unwrap();
    assert_eq!(
        live(&image),
        vec![
            ("CustomMode".into(), CUSTOM_MODE_GUID, 0x3, vec![0], None),
            (
                "VendorKeysNv".into(),
                guid::EFI_GLOBAL_VARIABLE,
                0x23,
                vec![0],
                Some([0; 16])
            ),
        ]
    );
    assert_eq!(store.version(), 2);
    assert_eq!(store.save(&image).unwrap(), run.file);
    eprintln!("QEMU's own file:\n{}", String::from_utf8_lossy(&run.file));
}

/// The negative control: QEMU does validate the file, so the acceptance tests can fail; and
/// `open` refuses what QEMU refuses.
#[test]
fn qemu_refuses_broken_files_and_so_does_open() {
    let good = jsonstore::to_json(&ms_template()).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["variables"][0].as_object_mut().unwrap().remove("name");
    let nameless = serde_json::to_vec(&v).unwrap();
    let err = run_qemu(&nameless, false).err().expect("QEMU refuses it");
    assert!(
        err.contains("Parameter 'variables[0].name' is missing"),
        "{err}"
    );
    let ours = JsonStore::open(&nameless).unwrap_err();
    assert!(
        matches!(&ours, JsonStoreError::Schema { path, .. } if path == "variables[0].name"),
        "{ours}"
    );

    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["variables"][3]["color"] = "blue".into();
    let extra = serde_json::to_vec(&v).unwrap();
    let err = run_qemu(&extra, false).err().expect("QEMU refuses it");
    assert!(
        err.contains("Parameter 'variables[3].color' is unexpected"),
        "{err}"
    );
    assert!(JsonStore::open(&extra).is_err());

    // Not JSON, trailing text, a member twice, only whitespace: QEMU 10.0 aborts.
    let cut = &good[..good.len() / 2];
    let twice = br#"{"version": 2, "version": 2, "variables": []}"#;
    let trailing = [&good[..], b" x"].concat();
    for (what, file) in [
        ("cut", cut),
        ("twice", &twice[..]),
        ("trailing", &trailing[..]),
        ("whitespace", b" \n"),
    ] {
        let err = run_qemu(file, false).err();
        assert!(err.is_some(), "{what}: QEMU took it");
        assert!(JsonStore::open(file).is_err(), "{what}: open took it");
    }
    assert!(matches!(
        JsonStore::open(b" \n"),
        Err(JsonStoreError::OnlyWhitespace)
    ));
}

#[test]
fn qemus_storage_count_is_nvram_s() {
    let mut pk_no_sbe: serde_json::Value =
        serde_json::from_slice(&json_with_qemu_specials()).unwrap();
    pk_no_sbe["variables"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] != "SecureBootEnable");
    for (what, json) in [
        ("empty", Vec::new()),
        ("ms template", jsonstore::to_json(&ms_template()).unwrap()),
        (
            "digest, hr, PK without SecureBootEnable",
            serde_json::to_vec(&pk_no_sbe).unwrap(),
        ),
    ] {
        let (store, image) = JsonStore::open(&json).unwrap();
        let ours = store.storage(&image).unwrap();
        let run = run_qemu(&json, true).unwrap();
        assert_eq!(Some(ours.total()), run.used_storage, "{what}");
        eprintln!(
            "{what}: QEMU counts {} bytes ({} variables + {} at start), limit {}",
            ours.total(),
            ours.variables,
            ours.added_at_start,
            ours.limit
        );
    }
}

#[test]
fn a_store_over_qemus_limit_loads_but_save_refuses_it() {
    let mut editor = Editor::new(&jsonstore::LAYOUT.create()).unwrap();
    editor.set_limits(JsonStore::limits());
    for i in 0..5 {
        editor
            .set(
                &format!("Big{i}"),
                TEST_GUID,
                Attributes(7),
                &vec![i; 60_000],
                None,
                Strategy::Append,
            )
            .unwrap();
    }
    let image = editor.finish();
    let mut store = JsonStore::open(b"").unwrap().0;
    let err = store.save(&image).unwrap_err();
    let message = err.to_string();
    let storage = store.storage(&image).unwrap();
    assert!(message.contains(&storage.total().to_string()), "{message}");
    assert!(
        message.contains(&DEFAULT_MAX_STORAGE.to_string()),
        "{message}"
    );
    // Exactly at the limit is what QEMU still holds; one byte less is not.
    store.set_max_storage(storage.total());
    let json = store.save(&image).unwrap();
    store.set_max_storage(storage.total() - 1);
    assert!(matches!(
        store.save(&image),
        Err(JsonStoreError::OverLimit(_))
    ));
    // QEMU starts on such a file (it checks no size at load); its guest could write nothing.
    let run = run_qemu(&json, true).unwrap();
    assert_eq!(run.used_storage, Some(storage.total()));
    let (reopened, back) = JsonStore::open(&json).unwrap();
    assert_eq!(live(&back), live(&image));
    assert!(reopened.save(&back).is_err());
}

#[test]
fn round_trip_keeps_every_live_variable() {
    let mut images: Vec<(String, Vec<u8>)> = [
        "OVMF_VARS_4M.ms.fd",
        "OVMF_VARS_4M.snakeoil.fd",
        "OVMF_VARS.ms.fd",
        "OVMF_VARS_4M.fd",
        "AAVMF_VARS.ms.fd",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            std::fs::read(debian_firmware(name)).unwrap(),
        )
    })
    .collect();
    images.push((
        "current AAVMF_VARS.ms.fd".into(),
        std::fs::read(Stack::Current.firmware("AAVMF_VARS.ms.fd")).unwrap(),
    ));
    for (name, image) in images {
        let json = jsonstore::to_json(&image).unwrap();
        let (store, back) = JsonStore::open(&json).unwrap();
        assert_eq!(live(&back), live(&image), "{name}");
        assert!(Varstore::parse(&back).unwrap().is_healthy(), "{name}");
        assert_eq!(store.save(&back).unwrap(), json, "{name}");
    }
}

#[test]
fn digests_survive_open_edit_save_while_their_variable_exists() {
    let json = json_with_qemu_specials();
    let (store, image) = JsonStore::open(&json).unwrap();
    let digest = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_eq!(store.digest("MyAuthVar", TEST_GUID), Some(digest));
    let mut editor = Editor::new(&image).unwrap();
    editor.set_limits(JsonStore::limits());
    let time = EfiTime([0xE9, 0x07, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    editor
        .set(
            "MyAuthVar",
            TEST_GUID,
            Attributes(0x27),
            b"new",
            Some(time),
            Strategy::Compact,
        )
        .unwrap();
    let saved = String::from_utf8(store.save(editor.image()).unwrap()).unwrap();
    assert!(saved.contains(digest));
    assert!(saved.contains("e9070c01000000000000000000000000"));
    editor
        .delete("MyAuthVar", TEST_GUID, Strategy::Append)
        .unwrap();
    let saved = String::from_utf8(store.save(&editor.finish()).unwrap()).unwrap();
    assert!(!saved.contains(digest) && !saved.contains("MyAuthVar"));
}

#[test]
fn open_refuses_what_qemu_would_misread_naming_the_variable() {
    let g = TEST_GUID.to_string();
    let one = |fields: &str| format!(r#"{{"version": 2, "variables": [{{{fields}}}]}}"#);
    for (fields, expect) in [
        (
            format!(r#""name": "Caf\u00e9", "guid": "{g}", "attr": 7, "data": "01""#),
            "name",
        ),
        (
            format!(r#""name": "", "guid": "{g}", "attr": 7, "data": "01""#),
            "name",
        ),
        (
            r#""name": "A", "guid": "nope", "attr": 7, "data": "01""#.into(),
            "guid",
        ),
        (
            format!(r#""name": "A", "guid": "{g}", "attr": 7, "data": "012""#),
            "data",
        ),
        (
            format!(r#""name": "A", "guid": "{g}", "attr": 7, "data": "zz""#),
            "data",
        ),
        (
            format!(r#""name": "A", "guid": "{g}", "attr": 4294967303, "data": "01""#),
            "attr",
        ),
        (
            format!(r#""name": "A", "guid": "{g}", "attr": 23, "data": "01""#),
            "attr",
        ),
        (
            format!(r#""name": "A", "guid": "{g}", "attr": 39, "data": "01", "time": "00""#),
            "time",
        ),
        (
            format!(r#""name": "A", "guid": "{g}", "attr": 39, "data": "01", "digest": "abc""#),
            "digest",
        ),
    ] {
        let err = JsonStore::open(one(&fields).as_bytes()).unwrap_err();
        assert!(
            matches!(&err, JsonStoreError::Field { index: 0, field, .. } if *field == expect),
            "{fields}: {err}"
        );
    }
    let twice = format!(
        r#"{{"version": 2, "variables": [{{"name": "A", "guid": "{g}", "attr": 7, "data": "01"}},
            {{"name": "A", "guid": "{}", "attr": 7, "data": "02"}}]}}"#,
        g.to_uppercase()
    );
    assert!(matches!(
        JsonStore::open(twice.as_bytes()),
        Err(JsonStoreError::Duplicate {
            first: 0,
            second: 1,
            ..
        })
    ));
    // What QEMU drops or cannot show is left out with a note.
    let dropped = format!(
        r#"{{"version": 3, "variables": [{{"name": "Vol", "guid": "{g}", "attr": 6, "data": "01"}},
            {{"name": "Empty", "guid": "{g}", "attr": 7, "data": ""}}]}}"#
    );
    let (store, image) = JsonStore::open(dropped.as_bytes()).unwrap();
    assert!(live(&image).is_empty());
    assert_eq!(store.notes().len(), 2, "{:?}", store.notes());
    assert_eq!(store.version(), 3);
    assert!(String::from_utf8(store.save(&image).unwrap())
        .unwrap()
        .starts_with("{\n    \"version\": 3,"));
}

#[test]
fn garbage_never_panics() {
    let good = json_with_qemu_specials();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut opened = 0;
    let mut try_one = |file: &[u8]| {
        if let Ok((store, image)) = JsonStore::open(file) {
            opened += 1;
            let _ = store.save(&image);
        }
    };
    for cut in (0..good.len()).step_by(97) {
        try_one(&good[..cut]);
    }
    for _ in 0..2000 {
        let mut file = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % file.len();
            match next() % 3 {
                0 => file[at] = next() as u8,
                1 => {
                    file.remove(at);
                }
                _ => file.insert(at, b"{}[],:\"\\0e-9"[(next() % 12) as usize]),
            }
        }
        try_one(&file);
    }
    for len in [1, 2, 10, 1000] {
        let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        try_one(&noise);
        try_one(&[b"{".as_slice(), &noise].concat());
    }
    try_one(&[b"[".repeat(100_000), b"]".repeat(100_000)].concat());
    try_one(
        &[
            b"{\"version\":2,\"variables\":".as_slice(),
            &b"[".repeat(100_000),
        ]
        .concat(),
    );
    assert!(opened > 0);
}

#[test]
fn json_is_told_by_content() {
    assert!(jsonstore::looks_like_json(&json_with_qemu_specials()));
    assert!(!jsonstore::looks_like_json(&ms_template()));
    assert!(!jsonstore::looks_like_json(b""));
}

// ---------------------------------------------------------------------------------------
// The `nvram` command on JSON stores: told by content, or by `--format json` (needed for an
// empty file), and QEMU accepts every file it wrote.

fn nvram(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .output()
        .expect("run nvram")
}

fn nvram_ok(args: &[&str]) -> String {
    let out = nvram(args);
    assert!(
        out.status.success(),
        "nvram {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// QEMU starts on the file as it is now, and reads it as nvram meant it.
fn assert_qemu_accepts_file(path: &std::path::Path) {
    let json = std::fs::read(path).unwrap();
    let run = accepted(&json);
    assert_qemu_read_it_as_meant(&json, &run);
}

#[test]
fn cli_commands_edit_json_stores_that_qemu_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.json");
    let v = vars.to_str().unwrap();
    std::fs::write(&vars, b"").unwrap();
    // An empty file is raw unless --format json says otherwise.
    let out = nvram(&["set", v, "Timeout", "--u16", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&vars).unwrap(), b"");
    nvram_ok(&["--format", "json", "set", v, "Timeout", "--u16", "5"]);
    assert!(jsonstore::looks_like_json(&std::fs::read(&vars).unwrap()));
    assert_qemu_accepts_file(&vars);
    // From now on by content, and with --format json alike.
    for prefix in [&[][..], &["--format", "json"][..]] {
        let list = nvram_ok(&[prefix, &["list", v]].concat());
        assert!(list.contains("Timeout"), "{list}");
        assert_eq!(
            nvram_ok(&[prefix, &["get", v, "Timeout", "--hex"]].concat()).trim(),
            "0500"
        );
        nvram_ok(&[prefix, &["check", v]].concat());
    }
    let out = nvram(&["--format", "raw", "list", v]);
    assert_eq!(out.status.code(), Some(2), "a JSON store is not raw");

    let import = dir.path().join("import.json");
    std::fs::write(
        &import,
        format!(
            r#"{{"version": 2, "variables": [
                {{"name": "Imported", "guid": "{TEST_GUID}", "attr": 3, "data": "0102"}},
                {{"name": "Lang", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "656e6700"}}]}}"#
        ),
    )
    .unwrap();
    nvram_ok(&["import", v, "--json", import.to_str().unwrap()]);
    assert_qemu_accepts_file(&vars);
    nvram_ok(&["delete", v, "Timeout"]);
    assert!(!nvram_ok(&["list", v]).contains("Timeout"));
    assert_qemu_accepts_file(&vars);

    nvram_ok(&[
        "secureboot",
        "enroll",
        v,
        "--generate-pk",
        "nvram JSON test",
        "--microsoft",
        "2023",
    ]);
    let status = nvram_ok(&["secureboot", "status", v]);
    assert!(status.contains("user mode"), "{status}");
    assert_qemu_accepts_file(&vars);
    // QEMU agrees: with a PK, it keeps SecureBootEnable = 1 and writes no other.
    let run = accepted(&std::fs::read(&vars).unwrap());
    let (_, image) = JsonStore::open(&run.file).unwrap();
    let sbe: Vec<_> = live(&image)
        .into_iter()
        .filter(|v| v.0 == "SecureBootEnable")
        .collect();
    assert_eq!(sbe.len(), 1);
    assert_eq!(sbe[0].3, [1]);

    nvram_ok(&[
        "boot",
        "add",
        v,
        "--description",
        "Debian",
        "--file",
        r"\EFI\debian\shimx64.efi",
        "--first",
    ]);
    assert!(nvram_ok(&["boot", "list", v]).contains("Debian"));
    assert_qemu_accepts_file(&vars);

    let export = nvram_ok(&["export", v]);
    let exported: serde_json::Value = serde_json::from_str(&export).unwrap();
    let names: Vec<&str> = exported["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for name in [
        "Imported",
        "Lang",
        "PK",
        "KEK",
        "db",
        "Boot0000",
        "BootOrder",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
}

#[test]
fn cli_keeps_digests_and_refuses_more_than_qemu_holds() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.json");
    let v = vars.to_str().unwrap();
    std::fs::write(&vars, json_with_qemu_specials()).unwrap();
    nvram_ok(&[
        "set",
        v,
        "Other",
        "--guid",
        &TEST_GUID.to_string(),
        "--string",
        "x",
    ]);
    let text = std::fs::read_to_string(&vars).unwrap();
    assert!(text.contains(
        r#""digest": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#
    ));
    assert!(text.contains("HwErrRec0001") && text.contains("OsRuntimeOnly"));
    assert_qemu_accepts_file(&vars);
    // The QEMU-only variables can be deleted, not created.
    nvram_ok(&[
        "delete",
        v,
        "HwErrRec0001",
        "--guid",
        &TEST_GUID.to_string(),
    ]);
    let out = nvram(&[
        "set",
        v,
        "HwErrRec0002",
        "--guid",
        &TEST_GUID.to_string(),
        "--attr",
        "nv,bs,rt,hr",
        "--u8",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));

    // Big variables until QEMU's 256 KiB are used up: refused, naming the limit, file kept.
    let data = dir.path().join("big.bin");
    std::fs::write(&data, vec![0x5A; 60_000]).unwrap();
    let mut refused = None;
    for i in 0..6 {
        let before = std::fs::read(&vars).unwrap();
        let out = nvram(&[
            "set",
            v,
            &format!("Big{i}"),
            "--guid",
            &TEST_GUID.to_string(),
            "--data-file",
            data.to_str().unwrap(),
        ]);
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(2));
            assert_eq!(std::fs::read(&vars).unwrap(), before, "file unchanged");
            refused = Some((i, String::from_utf8_lossy(&out.stderr).into_owned()));
            break;
        }
    }
    let (i, message) = refused.expect("QEMU's limit reached");
    assert_eq!(
        i, 4,
        "four 60000-byte variables fit next to the ms template's, five do not"
    );
    assert!(message.contains("262144"), "{message}");
    assert_qemu_accepts_file(&vars);
}

#[test]
fn cli_reads_the_file_qemu_wrote() {
    let run = accepted(b"");
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("qemu.json");
    std::fs::write(&vars, &run.file).unwrap();
    let list = nvram_ok(&["list", vars.to_str().unwrap()]);
    assert!(
        list.contains("CustomMode") && list.contains("VendorKeysNv"),
        "{list}"
    );
    let check = nvram_ok(&["check", vars.to_str().unwrap()]);
    assert!(check.contains("json"), "{check}");
}

#[test]
fn cli_apply_prepare_reset_and_convert_write_json_qemu_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let ms = debian_firmware("OVMF_VARS_4M.ms.fd");
    let converted = path("converted.json");
    nvram_ok(&["convert", &s(&ms), &s(&converted), "--to", "json"]);
    assert_eq!(
        std::fs::read(&converted).unwrap(),
        jsonstore::to_json(&ms_template()).unwrap()
    );
    let prepared = path("prepared.json");
    nvram_ok(&[
        "--format",
        "json",
        "prepare",
        "--nvram",
        &s(&prepared),
        "--template",
        &s(&ms),
    ]);
    let empty = path("empty.json");
    std::fs::write(&empty, b"").unwrap();
    nvram_ok(&[
        "--format",
        "json",
        "apply",
        "--add-microsoft",
        "2023",
        &s(&converted),
        &s(&prepared),
        &s(&empty),
    ]);
    for file in [&converted, &prepared, &empty] {
        assert_qemu_accepts_file(file);
        let status = nvram_ok(&["secureboot", "status", &s(file)]);
        assert!(
            status
                .lines()
                .any(|l| l.contains("Microsoft UEFI CA 2023") && l.trim_end().ends_with("yes")),
            "{status}"
        );
    }
    nvram_ok(&[
        "--format",
        "json",
        "reset",
        "--nvram",
        &s(&prepared),
        "--template",
        &s(&debian_firmware("OVMF_VARS_4M.fd")),
    ]);
    assert_eq!(
        std::fs::read(&prepared).unwrap(),
        b"{\n    \"version\": 2,\n    \"variables\": [\n    ]\n}"
    );
    assert_qemu_accepts_file(&prepared);
}

/// QEMU keeps its JSON store open without a lock and rewrites it from memory: an edit while
/// it runs would be lost, so nvram refuses it, naming QEMU, and leaves the file alone; once
/// QEMU has exited the same edit goes through.
#[test]
fn an_edit_is_refused_while_qemu_has_the_json_store_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vars.json");
    std::fs::write(&file, jsonstore::to_json(&ms_template()).unwrap()).unwrap();
    let mut child = spawn_uefi_vars(&file, Stdio::null());
    // The QMP greeting comes once the machine (and the device) is up.
    let mut greeting = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut greeting)
        .unwrap();
    assert!(greeting.contains("QMP"), "no QMP greeting: {greeting:?}");
    // QEMU rewrites the file as it starts (its own additions), around the time of the
    // greeting: the file to keep is the one that no longer changes.
    let mut before = std::fs::read(&file).unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = std::fs::read(&file).unwrap();
        if now == before {
            break;
        }
        before = now;
    }
    let path = file.to_str().unwrap();
    let out = nvram(&["--format", "json", "set", path, "Timeout", "--u16", "4"]);
    let _ = child.kill();
    let _ = child.wait();
    let message = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(
        message.contains("open by qemu-system-x86") && message.contains("takes no lock"),
        "{message}"
    );
    assert!(std::fs::read(&file).unwrap() == before, "the file changed");
    nvram_ok(&["set", path, "Timeout", "--u16", "4"]);
    assert_qemu_accepts_file(&file);
}
