//! A start-time guard for libvirt: what `nvram libvirt-hook` decides when libvirt runs it as
//! its QEMU hook (`/etc/libvirt/hooks/qemu.d/nvram`).
//!
//! libvirt keeps an existing varstore without looking at it, and QEMU notices a wrong size
//! only when a migration stream arrives (docs/design.md, rule 4). The hook closes that gap:
//! libvirt runs it with the domain's name, an operation and a sub-operation as arguments
//! and the domain XML on standard input, and a failing hook stops the start.
//!
//! When libvirt 9.0 runs it (`src/qemu/qemu_process.c`, `qemuProcessStart`):
//!
//! 1. `prepare begin` (`qemuProcessInit`): too early. A domain with `<os firmware='efi'>` has
//!    no loader, store or template in its XML yet (firmware autoselection,
//!    `qemuFirmwareFillDomain`, comes next in `qemuProcessPrepareDomain`), and the store is
//!    the one `virsh start --reset-nvram` is about to replace: the reset flag is not passed to
//!    hooks, so a damaged store could not be told from one that is being reset.
//! 2. `qemuProcessPrepareHost` → `qemuPrepareNVRAM`: an absent store (or every store, with
//!    `--reset-nvram`) is copied from the template; an existing one is kept unchecked.
//! 3. `start begin` (`qemuProcessLaunch`, after the command line is built, before QEMU is
//!    spawned): the XML names the code image, the store and its template, and the store is
//!    the one QEMU will open. **This is where the hook checks** ([`Action::CheckStart`]).
//!
//! An incoming migration runs the same sequence on the destination, preceded by
//! `migrate begin` (`qemuMigrationDstPrepareAny`; `restore begin` for `virsh restore`, whose
//! memory image carries the flash contents the same way). The hook's arguments and XML at
//! `start begin` do not say that the start is an incoming one, so `migrate begin` and
//! `restore begin` leave a marker (a file named after the domain's UUID in
//! [`Config::state_dir`]) that the following `start begin` consumes: that start checks the
//! size only (rule 4: the contents come with the migration). A marker older than
//! [`MARKER_TTL`] is ignored; `release end` removes a marker a failed migration left.
//! `migrate begin` also checks the size at once when its XML names the store and a template
//! and the store exists. Both checks come before the source sends any memory.
//!
//! A normal start is refused when the store (raw or qcow2, by content) is not one the
//! firmware would use ([`HookError::Damaged`]), or differs in size or layout from the template
//! named in the XML ([`HookError::Store`]) or from the template of the firmware descriptor
//! whose executable is the XML's code image ([`HookError::Descriptor`]). An absent store is
//! fine (libvirt creates it; at `start begin` it has already), as is a domain without a
//! local flash store (BIOS, a network or block `<nvram>`, QEMU's JSON store). Every other
//! operation is let through without reading anything but its input.

use crate::container::{Format, StoreFile};
use crate::files::{self, FileError};
use crate::firmware::{self, Catalog};
use crate::prepare::{PrepareError, Template};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use varstore::{ErrorKind, FirmwareVerdict, Varstore};

/// Largest domain XML read from standard input. A domain's XML is a few KiB; libvirt has
/// no fixed limit, but one with hundreds of devices stays far below this.
pub const MAX_XML_LEN: u64 = 16 << 20;

/// How long an incoming marker left by `migrate begin` / `restore begin` counts: the
/// destination's `start begin` follows within seconds.
pub const MARKER_TTL: Duration = Duration::from_secs(600);

/// Where the system daemon's hooks live (`SYSCONFDIR/libvirt/hooks`).
pub const DEFAULT_HOOKS_DIR: &str = "/etc/libvirt/hooks";

/// Where the hook keeps its incoming markers by default (a tmpfs: gone at reboot).
pub const DEFAULT_STATE_DIR: &str = "/run/nvram/libvirt-hook";

/// What the hook does for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `start begin`: QEMU is about to be started on the store the XML names.
    CheckStart,
    /// `migrate begin` / `restore begin`: an incoming start follows.
    Incoming,
    /// `release end`: the domain is gone; drop a marker a failed incoming start left.
    Forget,
    /// Anything else: nothing to check.
    Ignore,
}

