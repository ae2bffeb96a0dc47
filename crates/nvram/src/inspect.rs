//! Views of a store for listing and checking, shared by the text and JSON outputs.

use serde::Serialize;
use varstore::{decode, ErrorKind, Finding, FirmwareVerdict, ParseError, VariableRecord, Varstore};

/// One variable or record as `nvram list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VariableView {
    /// Name.
    pub name: String,
    /// Lower-case GUID.
    pub guid: String,
    /// Attribute bits.
    pub attr: u32,
    /// Attribute flag words (`nv`, `bs`, `rt`, `at`, …).
    pub flags: Vec<String>,
    /// Data size in bytes.
    pub size: usize,
    /// Record state (`added`, `in-transition`, `deleted`, …).
    pub state: String,
    /// File offset of the record.
    pub offset: u64,
    /// Timestamp, for time-based authenticated variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Short decoded value of well-known variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl VariableView {
    /// The view of one record.
    pub fn new(record: &VariableRecord<'_>) -> Self {
        Self {
            name: record.name(),
            guid: record.guid.to_string(),
            attr: record.attributes.0,
            flags: record.attributes.flags(),
            size: record.data.len(),
            state: record.state().to_string(),
            offset: record.offset,
            time: record.time().map(|t| t.to_string()),
            value: decode::summary(record),
        }
    }
}

/// The variables of a store: the live ones, or with `all` every record the walk visits.
pub fn variables(store: &Varstore<'_>, all: bool) -> Vec<VariableView> {
    if all {
        store.records().iter().map(VariableView::new).collect()
    } else {
        store
            .live_variables()
            .into_iter()
            .map(VariableView::new)
            .collect()
    }
}

/// The outcome of `nvram check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `healthy`, `problems`, `unformatted`, `damaged` or `not-a-varstore`.
    pub status: &'static str,
    /// What the firmware does with the store at its next boot.
    pub verdict: FirmwareVerdict,
    /// The verdict in words.
    pub verdict_text: String,
    /// Built-in layout the image matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<&'static str>,
    /// Records walked.
    pub records: usize,
    /// Live variables.
    pub live: usize,
    /// Bytes free for new records before a reclaim.
    pub free_bytes: u64,
    /// Every problem.
    pub findings: Vec<Finding>,
    /// The fatal error, when the image could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    /// Checks a parsed store.
    pub fn of_store(store: &Varstore<'_>) -> Self {
        let verdict = store.verdict();
        Self {
            status: if store.is_healthy() {
                "healthy"
            } else {
                "problems"
            },
            verdict,
            verdict_text: verdict.explain().to_string(),
            layout: store.layout().map(|l| l.name),
            records: store.records().len(),
            live: store.live_variables().len(),
            free_bytes: store.free_space(),
            findings: store.findings().to_vec(),
            error: None,
        }
    }

    /// Reports an image that could not be parsed.
    /// An unformatted image is reported with the built-in layout of its size, if any (Debian
    /// 12's blank `AAVMF_VARS.fd` is 64 MiB of zeros: `aavmf`), and is accepted when that
    /// layout's firmware formats a blank flash.
    pub fn of_error(error: &ParseError, image_len: usize) -> Self {
        let blank_layout = match error.kind() {
            ErrorKind::Unformatted => varstore::Layout::by_file_size(image_len as u64),
            _ => None,
        };
        let (status, verdict, text) = match error.kind() {
            ErrorKind::Unformatted if blank_layout.is_some_and(|l| l.formats_blank_flash) => (
                "unformatted",
                FirmwareVerdict::Accept,
                format!(
                    "accept: the {} firmware formats an unformatted flash at first boot",
                    blank_layout.map_or("", |l| l.arch)
                ),
            ),
            ErrorKind::Unformatted => (
                "unformatted",
                FirmwareVerdict::Refuse,
                "refuse: OVMF writes a bare firmware volume header and stops in DXE; the file needs a formatted store".to_string(),
            ),
            ErrorKind::Damaged => (
                "damaged",
                FirmwareVerdict::Refuse,
                FirmwareVerdict::Refuse.explain().to_string(),
            ),
            ErrorKind::NotAVarstore => (
                "not-a-varstore",
                FirmwareVerdict::Refuse,
                "refuse: this is not a UEFI variable store".to_string(),
            ),
        };
        Self {
            status,
            verdict,
            verdict_text: text,
            layout: blank_layout.map(|l| l.name),
            records: 0,
            live: 0,
            free_bytes: 0,
            findings: Vec::new(),
            error: Some(error.to_string()),
        }
    }

    /// The overall verdict: healthy (an unformatted flash that the firmware formats at
    /// first boot counts as healthy), problems, or not a variable store at all.
    pub fn health(&self) -> Health {
        match self.status {
            "healthy" => Health::Healthy,
            "unformatted" if self.verdict == FirmwareVerdict::Accept => Health::Healthy,
            "not-a-varstore" => Health::NotAVarstore,
            _ => Health::Problems,
        }
    }
}

/// The overall verdict of a [`CheckReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The firmware will use the store as it is.
    Healthy,
    /// Findings, damage, or an unformatted flash the firmware does not format.
    Problems,
    /// Not a UEFI variable store.
    NotAVarstore,
}

/// A store file checked ([`check_file`]).
#[derive(Debug)]
pub struct FileCheck {
    /// The verdict on the store it holds.
    pub report: CheckReport,
    /// How the file keeps the store.
    pub format: crate::container::Format,
    /// For a JSON store, QEMU's storage count (its room is that, not the flash image's free
    /// space); `None` otherwise or when it cannot be counted.
    pub qemu_storage: Option<crate::jsonstore::QemuStorage>,
    /// Temporary files that killed writers left next to the store and no process has open:
    /// a matter of the directory, not of the store, so they do not change the verdict.
    pub leftovers: Vec<safefile::Leftover>,
}

/// Reads the store file at `path` (any format) and checks it as the firmware would see it.
/// Only a file that cannot be read is an error: a damaged or foreign one is a report.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("vars.fd");
/// std::fs::write(&path, varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
/// let checked = nvram::inspect::check_file(&path)?;
/// assert_eq!(checked.report.health(), nvram::inspect::Health::Healthy);
/// assert!(checked.leftovers.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_file(path: &std::path::Path) -> Result<FileCheck, crate::files::FileError> {
    let store = crate::files::read_store(path)?;
    let format = store.format();
    let qemu_storage = store.json().and_then(|j| j.storage(store.image()).ok());
    let image = store.into_image();
    let report = match Varstore::parse(&image) {
        Ok(store) => CheckReport::of_store(&store),
        Err(e) => CheckReport::of_error(&e, image.len()),
    };
    let leftovers = safefile::leftovers(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !l.in_use)
        .collect();
    Ok(FileCheck {
        report,
        format,
        qemu_storage,
        leftovers,
    })
}
