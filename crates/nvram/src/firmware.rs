//! QEMU firmware descriptors (`docs/interop/firmware.json`) and firmware selection.
//!
//! Distributions describe each firmware build they ship in a small JSON file: which interface
//! it offers (`uefi`), for which architecture and machine types, how it is mapped (a split
//! executable + varstore *template* pair of flash images, a combined image, or stateless),
//! and its features (`secure-boot`, `enrolled-keys`, `requires-smm`, …). A VM manager picks
//! the first descriptor that fits the VM, in file-name order, as libvirt does. This module
//! reads them with the same lookup rules as QEMU and libvirt:
//!
//! - directories, lowest priority first: `/usr/share/qemu/firmware`, `/etc/qemu/firmware`,
//!   `$XDG_CONFIG_HOME/qemu/firmware` (default `~/.config/qemu/firmware`); the environment
//!   variable `NVRAM_FIRMWARE_DIRS` (colon-separated, same order) replaces that list;
//! - only `*.json` files; a file in a later directory overrides the same-named file in an
//!   earlier one, and an empty file masks it;
//! - the result is sorted by file name (the `NN-` prefix is the priority);
//! - unknown members and unknown feature names are ignored, as the schema requires of
//!   consumers; a file that is not a descriptor at all is skipped and reported, not fatal, so
//!   one broken package cannot stop every VM from starting.
//!
//! ```
//! use nvram::firmware::{Catalog, Criteria};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("60-test.json"), r#"{
//!     "description": "test", "interface-types": ["uefi"],
//!     "mapping": {"device": "flash",
//!                 "executable": {"filename": "/fw/CODE.fd", "format": "raw"},
//!                 "nvram-template": {"filename": "/fw/VARS.fd", "format": "raw"}},
//!     "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
//!     "features": ["acpi-s3", "some-future-feature"], "tags": []}"#).unwrap();
//! let catalog = Catalog::load(&[dir.path().to_path_buf()]);
//! let criteria = Criteria::uefi_varstore("x86_64").machine("pc-q35-7.2");
//! let chosen = catalog.select(&criteria).unwrap();
//! assert_eq!(chosen.name, "60-test.json");
//! assert_eq!(chosen.nvram_template().unwrap().filename, std::path::Path::new("/fw/VARS.fd"));
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// Environment variable that replaces the list of descriptor directories (colon-separated,
/// lowest priority first). Meant for tests and unusual installations.
pub const DIRS_ENV: &str = "NVRAM_FIRMWARE_DIRS";

/// Descriptors larger than this are not firmware descriptors (real ones are under 1 KiB).
const MAX_DESCRIPTOR_LEN: u64 = 1 << 20;

/// One firmware descriptor, as parsed. Members this crate does not know are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Descriptor {
    /// Human-readable description.
    #[serde(default)]
    pub description: String,
    /// Interfaces in order of preference: `uefi`, `bios`, `openfirmware`, `uboot`, …
    pub interface_types: Vec<String>,
    /// How the firmware is loaded.
    pub mapping: Mapping,
    /// Architectures and machine types it runs on.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Features (unknown ones are kept but never required by this crate).
    #[serde(default)]
    pub features: Vec<String>,
    /// Tags: for humans only, ignored by selection.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `mapping`: how the firmware gets into the VM, discriminated by `device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "device", rename_all = "kebab-case")]
pub enum Mapping {
    /// Flash images (`-drive if=pflash` / `-blockdev` + `pflash0`/`pflash1`).
    Flash(FlashMapping),
    /// Loaded into memory with `-bios`.
    Memory {
        /// The image.
        filename: PathBuf,
    },
    /// Loaded with `-kernel`.
    Kernel {
        /// The image.
        filename: PathBuf,
    },
    /// A device type this crate does not know (a newer schema).
    #[serde(other)]
    Other,
}