impl Action {
    /// The action for libvirt's operation and sub-operation arguments.
    ///
    /// ```
    /// use nvram::hook::Action;
    /// assert_eq!(Action::of("start", "begin"), Action::CheckStart);
    /// assert_eq!(Action::of("migrate", "begin"), Action::Incoming);
    /// assert_eq!(Action::of("prepare", "begin"), Action::Ignore);
    /// ```
    pub fn of(operation: &str, sub_operation: &str) -> Self {
        match (operation, sub_operation) {
            ("start", "begin") => Self::CheckStart,
            ("migrate" | "restore", "begin") => Self::Incoming,
            ("release", "end") => Self::Forget,
            _ => Self::Ignore,
        }
    }
}

/// The hook's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Firmware descriptor directories, lowest priority first ([`firmware::search_dirs`]).
    pub firmware_dirs: Vec<PathBuf>,
    /// Where incoming markers are kept.
    pub state_dir: PathBuf,
    /// Only domains whose name matches one of these globs are checked (empty: all).
    pub domains: Vec<String>,
    /// Where libvirt puts a store the domain XML does not name.
    pub nvram_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            firmware_dirs: firmware::search_dirs(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            domains: Vec::new(),
            nvram_dir: crate::libvirt::nvram_dir("qemu:///system"),
        }
    }
}

/// What the hook needs of a domain's XML ([`crate::libvirt::Domain`] reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainStore {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`.
    pub uuid: Option<String>,
    /// The code image (`<os><loader>`), when the loader is a flash (`type='pflash'`, or no
    /// type).
    pub loader: Option<PathBuf>,
    /// The store, when it is a local file or block device (`<nvram>PATH</nvram>`,
    /// `type='file'`/`'block'` with `<source>`), or libvirt's default path for a domain with
    /// UEFI firmware and no `<nvram>`.
    pub nvram: Option<PathBuf>,
    /// `<nvram template=…>`.
    pub template: Option<PathBuf>,
    /// `<nvram format=…>` (libvirt 9.2 and later; raw before).
    pub format: Option<Format>,
}

/// The domain XML could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the domain XML on standard input: {source}")]
pub struct XmlError {
    #[source]
    source: crate::libvirt::LibvirtError,
}

/// Reads what the hook needs from a domain XML. `nvram_dir` is where libvirt puts a store
/// the XML does not name ([`crate::libvirt::nvram_dir`]).
///
/// ```
/// let xml = "<domain type='kvm'><name>vm1</name><uuid>ab3d563a-660d-496b-b84d-89b45a5dd10f</uuid>\
///   <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\
///   <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
///   <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram>\
///   </os></domain>";
/// let domain = nvram::hook::parse_domain(xml, std::path::Path::new("/unused")).unwrap();
/// assert_eq!(domain.name, "vm1");
/// assert_eq!(domain.nvram.unwrap(), std::path::Path::new("/var/lib/libvirt/qemu/nvram/vm1_VARS.fd"));
/// assert_eq!(domain.template.unwrap(), std::path::Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd"));
/// ```
pub fn parse_domain(xml: &str, nvram_dir: &Path) -> Result<DomainStore, XmlError> {
    let domain =
        crate::libvirt::Domain::from_xml(xml, nvram_dir).map_err(|source| XmlError { source })?;
    let loader = domain
        .loader
        .filter(|l| l.kind.as_deref().is_none_or(|k| k == "pflash"))
        .and_then(|l| l.path);
    let (nvram, template, format) = match domain.nvram {
        Some(n) => (
            Some(n.path),
            n.template,
            n.format_declared.then_some(n.format),
        ),
        None => (None, None, None),
    };
    Ok(DomainStore {
        name: domain.name,
        uuid: Some(domain.uuid).filter(|u| !u.is_empty()),
        loader,
        nvram,
        template,
        format,
    })
}

/// What a successful call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The operation is not one the hook checks, or the domain is not one it was told to
    /// check.
    Ignored,
    /// The domain has no local flash store (BIOS, a network or block `<nvram>`, JSON).
    NoStore,
    /// The store does not exist (libvirt creates it from the template).
    Absent(PathBuf),
    /// A normal start: the store is healthy and fits the templates checked.
    Healthy {
        /// The store.
        nvram: PathBuf,
        /// The templates it was checked against (the XML's, the descriptor's).
        templates: Vec<PathBuf>,
    },
    /// An incoming start: the store's size fits the templates checked.
    SizeFits {
        /// The store.
        nvram: PathBuf,
        /// The templates it was checked against.
        templates: Vec<PathBuf>,
    },
    /// `migrate begin` / `restore begin` recorded that an incoming start follows.
    IncomingNoted,
    /// `release end`: any incoming marker was removed.
    Forgotten,
}

