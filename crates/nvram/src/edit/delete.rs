//! Deleting a variable by name, its GUID looked up in the store being edited.

use varstore::edit::{EditError, Editor, Outcome, Strategy};
use varstore::json::bounded;
use varstore::{Guid, VariableRecord, Varstore};

/// The one live variable `name` (with vendor `guid` when given) of `store`.
///
/// ```
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let store = varstore::Varstore::parse(&image)?;
/// let missing = nvram::edit::find_variable(&store, "Timeout", None);
/// assert!(matches!(missing, Err(nvram::edit::DeleteError::NotFound { .. })));
/// # Ok::<(), varstore::ParseError>(())
/// ```
pub fn find_variable<'s, 'a>(
    store: &'s Varstore<'a>,
    name: &str,
    guid: Option<Guid>,
) -> Result<&'s VariableRecord<'a>, DeleteError> {
    let matches: Vec<_> = store
        .live_variables()
        .into_iter()
        .filter(|r| guid.is_none_or(|g| g == r.guid) && r.name() == name)
        .collect();
    match matches.as_slice() {
        [] => Err(DeleteError::NotFound {
            name: name.to_string(),
            guid,
        }),
        [one] => Ok(one),
        many => Err(DeleteError::Ambiguous {
            name: name.to_string(),
            guids: many.iter().map(|r| r.guid).collect(),
        }),
    }
}

/// Why [`delete_by_name`] deleted nothing, or [`find_variable`] found nothing.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No live variable has that name (and GUID, when one was given).
    #[error("no variable {}{}", bounded(name), guid.map(|g| format!(" with GUID {g}")).unwrap_or_default())]
    NotFound {
        /// The name.
        name: String,
        /// The GUID asked for, if any.
        guid: Option<Guid>,
    },
    /// No GUID was given and several live variables have that name: which one is meant
    /// cannot be told.
    #[error(
        "{} variables are named {}: {}",
        guids.len(),
        bounded(name),
        guids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        /// The name.
        name: String,
        /// The GUIDs of the live variables of that name, in store order.
        guids: Vec<Guid>,
    },
    /// The editor refused the deletion (or cannot read the store).
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// Deletes the live variable `name` with vendor `guid`, or, without a GUID, the one live
/// variable of that name, looked up in the store `editor` holds. Inside
/// [`edit_file`](crate::edit::edit_file) the lookup and the deletion happen under the same
/// lock, so no other writer can change which variable the name stands for in between.
/// Returns the GUID of the variable deleted and what the editor did.
///
/// ```
/// use nvram::edit::{delete_by_name, edit_file, DeleteError, EditFileError};
/// use varstore::edit::Strategy;
/// use varstore::{guid, Attributes};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("vars.fd");
/// std::fs::write(&path, varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
/// edit_file(&path, |e| e.set("Timeout", guid::EFI_GLOBAL_VARIABLE, Attributes(7), &[5, 0], None, Strategy::Append))?;
/// let deleted = edit_file(&path, |e| delete_by_name(e, "Timeout", None, Strategy::Append))?;
/// assert_eq!(deleted.value.0, guid::EFI_GLOBAL_VARIABLE);
/// let again = edit_file(&path, |e| delete_by_name(e, "Timeout", None, Strategy::Append));
/// assert!(matches!(again, Err(EditFileError::Edit { error: DeleteError::NotFound { .. }, .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn delete_by_name(
    editor: &mut Editor,
    name: &str,
    guid: Option<Guid>,
    strategy: Strategy,
) -> Result<(Guid, Outcome), DeleteError> {
    let guid = match guid {
        Some(g) => g,
        None => find_variable(&editor.store()?, name, None)?.guid,
    };
    match editor.delete(name, guid, strategy) {
        Ok(outcome) => Ok((guid, outcome)),
        Err(EditError::NotFound { .. }) => Err(DeleteError::NotFound {
            name: name.to_string(),
            guid: Some(guid),
        }),
        Err(e) => Err(e.into()),
    }
}
