//! libvirt's view of the VMs: which domains there are, their firmware and the varstore each
//! keeps, and whether they run.
//!
//! libvirt is reached through `virsh` (from `libvirt-clients`) and the domain XML it prints,
//! not through the C API: nvram then builds and runs without libvirt's headers or library
//! (the `virt` crate binds them with `unsafe` FFI and needs `libvirt-dev` at build time), and
//! a host without libvirt only loses the commands that ask for it. What makes this fast is
//! batching: [`list_domains`] runs one `virsh list --all --uuid`, then one `virsh` process per
//! [`BATCH`] domains whose single command string is `echo MARKER; domstate UUID; dumpxml UUID`
//! for each domain. Listing 1,000 domains takes about 0.7 s this way (three `virsh`
//! processes) on the project's 2-core test machine, where one `virsh dumpxml` process per
//! domain takes 16 ms, 16 s for the 1,000 (`benches/libvirt_fleet.rs`). Domains are named to
//! `virsh` by UUID only, which has no character its command parser treats specially; names
//! (which may hold anything) are only read from the XML, never passed to a shell or `virsh`.
//!
//! The XML is parsed with `roxmltree`: a small, maintained, read-only DOM parser with
//! `#![forbid(unsafe_code)]` and one dependency (`memchr`), which rejects malformed XML and
//! never loads external entities; reading a few elements of libvirt's document needs no more.
//!
//! ```
//! let xml = r#"<domain type='qemu'><name>vm1</name>
//!   <uuid>6a1c63fe-3d7f-4b5c-9c55-0d3f3e2c1a01</uuid>
//!   <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
//!     <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
//!     <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram>
//!   </os></domain>"#;
//! let domain = nvram::libvirt::Domain::from_xml(xml, std::path::Path::new("/unused")).unwrap();
//! assert_eq!(domain.name, "vm1");
//! let nvram = domain.nvram.unwrap();
//! assert_eq!(nvram.path.to_str(), Some("/var/lib/libvirt/qemu/nvram/vm1_VARS.fd"));
//! assert_eq!(nvram.format, nvram::container::Format::Raw);
//! ```

mod fleet;

pub use fleet::{apply_targets, targets, Target, Targets};

use crate::container::Format;
use crate::inspect::CheckReport;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Domains described by one `virsh` process: its command string stays well below Linux's
/// 128 KiB limit of one argument (about 160 bytes a domain).
pub const BATCH: usize = 500;

/// The connection URI used when none is given: `$LIBVIRT_DEFAULT_URI` if set (as `virsh`
/// does), else the system QEMU driver.
pub fn default_uri() -> String {
    std::env::var("LIBVIRT_DEFAULT_URI")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "qemu:///system".to_string())
}

/// The directory where libvirt's QEMU driver puts the varstores it creates
/// (`NAME_VARS.fd`) for the connection `uri`: `/var/lib/libvirt/qemu/nvram` for the system
/// daemon, `$XDG_CONFIG_HOME/libvirt/qemu/nvram` (`~/.config/…`) for a session one.
pub fn nvram_dir(uri: &str) -> PathBuf {
    if uri.contains("/session") {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from(".config"));
        config.join("libvirt/qemu/nvram")
    } else {
        PathBuf::from("/var/lib/libvirt/qemu/nvram")
    }
}

/// Why the domains could not be listed or a domain's XML not read.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// `virsh` could not be started.
    #[error("cannot run virsh (install libvirt-clients): {0}")]
    NoVirsh(std::io::Error),
    /// `virsh` failed (libvirtd not running, a wrong URI, no permission).
    #[error("virsh -c {uri} {what} failed: {stderr}")]
    Virsh {
        /// The connection URI.
        uri: String,
        /// The command.
        what: String,
        /// What virsh said.
        stderr: String,
    },
    /// `virsh` printed something that is not what it prints.
    #[error("virsh -c {uri}: unexpected output: {what}")]
    Output {
        /// The connection URI.
        uri: String,
        /// What was wrong.
        what: String,
    },
    /// A domain XML is not what libvirt writes.
    #[error("domain {domain}: {what}")]
    Xml {
        /// The domain's UUID (or name, when known).
        domain: String,
        /// What was wrong, naming the element or attribute.
        what: String,
    },
}