/// Why the hook refuses a start, or could not decide.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The domain XML could not be used.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The store is not one the firmware would boot from.
    #[error(
        "{}: damaged: {cause}; the firmware would not use it",
        path.display()
    )]
    Damaged {
        /// The store.
        path: PathBuf,
        /// What is wrong.
        #[source]
        cause: Damage,
    },
    /// The store does not fit the template named in the domain XML (size, layout), or
    /// could not be read.
    #[error(transparent)]
    Store(Box<PrepareError>),
    /// The store does not fit the template of the code image's firmware descriptor.
    #[error(
        "{source} (the template of {descriptor}, the firmware descriptor of the code image {})",
        code.display()
    )]
    Descriptor {
        /// The descriptor's file.
        descriptor: PathBuf,
        /// The code image.
        code: PathBuf,
        /// The mismatch.
        #[source]
        source: Box<PrepareError>,
    },
    /// The incoming marker could not be written.
    #[error("{}: cannot write the incoming marker: {source}", path.display())]
    MarkerWrite {
        /// The marker.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<FileError>,
    },
    /// The incoming marker's directory could not be created, or the marker removed.
    #[error("{}: {action}: {source}", path.display())]
    Marker {
        /// The marker.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What makes a store one the firmware would not use.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// The file is no store of a known format (raw, qcow2, JSON).
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    /// The flash image is no varstore.
    #[error(transparent)]
    Parse(#[from] varstore::ParseError),
    /// The varstore parses, but the firmware refuses it for this finding.
    #[error("{0}")]
    Refused(varstore::Finding),
    /// The varstore parses, but the firmware refuses it.
    #[error("the firmware refuses it")]
    RefusedWithoutFinding,
}

impl HookError {
    /// Whether the error is a verdict on the store (the start must not happen), as opposed
    /// to a failure to read or record something.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Damaged { .. } | Self::Descriptor { .. } => true,
            Self::Store(e) => e.is_mismatch(),
            Self::Xml(_) | Self::Marker { .. } | Self::MarkerWrite { .. } => false,
        }
    }
}

/// Decides one hook call: `operation` and `sub_operation` as libvirt passes them, `xml` the
/// domain XML it writes to the hook's standard input.
pub fn run(
    config: &Config,
    operation: &str,
    sub_operation: &str,
    xml: &str,
) -> Result<Outcome, HookError> {
    let action = Action::of(operation, sub_operation);
    if action == Action::Ignore {
        return Ok(Outcome::Ignored);
    }
    let domain = parse_domain(xml, &config.nvram_dir)?;
    if !config.domains.is_empty()
        && !config
            .domains
            .iter()
            .any(|glob| firmware::glob_match(glob.as_bytes(), domain.name.as_bytes()))
    {
        return Ok(Outcome::Ignored);
    }
    let marker = marker_path(&config.state_dir, &domain);
    match action {
        Action::Ignore => Ok(Outcome::Ignored),
        Action::Forget => {
            remove_marker(&marker)?;
            Ok(Outcome::Forgotten)
        }
        Action::Incoming => {
            // Check now what can be checked; the start that follows checks again with the
            // XML libvirt resolved (a migrated domain may name no template here). A refusal
            // leaves no marker: libvirt gives up before it starts anything.
            check(config, &domain, true)?;
            write_marker(&config.state_dir, &marker)?;
            Ok(Outcome::IncomingNoted)
        }
        Action::CheckStart => {
            let incoming = take_marker(&marker)?;
            check(config, &domain, incoming)
        }
    }
}

