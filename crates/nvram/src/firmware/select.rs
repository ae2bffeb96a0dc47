//! Firmware selection: which descriptor of a [`Catalog`] fits a VM ([`Criteria`]), the
//! machine-type globs descriptors use ([`glob_match`]), and the varstore template of the one
//! chosen.

use super::{Catalog, Firmware, Target};
use std::fmt;
use std::path::{Path, PathBuf};

impl Catalog {
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
    /// does, with [`resolve_machine_alias`](super::resolve_machine_alias), which asks QEMU which versioned type an alias
    /// stands for.
    pub machine: Option<String>,
    /// Flash mode; implies a flash mapping.
    pub mode: Option<FlashMode>,
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
            mode: Some(FlashMode::Split),
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

    /// The criteria for listing descriptors from these filters: without any, every
    /// descriptor (nothing is checked); with any, only UEFI ones unless `interface` names
    /// another interface (BIOS descriptors are rarely what is looked for).
    ///
    /// ```
    /// use nvram::firmware::{Criteria, FlashMode};
    /// assert_eq!(Criteria::default().for_listing(), Criteria::default());
    /// let c = Criteria { mode: Some(FlashMode::Stateless), ..Criteria::default() }.for_listing();
    /// assert_eq!(c.interface.as_deref(), Some("uefi"));
    /// ```
    pub fn for_listing(mut self) -> Self {
        if self != Criteria::default() && self.interface.is_none() {
            self.interface = Some("uefi".into());
        }
        self
    }

    /// Why `firmware` does not fit, or `Ok`.
    pub fn check(&self, firmware: &Firmware) -> Result<(), Mismatch> {
        let d = &firmware.descriptor;
        if let Some(interface) = &self.interface {
            if !d.interface_types.iter().any(|i| i == interface) {
                return Err(Mismatch::Interface(interface.clone()));
            }
        }
        if let Some(arch) = &self.architecture {
            let targets: Vec<&Target> = d
                .targets
                .iter()
                .filter(|t| &t.architecture == arch)
                .collect();
            if targets.is_empty() {
                return Err(Mismatch::Architecture(arch.clone()));
            }
            if let Some(machine) = &self.machine {
                if !targets
                    .iter()
                    .flat_map(|t| &t.machines)
                    .any(|pattern| glob_match(pattern.as_bytes(), machine.as_bytes()))
                {
                    return Err(Mismatch::Machine(machine.clone()));
                }
            }
        } else if let Some(machine) = &self.machine {
            if !d
                .targets
                .iter()
                .flat_map(|t| &t.machines)
                .any(|pattern| glob_match(pattern.as_bytes(), machine.as_bytes()))
            {
                return Err(Mismatch::Machine(machine.clone()));
            }
        }
        if self.mode.is_some() || self.format.is_some() {
            let Some(flash) = firmware.flash() else {
                return Err(Mismatch::NotFlash(firmware.mapping_summary()));
            };
            if let Some(mode) = self.mode {
                if flash.mode != mode.as_str() {
                    return Err(Mismatch::Mode {
                        found: flash.mode.clone(),
                        wanted: mode,
                    });
                }
            }
            if let Some(format) = &self.format {
                let formats = std::iter::once(&flash.executable)
                    .chain(flash.nvram_template.as_ref())
                    .map(|f| &f.format);
                if let Some(other) = formats.into_iter().find(|f| *f != format) {
                    return Err(Mismatch::Format {
                        found: other.clone(),
                        wanted: format.clone(),
                    });
                }
            }
        }
        if let Some(missing) = self
            .features
            .iter()
            .find(|f| !d.features.iter().any(|have| have == *f))
        {
            return Err(Mismatch::LacksFeature(missing.clone()));
        }
        if let Some(unwanted) = self
            .without_features
            .iter()
            .find(|f| d.features.iter().any(|have| have == *f))
        {
            return Err(Mismatch::HasFeature(unwanted.clone()));
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
            ("mode", &self.mode.map(|m| m.as_str().to_string())),
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

/// A flash mapping's mode, as descriptors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlashMode {
    /// Code and varstore template in separate images (a per-VM varstore).
    Split,
    /// One image holding both: the VM's copy is its varstore.
    Combined,
    /// One read-only image: variables do not persist.
    Stateless,
}

impl FlashMode {
    /// The name descriptors use (`split`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Combined => "combined",
            Self::Stateless => "stateless",
        }
    }
}

impl fmt::Display for FlashMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a descriptor does not fit [`Criteria`]: the first requirement it fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// It lacks the interface asked for.
    #[error("no {0} interface")]
    Interface(String),
    /// No target of this architecture.
    #[error("not for {0}")]
    Architecture(String),
    /// No machine glob of its (matching) targets matches the machine type.
    #[error("not for machine {0}")]
    Machine(String),
    /// A mode or format was asked for and its mapping is not a flash (its summary).
    #[error("{0} mapping, not flash")]
    NotFlash(String),
    /// Another flash mode.
    #[error("flash mode {found}, not {wanted}")]
    Mode {
        /// Its mode.
        found: String,
        /// The mode asked for.
        wanted: FlashMode,
    },
    /// An image in another format.
    #[error("{found} images, not {wanted}")]
    Format {
        /// The format of its first image in another format.
        found: String,
        /// The format asked for.
        wanted: String,
    },
    /// It lacks a required feature.
    #[error("lacks feature {0}")]
    LacksFeature(String),
    /// It has a feature asked to be absent.
    #[error("has feature {0}")]
    HasFeature(String),
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
        rejected: Vec<(String, Mismatch)>,
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
    /// The template is not in the format asked for.
    #[error("{path}: firmware {name} has a {format} nvram-template, not {wanted}")]
    TemplateFormat {
        /// Descriptor name.
        name: String,
        /// Descriptor path.
        path: PathBuf,
        /// The template's format.
        format: crate::container::Format,
        /// The format asked for.
        wanted: crate::container::Format,
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

fn display_rejected(rejected: &[(String, Mismatch)]) -> String {
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
}
