//! Helpers of the virt-fw-vars differential tests: run virt-fw-vars, read a store's variables
//! and compare two stores (timestamps to the second where virt-fw-vars uses the clock).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::virt_fw_vars;
use varstore::Varstore;

/// (name, guid) -> (attributes, data, timestamp)
pub type Live = BTreeMap<(String, String), (u32, Vec<u8>, Option<[u8; 16]>)>;

pub const OWNER: &str = "11223344-5566-7788-99aa-bbccddeeff00";
pub const SHIM: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
pub const SECURITY_DB: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

pub fn live(path: &Path) -> Live {
    let file = nvram::files::read_store(path).unwrap();
    let store = Varstore::parse(file.image()).unwrap();
    store
        .live_variables()
        .iter()
        .map(|v| {
            (
                (v.name(), v.guid.to_string()),
                (v.attributes.0, v.data.to_vec(), v.time().map(|t| t.0)),
            )
        })
        .collect()
}

pub fn vfv(args: &[&str]) {
    let out = Command::new(virt_fw_vars()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "virt-fw-vars {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interpreter virt-fw-vars runs under (its shebang line), checked to import
/// virt.firmware, so a script can call virt-firmware's own functions.
pub fn vfv_python() -> PathBuf {
    let script = virt_fw_vars();
    let text = fs::read(&script).unwrap();
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first);
    let mut words = line
        .strip_prefix("#!")
        .unwrap_or_else(|| panic!("{}: no #! line: {line:?}", script.display()))
        .split_whitespace();
    // `#!/usr/bin/env python3` names the interpreter in its second word.
    let python = match words.next() {
        Some(env) if env.ends_with("/env") => words.next(),
        other => other,
    }
    .unwrap_or_else(|| panic!("{}: empty #! line", script.display()))
    .to_string();
    let out = Command::new(&python)
        .args(["-c", "import virt.firmware.efi.efivar"])
        .output()
        .unwrap_or_else(|e| panic!("{python} (from {}'s #! line): {e}", script.display()));
    assert!(
        out.status.success(),
        "{python} (from {}'s #! line) cannot import virt.firmware: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(python)
}

pub fn copy_of(dir: &Path, source: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(source, &path).unwrap();
    path
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// An `EFI_TIME` to the second: year, month, day, hour, minute, second.
pub type Seconds = (u16, u8, u8, u8, u8, u8);

/// The seconds-resolution key of an `EFI_TIME`.
pub fn seconds(t: &[u8; 16]) -> Seconds {
    (
        u16::from_le_bytes([t[0], t[1]]),
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
    )
}

pub fn now_key() -> Seconds {
    seconds(&nvram::certs::now().0)
}

/// Asserts that the two stores hold the same variables with the same attributes and data;
/// timestamps equal, or for the variables in `clocked` both within `window`.
pub fn assert_same(ours: &Path, theirs: &Path, clocked: &[&str], window: (Seconds, Seconds)) {
    let (a, b) = (live(ours), live(theirs));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same variables"
    );
    for (key, x) in &a {
        let y = &b[key];
        assert_eq!(x.0, y.0, "{key:?}: attributes");
        assert_eq!(hex::encode(&x.1), hex::encode(&y.1), "{key:?}: data");
        if clocked.contains(&key.0.as_str()) {
            for t in [x.2, y.2] {
                let t = seconds(&t.expect("a timestamp"));
                assert!(
                    window.0 <= t && t <= window.1,
                    "{key:?}: {t:?} outside {window:?}"
                );
            }
        } else {
            assert_eq!(x.2, y.2, "{key:?}: timestamp");
        }
    }
}
