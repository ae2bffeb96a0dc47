//! QEMU's JSON variable store (`-device uefi-vars-x64,jsonfile=FILE`, QEMU ≥ 10.0) as a flash
//! image, so that every command that edits a flash store edits a JSON store the same way
//! (docs/varstore-format.md §19).
//!
//! [`JsonStore::open`] reads the file and builds an equivalent flash image in a synthetic
//! layout ([`LAYOUT`]: a 1 MiB variable region, more than QEMU's default 256 KiB of variable
//! storage can fill); the commands edit that image with [`varstore::edit::Editor`] under
//! [`JsonStore::limits`]; [`JsonStore::save`] turns the edited image back into the JSON file,
//! keeping what a flash image cannot hold (QEMU's certificate digests, the file's `version`).
//!
//! What QEMU 10.0 does with the file (`hw/uefi/var-service-json.c`, `var-service-vars.c`,
//! `var-service-auth.c`, `var-service-utils.c`, `qapi/uefi.json`; checked against QEMU
//! 10.0.2 by `tests/json_store.rs`):
//!
//! - It reads the file when the device is realized. An empty file is an empty store; any
//!   other file must be one JSON object `{"version": int, "variables": [...]}` whose variables
//!   have exactly the members `name`, `guid`, `attr`, `data` (strings but `attr`, an integer)
//!   and optionally `time` and `digest`: a missing or unexpected member or a wrong type stops
//!   QEMU with `Parameter 'variables[0].name' is missing` and the like. A file that is not
//!   JSON, has trailing text or a member twice, or is only whitespace, makes QEMU 10.0 abort
//!   (an assertion fails in its QAPI input visitor). [`JsonStore::open`] refuses all of these.
//! - Nothing else is checked: QEMU takes a GUID that does not parse, non-hex data (read as
//!   zeros), an odd number of hex digits (a heap overflow), names with non-ASCII bytes (each
//!   byte becomes one UCS-2 unit), any `attr` (truncated to 32 bits), two variables with one
//!   name and GUID, and more variables than its `size` property allows. QEMU never writes
//!   such files; [`JsonStore::open`] refuses them, naming the variable and field, except the
//!   last, which it reads (the file is then one QEMU starts on but whose guest can write no
//!   variable) and which [`JsonStore::save`] refuses to write.
//! - At every start (its reset) QEMU deletes the volatile variables, then computes
//!   SetupMode, SignatureSupport, SecureBoot and VendorKeys (volatile), creates
//!   SecureBootEnable = 1 if there is a PK and no SecureBootEnable, sets CustomMode to 0 and
//!   VendorKeysNv to 0 (both moved to the end of its list), and rewrites the file. It writes
//!   only non-volatile variables, always with `version` 2, and every save replaces the
//!   content in place (seek to 0, truncate, write, fsync): not atomic, unlike nvram's writes.
//!   A missing file is created; an empty one is an empty store.
//! - QEMU takes no lock on the file (neither `flock` nor a POSIX lock): a running VM cannot
//!   be detected through the file, and QEMU, which keeps its descriptor open, goes on writing
//!   its own state (to the replaced inode after an atomic replacement), so an edit must be
//!   made while the VM is shut down.
//! - Variables QEMU's JSON legitimately holds that a flash editor refuses: hardware error
//!   records (`hr`; QEMU supports the attribute, OVMF's flash reserves no space for them),
//!   variables without `bs` (QEMU lets the OS create `nv,rt` variables after
//!   ExitBootServices) and variables larger than the per-variable limit (QEMU has none at
//!   load). [`JsonStore::open`] writes their records into the image directly, so they are
//!   listed, kept and can be deleted; the editor refuses only to create such variables.
//!   Variables with empty `data` (QEMU keeps them but no guest can see them) and volatile
//!   ones (QEMU deletes them at start) are left out, with a note ([`JsonStore::notes`]).
//! - Storage: QEMU counts, for every variable it holds (volatile ones included),
//!   96 bytes (`sizeof(uefi_variable)` on a 64-bit host) + the name in UCS-2 with its NUL +
//!   the data + the digest, against its `size` property (default 262144 bytes). A guest
//!   write that would go over it fails with EFI_OUT_OF_RESOURCES. [`JsonStore::save`]
//!   refuses a store whose count *after QEMU's start-up additions* exceeds the limit
//!   ([`QemuStorage`]), naming both numbers. The count equals QEMU 10.0.2's own
//!   `used_storage` (read from its migration stream by the tests): 807 bytes for an empty
//!   file, 20277 for Debian 12's `OVMF_VARS_4M.ms.fd`.
//! - Per variable, the device moves requests through a buffer of at most 64 KiB: a variable
//!   whose name and data exceed 65460 bytes can be neither written nor read by a guest
//!   ([`JsonStore::limits`]).
//!
//! ```
//! use nvram::jsonstore::{JsonStore, LAYOUT};
//! use varstore::edit::{Editor, Strategy};
//! use varstore::{guid, Attributes};
//!
//! let (store, image) = JsonStore::open(b"")?;
//! assert_eq!(image.len() as u64, LAYOUT.file_size);
//! let mut editor = Editor::new(&image)?;
//! editor.set_limits(JsonStore::limits());
//! editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, Attributes(7), &[5, 0], None, Strategy::Append)?;
//! let json = store.save(&editor.finish())?;
//! assert!(String::from_utf8(json)?.contains(r#""name": "Timeout""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod schema;