/// The firmware loader of a domain (`<os><loader …>PATH</loader>`), as the XML says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loader {
    /// The code image.
    pub path: Option<PathBuf>,
    /// `readonly='yes'`.
    pub readonly: Option<bool>,
    /// `type`: `pflash` or `rom`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `secure='yes'` (the firmware needs SMM).
    pub secure: Option<bool>,
    /// `stateless='yes'`: no varstore.
    pub stateless: Option<bool>,
}

/// Where a domain's varstore is and how it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nvram {
    /// The store file.
    pub path: PathBuf,
    /// Its format: `<nvram format=…>` (libvirt 9.2 and later), else raw (libvirt 9.0 has
    /// only raw stores).
    pub format: Format,
    /// Whether the XML names the format (else it is raw by default).
    pub format_declared: bool,
    /// The template libvirt copies for a new store (`<nvram template=…>`), when the XML names
    /// it. libvirt 9.0 names it only in a running domain's XML, after picking the firmware.
    pub template: Option<PathBuf>,
    /// `<nvram templateFormat=…>` (libvirt 9.2 and later).
    pub template_format: Option<Format>,
    /// The XML has no `<nvram>`: this is the path libvirt gives the store when it starts the
    /// domain (`NVRAM_DIR/NAME_VARS.fd`), for `<os firmware='efi'>` or a pflash loader.
    pub implicit: bool,
}

/// One libvirt domain, as far as its firmware is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// Its name (any characters).
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// What `virsh domstate` says: `running`, `shut off`, `paused`, …
    pub state: String,
    /// Whether the domain is active (has a QEMU process: running, paused, …). An active
    /// domain's store belongs to its QEMU and is never edited.
    pub active: bool,
    /// `<domain type=…>`: `qemu` (TCG) or `kvm`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `<os firmware=…>`: `efi` when libvirt picks the firmware from descriptors.
    pub firmware: Option<String>,
    /// `<os><type arch=…>`.
    pub arch: Option<String>,
    /// `<os><type machine=…>`.
    pub machine: Option<String>,
    /// The loader, if the XML has one.
    pub loader: Option<Loader>,
    /// The varstore, if the domain has one.
    pub nvram: Option<Nvram>,
}

