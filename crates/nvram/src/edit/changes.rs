//! What an edit changed, variable by variable: the live variables taken before and after it
//! and compared (for reports such as `--json` that say which variables an operation touched,
//! whatever the operation was).

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use varstore::edit::{Change, EditError, Editor};
use varstore::Guid;

/// The live variables of a store by name and GUID, in store order, each with what makes two
/// copies equal (attributes, data, timestamp).
#[derive(Debug, Clone)]
pub struct Snapshot {
    order: Vec<VariableKey>,
    content: HashMap<VariableKey, Content>,
}

/// What makes two copies of a variable equal: attributes, data and timestamp.
type Content = (u32, Vec<u8>, Option<[u8; 16]>);

/// A variable's name and vendor GUID.
type VariableKey = (String, Guid);

impl Snapshot {
    /// The editor's live variables now.
    pub fn of(editor: &Editor) -> Result<Self, EditError> {
        let store = editor.store()?;
        let live = store.live_variables();
        let mut order = Vec::with_capacity(live.len());
        let mut content = HashMap::with_capacity(live.len());
        for r in live {
            let key = (r.name(), r.guid);
            let value = (r.attributes.0, r.data.to_vec(), r.timestamp.map(|t| t.0));
            if content.insert(key.clone(), value).is_none() {
                order.push(key);
            }
        }
        Ok(Self { order, content })
    }
}

/// One variable an edit touched (serialized as `{"name", "guid", "change"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedVariable {
    /// Variable name.
    pub name: String,
    /// Vendor GUID.
    #[serde(serialize_with = "crate::edit::changes::guid_text")]
    pub guid: Guid,
    /// Added, replaced, unchanged or deleted.
    #[serde(serialize_with = "crate::edit::changes::change_text")]
    pub change: Change,
}

fn guid_text<S: serde::Serializer>(guid: &Guid, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(guid)
}

fn change_text<S: serde::Serializer>(change: &Change, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(change.as_str())
}

/// What an edit did from `before` to `after`: the `named` variables first, in that order
/// (unchanged ones included; one absent before and after is left out), then every other
/// variable that was added, replaced or deleted, in store order.
///
/// ```
/// use nvram::edit::{changes, Snapshot};
/// use varstore::edit::{Change, Editor, Strategy};
/// use varstore::{guid, Attributes};
///
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let mut editor = Editor::new(&image)?;
/// let before = Snapshot::of(&editor)?;
/// editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, Attributes(7), &[5, 0], None, Strategy::Append)?;
/// let after = Snapshot::of(&editor)?;
/// let changed = changes(&before, &after, &[]);
/// assert_eq!((changed[0].name.as_str(), changed[0].change), ("Timeout", Change::Added));
/// # Ok::<(), varstore::edit::EditError>(())
/// ```
pub fn changes(
    before: &Snapshot,
    after: &Snapshot,
    named: &[(String, Guid)],
) -> Vec<ChangedVariable> {
    let change_of = |key: &VariableKey| -> Option<Change> {
        match (before.content.get(key), after.content.get(key)) {
            (None, None) => None,
            (None, Some(_)) => Some(Change::Added),
            (Some(_), None) => Some(Change::Deleted),
            (Some(a), Some(b)) if a == b => Some(Change::Unchanged),
            (Some(_), Some(_)) => Some(Change::Replaced),
        }
    };
    let changed = |key: &VariableKey, change| ChangedVariable {
        name: key.0.clone(),
        guid: key.1,
        change,
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for key in named {
        if !seen.insert(key.clone()) {
            continue;
        }
        if let Some(change) = change_of(key) {
            out.push(changed(key, change));
        }
    }
    for key in after.order.iter().chain(&before.order) {
        if !seen.insert(key.clone()) {
            continue;
        }
        match change_of(key) {
            Some(Change::Unchanged) | None => {}
            Some(change) => out.push(changed(key, change)),
        }
    }
    out
}