use schema::{decode, read_schema, Node};
use std::collections::HashMap;
use std::fmt::Write as _;
use varstore::edit::{EditError, Editor, Limits, Strategy};
use varstore::json::bounded;
use varstore::{guid, Attributes, EfiTime, Guid, Layout, Varstore};

/// QEMU's default `size` property of `uefi-vars-x64` and `uefi-vars-sysbus`: the bytes of
/// variable storage it counts against ([`QemuStorage`]).
pub const DEFAULT_MAX_STORAGE: u64 = 256 * 1024;

/// What QEMU counts per variable besides its name, data and digest: `sizeof(uefi_variable)` on
/// a 64-bit host (`include/hw/uefi/var-service.h`).
pub const VARIABLE_OVERHEAD: u64 = 96;

/// The largest communication buffer the device accepts (`MAX_BUFFER_SIZE`).
pub const MAX_BUFFER_SIZE: u32 = 64 * 1024;

/// Name + data of one variable that fit the device's buffer next to the request headers
/// (`mm_header` 24 bytes, `mm_variable` 16, the packed `mm_variable_access` 36): 65460.
pub const MAX_NAME_AND_DATA: u32 = MAX_BUFFER_SIZE - 24 - 16 - 36;

/// Bytes of a record header in the image (authenticated format), which the editor's limits
/// include.
const RECORD_HEADER: u32 = 60;

/// The synthetic flash layout of the image [`JsonStore::open`] returns: FV header and a 1 MiB
/// variable region (QEMU's default storage of 256 KiB holds fewer bytes of names and data
/// than that, since QEMU counts 96 bytes per variable where a record takes at most 63), a
/// 4 KiB FTW working block and a 4 KiB spare. No firmware uses it; it only has to be a store
/// that [`Varstore::parse`] and [`Editor`] accept.
pub const LAYOUT: Layout = Layout {
    name: "qemu-json",
    description: "QEMU uefi-vars JSON store (synthetic image, 1 MiB variable region)",
    file_size: 0x102000,
    fv_length: 0x102000,
    block_size: 0x1000,
    block_count: 0x102,
    fv_attributes: 0x0004_FEFF,
    variable_region: 0x100000,
    event_log: 0,
    ftw_working: 0x1000,
    ftw_spare: 0x1000,
    padding: 0xFF,
    max_variable_size: RECORD_HEADER + MAX_NAME_AND_DATA,
    max_auth_variable_size: RECORD_HEADER + MAX_NAME_AND_DATA,
    arch: "x86_64",
    formats_blank_flash: false,
};

