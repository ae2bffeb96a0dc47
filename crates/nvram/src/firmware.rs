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
    let text = match safefile::read_input(
        path,
        safefile::Accept::RegularFile,
        MAX_DESCRIPTOR_LEN,
        "a firmware descriptor",
    ) {
        Ok(text) => text,
        Err(safefile::InputError::NotAccepted { kind, .. }) => {
            return Err(format!("is {kind}, not a regular file"))
        }
        Err(safefile::InputError::TooLarge { limit, .. }) => {
            return Err(format!(
                "too large for a firmware descriptor: more than {limit} bytes"
            ))
        }
        Err(safefile::InputError::Io { action, source, .. }) => {
            return Err(format!("{action}: {source}"))
        }
    };
    parse_descriptor(&text)
}

/// Parses the bytes of one descriptor file as [`Catalog::load`] does: the descriptor, and the
/// file as JSON (unknown members included); on failure why, as a [`Skipped`] reason. Never
/// panics, whatever the bytes (it is fuzzed: `fuzz/fuzz_targets/firmware_descriptor.rs`).
///
/// ```
/// let (descriptor, _) = nvram::firmware::parse_descriptor(
///     br#"{"interface-types": ["uefi"], "mapping": {"device": "memory", "filename": "/fw.bin"},
///          "targets": [], "features": []}"#,
/// )
/// .unwrap();
/// assert_eq!(descriptor.interface_types, ["uefi"]);
/// assert!(nvram::firmware::parse_descriptor(b"[]").is_err());
/// ```
pub fn parse_descriptor(text: &[u8]) -> Result<(Descriptor, serde_json::Value), String> {
    let raw: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
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
    /// records), matched against the descriptors' globs such as `pc-q35-*`. Matching does not
    /// resolve aliases (`q35`, `pc`, `virt`): a VM manager resolves them first, as libvirt
    /// does, with [`resolve_machine_alias`], which asks QEMU which versioned type an alias
    /// stands for.
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
    /// template) and raw images (what QEMU and libvirt use unless told otherwise), for
    /// `architecture`; [`Criteria::uefi_varstore_in`] for qcow2 images.
    pub fn uefi_varstore(architecture: &str) -> Self {
        Self::uefi_varstore_in(architecture, "raw")
    }

    /// [`Criteria::uefi_varstore`] for firmware whose images have `format` (`raw`, `qcow2`).
    ///
    /// ```
    /// let c = nvram::firmware::Criteria::uefi_varstore_in("x86_64", "qcow2");
    /// assert_eq!(c.format.as_deref(), Some("qcow2"));
    /// ```
    pub fn uefi_varstore_in(architecture: &str, format: &str) -> Self {
        Criteria {
            interface: Some("uefi".into()),
            architecture: Some(architecture.into()),
            mode: Some("split".into()),
            format: Some(format.into()),
            ..Criteria::default()
        }
    }

    /// Sets the (versioned) machine type; see [`Criteria::machine`](#structfield.machine).
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
    /// The template is neither a raw nor a qcow2 image.
    #[error(
        "{path}: firmware {name} has a {format} nvram-template; only raw and qcow2 varstores are supported"
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

/// The varstore template of `firmware` and its format, or why it has none that this tool can
/// use (raw and qcow2 templates are).
pub fn varstore_template(
    firmware: &Firmware,
) -> Result<(&Path, crate::container::Format), FirmwareError> {
    use crate::container::Format;
    let template = firmware
        .nvram_template()
        .ok_or_else(|| FirmwareError::NoTemplate {
            name: firmware.name.clone(),
            path: firmware.path.clone(),
            mapping: firmware.mapping_summary(),
        })?;
    match Format::by_name(&template.format) {
        Some(format @ (Format::Raw | Format::Qcow2)) => Ok((&template.filename, format)),
        _ => Err(FirmwareError::NotRaw {
            name: firmware.name.clone(),
            path: firmware.path.clone(),
            format: template.format.clone(),
        }),
    }
}

/// The varstore template of `firmware` if it is a raw image, or why it has none that a raw
/// store can be made from.
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

/// Shell-style glob as QEMU's descriptors use it for machine types (`pc-q35-*`): `*`, `?`,
/// `[…]` classes (with `!`/`^` negation, ranges and POSIX classes such as `[[:digit:]]`) and
/// `\` escapes, like fnmatch(3) without flags: `*` and `?` match any character, `/` included,
/// and a `[` without its `]` is a literal `[`. The pattern is compiled by `globset` into a
/// regular expression, so matching takes time linear in the text whatever the pattern (a
/// backtracking matcher takes exponential time on `***…*x`). A pattern globset refuses (a
/// reversed range such as `[z-a]`, a trailing `\`) matches nothing, as fnmatch reports no match
/// for a malformed pattern. Braces are literal, as in fnmatch (globset's `{a,b}` alternation is
/// escaped away).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let pattern = String::from_utf8_lossy(pattern);
    let Ok(glob) = globset::GlobBuilder::new(&escape_braces(&pattern))
        .literal_separator(false)
        .backslash_escape(true)
        .allow_unclosed_class(true)
        .build()
    else {
        return false;
    };
    glob.compile_matcher()
        .is_match(std::ffi::OsStr::from_bytes(text))
}