/// A flash mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlashMapping {
    /// `split` (the default: executable + per-VM varstore from a template), `combined` (one
    /// writable image) or `stateless` (no varstore at all).
    #[serde(default = "split")]
    pub mode: String,
    /// The firmware code.
    pub executable: FlashFile,
    /// The varstore template (split mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvram_template: Option<FlashFile>,
}

fn split() -> String {
    "split".to_string()
}

/// A file named by a flash mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashFile {
    /// Absolute path.
    pub filename: PathBuf,
    /// Block driver: `raw` or `qcow2`.
    #[serde(default = "raw")]
    pub format: String,
}

fn raw() -> String {
    "raw".to_string()
}

/// One `targets` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// QEMU target name: `x86_64`, `i386`, `aarch64`, `arm`, `riscv64`, …
    pub architecture: String,
    /// Machine-type glob patterns such as `pc-q35-*`.
    #[serde(default)]
    pub machines: Vec<String>,
}

/// A descriptor found on disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Firmware {
    /// File name, e.g. `60-edk2-x86_64.json`: its identity and priority.
    pub name: String,
    /// Where it was read from (the directory that won).
    pub path: PathBuf,
    /// Its contents.
    pub descriptor: Descriptor,
    /// The file as JSON, unknown members included, for display.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl Firmware {
    /// The flash mapping, if it is one.
    pub fn flash(&self) -> Option<&FlashMapping> {
        match &self.descriptor.mapping {
            Mapping::Flash(flash) => Some(flash),
            _ => None,
        }
    }

    /// The varstore template of a split flash mapping.
    pub fn nvram_template(&self) -> Option<&FlashFile> {
        self.flash().and_then(|f| f.nvram_template.as_ref())
    }

    /// The executable of a flash mapping, or the image of a memory/kernel mapping.
    pub fn executable(&self) -> Option<&Path> {
        match &self.descriptor.mapping {
            Mapping::Flash(flash) => Some(&flash.executable.filename),
            Mapping::Memory { filename } | Mapping::Kernel { filename } => Some(filename),
            Mapping::Other => None,
        }
    }

    /// `flash/split`, `memory`, … for listings.
    pub fn mapping_summary(&self) -> String {
        match &self.descriptor.mapping {
            Mapping::Flash(flash) => format!("flash/{}", flash.mode),
            Mapping::Memory { .. } => "memory".into(),
            Mapping::Kernel { .. } => "kernel".into(),
            Mapping::Other => "unknown".into(),
        }
    }
}

/// A file in a descriptor directory that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Every usable descriptor, after overriding and masking, sorted by file name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    /// Directories searched, lowest priority first.
    pub dirs: Vec<PathBuf>,
    /// The descriptors, sorted by file name.
    pub firmware: Vec<Firmware>,
    /// Files that were skipped (unreadable, not JSON, not a descriptor), with the reason.
    pub skipped: Vec<Skipped>,
}

/// The directories to search, lowest priority first: `$NVRAM_FIRMWARE_DIRS` if set, else
/// QEMU's three standard ones.
pub fn search_dirs() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os(DIRS_ENV) {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut dirs = vec![
        PathBuf::from("/usr/share/qemu/firmware"),
        PathBuf::from("/etc/qemu/firmware"),
    ];
    // The XDG spec says a relative $XDG_CONFIG_HOME is invalid and must be ignored.
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(config) = config {
        dirs.push(config.join("qemu/firmware"));
    }
    dirs
}