/// Whether `file` looks like a JSON store: its first non-whitespace byte is `{`.
///
/// ```
/// assert!(nvram::jsonstore::looks_like_json(b"\n {\"version\": 2}"));
/// assert!(!nvram::jsonstore::looks_like_json(b""));
/// assert!(!nvram::jsonstore::looks_like_json(&varstore::Layout::by_name("ovmf-4m").unwrap().create()));
/// ```
pub fn looks_like_json(file: &[u8]) -> bool {
    file.iter().find(|b| !is_json_space(**b)) == Some(&b'{')
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Why a JSON store could not be read or written. Names the variable (its position in the
/// file, from 0, and name) and the field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum JsonStoreError {
    /// Only whitespace: QEMU 10.0 aborts on it.
    #[error("the file holds only whitespace, on which QEMU 10.0 aborts (an assertion in its JSON input); an empty file is an empty store")]
    OnlyWhitespace,
    /// Not JSON (or trailing text, a member twice): QEMU 10.0 aborts on it.
    #[error("not JSON QEMU can read (QEMU 10.0 aborts on it): {0}")]
    Syntax(String),
    /// JSON that QEMU refuses at start, with the parameter as QEMU names it.
    #[error("{problem} (QEMU refuses the file: Parameter '{path}' …)")]
    Schema {
        /// `version`, `variables[3].attr`, …
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A field QEMU would read wrongly or that it never writes.
    #[error("variable {index} ({}): {field}: {problem}", bounded(name))]
    Field {
        /// Position in the file, from 0.
        index: usize,
        /// Its name.
        name: String,
        /// The member.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// One variable (name and GUID) listed twice: QEMU would use the first and keep both.
    #[error("variables {first} and {second} are both {} with GUID {guid}: a variable may be listed only once", bounded(name))]
    Duplicate {
        /// Position of the first, from 0.
        first: usize,
        /// Position of the second, from 0.
        second: usize,
        /// The name.
        name: String,
        /// The GUID.
        guid: Guid,
    },
    /// The editor refused a variable while the image was built.
    #[error("variable {index}: {error}")]
    Refused {
        /// Position in the file, from 0.
        index: usize,
        /// Why (part of the message, so not also a `source`).
        error: EditError,
    },
    /// The variables do not fit the image's variable region.
    #[error("the variables take {needed} bytes as flash records, more than the {available} of the image for a JSON store; QEMU counts {qemu} bytes of its storage for them (its default limit is {DEFAULT_MAX_STORAGE})")]
    TooManyForImage {
        /// Bytes of records.
        needed: u64,
        /// Bytes of the variable region.
        available: u64,
        /// QEMU's count for them.
        qemu: u64,
    },
    /// The image to save is not a variable store.
    #[error("not a variable store: {0}")]
    Image(varstore::ParseError),
    /// A variable of the image cannot be put in QEMU's JSON.
    #[error("{} with GUID {guid}: {problem}", bounded(name))]
    Unrepresentable {
        /// The name.
        name: String,
        /// The GUID.
        guid: Guid,
        /// Why.
        problem: String,
    },
    /// More than QEMU's variable storage holds.
    #[error("QEMU would need {} bytes of variable storage for this store ({} for its variables, {} for those QEMU adds at start), over its limit of {} bytes (the device's size property); its guest could write no variable", .0.total(), .0.variables, .0.added_at_start, .0.limit)]
    OverLimit(QemuStorage),
}

/// QEMU's count of variable storage for a store (`used_storage` in `var-service-vars.c`),
/// right after QEMU has started on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuStorage {
    /// For the variables of the file: 96 + name (UCS-2 with NUL) + data + digest each.
    pub variables: u64,
    /// What QEMU adds at start (net): the volatile SetupMode, SignatureSupport, SecureBoot and
    /// VendorKeys, and CustomMode, VendorKeysNv (replaced) and SecureBootEnable (when missing
    /// and a PK is enrolled).
    pub added_at_start: u64,
    /// The limit (`size` property).
    pub limit: u64,
}

impl QemuStorage {
    /// Bytes QEMU counts once it has started.
    pub fn total(&self) -> u64 {
        self.variables + self.added_at_start
    }

    /// Bytes left for the guest.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.total())
    }
}

/// What a JSON store keeps that a flash image cannot hold. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct JsonStore {
    version: i64,
    digests: HashMap<(String, Guid), String>,
    max_storage: u64,
    notes: Vec<String>,
}

impl Default for JsonStore {
    fn default() -> Self {
        Self {
            version: 2,
            digests: HashMap::new(),
            max_storage: DEFAULT_MAX_STORAGE,
            notes: Vec::new(),
        }
    }
}