/// `pattern` with each `{`, `}` and `,` outside a `[…]` class escaped, since globset reads them
/// as an alternation (`{a,b}`) and fnmatch as literal characters. A class is what globset
/// takes for one: `[`, an optional `!`/`^`, at least one character (a first `]` is one), `]`.
fn escape_braces(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains(['{', '}', ',']) {
        return pattern.into();
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                out.extend(&chars[i..(i + 2).min(chars.len())]);
                i += 2;
            }
            '[' => {
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!' | '^')) {
                    j += 1;
                }
                // The first character of a class is a member, `]` included.
                j += 1;
                match chars
                    .get(j..)
                    .and_then(|rest| rest.iter().position(|&c| c == ']'))
                {
                    Some(end) => {
                        out.extend(&chars[i..=j + end]);
                        i = j + end + 1;
                    }
                    // Unclosed: a literal `[`, and so is every later one (no `]` follows).
                    None => {
                        out.push('[');
                        i += 1;
                    }
                }
            }
            c @ ('{' | '}' | ',') => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.into()
}

// ---- machine-type aliases ----

/// QEMU's target name for an architecture name, normalized as QEMU's `configure` does for
/// host CPUs and as Debian names them: `amd64` → `x86_64`, `i686` → `i386`, `arm64` →
/// `aarch64`, `armv7l`/`armhf` → `arm`, `ppc64le` → `ppc64`, … Target names (`x86_64`,
/// `aarch64`, `riscv64`, …) are returned unchanged. The binary is `qemu-system-<target>`.
pub fn qemu_target(architecture: &str) -> &str {
    match architecture {
        "amd64" | "x64" | "x86-64" => "x86_64",
        "i486" | "i586" | "i686" | "i86pc" | "x86" => "i386",
        "arm64" => "aarch64",
        "armhf" | "armel" => "arm",
        a if a.starts_with("armv") && (a.ends_with('l') || a.ends_with('b')) => "arm",
        "ppc64le" | "ppc64el" | "powerpc64" | "powerpc64le" => "ppc64",
        "powerpc" => "ppc",
        other => other,
    }
}

/// The QEMU binary for `architecture`, looked up in `$PATH`: `qemu-system-x86_64`, …
pub fn qemu_binary(architecture: &str) -> PathBuf {
    PathBuf::from(format!("qemu-system-{}", qemu_target(architecture)))
}

