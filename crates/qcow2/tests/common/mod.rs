//! Helpers for the tests against the real `qemu-img`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `qemu-img` and returns its stdout; fails (never skips) if qemu-img is missing or
/// exits non-zero.
pub fn qemu_img(args: &[&str]) -> String {
    let out = qemu_img_status(args);
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `qemu-img`, whatever its exit status.
pub fn qemu_img_status(args: &[&str]) -> std::process::Output {
    match Command::new("qemu-img").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "qemu-img is missing ({e}): these tests need it (Debian package qemu-utils); \
             they do not skip"
        ),
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

/// `qemu-img check` exits 0 and reports no errors, leaks or corruptions.
pub fn assert_clean(image: &Path) {
    let out = qemu_img_status(&["check", "--output=json", path(image)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qemu-img check {} exited {:?}: {text}{}",
        image.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"check-errors\": 0"), "check errors: {text}");
    for bad in ["\"leaks\"", "\"corruptions\"", "\"leaks-fixed\""] {
        assert!(!text.contains(bad), "qemu-img check reports {bad}: {text}");
    }
}

/// The guest content as `qemu-img convert -O raw` reads it.
pub fn to_raw(image: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join(format!(
        "{}.raw",
        image
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("image")
    ));
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        path(image),
        path(&raw),
    ]);
    std::fs::read(&raw).expect("read converted raw")
}

/// A `qemu-img info --output=json` value (its first occurrence) as text.
pub fn info_field(image: &Path, key: &str) -> String {
    let text = qemu_img(&["info", "--output=json", path(image)]);
    // The top-level fields come after the children; take the last occurrence.
    let needle = format!("\"{key}\": ");
    let at = text
        .rfind(&needle)
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let rest = &text[at + needle.len()..];
    let end = rest.find([',', '\n']).unwrap_or(rest.len());
    rest[..end].trim().trim_matches('"').to_string()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random-ish content with zero runs and 0xff runs (erased flash), `len` bytes.
pub fn synthetic(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let run = (rng.below(20_000) as usize + 1).min(len - at);
        match rng.below(3) {
            0 => {}
            1 => out[at..at + run].fill(0xff),
            _ => out[at..at + run]
                .iter_mut()
                .for_each(|b| *b = rng.next() as u8),
        }
        at += run;
    }
    out
}

/// A firmware template from the system; fails with a clear message if it is missing.
pub fn template(name: &str) -> Vec<u8> {
    std::fs::read(name)
        .unwrap_or_else(|e| panic!("{name}: {e}: these tests need Debian's ovmf package installed"))
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}
