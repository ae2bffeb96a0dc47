//! Firmware descriptors: their schema, parsing one file, and loading a [`Catalog`] from the
//! descriptor directories with QEMU's and libvirt's override and masking rules.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why (in JSON: its text).
    #[serde(serialize_with = "serialize_display")]
    pub reason: Arc<DescriptorError>,
}

fn serialize_display<S: serde::Serializer>(
    error: &Arc<DescriptorError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(error)
}

/// Why a descriptor directory, or a file in one, could not be used. The path is the
/// [`Skipped`]'s.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// The directory exists but cannot be listed.
    #[error("cannot read the directory: {0}")]
    ReadDir(#[source] std::io::Error),
    /// A `*.json` entry that is a directory, a device, ….
    #[error("not a regular file")]
    NotRegularFile,
    /// A `*.json` entry whose type cannot be known (a dangling symlink).
    #[error("cannot stat: {0}")]
    Stat(#[source] std::io::Error),
    /// The file turned into something else between listing and reading.
    #[error("is {kind}, not a regular file")]
    NotAccepted {
        /// What it is.
        kind: safefile::FileKind,
    },
    /// Larger than any descriptor.
    #[error("too large for a firmware descriptor: more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Opening or reading it failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not in the shape of a firmware descriptor.
    #[error("not a firmware descriptor: {0}")]
    NotDescriptor(#[source] serde_json::Error),
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
                        reason: Arc::new(DescriptorError::ReadDir(e)),
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
                        reason: Arc::new(DescriptorError::NotRegularFile),
                    }),
                    Err(e) => skipped.push(Skipped {
                        path,
                        reason: Arc::new(DescriptorError::Stat(e)),
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
                Err(reason) => skipped.push(Skipped {
                    path,
                    reason: Arc::new(reason),
                }),
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
}

fn read_descriptor(path: &Path) -> Result<(Descriptor, serde_json::Value), DescriptorError> {
    let text = match safefile::read_input(
        path,
        safefile::Accept::RegularFile,
        MAX_DESCRIPTOR_LEN,
        "a firmware descriptor",
    ) {
        Ok(text) => text,
        Err(safefile::InputError::NotAccepted { kind, .. }) => {
            return Err(DescriptorError::NotAccepted { kind })
        }
        Err(safefile::InputError::TooLarge { limit, .. }) => {
            return Err(DescriptorError::TooLarge { limit })
        }
        Err(safefile::InputError::Io { action, source, .. }) => {
            return Err(DescriptorError::Io { action, source })
        }
    };
    parse_descriptor(&text)
}

/// Parses the bytes of one descriptor file as [`Catalog::load`] does: the descriptor, and the
/// file as JSON (unknown members included); on failure why, as a [`Skipped`]'s reason. Never
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
pub fn parse_descriptor(text: &[u8]) -> Result<(Descriptor, serde_json::Value), DescriptorError> {
    let raw: serde_json::Value = serde_json::from_slice(text).map_err(DescriptorError::NotJson)?;
    let descriptor = Descriptor::deserialize(&raw).map_err(DescriptorError::NotDescriptor)?;
    Ok((descriptor, raw))
}