/// Whether `machine` is a versioned machine type (`pc-q35-7.2`, `pc-i440fx-7.2`, `virt-7.2`,
/// `pc-q35-4.0.1`): a name, a dash and a dotted version. Such names are used as they are;
/// anything else (`q35`, `virt`, `microvm`) is looked up in QEMU's list.
pub fn is_versioned_machine(machine: &str) -> bool {
    machine.rsplit_once('-').is_some_and(|(name, version)| {
        !name.is_empty()
            && version.contains('.')
            && version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The aliases in the text of `qemu-system-ARCH -machine help`, as `(alias, machine type)`
/// pairs in the order listed. QEMU prints an alias on a line of its own just before the
/// machine type it stands for:
///
/// ```text
/// Supported machines are:
/// q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
/// pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
/// ```
///
/// ```
/// let help = "Supported machines are:\n\
///             virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)\n\
///             virt-7.2             QEMU 7.2 ARM Virtual Machine\n";
/// assert_eq!(
///     nvram::firmware::parse_machine_aliases(help),
///     [("virt".to_string(), "virt-7.2".to_string())]
/// );
/// ```
pub fn parse_machine_aliases(help_text: &str) -> Vec<(String, String)> {
    machine_lines(help_text)
        .filter_map(|(name, rest)| {
            let target = rest.strip_suffix(')')?.rsplit_once("(alias of ")?.1.trim();
            (!target.is_empty() && !target.contains(char::is_whitespace))
                .then(|| (name.to_string(), target.to_string()))
        })
        .collect()
}

/// Every name in the text of `qemu-system-ARCH -machine help`, aliases included, in the
/// order listed.
pub fn parse_machine_names(help_text: &str) -> Vec<String> {
    machine_lines(help_text)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// `(name, description)` of each machine line: `%-20s %s` after the header.
fn machine_lines(help_text: &str) -> impl Iterator<Item = (&str, &str)> {
    help_text
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace) && !line.ends_with(':'))
        .filter_map(|line| {
            let line = line.trim_end();
            let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (!name.is_empty()).then_some((name, rest.trim_start()))
        })
}

/// Runs `binary -machine help` and returns what it printed, or why it could not.
fn machine_help(binary: &Path) -> Result<String, String> {
    let output = std::process::Command::new(binary)
        .args(["-machine", "help"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(
            match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
                Some(first) => format!("`-machine help` failed ({}): {first}", output.status),
                None => format!("`-machine help` failed ({})", output.status),
            },
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The versioned machine type that `machine` stands for, as libvirt canonicalizes it: a
/// versioned name (see [`is_versioned_machine`]) is returned as it is without running
/// anything; otherwise `qemu` (default [`qemu_binary`]`(architecture)`, from `$PATH`) is
/// asked with `-machine help`, and an alias (`q35`, `pc`, `virt`) becomes the type it is an
/// alias of (`pc-q35-7.2`), a machine type that is no alias (`microvm`) stays as it is, and
/// a name QEMU does not know is an error.
pub fn resolve_machine_alias(
    architecture: &str,
    machine: &str,
    qemu: Option<&Path>,
) -> Result<String, MachineError> {
    if is_versioned_machine(machine) {
        return Ok(machine.to_string());
    }
    let binary = qemu.map_or_else(|| qemu_binary(architecture), Path::to_path_buf);
    let help = machine_help(&binary).map_err(|reason| MachineError::QemuUnavailable {
        machine: machine.to_string(),
        binary: binary.clone(),
        reason,
    })?;
    let aliases = parse_machine_aliases(&help);
    if let Some((_, target)) = aliases.iter().find(|(alias, _)| alias == machine) {
        return Ok(target.clone());
    }
    if parse_machine_names(&help)
        .iter()
        .any(|name| name == machine)
    {
        return Ok(machine.to_string());
    }
    Err(MachineError::Unknown {
        machine: machine.to_string(),
        binary,
        aliases,
    })
}

/// A machine type could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// QEMU could not be run, or failed, while resolving an alias.
    #[error(
        "cannot resolve machine type {machine:?}: cannot run {}: {reason}; give the versioned \
         machine type instead ({}, as `{} -machine help` lists it)",
        binary.display(),
        versioned_hint(machine),
        binary.display()
    )]
    QemuUnavailable {
        /// The machine type asked for.
        machine: String,
        /// The QEMU binary.
        binary: PathBuf,
        /// Why it could not be run, or how it failed.
        reason: String,
    },
    /// QEMU has no machine type or alias of that name.
    #[error(
        "{} has no machine type {machine:?} (`{} -machine help` lists them){}",
        binary.display(),
        binary.display(),
        display_aliases(aliases)
    )]
    Unknown {
        /// The machine type asked for.
        machine: String,
        /// The QEMU binary asked.
        binary: PathBuf,
        /// The aliases it has, `(alias, machine type)`.
        aliases: Vec<(String, String)>,
    },
}