/// One variable as read from the file.
struct Entry {
    name: String,
    guid: Guid,
    attr: u32,
    data: Vec<u8>,
    time: Option<EfiTime>,
    digest: Option<String>,
}

impl JsonStore {
    /// Reads a QEMU uefi-vars JSON file (an empty file is an empty store, as for QEMU) and
    /// returns it with an equivalent flash image in [`LAYOUT`], which [`Varstore::parse`] and
    /// [`Editor`] accept: the variables in file order, each one record in state 0x3F.
    ///
    /// ```
    /// let json = br#"{"version": 2, "variables": [{"name": "Timeout",
    ///     "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "0500"}]}"#;
    /// let (_, image) = nvram::jsonstore::JsonStore::open(json)?;
    /// let store = varstore::Varstore::parse(&image)?;
    /// assert_eq!(store.find("Timeout", None).unwrap().data, [5, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(file: &[u8]) -> Result<(JsonStore, Vec<u8>), JsonStoreError> {
        let mut store = JsonStore::default();
        if file.is_empty() {
            return Ok((store, LAYOUT.create()));
        }
        if file.iter().all(|b| is_json_space(*b)) {
            return Err(JsonStoreError::OnlyWhitespace);
        }
        let node: Node = serde_json::from_slice(file)
            .map_err(|e| JsonStoreError::Syntax(bounded(&e.to_string()).into_owned()))?;
        let (version, raw) = read_schema(node)?;
        store.version = version;
        let mut entries = Vec::with_capacity(raw.len());
        let mut seen: HashMap<(String, Guid), usize> = HashMap::with_capacity(raw.len());
        for (index, v) in raw.into_iter().enumerate() {
            let entry = decode(index, v, &mut store.notes)?;
            if let Some(&first) = seen.get(&(entry.name.clone(), entry.guid)) {
                return Err(JsonStoreError::Duplicate {
                    first,
                    second: index,
                    name: entry.name,
                    guid: entry.guid,
                });
            }
            seen.insert((entry.name.clone(), entry.guid), index);
            entries.push((index, entry));
        }
        // Left out: what QEMU deletes at start, or keeps where no guest can see it.
        entries.retain(|(index, e)| {
            let drop = if e.attr & Attributes::NON_VOLATILE == 0 {
                Some("volatile (no nv): QEMU deletes it when it starts and never writes it")
            } else if e.data.is_empty() {
                Some("empty data: QEMU keeps it but no guest can see it")
            } else {
                None
            };
            if let Some(why) = drop {
                store.notes.push(format!(
                    "variable {index} ({}): left out: {why}",
                    bounded(&e.name)
                ));
            }
            drop.is_none()
        });
        let needed: u64 = entries
            .iter()
            .map(|(_, e)| record_len(&e.name, e.data.len()) as u64)
            .sum();
        let available = u64::from(LAYOUT.store_size()) - 28;
        if needed > available {
            return Err(JsonStoreError::TooManyForImage {
                needed,
                available,
                qemu: entries
                    .iter()
                    .map(|(_, e)| {
                        qemu_cost(
                            &e.name,
                            e.data.len(),
                            e.digest.as_ref().map_or(0, |d| d.len() / 2),
                        )
                    })
                    .sum(),
            });
        }
        let image = fill(&entries)?;
        for (_, e) in entries {
            if let Some(digest) = e.digest {
                store.digests.insert((e.name, e.guid), digest);
            }
        }
        Ok((store, image))
    }

    /// The JSON file for an edited image: its live variables in store order, as QEMU writes
    /// them (members in QEMU's order, lower-case hex, `time` for every `at` variable,
    /// indented by four spaces, no final newline), with the file's `version` and the
    /// `digest` of every `at` variable that still exists (same name and GUID).
    ///
    /// Refuses an image that is not a store, a variable QEMU cannot hold as it is (a name
    /// that is not ASCII, a volatile variable) and a store QEMU could not hold
    /// ([`JsonStoreError::OverLimit`], naming its count and limit).
    pub fn save(&self, image: &[u8]) -> Result<Vec<u8>, JsonStoreError> {
        let store = Varstore::parse(image).map_err(JsonStoreError::Image)?;
        let mut out = Vec::new();
        for r in store.live_variables() {
            let name =
                ascii_name(r.name_raw).map_err(|problem| JsonStoreError::Unrepresentable {
                    name: r.name(),
                    guid: r.guid,
                    problem: problem.into(),
                })?;
            if r.attributes.0 & Attributes::NON_VOLATILE == 0 {
                return Err(JsonStoreError::Unrepresentable {
                    name,
                    guid: r.guid,
                    problem: "volatile (no nv): QEMU neither keeps nor writes such a variable"
                        .into(),
                });
            }
            let at = r.attributes.is_time_based_authenticated();
            let time = at.then(|| r.timestamp.unwrap_or(EfiTime([0; 16])));
            let digest = if at {
                self.digests.get(&(name.clone(), r.guid)).cloned()
            } else {
                None
            };
            out.push(Entry {
                name,
                guid: r.guid,
                attr: r.attributes.0,
                data: r.data.to_vec(),
                time,
                digest,
            });
        }
        let storage = storage_of(&out, self.max_storage);
        if storage.total() > storage.limit {
            return Err(JsonStoreError::OverLimit(storage));
        }
        Ok(render(self.version, &out))
    }

    /// QEMU's per-variable limits, for [`Editor::set_limits`] on the image from
    /// [`JsonStore::open`]: the record header (60 bytes) + name + data must not exceed
    /// 60 + 65460, the most the device's 64 KiB buffer carries; the same for `at` variables.
    ///
    /// ```
    /// assert_eq!(nvram::jsonstore::JsonStore::limits().max_variable_size, 65520);
    /// ```
    pub fn limits() -> Limits {
        Limits {
            max_variable_size: LAYOUT.max_variable_size,
            max_auth_variable_size: LAYOUT.max_auth_variable_size,
        }
    }

    /// The file's `version` (QEMU writes 2 and reads any integer).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// QEMU's certificate digest of a variable, as lower-case hex, if the file had one.
    pub fn digest(&self, name: &str, guid: Guid) -> Option<&str> {
        self.digests
            .get(&(name.to_string(), guid))
            .map(String::as_str)
    }

    /// What [`JsonStore::open`] left out or ignored, one sentence each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The storage limit [`JsonStore::save`] enforces: QEMU's `size` property.
    pub fn max_storage(&self) -> u64 {
        self.max_storage
    }

    /// Enforces another `size` property (a VM started with `uefi-vars-x64,size=N`).
    pub fn set_max_storage(&mut self, bytes: u64) {
        self.max_storage = bytes;
    }

    /// QEMU's count of variable storage for `image` saved as this store.
    pub fn storage(&self, image: &[u8]) -> Result<QemuStorage, JsonStoreError> {
        let store = Varstore::parse(image).map_err(JsonStoreError::Image)?;
        let entries: Vec<Entry> = store
            .live_variables()
            .iter()
            .map(|r| {
                let name = r.name();
                let digest = if r.attributes.is_time_based_authenticated() {
                    self.digests.get(&(name.clone(), r.guid)).cloned()
                } else {
                    None
                };
                Entry {
                    name,
                    guid: r.guid,
                    attr: r.attributes.0,
                    data: r.data.to_vec(),
                    time: None,
                    digest,
                }
            })
            .collect();
        Ok(storage_of(&entries, self.max_storage))
    }
}