impl Catalog {
    /// Reads the descriptors in `dirs` (lowest priority first). Missing directories are
    /// normal (most hosts have no `/etc/qemu/firmware`) and are passed over silently.
    pub fn load(dirs: &[PathBuf]) -> Self {
        let mut skipped = Vec::new();
        // File name -> winning path (None: masked by an empty file).
        let mut chosen: BTreeMap<OsString, Option<PathBuf>> = BTreeMap::new();
        for dir in dirs {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    skipped.push(Skipped {
                        path: dir.clone(),
                        reason: format!("cannot read the directory: {e}"),
                    });
                    continue;
                }
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().ends_with(".json") {
                    continue;
                }
                let path = entry.path();
                // fs::metadata follows symlinks: distributions link descriptors around.
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_file() && meta.len() == 0 => {
                        chosen.insert(name, None);
                    }
                    Ok(meta) if meta.is_file() => {
                        chosen.insert(name, Some(path));
                    }
                    Ok(_) => skipped.push(Skipped {
                        path,
                        reason: "not a regular file".into(),
                    }),
                    Err(e) => skipped.push(Skipped {
                        path,
                        reason: format!("cannot stat: {e}"),
                    }),
                }
            }
        }
        let mut firmware = Vec::new();
        for (name, path) in chosen {
            let Some(path) = path else { continue };
            match read_descriptor(&path) {
                Ok((descriptor, raw)) => firmware.push(Firmware {
                    name: name.to_string_lossy().into_owned(),
                    path,
                    descriptor,
                    raw,
                }),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        Catalog {
            dirs: dirs.to_vec(),
            firmware,
            skipped,
        }
    }

    /// Reads the descriptors in [`search_dirs`].
    pub fn load_default() -> Self {
        Self::load(&search_dirs())
    }

    /// The descriptor with this file name (`.json` may be left out).
    pub fn by_name(&self, name: &str) -> Option<&Firmware> {
        self.firmware
            .iter()
            .find(|f| f.name == name || f.name.strip_suffix(".json") == Some(name))
    }

    /// Every descriptor that fits, in priority order.
    pub fn matching<'c>(&'c self, criteria: &'c Criteria) -> impl Iterator<Item = &'c Firmware> {
        self.firmware
            .iter()
            .filter(move |f| criteria.check(f).is_ok())
    }

    /// The first descriptor that fits: the one a VM manager should use.
    pub fn select(&self, criteria: &Criteria) -> Result<&Firmware, FirmwareError> {
        self.firmware
            .iter()
            .find(|f| criteria.check(f).is_ok())
            .ok_or_else(|| FirmwareError::NoMatch {
                criteria: criteria.to_string(),
                dirs: self.dirs.clone(),
                rejected: self
                    .firmware
                    .iter()
                    .filter_map(|f| criteria.check(f).err().map(|r| (f.name.clone(), r)))
                    .collect(),
            })
    }
}

fn read_descriptor(path: &Path) -> Result<(Descriptor, serde_json::Value), String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if meta.len() > MAX_DESCRIPTOR_LEN {
        return Err(format!(
            "{} bytes is too large for a firmware descriptor",
            meta.len()
        ));
    }
    let text = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let raw: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))?;
    let descriptor =
        Descriptor::deserialize(&raw).map_err(|e| format!("not a firmware descriptor: {e}"))?;
    Ok((descriptor, raw))
}

/// What the VM needs from its firmware. Every field that is `None` or empty is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    /// Required interface, e.g. `uefi`.
    pub interface: Option<String>,
    /// QEMU target architecture, e.g. `x86_64`.
    pub architecture: Option<String>,
    /// Versioned machine type, e.g. `pc-q35-7.2` (what `-machine help` lists and libvirt
    /// records; aliases such as `q35` are not resolved here).
    pub machine: Option<String>,
    /// Flash mode (`split`, `combined`, `stateless`); implies a flash mapping.
    pub mode: Option<String>,
    /// Image format of the executable and, if any, the template (`raw`, `qcow2`).
    pub format: Option<String>,
    /// Features the firmware must have.
    pub features: Vec<String>,
    /// Features it must not have (e.g. `requires-smm` for a VM without SMM).
    pub without_features: Vec<String>,
}