/// What the versioned form of `machine` looks like, for error messages.
fn versioned_hint(machine: &str) -> String {
    let base = match machine {
        "q35" => "pc-q35",
        "pc" => "pc-i440fx",
        "virt" => "virt",
        _ => return "e.g. pc-q35-7.2 or virt-7.2".into(),
    };
    format!("{base}-VERSION for {machine}, e.g. {base}-7.2")
}

fn display_aliases(aliases: &[(String, String)]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let list: Vec<String> = aliases.iter().map(|(a, t)| format!("{a} = {t}")).collect();
    format!("; its aliases: {}", list.join(", "))
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
        // fnmatch(3) extras: `^` negation, escapes, literal braces and commas.
        assert!(!m("pc-q35-[^5-7].*", "pc-q35-7.2"));
        assert!(m("pc-q35-[^5-7].*", "pc-q35-8.0"));
        assert!(m("pc\\-q35-\\*", "pc-q35-*"));
        assert!(!m("pc\\-q35-\\*", "pc-q35-7.2"));
        assert!(m("a{b,c}", "a{b,c}"));
        assert!(!m("a{b,c}", "ab"));
        assert!(m("[{]*[,]", "{x,"));
        assert!(m("a[b*", "a[bcd"));
        assert!(m("*/*", "a/b"));
        assert!(!m("[z-a]", "m"));
    }

    #[test]
    fn repeated_stars_match_in_linear_time() {
        // A backtracking matcher tries about C(60, 30) ways to split the text here.
        let pattern = format!("{}x", "*".repeat(30));
        let text = "a".repeat(60);
        let start = std::time::Instant::now();
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
        assert!(glob_match(
            pattern.as_bytes(),
            format!("{text}x").as_bytes()
        ));
        let pattern = "*a".repeat(30) + "b";
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
    }

    /// `qemu-system-x86_64 -machine help` of Debian 12's QEMU 7.2 (1:7.2+dfsg-7+deb12u18),
    /// as printed.
    const X86_64_HELP: &str = r#"Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
pc-i440fx-7.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-7.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-6.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-6.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-6.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-5.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-5.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-5.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-4.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-4.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-4.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-3.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-3.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.9        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.8        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.7        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.6        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.5        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.4        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.3        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.12       Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.11       Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.10       Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-1.7        Standard PC (i440FX + PIIX, 1996) (deprecated)
pc-i440fx-1.6        Standard PC (i440FX + PIIX, 1996) (deprecated)
pc-i440fx-1.5        Standard PC (i440FX + PIIX, 1996) (deprecated)
pc-i440fx-1.4        Standard PC (i440FX + PIIX, 1996) (deprecated)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-7.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-7.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-6.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-6.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-6.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-5.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-5.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-5.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.0.1         Standard PC (Q35 + ICH9, 2009)
pc-q35-4.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-3.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-3.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.9           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.8           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.7           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.6           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.5           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.4           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.12          Standard PC (Q35 + ICH9, 2009)
pc-q35-2.11          Standard PC (Q35 + ICH9, 2009)
pc-q35-2.10          Standard PC (Q35 + ICH9, 2009)
isapc                ISA-only PC
none                 empty machine
x-remote             Experimental remote machine
"#;

    /// `qemu-system-aarch64 -machine help` of the same QEMU, as printed.
    const AARCH64_HELP: &str = r#"Supported machines are:
akita                Sharp SL-C1000 (Akita) PDA (PXA270)
ast1030-evb          Aspeed AST1030 MiniBMC (Cortex-M4)
ast2500-evb          Aspeed AST2500 EVB (ARM1176)
ast2600-evb          Aspeed AST2600 EVB (Cortex-A7)
bletchley-bmc        Facebook Bletchley BMC (Cortex-A7)
borzoi               Sharp SL-C3100 (Borzoi) PDA (PXA270)
canon-a1100          Canon PowerShot A1100 IS (ARM946)
cheetah              Palm Tungsten|E aka. Cheetah PDA (OMAP310)
collie               Sharp SL-5500 (Collie) PDA (SA-1110)
connex               Gumstix Connex (PXA255)
cubieboard           cubietech cubieboard (Cortex-A8)
emcraft-sf2          SmartFusion2 SOM kit from Emcraft (M2S010)
fby35-bmc            Facebook fby35 BMC (Cortex-A7)
fby35                Meta Platforms fby35
fp5280g2-bmc         Inspur FP5280G2 BMC (ARM1176)
fuji-bmc             Facebook Fuji BMC (Cortex-A7)
g220a-bmc            Bytedance G220A BMC (ARM1176)
highbank             Calxeda Highbank (ECX-1000)
imx25-pdk            ARM i.MX25 PDK board (ARM926)
integratorcp         ARM Integrator/CP (ARM926EJ-S)
kudo-bmc             Kudo BMC (Cortex-A9)
kzm                  ARM KZM Emulation Baseboard (ARM1136)
lm3s6965evb          Stellaris LM3S6965EVB (Cortex-M3)
lm3s811evb           Stellaris LM3S811EVB (Cortex-M3)
mainstone            Mainstone II (PXA27x)
mcimx6ul-evk         Freescale i.MX6UL Evaluation Kit (Cortex-A7)
mcimx7d-sabre        Freescale i.MX7 DUAL SABRE (Cortex-A7)
microbit             BBC micro:bit (Cortex-M0)
midway               Calxeda Midway (ECX-2000)
mori-bmc             Mori BMC (Cortex-A9)
mps2-an385           ARM MPS2 with AN385 FPGA image for Cortex-M3
mps2-an386           ARM MPS2 with AN386 FPGA image for Cortex-M4
mps2-an500           ARM MPS2 with AN500 FPGA image for Cortex-M7
mps2-an505           ARM MPS2 with AN505 FPGA image for Cortex-M33
mps2-an511           ARM MPS2 with AN511 DesignStart FPGA image for Cortex-M3
mps2-an521           ARM MPS2 with AN521 FPGA image for dual Cortex-M33
mps3-an524           ARM MPS3 with AN524 FPGA image for dual Cortex-M33
mps3-an547           ARM MPS3 with AN547 FPGA image for Cortex-M55
musca-a              ARM Musca-A board (dual Cortex-M33)
musca-b1             ARM Musca-B1 board (dual Cortex-M33)
musicpal             Marvell 88w8618 / MusicPal (ARM926EJ-S)
n800                 Nokia N800 tablet aka. RX-34 (OMAP2420)
n810                 Nokia N810 tablet aka. RX-44 (OMAP2420)
netduino2            Netduino 2 Machine (Cortex-M3)
netduinoplus2        Netduino Plus 2 Machine (Cortex-M4)
none                 empty machine
npcm750-evb          Nuvoton NPCM750 Evaluation Board (Cortex-A9)
nuri                 Samsung NURI board (Exynos4210)
orangepi-pc          Orange Pi PC (Cortex-A7)
palmetto-bmc         OpenPOWER Palmetto BMC (ARM926EJ-S)
qcom-dc-scm-v1-bmc   Qualcomm DC-SCM V1 BMC (Cortex A7)
qcom-firework-bmc    Qualcomm DC-SCM V1/Firework BMC (Cortex A7)
quanta-gbs-bmc       Quanta GBS (Cortex-A9)
quanta-gsj           Quanta GSJ (Cortex-A9)
quanta-q71l-bmc      Quanta-Q71l BMC (ARM926EJ-S)
rainier-bmc          IBM Rainier BMC (Cortex-A7)
raspi0               Raspberry Pi Zero (revision 1.2)
raspi1ap             Raspberry Pi A+ (revision 1.1)
raspi2b              Raspberry Pi 2B (revision 1.1)
raspi3ap             Raspberry Pi 3A+ (revision 1.0)
raspi3b              Raspberry Pi 3B (revision 1.2)
realview-eb          ARM RealView Emulation Baseboard (ARM926EJ-S)
realview-eb-mpcore   ARM RealView Emulation Baseboard (ARM11MPCore)
realview-pb-a8       ARM RealView Platform Baseboard for Cortex-A8
realview-pbx-a9      ARM RealView Platform Baseboard Explore for Cortex-A9
romulus-bmc          OpenPOWER Romulus BMC (ARM1176)
sabrelite            Freescale i.MX6 Quad SABRE Lite Board (Cortex-A9)
sbsa-ref             QEMU 'SBSA Reference' ARM Virtual Machine
smdkc210             Samsung SMDKC210 board (Exynos4210)
sonorapass-bmc       OCP SonoraPass BMC (ARM1176)
spitz                Sharp SL-C3000 (Spitz) PDA (PXA270)
stm32vldiscovery     ST STM32VLDISCOVERY (Cortex-M3)
supermicrox11-bmc    Supermicro X11 BMC (ARM926EJ-S)
sx1                  Siemens SX1 (OMAP310) V2
sx1-v1               Siemens SX1 (OMAP310) V1
tacoma-bmc           OpenPOWER Tacoma BMC (Cortex-A7)
terrier              Sharp SL-C3200 (Terrier) PDA (PXA270)
tosa                 Sharp SL-6000 (Tosa) PDA (PXA255)
verdex               Gumstix Verdex (PXA270)
versatileab          ARM Versatile/AB (ARM926EJ-S)
versatilepb          ARM Versatile/PB (ARM926EJ-S)
vexpress-a15         ARM Versatile Express for Cortex-A15
vexpress-a9          ARM Versatile Express for Cortex-A9
virt-2.10            QEMU 2.10 ARM Virtual Machine
virt-2.11            QEMU 2.11 ARM Virtual Machine
virt-2.12            QEMU 2.12 ARM Virtual Machine
virt-2.6             QEMU 2.6 ARM Virtual Machine
virt-2.7             QEMU 2.7 ARM Virtual Machine
virt-2.8             QEMU 2.8 ARM Virtual Machine
virt-2.9             QEMU 2.9 ARM Virtual Machine
virt-3.0             QEMU 3.0 ARM Virtual Machine
virt-3.1             QEMU 3.1 ARM Virtual Machine
virt-4.0             QEMU 4.0 ARM Virtual Machine
virt-4.1             QEMU 4.1 ARM Virtual Machine
virt-4.2             QEMU 4.2 ARM Virtual Machine
virt-5.0             QEMU 5.0 ARM Virtual Machine
virt-5.1             QEMU 5.1 ARM Virtual Machine
virt-5.2             QEMU 5.2 ARM Virtual Machine
virt-6.0             QEMU 6.0 ARM Virtual Machine
virt-6.1             QEMU 6.1 ARM Virtual Machine
virt-6.2             QEMU 6.2 ARM Virtual Machine
virt-7.0             QEMU 7.0 ARM Virtual Machine
virt-7.1             QEMU 7.1 ARM Virtual Machine
virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)
virt-7.2             QEMU 7.2 ARM Virtual Machine
witherspoon-bmc      OpenPOWER Witherspoon BMC (ARM1176)
xilinx-zynq-a9       Xilinx Zynq Platform Baseboard for Cortex-A9
xlnx-versal-virt     Xilinx Versal Virtual development board
xlnx-zcu102          Xilinx ZynqMP ZCU102 board with 4xA53s and 2xR5Fs based on the value of smp
z2                   Zipit Z2 (PXA27x)
"#;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, t)| (a.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn aliases_are_parsed_from_real_qemu_output() {
        assert_eq!(
            parse_machine_aliases(X86_64_HELP),
            pairs(&[("pc", "pc-i440fx-7.2"), ("q35", "pc-q35-7.2")])
        );
        assert_eq!(
            parse_machine_aliases(AARCH64_HELP),
            pairs(&[("virt", "virt-7.2")])
        );
        let names = parse_machine_names(X86_64_HELP);
        assert_eq!(names.len(), 61, "every line but the header");
        assert_eq!(names[0], "microvm");
        assert!(names.iter().any(|n| n == "pc-q35-4.0.1"));
        assert!(names.iter().any(|n| n == "q35"));
        assert!(!names.iter().any(|n| n == "Supported"));
        let names = parse_machine_names(AARCH64_HELP);
        assert_eq!(names.len(), 110);
        // Names longer than the 20-column field, descriptions with parentheses.
        assert!(names.iter().any(|n| n == "xlnx-versal-virt"));
        assert!(names.iter().any(|n| n == "sbsa-ref"));
    }

    #[test]
    fn alias_parsing_tolerates_odd_lines() {
        let text = "Supported machines are:\n\
                    a-very-long-machine-name-beyond-twenty Some board (alias of long-1.0)\n\
                    x                    Thing (Foo) (deprecated)\n\
                    \n\
                    y                    Trailing spaces (alias of y-2.0)   \n\
                    z                    Broken (alias of )\n\
                    w                    Not an alias (alias of two words)\n";
        assert_eq!(
            parse_machine_aliases(text),
            pairs(&[
                ("a-very-long-machine-name-beyond-twenty", "long-1.0"),
                ("y", "y-2.0")
            ])
        );
        assert_eq!(
            parse_machine_names(text),
            ["a-very-long-machine-name-beyond-twenty", "x", "y", "z", "w"]
        );
        assert!(parse_machine_aliases("").is_empty());
    }

    #[test]
    fn versioned_machine_types_are_recognized() {
        for name in [
            "pc-q35-7.2",
            "pc-i440fx-7.2",
            "virt-7.2",
            "pc-q35-4.0.1",
            "pc-q35-10.0",
            "pc-1.0",
            "s390-ccw-virtio-7.2",
            "pseries-7.2",
        ] {
            assert!(is_versioned_machine(name), "{name}");
        }
        for name in [
            "q35",
            "pc",
            "virt",
            "microvm",
            "sbsa-ref",
            "mps2-an385",
            "virt-",
            "-7.2",
            "virt-7",
            "virt-7.",
            "virt-7.x",
            "virt-.2",
            "",
        ] {
            assert!(!is_versioned_machine(name), "{name}");
        }
    }

    #[test]
    fn architecture_names_map_to_qemu_targets() {
        for (arch, target) in [
            ("x86_64", "x86_64"),
            ("amd64", "x86_64"),
            ("i386", "i386"),
            ("i686", "i386"),
            ("aarch64", "aarch64"),
            ("arm64", "aarch64"),
            ("arm", "arm"),
            ("armv7l", "arm"),
            ("armhf", "arm"),
            ("ppc64le", "ppc64"),
            ("powerpc64", "ppc64"),
            ("riscv64", "riscv64"),
            ("loongarch64", "loongarch64"),
        ] {
            assert_eq!(qemu_target(arch), target, "{arch}");
        }
        assert_eq!(qemu_binary("amd64"), Path::new("qemu-system-x86_64"));
    }

    #[test]
    fn versioned_names_are_not_looked_up_and_a_missing_qemu_is_a_clear_error() {
        let missing = Path::new("/nonexistent/qemu-system-x86_64");
        assert_eq!(
            resolve_machine_alias("x86_64", "pc-q35-7.2", Some(missing)).unwrap(),
            "pc-q35-7.2"
        );
        let e = resolve_machine_alias("x86_64", "q35", Some(missing)).unwrap_err();
        assert!(matches!(e, MachineError::QemuUnavailable { .. }), "{e:?}");
        let message = e.to_string();
        for needle in ["\"q35\"", "/nonexistent/qemu-system-x86_64", "pc-q35-7.2"] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
    }
}