impl Domain {
    /// Parses a domain XML (`virsh dumpxml`). `nvram_dir` is where libvirt puts stores it
    /// names itself ([`nvram_dir`]). The state is taken from the XML (`id=` is present on
    /// active domains only): `running` or `shut off`; [`list_domains`] replaces it with what
    /// `virsh domstate` says.
    pub fn from_xml(xml: &str, nvram_dir: &Path) -> Result<Self, LibvirtError> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| LibvirtError::Xml {
            domain: "(unknown)".into(),
            what: format!("not XML: {e}"),
        })?;
        let root = doc.root_element();
        let fail = |domain: &str, what: String| LibvirtError::Xml {
            domain: domain.to_string(),
            what,
        };
        if !root.has_tag_name("domain") {
            return Err(fail(
                "(unknown)",
                format!("the document is <{}>, not <domain>", root.tag_name().name()),
            ));
        }
        let name = child(root, "name")
            .map(text)
            .ok_or_else(|| fail("(unknown)", "no <name>".into()))?;
        if name.is_empty() {
            return Err(fail("(unknown)", "<name> is empty".into()));
        }
        let uuid = child(root, "uuid")
            .map(text)
            .ok_or_else(|| fail(&name, "no <uuid>".into()))?;
        let kind = root
            .attribute("type")
            .ok_or_else(|| fail(&name, "<domain> has no type attribute".into()))?
            .to_string();
        let active = root.attribute("id").is_some();
        let os = child(root, "os");
        let os_type = os.and_then(|os| child(os, "type"));
        let firmware = os.and_then(|os| os.attribute("firmware")).map(String::from);
        let yes_no = |node: roxmltree::Node, attr: &str| -> Result<Option<bool>, LibvirtError> {
            match node.attribute(attr) {
                None => Ok(None),
                Some("yes") => Ok(Some(true)),
                Some("no") => Ok(Some(false)),
                Some(other) => Err(fail(
                    &name,
                    format!(
                        "<{} {attr}={other:?}>: expected yes or no",
                        node.tag_name().name()
                    ),
                )),
            }
        };
        let loader = match os.and_then(|os| child(os, "loader")) {
            None => None,
            Some(l) => Some(Loader {
                path: Some(text(l)).filter(|p| !p.is_empty()).map(PathBuf::from),
                readonly: yes_no(l, "readonly")?,
                kind: l.attribute("type").map(String::from),
                secure: yes_no(l, "secure")?,
                stateless: yes_no(l, "stateless")?,
            }),
        };
        let format_of =
            |node: roxmltree::Node, attr: &str| -> Result<Option<Format>, LibvirtError> {
                match node.attribute(attr) {
                    None => Ok(None),
                    Some(f) => Format::by_name(f).map(Some).ok_or_else(|| {
                        fail(
                            &name,
                            format!("<nvram {attr}={f:?}>: not a store format (raw, qcow2)"),
                        )
                    }),
                }
            };
        let nvram = match os.and_then(|os| child(os, "nvram")) {
            Some(n) => {
                // `<nvram>PATH</nvram>`, or since libvirt 8.5 `<nvram type='file'><source
                // file='PATH'/></nvram>` (also `block` with `dev=`; `network` has no path).
                let path = match n.attribute("type") {
                    None => Some(text(n)).filter(|p| !p.is_empty()),
                    Some("file") => child(n, "source")
                        .and_then(|s| s.attribute("file"))
                        .map(String::from),
                    Some("block") => child(n, "source")
                        .and_then(|s| s.attribute("dev"))
                        .map(String::from),
                    Some(_) => None,
                };
                let format = format_of(n, "format")?;
                match path {
                    Some(path) => Some(Nvram {
                        path: PathBuf::from(path),
                        format: format.unwrap_or(Format::Raw),
                        format_declared: format.is_some(),
                        template: n.attribute("template").map(PathBuf::from),
                        template_format: format_of(n, "templateFormat")?,
                        implicit: false,
                    }),
                    None if n.attribute("type").is_some() => None,
                    // A bare `<nvram/>` (or one with only a template): libvirt names the file.
                    None => Some(Nvram {
                        path: default_store(nvram_dir, &name, format.unwrap_or(Format::Raw)),
                        format: format.unwrap_or(Format::Raw),
                        format_declared: format.is_some(),
                        template: n.attribute("template").map(PathBuf::from),
                        template_format: format_of(n, "templateFormat")?,
                        implicit: true,
                    }),
                }
            }
            None => {
                let efi = firmware.as_deref() == Some("efi");
                let pflash = loader.as_ref().is_some_and(|l| {
                    l.kind.as_deref() == Some("pflash") && l.readonly == Some(true)
                });
                let stateless = loader.as_ref().is_some_and(|l| l.stateless == Some(true));
                ((efi || pflash) && !stateless).then(|| Nvram {
                    path: default_store(nvram_dir, &name, Format::Raw),
                    format: Format::Raw,
                    format_declared: false,
                    template: None,
                    template_format: None,
                    implicit: true,
                })
            }
        };
        Ok(Domain {
            state: if active { "running" } else { "shut off" }.to_string(),
            name,
            uuid,
            active,
            kind,
            firmware,
            arch: os_type.and_then(|t| t.attribute("arch")).map(String::from),
            machine: os_type
                .and_then(|t| t.attribute("machine"))
                .map(String::from),
            loader,
            nvram,
        })
    }
}

/// libvirt's name for a store it creates: `DIR/NAME_VARS.fd` (`.qcow2` for qcow2 in 9.2+).
fn default_store(dir: &Path, name: &str, format: Format) -> PathBuf {
    let ext = if format == Format::Qcow2 {
        "qcow2"
    } else {
        "fd"
    };
    dir.join(format!("{name}_VARS.{ext}"))
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(tag))
}

fn text(node: roxmltree::Node) -> String {
    node.text().unwrap_or("").trim().to_string()
}