/// A fresh JSON store (no digests, `version` 2) with the live variables of any flash image
/// (`nvram convert --to json`), refused like [`JsonStore::save`] if QEMU could not hold it.
///
/// ```
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let json = nvram::jsonstore::to_json(&image)?;
/// assert_eq!(json, b"{\n    \"version\": 2,\n    \"variables\": [\n    ]\n}");
/// # Ok::<(), nvram::jsonstore::JsonStoreError>(())
/// ```
pub fn to_json(image: &[u8]) -> Result<Vec<u8>, JsonStoreError> {
    JsonStore::default().save(image)
}

/// QEMU's count for one variable.
fn qemu_cost(name: &str, data_len: usize, digest_len: usize) -> u64 {
    VARIABLE_OVERHEAD
        + 2 * (name.encode_utf16().count() as u64 + 1)
        + data_len as u64
        + digest_len as u64
}

/// The aligned record of a variable in the image.
fn record_len(name: &str, data_len: usize) -> usize {
    let len = RECORD_HEADER as usize + 2 * (name.encode_utf16().count() + 1) + data_len;
    len.div_ceil(4) * 4
}

const CUSTOM_MODE_GUID: Guid = Guid::parse_or_panic("c076ec0c-7028-4399-a072-71ee5c448b9f");
const SECURE_BOOT_ENABLE_GUID: Guid = Guid::parse_or_panic("f0a30bc7-af08-4556-99c4-001009c93a44");