/// Checks the store of `domain`: its size only for an incoming start, else its health,
/// size and layout. See the module documentation.
pub fn check(config: &Config, domain: &DomainStore, incoming: bool) -> Result<Outcome, HookError> {
    let Some(nvram) = &domain.nvram else {
        return Ok(Outcome::NoStore);
    };
    if domain.format == Some(Format::Json) {
        return Ok(Outcome::NoStore);
    }
    match fs::symlink_metadata(nvram) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Absent(nvram.clone())),
        Err(e) => {
            return Err(HookError::Store(Box::new(PrepareError::File(
                FileError::Io {
                    path: nvram.clone(),
                    action: "cannot stat",
                    source: e,
                },
            ))))
        }
        Ok(_) => {}
    }
    let templates = templates(config, domain)?;
    let file = files::read_image(nvram).map_err(|e| HookError::Store(Box::new(e.into())))?;
    let store = match StoreFile::from_bytes(file, None) {
        Ok(store) if store.format() == Format::Json => return Ok(Outcome::NoStore),
        Ok(store) => store,
        Err(e) => {
            return Err(HookError::Damaged {
                path: nvram.clone(),
                cause: e.into(),
            })
        }
    };
    let image = store.image();
    let checked: Vec<PathBuf> = templates
        .iter()
        .map(|t| t.template.path().to_path_buf())
        .collect();
    if incoming {
        check_sizes(
            &templates,
            nvram,
            image.len() as u64,
            "QEMU would start but fail the migration with `Size mismatch` after the source has \
             sent the guest's memory",
        )?;
        return Ok(Outcome::SizeFits {
            nvram: nvram.clone(),
            templates: checked,
        });
    }
    // Size first: a store of another size is reported as such, whatever its contents.
    check_sizes(
        &templates,
        nvram,
        image.len() as u64,
        "the firmware would not find its store where it expects it",
    )?;
    match Varstore::parse(image) {
        Ok(parsed) if parsed.verdict() == FirmwareVerdict::Refuse => {
            let cause = parsed
                .findings()
                .iter()
                .find(|f| f.verdict == FirmwareVerdict::Refuse)
                .map_or(Damage::RefusedWithoutFinding, |f| {
                    Damage::Refused(f.clone())
                });
            return Err(HookError::Damaged {
                path: nvram.clone(),
                cause,
            });
        }
        Ok(_) => {}
        // Blank: the templates' verification below says whether the firmware formats it
        // (a blank template) or not, and what leaves such a file.
        Err(e) if e.kind() == ErrorKind::Unformatted && !templates.is_empty() => {}
        Err(e) => {
            return Err(HookError::Damaged {
                path: nvram.clone(),
                cause: e.into(),
            })
        }
    }
    for t in &templates {
        t.template.verify(nvram, image).map_err(|e| t.wrap(e))?;
    }
    Ok(Outcome::Healthy {
        nvram: nvram.clone(),
        templates: checked,
    })
}

/// A template to check against, and where it comes from.
struct Against {
    template: Template,
    /// The descriptor that names it, when it is not the XML's template.
    descriptor: Option<(PathBuf, PathBuf)>,
}

/// A [`PrepareError::SizeMismatch`] for the first template whose size is not `size`, with
/// what that size would make QEMU or the firmware do.
fn check_sizes(
    templates: &[Against],
    nvram: &Path,
    size: u64,
    consequence: &'static str,
) -> Result<(), HookError> {
    match templates.iter().find(|t| t.template.size() != size) {
        Some(t) => Err(t.wrap(PrepareError::SizeMismatch {
            path: nvram.to_path_buf(),
            size,
            template: t.template.path().to_path_buf(),
            template_size: t.template.size(),
            consequence,
        })),
        None => Ok(()),
    }
}

impl Against {
    fn wrap(&self, error: PrepareError) -> HookError {
        match &self.descriptor {
            Some((descriptor, code)) if error.is_mismatch() => HookError::Descriptor {
                descriptor: descriptor.clone(),
                code: code.clone(),
                source: Box::new(error),
            },
            _ => HookError::Store(Box::new(error)),
        }
    }
}

/// The XML's template, and the template of the first descriptor (in priority order) whose
/// executable is the XML's code image when it is another file.
fn templates(config: &Config, domain: &DomainStore) -> Result<Vec<Against>, HookError> {
    let mut out = Vec::new();
    if let Some(path) = &domain.template {
        out.push(Against {
            template: Template::load(path).map_err(|e| HookError::Store(Box::new(e)))?,
            descriptor: None,
        });
    }
    if let Some(code) = &domain.loader {
        let catalog = Catalog::load(&config.firmware_dirs);
        let described: Vec<_> = catalog
            .firmware
            .iter()
            .filter(|f| f.flash().is_some_and(|m| m.executable.filename == *code))
            .filter_map(|f| firmware::varstore_template(f).ok().map(|(t, _)| (f, t)))
            .collect();
        // A descriptor that names the XML's template agrees with it by definition.
        let agrees = described
            .iter()
            .any(|(_, t)| domain.template.as_deref() == Some(*t));
        if let (false, Some((firmware, template))) = (agrees, described.first()) {
            out.push(Against {
                template: Template::load(template).map_err(|e| HookError::Store(Box::new(e)))?,
                descriptor: Some((firmware.path.clone(), code.clone())),
            });
        }
    }
    Ok(out)
}