fn virsh(uri: &str, args: &[&str]) -> Result<(String, String), LibvirtError> {
    let out = Command::new("virsh")
        .arg("-q")
        .arg("-c")
        .arg(uri)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(LibvirtError::NoVirsh)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(LibvirtError::Virsh {
            uri: uri.to_string(),
            what: args.first().map_or("", |a| *a).chars().take(40).collect(),
            stderr,
        });
    }
    Ok((stdout, stderr))
}

/// The start of the line `virsh echo` prints before each domain's output. `<<` never occurs
/// in XML output (a `<` in text is written `&lt;`) nor in a state word.
const MARK: &str = "<<nvram-domain:";

/// Every domain of the connection `uri` (defined and transient), sorted by name.
pub fn list_domains(uri: &str) -> Result<Vec<Domain>, LibvirtError> {
    let (out, _) = virsh(uri, &["list", "--all", "--uuid"])?;
    let mut uuids = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !is_uuid(line) {
            return Err(LibvirtError::Output {
                uri: uri.to_string(),
                what: format!(
                    "list --uuid printed {:?}, not a UUID",
                    line.chars().take(64).collect::<String>()
                ),
            });
        }
        uuids.push(line.to_string());
    }
    let dir = nvram_dir(uri);
    let mut domains = Vec::with_capacity(uuids.len());
    for batch in uuids.chunks(BATCH) {
        domains.extend(describe(uri, batch, &dir)?);
    }
    domains.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
    Ok(domains)
}

/// The domains with these UUIDs, in one `virsh` process. A domain that disappeared since it
/// was listed is left out.
fn describe(uri: &str, uuids: &[String], dir: &Path) -> Result<Vec<Domain>, LibvirtError> {
    let mut script = String::with_capacity(uuids.len() * 160);
    for uuid in uuids {
        // UUIDs were checked to be hex digits and dashes: nothing to quote.
        script.push_str(&format!(
            "echo '{MARK}{uuid}>>'; domstate {uuid}; dumpxml {uuid}; "
        ));
    }
    // A last command that cannot fail: virsh's exit status is its last command's, and a
    // domain undefined since the listing must not fail the others.
    script.push_str("echo '<<nvram-end>>'");
    let (out, stderr) = virsh(uri, &[&script])?;
    let out = out
        .rsplit_once("<<nvram-end>>")
        .map_or(out.as_str(), |(before, _)| before);
    let mut domains = Vec::new();
    let mut seen = 0;
    for part in out.split(MARK).skip(1) {
        seen += 1;
        let (uuid, rest) = part.split_once(">>").ok_or_else(|| LibvirtError::Output {
            uri: uri.to_string(),
            what: "a marker without its end".into(),
        })?;
        let rest = rest.trim_start_matches(['\n', ' ']);
        let (state, xml) = match rest.find('<') {
            Some(at) => (rest[..at].trim(), &rest[at..]),
            // domstate worked, dumpxml did not (or neither): the domain went away.
            None => continue,
        };
        let mut domain = Domain::from_xml(xml, dir).map_err(|e| match e {
            LibvirtError::Xml { what, .. } => LibvirtError::Xml {
                domain: uuid.to_string(),
                what,
            },
            other => other,
        })?;
        if domain.uuid != uuid {
            return Err(LibvirtError::Output {
                uri: uri.to_string(),
                what: format!("dumpxml {uuid} printed domain {}", domain.uuid),
            });
        }
        if !state.is_empty() {
            domain.state = state.to_string();
        }
        domains.push(domain);
    }
    if seen != uuids.len() {
        return Err(LibvirtError::Output {
            uri: uri.to_string(),
            what: format!(
                "{seen} of {} domains described ({})",
                uuids.len(),
                stderr.lines().next().unwrap_or("")
            ),
        });
    }
    Ok(domains)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Which domains a command is about: `--all` or `--domain NAME…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every domain.
    All,
    /// These names (exact).
    Names(Vec<String>),
}

/// The domains `selection` names, in `domains`' order. A name that no domain has is an
/// error naming it.
pub fn select<'d>(
    domains: &'d [Domain],
    selection: &Selection,
) -> Result<Vec<&'d Domain>, LibvirtError> {
    match selection {
        Selection::All => Ok(domains.iter().collect()),
        Selection::Names(names) => {
            for n in names {
                if !domains.iter().any(|d| &d.name == n) {
                    return Err(LibvirtError::Xml {
                        domain: crate::escape::terminal(n).into_owned(),
                        what: "no such domain".into(),
                    });
                }
            }
            Ok(domains.iter().filter(|d| names.contains(&d.name)).collect())
        }
    }
}

/// Our verdict on a domain's store.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `healthy`, `problems`, `unformatted`, `damaged`, `not-a-varstore`, `missing`
    /// (libvirt creates it from the template at the next start), `unreadable`, or
    /// `format-mismatch` (the content is not in the format the XML declares).
    pub status: String,
    /// The format the content is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_format: Option<Format>,
    /// The check of the store's content, as `nvram check --json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    /// Whether the store fits its template (size and layout), when the template is known:
    /// `None` when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ok: Option<bool>,
    /// Every problem in words (empty for a healthy store).
    pub problems: Vec<String>,
}