/// QEMU's count right after it has started on `entries` (`uefi_vars_auth_init`).
fn storage_of(entries: &[Entry], limit: u64) -> QemuStorage {
    let find = |name: &str, guid: Guid| entries.iter().find(|e| e.name == name && e.guid == guid);
    let cost = |e: &Entry| {
        qemu_cost(
            &e.name,
            e.data.len(),
            e.digest.as_ref().map_or(0, |d| d.len() / 2),
        )
    };
    let variables: u64 = entries.iter().map(cost).sum();
    let mut added: i64 = 0;
    // Replaced by one-byte copies (a set deletes the old variable and adds the new one).
    for (name, guid) in [
        ("CustomMode", CUSTOM_MODE_GUID),
        ("VendorKeysNv", guid::EFI_GLOBAL_VARIABLE),
    ] {
        if let Some(old) = find(name, guid) {
            added -= cost(old) as i64;
        }
        added += qemu_cost(name, 1, 0) as i64;
    }
    let pk = find("PK", guid::EFI_GLOBAL_VARIABLE).is_some_and(|e| !e.data.is_empty());
    if pk && find("SecureBootEnable", SECURE_BOOT_ENABLE_GUID).is_none() {
        added += qemu_cost("SecureBootEnable", 1, 0) as i64;
    }
    // Volatile: SetupMode, SignatureSupport (five GUIDs), SecureBoot, VendorKeys.
    added += (qemu_cost("SetupMode", 1, 0)
        + qemu_cost("SignatureSupport", 80, 0)
        + qemu_cost("SecureBoot", 1, 0)
        + qemu_cost("VendorKeys", 1, 0)) as i64;
    QemuStorage {
        variables,
        added_at_start: u64::try_from(added).unwrap_or(0),
        limit,
    }
}

/// A UCS-2LE name with its NUL as ASCII, as QEMU writes names (it would write `?` for any
/// other character).
fn ascii_name(raw: &[u8]) -> Result<String, &'static str> {
    let mut out = String::with_capacity(raw.len() / 2);
    for unit in raw.chunks(2) {
        let u = match *unit {
            [lo, hi] => u16::from_le_bytes([lo, hi]),
            _ => return Err("the stored name has an odd number of bytes"),
        };
        if u == 0 {
            break;
        }
        if u >= 0x80 {
            return Err("the name is not ASCII: QEMU keeps only ASCII names (it would write `?` for this character)");
        }
        out.push(char::from(u as u8));
    }
    if out.is_empty() {
        return Err("empty name");
    }
    Ok(out)
}

/// The image for `entries`: each set through the editor, in order; the variables QEMU holds
/// but the editor refuses to create (attributes `hr` or without `bs`, larger than the
/// per-variable limit) are appended as records directly.
fn fill(entries: &[(usize, Entry)]) -> Result<Vec<u8>, JsonStoreError> {
    let blank = LAYOUT.create();
    let new_editor = |image: &[u8]| {
        let mut editor =
            Editor::new(image).map_err(|error| JsonStoreError::Refused { index: 0, error })?;
        editor.set_limits(JsonStore::limits());
        Ok::<_, JsonStoreError>(editor)
    };
    let mut editor = new_editor(&blank)?;
    for (index, e) in entries {
        let at = e.attr & Attributes::TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0;
        let time = if at {
            Some(e.time.unwrap_or(EfiTime([0; 16])))
        } else {
            None
        };
        match editor.set(
            &e.name,
            e.guid,
            Attributes(e.attr),
            &e.data,
            time,
            Strategy::Append,
        ) {
            Ok(_) => {}
            Err(EditError::InvalidAttributes { .. } | EditError::TooLarge { .. }) => {
                let free = editor
                    .free_space()
                    .map_err(|error| JsonStoreError::Refused {
                        index: *index,
                        error,
                    })?;
                let mut image = editor.finish();
                let at_offset = LAYOUT.variable_region as usize - free;
                let record = raw_record(e, time);
                if record.len() > free {
                    return Err(JsonStoreError::Refused {
                        index: *index,
                        error: EditError::StoreFull {
                            name: e.name.clone(),
                            needed: record.len().div_ceil(4) * 4,
                            available: free,
                        },
                    });
                }
                image[at_offset..at_offset + record.len()].copy_from_slice(&record);
                editor = new_editor(&image)?;
            }
            Err(error) => {
                return Err(JsonStoreError::Refused {
                    index: *index,
                    error,
                })
            }
        }
    }
    Ok(editor.finish())
}

