//! The JSON variable list that QEMU's uefi-vars device and virt-firmware share (spec §15, §16).

use crate::record::VariableRecord;
use crate::store::Varstore;
use serde::{Deserialize, Serialize};

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
    /// Always 2.
    pub version: u32,
    /// The variables.
    pub variables: Vec<JsonVariable>,
}

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JsonVariable {
    /// Name, without the NUL.
    pub name: String,
    /// Lower-case canonical GUID.
    pub guid: String,
    /// Attribute bits as a decimal integer.
    pub attr: u32,
    /// Data as lower-case hex.
    pub data: String,
    /// The 16-byte EFI_TIME as hex, only for time-based authenticated variables with a
    /// timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl VariableList {
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
            version: 2,
            variables: store
                .live_variables()
                .into_iter()
                .map(JsonVariable::from_record)
                .collect(),
        }
    }
}