impl Health {
    /// Whether the store is one the firmware will use as it is and fits its template.
    pub fn is_healthy(&self) -> bool {
        matches!(self.status.as_str(), "healthy" | "missing") && self.problems.is_empty()
    }
}

/// [`health`] of each domain's store (`None` for a domain without one), in the order of
/// `domains`, checked on as many threads as the machine has cores.
pub fn healths(domains: &[&Domain]) -> Vec<Option<Health>> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = domains.len().div_ceil(jobs).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = domains
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|d| d.nvram.as_ref().map(health))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Checks a domain's store: the content as `nvram check` does, its format against the
/// XML's, and its size and layout against the template when the XML names one.
pub fn health(nvram: &Nvram) -> Health {
    let mut problems = Vec::new();
    let file = match crate::files::read_image(&nvram.path) {
        Ok(file) => file,
        Err(crate::files::FileError::Input(safefile::InputError::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Health {
                status: "missing".into(),
                found_format: None,
                check: None,
                template_ok: None,
                problems,
            }
        }
        Err(e) => {
            return Health {
                status: "unreadable".into(),
                found_format: None,
                check: None,
                template_ok: None,
                problems: vec![e.to_string()],
            }
        }
    };
    let found = Format::detect(&file);
    if found != nvram.format {
        problems.push(format!(
            "the file is a {found} store but the domain XML says {}",
            nvram.format
        ));
    }
    let opened = match crate::container::StoreFile::from_bytes(file, None) {
        Ok(opened) => opened,
        Err(e) => {
            problems.push(format!("{}: {e}", nvram.path.display()));
            return Health {
                status: "damaged".into(),
                found_format: Some(found),
                check: None,
                template_ok: None,
                problems,
            };
        }
    };
    let image = opened.image();
    let check = match varstore::Varstore::parse(image) {
        Ok(store) => CheckReport::of_store(&store),
        Err(e) => CheckReport::of_error(&e, image.len()),
    };
    for finding in &check.findings {
        problems.push(finding.to_string());
    }
    if let Some(error) = &check.error {
        problems.push(error.clone());
    }
    let template_ok = nvram.template.as_ref().and_then(|t| {
        match crate::prepare::Template::load(t) {
            Ok(template) => match template.verify(&nvram.path, image) {
                Ok(()) => Some(true),
                Err(e) => {
                    problems.push(e.to_string());
                    Some(false)
                }
            },
            // The template is gone or unreadable: say so, but the store is judged alone.
            Err(e) => {
                problems.push(format!("template: {e}"));
                None
            }
        }
    });
    let status = if found != nvram.format {
        "format-mismatch".to_string()
    } else {
        check.status.to_string()
    };
    Health {
        status,
        found_format: Some(found),
        check: Some(check),
        template_ok,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/var/lib/libvirt/qemu/nvram";

    fn parse(xml: &str) -> Result<Domain, LibvirtError> {
        Domain::from_xml(xml, Path::new(DIR))
    }

    #[test]
    fn an_efi_domain_without_nvram_gets_libvirts_default_path() {
        let d = parse(
            "<domain type='qemu'><name>a b;'c</name><uuid>u</uuid>\
             <os firmware='efi'><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os></domain>",
        )
        .unwrap();
        let n = d.nvram.unwrap();
        assert_eq!(n.path, Path::new(DIR).join("a b;'c_VARS.fd"));
        assert!(n.implicit);
        assert_eq!(n.format, Format::Raw);
        assert!(!d.active);
        assert_eq!(d.firmware.as_deref(), Some("efi"));
        assert_eq!(d.machine.as_deref(), Some("pc-q35-7.2"));
    }

    #[test]
    fn a_running_domain_with_loader_and_nvram() {
        let d = parse(
            "<domain type='kvm' id='7'><name>vm</name><uuid>u</uuid><os>\
             <loader readonly='yes' secure='yes' type='pflash'>/c.fd</loader>\
             <nvram template='/t.qcow2' templateFormat='qcow2' format='qcow2'>/s.qcow2</nvram>\
             </os></domain>",
        )
        .unwrap();
        assert!(d.active);
        let l = d.loader.unwrap();
        assert_eq!(l.path.as_deref(), Some(Path::new("/c.fd")));
        assert_eq!((l.readonly, l.secure), (Some(true), Some(true)));
        assert_eq!(l.kind.as_deref(), Some("pflash"));
        let n = d.nvram.unwrap();
        assert_eq!(n.path, Path::new("/s.qcow2"));
        assert_eq!(n.format, Format::Qcow2);
        assert!(n.format_declared);
        assert_eq!(n.template.as_deref(), Some(Path::new("/t.qcow2")));
        assert_eq!(n.template_format, Some(Format::Qcow2));
    }

    #[test]
    fn source_form_and_bios_domains() {
        let d = parse(
            "<domain type='qemu'><name>vm</name><uuid>u</uuid><os>\
             <nvram type='file'><source file='/x/y.fd'/></nvram></os></domain>",
        )
        .unwrap();
        assert_eq!(d.nvram.unwrap().path, Path::new("/x/y.fd"));
        let bios = parse(
            "<domain type='qemu'><name>vm</name><uuid>u</uuid><os><type>hvm</type></os></domain>",
        )
        .unwrap();
        assert_eq!(bios.nvram, None);
        let stateless = parse(
            "<domain type='qemu'><name>vm</name><uuid>u</uuid><os firmware='efi'>\
             <loader stateless='yes'/></os></domain>",
        )
        .unwrap();
        assert_eq!(stateless.nvram, None);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = |xml: &str| parse(xml).unwrap_err().to_string();
        assert_eq!(
            e("<domain type='qemu'><uuid>u</uuid></domain>"),
            "domain (unknown): no <name>"
        );
        assert_eq!(
            e("<domain type='qemu'><name>vm</name></domain>"),
            "domain vm: no <uuid>"
        );
        assert_eq!(
            e("<network/>"),
            "domain (unknown): the document is <network>, not <domain>"
        );
        assert_eq!(
            e("<domain type='qemu'><name>vm</name><uuid>u</uuid><os>\
               <nvram format='vmdk'>/a</nvram></os></domain>"),
            "domain vm: <nvram format=\"vmdk\">: not a store format (raw, qcow2)"
        );
        assert_eq!(
            e("<domain type='qemu'><name>vm</name><uuid>u</uuid><os>\
               <loader readonly='maybe'>/a</loader></os></domain>"),
            "domain vm: <loader readonly=\"maybe\">: expected yes or no"
        );
        assert!(e("<domain").starts_with("domain (unknown): not XML"));
    }

    #[test]
    fn uuids_and_selection() {
        assert!(is_uuid("ab3d563a-660d-496b-b84d-89b45a5dd10f"));
        assert!(!is_uuid("ab3d563a-660d-496b-b84d-89b45a5dd10f;"));
        assert!(!is_uuid("ab3d563a 660d-496b-b84d-89b45a5dd10f"));
        let mk = |n: &str| {
            parse(&format!(
                "<domain type='qemu'><name>{n}</name><uuid>u</uuid></domain>"
            ))
            .unwrap()
        };
        let all = [mk("a"), mk("b")];
        let picked = select(&all, &Selection::Names(vec!["b".into()])).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(
            select(&all, &Selection::Names(vec!["c".into()]))
                .unwrap_err()
                .to_string(),
            "domain c: no such domain"
        );
        assert_eq!(select(&all, &Selection::All).unwrap().len(), 2);
    }
}