/// The bytes of an authenticated-format record in state 0x3F (docs/varstore-format.md §5.1),
/// as the editor writes them, without padding.
fn raw_record(e: &Entry, time: Option<EfiTime>) -> Vec<u8> {
    let name: Vec<u8> = e
        .name
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut out = Vec::with_capacity(RECORD_HEADER as usize + name.len() + e.data.len());
    out.extend_from_slice(&0x55AAu16.to_le_bytes());
    out.push(0x3F);
    out.push(0);
    out.extend_from_slice(&e.attr.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&time.unwrap_or(EfiTime([0; 16])).0);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.guid.to_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(&e.data);
    out
}

/// The file as QEMU's pretty printer lays it out: members in the order its hash table
/// yields them (`name`, `digest`, `guid`, `attr`, `time`, `data`), four spaces per level.
fn render(version: i64, entries: &[Entry]) -> Vec<u8> {
    let mut s = String::with_capacity(256 + entries.len() * 200);
    let _ = write!(s, "{{\n    \"version\": {version},\n    \"variables\": [");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("\n        {\n");
        let q = |text: &str| serde_json::to_string(text).expect("strings serialize");
        let _ = writeln!(s, "            \"name\": {},", q(&e.name));
        if let Some(d) = &e.digest {
            let _ = writeln!(s, "            \"digest\": \"{d}\",");
        }
        let _ = writeln!(s, "            \"guid\": \"{}\",", e.guid);
        let _ = writeln!(s, "            \"attr\": {},", e.attr);
        if let Some(t) = &e.time {
            let _ = writeln!(s, "            \"time\": \"{}\",", hex::encode(t.0));
        }
        let _ = write!(
            s,
            "            \"data\": \"{}\"\n        }}",
            hex::encode(&e.data)
        );
    }
    s.push_str("\n    ]\n}");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_a_healthy_store_of_its_own() {
        let image = LAYOUT.create();
        let store = Varstore::parse(&image).unwrap();
        assert!(store.findings().is_empty(), "{:?}", store.findings());
        assert!(store.layout().is_none());
        let editor = Editor::new(&image).unwrap();
        assert_eq!(
            editor.free_space().unwrap(),
            LAYOUT.variable_region as usize - 0x64
        );
    }

    #[test]
    fn raw_records_equal_the_editors() {
        let e = Entry {
            name: "Timeout".into(),
            guid: guid::EFI_GLOBAL_VARIABLE,
            attr: 0x27,
            data: vec![1, 2, 3],
            time: Some(EfiTime([7; 16])),
            digest: None,
        };
        let mut editor = Editor::new(&LAYOUT.create()).unwrap();
        editor
            .set(
                &e.name,
                e.guid,
                Attributes(e.attr),
                &e.data,
                e.time,
                Strategy::Append,
            )
            .unwrap();
        let image = editor.finish();
        let record = raw_record(&e, e.time);
        assert_eq!(&image[0x64..0x64 + record.len()], &record[..]);
    }

    #[test]
    fn an_empty_store_after_start_counts_807_bytes() {
        // Measured from QEMU 10.0.2's migration stream (tests/json_store.rs).
        assert_eq!(storage_of(&[], DEFAULT_MAX_STORAGE).total(), 807);
    }
}