impl Criteria {
    /// What `nvram prepare` needs: UEFI, a split flash mapping (so there is a varstore
    /// template) and raw images (the only kind this tool reads), for `architecture`.
    pub fn uefi_varstore(architecture: &str) -> Self {
        Criteria {
            interface: Some("uefi".into()),
            architecture: Some(architecture.into()),
            mode: Some("split".into()),
            format: Some("raw".into()),
            ..Criteria::default()
        }
    }

    /// Sets the machine type.
    pub fn machine(mut self, machine: &str) -> Self {
        self.machine = Some(machine.into());
        self
    }

    /// Requires a feature.
    pub fn feature(mut self, feature: &str) -> Self {
        self.features.push(feature.into());
        self
    }

    /// Why `firmware` does not fit, or `Ok`.
    pub fn check(&self, firmware: &Firmware) -> Result<(), String> {
        let d = &firmware.descriptor;
        if let Some(interface) = &self.interface {
            if !d.interface_types.iter().any(|i| i == interface) {
                return Err(format!("no {interface} interface"));
            }
        }
        if let Some(arch) = &self.architecture {
            let targets: Vec<&Target> = d
                .targets
                .iter()
                .filter(|t| &t.architecture == arch)
                .collect();
            if targets.is_empty() {
                return Err(format!("not for {arch}"));
            }
            if let Some(machine) = &self.machine {
                if !targets
                    .iter()
                    .flat_map(|t| &t.machines)
                    .any(|pattern| glob_match(pattern.as_bytes(), machine.as_bytes()))
                {
                    return Err(format!("not for machine {machine}"));
                }
            }
        } else if let Some(machine) = &self.machine {
            if !d
                .targets
                .iter()
                .flat_map(|t| &t.machines)
                .any(|pattern| glob_match(pattern.as_bytes(), machine.as_bytes()))
            {
                return Err(format!("not for machine {machine}"));
            }
        }
        if self.mode.is_some() || self.format.is_some() {
            let Some(flash) = firmware.flash() else {
                return Err(format!("{} mapping, not flash", firmware.mapping_summary()));
            };
            if let Some(mode) = &self.mode {
                if &flash.mode != mode {
                    return Err(format!("flash mode {}, not {mode}", flash.mode));
                }
            }
            if let Some(format) = &self.format {
                let formats = std::iter::once(&flash.executable)
                    .chain(flash.nvram_template.as_ref())
                    .map(|f| &f.format);
                if let Some(other) = formats.into_iter().find(|f| *f != format) {
                    return Err(format!("{other} images, not {format}"));
                }
            }
        }
        if let Some(missing) = self
            .features
            .iter()
            .find(|f| !d.features.iter().any(|have| have == *f))
        {
            return Err(format!("lacks feature {missing}"));
        }
        if let Some(unwanted) = self
            .without_features
            .iter()
            .find(|f| d.features.iter().any(|have| have == *f))
        {
            return Err(format!("has feature {unwanted}"));
        }
        Ok(())
    }
}

impl fmt::Display for Criteria {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let fields = [
            ("interface", &self.interface),
            ("arch", &self.architecture),
            ("machine", &self.machine),
            ("mode", &self.mode),
            ("format", &self.format),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                parts.push(format!("{key} {value}"));
            }
        }
        parts.extend(self.features.iter().map(|x| format!("feature {x}")));
        parts.extend(
            self.without_features
                .iter()
                .map(|x| format!("no feature {x}")),
        );
        if parts.is_empty() {
            f.write_str("any firmware")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Firmware selection failed.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// No descriptor fits.
    #[error(
        "no firmware descriptor fits ({criteria}) in {}{}",
        display_dirs(dirs),
        display_rejected(rejected)
    )]
    NoMatch {
        /// The criteria, as text.
        criteria: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
        /// Every descriptor with the reason it was passed over.
        rejected: Vec<(String, String)>,
    },
    /// `--firmware NAME` names no descriptor.
    #[error("no firmware descriptor named {name:?} in {}", display_dirs(dirs))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The descriptor has no varstore template.
    #[error("{path}: firmware {name} has no nvram-template ({mapping} mapping): it keeps no per-VM varstore")]
    NoTemplate {
        /// Descriptor name.
        name: String,
        /// Descriptor path.
        path: PathBuf,
        /// Its mapping, e.g. `flash/stateless`.
        mapping: String,
    },
    /// The template is not a raw image.
    #[error(
        "{path}: firmware {name} has a {format} nvram-template; only raw varstores are supported"
    )]
    NotRaw {
        /// Descriptor name.
        name: String,
        /// Descriptor path.
        path: PathBuf,
        /// The template's format.
        format: String,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if list.is_empty() {
        "no directories".into()
    } else {
        list.join(", ")
    }
}

