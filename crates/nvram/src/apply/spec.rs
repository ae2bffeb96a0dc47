//! The one-line spelling of a fleet edit: `NAME[@GUID][:ATTRS]=KIND:VALUE` for a variable to
//! set and `NAME[@GUID]` for one to delete (`nvram apply --set/--delete`).

use super::Step;
use crate::edit::{parse_attributes, AttributeError, DataKind, ValueError};
use varstore::json::bounded;
use varstore::Guid;

/// Why a `--set`/`--delete` spelling of a [`Step`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// No `=` between the variable and its value.
    #[error("expected NAME[@GUID][:ATTRS]=KIND:VALUE")]
    NoValue,
    /// No `KIND:` before the value.
    #[error("expected KIND:VALUE after '=', KIND one of hex, file, string, ascii, u8, u16, u32")]
    NoKind,
    /// An empty variable name.
    #[error("no variable name")]
    NoName,
    /// The text after `@` is neither a GUID nor a known GUID name.
    #[error(
        "{:?} is not a GUID or a known GUID name (such as EfiGlobalVariable)",
        bounded(text)
    )]
    Guid {
        /// The text.
        text: String,
    },
    /// The attributes do not parse.
    #[error("attributes {0}")]
    Attributes(#[from] AttributeError),
    /// The value cannot be encoded as its kind says.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Parses `NAME[@GUID][:ATTRS]=KIND:VALUE` into a [`Step::Set`]: GUID defaults to
/// EfiGlobalVariable, ATTRS to `nv,bs,rt`; KIND is a [`DataKind`] (a `file` value is read
/// here, once).
///
/// ```
/// use nvram::apply::{parse_set, Step};
/// let Step::Set { name, attributes, data, .. } = parse_set("Timeout=u16:5")? else { panic!() };
/// assert_eq!((name.as_str(), attributes.0, data), ("Timeout", 7, vec![5, 0]));
/// assert!(parse_set("Timeout=u16").is_err());
/// # Ok::<(), nvram::apply::SpecError>(())
/// ```
pub fn parse_set(spec: &str) -> Result<Step, SpecError> {
    let (target, value) = spec.split_once('=').ok_or(SpecError::NoValue)?;
    let (kind, value) = value.split_once(':').ok_or(SpecError::NoKind)?;
    let kind: DataKind = kind.parse()?;
    let (name_guid, attrs) = target.split_once(':').unwrap_or((target, "nv,bs,rt"));
    let (name, guid) = parse_name_guid(name_guid)?;
    Ok(Step::Set {
        name,
        guid: guid.unwrap_or(varstore::guid::EFI_GLOBAL_VARIABLE),
        attributes: parse_attributes(attrs)?,
        data: kind.encode(value)?,
        time: None,
    })
}

/// Parses `NAME[@GUID]` into a [`Step::Delete`] (without a GUID: the one live variable of
/// that name in each store).
///
/// ```
/// use nvram::apply::{parse_delete, Step};
/// let Step::Delete { name, guid } = parse_delete("MyVar@EfiGlobalVariable")? else { panic!() };
/// assert_eq!((name.as_str(), guid), ("MyVar", Some(varstore::guid::EFI_GLOBAL_VARIABLE)));
/// # Ok::<(), nvram::apply::SpecError>(())
/// ```
pub fn parse_delete(spec: &str) -> Result<Step, SpecError> {
    let (name, guid) = parse_name_guid(spec)?;
    Ok(Step::Delete { name, guid })
}

/// `NAME[@GUID]`.
fn parse_name_guid(spec: &str) -> Result<(String, Option<Guid>), SpecError> {
    let (name, guid) = match spec.split_once('@') {
        Some((n, g)) => (
            n,
            Some(varstore::guid::parse(g).ok_or_else(|| SpecError::Guid {
                text: g.to_string(),
            })?),
        ),
        None => (spec, None),
    };
    if name.is_empty() {
        return Err(SpecError::NoName);
    }
    Ok((name.to_string(), guid))
}
