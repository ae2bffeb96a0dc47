//! The JSON variable list that QEMU's uefi-vars device, virt-firmware and python-uefivars
//! share (spec §15, §16): one model, written by export and read by import.
//!
//! ```
//! use varstore::json::VariableList;
//!
//! let list = VariableList::from_json(br#"{"version": 2, "variables": [
//!     {"name": "X", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "01"}]}"#)?;
//! assert_eq!(list.variables[0].attr, 7);
//! assert_eq!(
//!     serde_json::to_string(&list).unwrap(),
//!     r#"{"version":2,"variables":[{"name":"X","guid":"8be4df61-93ca-11d2-aa0d-00e098032b8c","attr":7,"data":"01"}]}"#
//! );
//! # Ok::<(), varstore::json::ListError>(())
//! ```

use crate::record::VariableRecord;
use crate::store::Varstore;
use serde::{Deserialize, Serialize};
use uguid::Guid;

/// Most characters of a name or value from an input that an error message quotes: a 10 MB
/// variable name in an import file must not make a 10 MB message.
pub const QUOTE_CHARS: usize = 64;

/// `text` as an error message quotes it: whole if it has at most [`QUOTE_CHARS`] characters,
/// else its first [`QUOTE_CHARS`] characters followed by `…`.
///
/// ```
/// assert_eq!(varstore::json::bounded("Boot0001"), "Boot0001");
/// let long = "x".repeat(10_000_000);
/// assert_eq!(varstore::json::bounded(&long).chars().count(), varstore::json::QUOTE_CHARS + 1);
/// ```
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => text.into(),
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
    }
}

/// A whole variable list: `{"version": 2, "variables": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableList {
    /// 2, the only version known; python-uefivars writes none (read as 2).
    #[serde(default = "VariableList::current_version")]
    pub version: u32,
    /// The variables.
    pub variables: Vec<JsonVariable>,
}

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JsonVariable {
    /// Name, without the NUL.
    pub name: String,
    /// GUID text: lower case as written, either case as read.
    pub guid: String,
    /// Attribute bits as a decimal integer.
    pub attr: u32,
    /// Data as hex: lower case as written, either case as read.
    pub data: String,
    /// The 16-byte EFI_TIME as 32 hex digits, written only for time-based authenticated
    /// variables with a timestamp; read as `time` (QEMU, virt-fw-vars) or `timestamp`
    /// (python-uefivars).
    #[serde(default, alias = "timestamp", skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// QEMU's certificate digest for non-Secure-Boot authenticated variables (kept as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl JsonVariable {
    /// The JSON form of one record.
    pub fn from_record(record: &VariableRecord<'_>) -> Self {
        let time = record
            .time()
            .filter(|_| record.attributes.is_time_based_authenticated())
            .map(|t| hex::encode(t.0));
        Self {
            name: record.name(),
            guid: record.guid.to_string(),
            attr: record.attributes.0,
            data: hex::encode(record.data),
            time,
            digest: None,
        }
    }
}

/// A JSON document that is not a variable list this crate can read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Not JSON of the expected shape.
    #[error(
        "not a variable list ({{\"version\": 2, \"variables\": [...]}}): {}",
        bounded_json_error(.0)
    )]
    Json(serde_json::Error),
    /// A version this reader does not know.
    #[error("version {0} (only version 2 is known)")]
    Version(u32),
    /// The same variable (name and GUID) is listed twice: which one should win is a guess,
    /// so neither is taken.
    #[error(
        "variables {first} and {second} are both {} with GUID {guid}: a variable may be listed only once",
        bounded(name)
    )]
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
}

// Not `#[from]`, which would make the serde error a `source` too: `{:#}` would then print
// it again, whole.
impl From<serde_json::Error> for ListError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

/// A serde_json message, which quotes the offending value whole (`invalid type: string
/// "…"`), cut so that a huge value makes a short message; the position is kept.
fn bounded_json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if message.chars().count() <= 4 * QUOTE_CHARS {
        return message;
    }
    let head = bounded(&message);
    if error.line() == 0 {
        head.into_owned()
    } else {
        format!("{head} at line {} column {}", error.line(), error.column())
    }
}

impl VariableList {
    /// The version this crate writes and reads.
    pub const VERSION: u32 = 2;

    fn current_version() -> u32 {
        Self::VERSION
    }

    /// Reads a list in any of the dialects (QEMU's uefi-vars, virt-fw-vars, python-uefivars):
    /// version 2 or none, `time` or `timestamp`, either case of hex; refuses a list naming a
    /// variable twice ([`check_duplicates`](Self::check_duplicates)).
    pub fn from_json(json: &[u8]) -> Result<Self, ListError> {
        let list: Self = serde_json::from_slice(json)?;
        if list.version != Self::VERSION {
            return Err(ListError::Version(list.version));
        }
        list.check_duplicates()?;
        Ok(list)
    }

    /// Refuses a list that names a variable (name and GUID, the GUID in either case) twice,
    /// naming both positions. Entries whose GUID does not parse are left to the importer to
    /// report.
    ///
    /// ```
    /// let json = br#"{"variables": [
    ///     {"name": "X", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "01"},
    ///     {"name": "Y", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "01"},
    ///     {"name": "X", "guid": "8BE4DF61-93CA-11D2-AA0D-00E098032B8C", "attr": 7, "data": "02"}]}"#;
    /// let err = varstore::json::VariableList::from_json(json).unwrap_err();
    /// assert!(matches!(err, varstore::json::ListError::Duplicate { first: 0, second: 2, .. }));
    /// ```
    pub fn check_duplicates(&self) -> Result<(), ListError> {
        let mut seen: std::collections::HashMap<(&str, Guid), usize> =
            std::collections::HashMap::with_capacity(self.variables.len());
        for (second, v) in self.variables.iter().enumerate() {
            let Ok(guid) = Guid::try_parse(&v.guid) else {
                continue;
            };
            if let Some(&first) = seen.get(&(v.name.as_str(), guid)) {
                return Err(ListError::Duplicate {
                    first,
                    second,
                    name: v.name.clone(),
                    guid,
                });
            }
            seen.insert((v.name.as_str(), guid), second);
        }
        Ok(())
    }

    /// The live variables of a store, in store order.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    /// let store = varstore::Varstore::parse(&image).unwrap();
    /// let list = varstore::json::VariableList::from_store(&store);
    /// assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"version":2,"variables":[]}"#);
    /// ```
    pub fn from_store(store: &Varstore<'_>) -> Self {
        Self {
            version: Self::VERSION,
            variables: store
                .live_variables()
                .into_iter()
                .map(JsonVariable::from_record)
                .collect(),
        }
    }
}