fn display_rejected(rejected: &[(String, String)]) -> String {
    if rejected.is_empty() {
        "; there are no descriptors".into()
    } else {
        let list: Vec<String> = rejected.iter().map(|(n, r)| format!("{n}: {r}")).collect();
        format!("; passed over: {}", list.join("; "))
    }
}

/// The varstore template of `firmware`, or why it has none that this tool can use.
pub fn raw_template(firmware: &Firmware) -> Result<&Path, FirmwareError> {
    let template = firmware
        .nvram_template()
        .ok_or_else(|| FirmwareError::NoTemplate {
            name: firmware.name.clone(),
            path: firmware.path.clone(),
            mapping: firmware.mapping_summary(),
        })?;
    if template.format != "raw" {
        return Err(FirmwareError::NotRaw {
            name: firmware.name.clone(),
            path: firmware.path.clone(),
            format: template.format.clone(),
        });
    }
    Ok(&template.filename)
}

/// Shell-style glob as QEMU's descriptors use it for machine types (`pc-q35-*`): `*`, `?`
/// and `[…]` classes (with `!`/`^` negation and ranges), like fnmatch(3) without flags.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => match (text.split_first(), class_match(rest, text.first())) {
            (Some((_, tail)), Some((true, after))) => glob_match(after, tail),
            (_, Some((false, _))) | (None, _) => false,
            // An unterminated class is a literal `[`.
            (Some((&c, tail)), None) => c == b'[' && glob_match(rest, tail),
        },
        Some((&p, rest)) => text.first() == Some(&p) && glob_match(rest, &text[1..]),
    }
}

/// Matches `c` against the class starting after `[`; returns whether it matched and the
/// pattern after `]`, or `None` if the class is not terminated.
fn class_match<'p>(class: &'p [u8], c: Option<&u8>) -> Option<(bool, &'p [u8])> {
    let (negate, mut rest) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match rest {
            [] => return None,
            [b']', tail @ ..] if !first => {
                return Some((matched != negate && c.is_some(), tail));
            }
            [lo, b'-', hi, tail @ ..] if *hi != b']' => {
                matched |= c.is_some_and(|c| (lo..=hi).contains(&c));
                rest = tail;
            }
            [x, tail @ ..] => {
                matched |= c == Some(x);
                rest = tail;
            }
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("pc-q35-*", "pc-q35-7.2"));
        assert!(m("pc-q35-*", "pc-q35-"));
        assert!(!m("pc-q35-*", "pc-i440fx-7.2"));
        assert!(m("virt-*", "virt-7.2"));
        assert!(!m("virt-*", "virt"));
        assert!(m("pc-q35-?.?", "pc-q35-7.2"));
        assert!(!m("pc-q35-?.?", "pc-q35-10.0"));
        assert!(m("pc-q35-[5-7].*", "pc-q35-7.2"));
        assert!(!m("pc-q35-[!5-7].*", "pc-q35-7.2"));
        assert!(m("a[]]b", "a]b"));
        assert!(m("a[b", "a[b"));
        assert!(m("*", ""));
        assert!(!m("x", ""));
    }
}