/// The marker of `domain` in `state_dir`: its UUID, or its name hex-encoded.
fn marker_path(state_dir: &Path, domain: &DomainStore) -> PathBuf {
    let key = match &domain.uuid {
        Some(uuid) if uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') => {
            uuid.to_ascii_lowercase()
        }
        _ => format!("name-{}", hex::encode(domain.name.as_bytes())),
    };
    state_dir.join(format!("{key}.incoming"))
}

fn write_marker(state_dir: &Path, marker: &Path) -> Result<(), HookError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| HookError::Marker {
            path: state_dir.to_path_buf(),
            action: "cannot create the directory",
            source,
        })?;
    files::replace(marker, b"").map_err(|source| HookError::MarkerWrite {
        path: marker.to_path_buf(),
        source: Box::new(source),
    })
}

/// Removes the marker; whether it was there and fresh.
fn take_marker(marker: &Path) -> Result<bool, HookError> {
    let fresh = match fs::symlink_metadata(marker) {
        Ok(meta) if meta.is_file() => meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age <= MARKER_TTL),
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(HookError::Marker {
                path: marker.to_path_buf(),
                action: "cannot stat the incoming marker",
                source,
            })
        }
    };
    remove_marker(marker)?;
    Ok(fresh)
}

fn remove_marker(marker: &Path) -> Result<(), HookError> {
    match fs::remove_file(marker) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(HookError::Marker {
            path: marker.to_path_buf(),
            action: "cannot remove the incoming marker",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The hook was not there and now is.
    Created,
    /// Another hook of that name (an older binary path, other options) was replaced.
    Replaced,
    /// The same hook was there already; nothing was written.
    Unchanged,
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "installed",
            Self::Replaced => "updated",
            Self::Unchanged => "unchanged",
        })
    }
}

/// The path of the hook in a hooks directory: `DIR/qemu.d/nvram`.
pub fn hook_path(hooks_dir: &Path) -> PathBuf {
    hooks_dir.join("qemu.d").join("nvram")
}

/// The script that runs `binary libvirt-hook OPTIONS… "$@"`.
///
/// ```
/// let script = nvram::hook::script(std::path::Path::new("/usr/bin/nvram"), &["--domain".into(), "web-*".into()]);
/// assert!(script.starts_with("#!/bin/sh\n"));
/// assert!(script.contains("exec '/usr/bin/nvram' libvirt-hook '--domain' 'web-*' \"$@\"\n"));
/// ```
pub fn script(binary: &Path, options: &[String]) -> String {
    let mut line = format!(
        "exec {} libvirt-hook",
        shell_quote(&binary.to_string_lossy())
    );
    for option in options {
        line.push(' ');
        line.push_str(&shell_quote(option));
    }
    format!(
        "#!/bin/sh\n\
         # libvirt QEMU hook installed by `nvram libvirt-hook --install`: checks a domain's UEFI\n\
         # variable store before QEMU starts. Remove this file to uninstall.\n\
         {line} \"$@\"\n"
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Installs `content` as the hook `DIR/qemu.d/nvram` (creating `qemu.d` if needed):
/// owner-only and executable (0700), atomically, never through a symlink. Writes nothing
/// when the same content is there with that mode.
pub fn install(hooks_dir: &Path, content: &str) -> Result<Installed, FileError> {
    let dir = hooks_dir.join("qemu.d");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|source| FileError::Io {
            path: dir.clone(),
            action: "cannot create the directory",
            source,
        })?;
    let path = hook_path(hooks_dir);
    let existed = match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(FileError::Symlink { path }),
        Ok(meta) if !meta.is_file() => return Err(FileError::NotRegular { path }),
        Ok(meta) => {
            let same = safefile::read_input(
                &path,
                safefile::Accept::RegularFile,
                1 << 20,
                "a hook script",
            )
            .is_ok_and(|old| old == content.as_bytes());
            if same && meta.permissions().mode() & 0o7777 == 0o700 {
                return Ok(Installed::Unchanged);
            }
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(FileError::Io {
                path,
                action: "cannot stat",
                source,
            })
        }
    };
    safefile::replace_with(&path, content.as_bytes(), |file| {
        file.set_permissions(fs::Permissions::from_mode(0o700))
    })?;
    Ok(if existed {
        Installed::Replaced
    } else {
        Installed::Created
    })
}
