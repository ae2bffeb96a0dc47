//! The serde form of the device's snapshot types, behind the `serde` feature.
//!
//! [`PflashState`](crate::PflashState), [`WriteBuffer`](crate::WriteBuffer),
//! [`Geometry`](crate::Geometry) and [`Compat`](crate::Compat) implement `Serialize` and
//! `Deserialize` with their field names (unknown fields are refused; `Compat` is its
//! command-line name, `"qemu-10.0"`), so that a VMM can put them in a snapshot format of its
//! own. What the plain types do not carry is a version: wrap the outermost one in
//! [`Versioned`], which writes [`FORMAT_VERSION`] before the value, and unwrap it with
//! [`Versioned::into_inner`], which refuses another version with a typed
//! [`UnsupportedVersion`] instead of misreading fields whose meaning changed.
//!
//! ```
//! use pflash::serde_format::{UnsupportedVersion, Versioned};
//! use pflash::{Geometry, PflashState};
//!
//! let saved = Versioned::new((Geometry::q35(0x84000)?, PflashState::default()));
//! let json = serde_json::to_string(&saved)?;
//! assert!(json.starts_with(r#"{"format_version":1,"value":"#));
//! let (geometry, state): (Geometry, PflashState) =
//!     serde_json::from_str::<Versioned<_>>(&json)?.into_inner()?;
//! assert_eq!(state, PflashState::default());
//!
//! let future = json.replacen(r#""format_version":1"#, r#""format_version":7"#, 1);
//! let refused = serde_json::from_str::<Versioned<(Geometry, PflashState)>>(&future)?.into_inner();
//! assert_eq!(refused.unwrap_err(), UnsupportedVersion { found: 7, supported: 1 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// The version of the serde form that this build writes, and the only one it reads.
///
/// Bump it when a field of a serialized type changes meaning or is removed; adding a
/// type's field is a change too, since the types refuse unknown fields.
pub const FORMAT_VERSION: u32 = 1;

/// A serialized value of another format version than this build's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "pflash serde format version {found} is not supported (this build reads version {supported})"
)]
pub struct UnsupportedVersion {
    /// The version found.
    pub found: u32,
    /// The version this build reads ([`FORMAT_VERSION`]).
    pub supported: u32,
}

/// A value with the format version in front of it: `{"format_version": 1, "value": …}`.
///
/// Deserializing it succeeds for any version (a value of an unknown version is skipped, in
/// self-describing formats such as JSON); [`into_inner`](Self::into_inner) then gives the
/// value or the typed refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    version: u32,
    value: Option<T>,
}

impl<T> Versioned<T> {
    /// `value` at this build's [`FORMAT_VERSION`].
    pub fn new(value: T) -> Self {
        Versioned {
            version: FORMAT_VERSION,
            value: Some(value),
        }
    }

    /// The format version read (or [`FORMAT_VERSION`] for a new one).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The value, if its version is this build's.
    ///
    /// # Errors
    ///
    /// [`UnsupportedVersion`] naming the version found.
    pub fn into_inner(self) -> Result<T, UnsupportedVersion> {
        match self.value {
            Some(value) if self.version == FORMAT_VERSION => Ok(value),
            _ => Err(UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            }),
        }
    }
}

const FIELDS: &[&str] = &["format_version", "value"];

impl<T: Serialize> Serialize for Versioned<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Versioned", 2)?;
        s.serialize_field("format_version", &self.version)?;
        s.serialize_field("value", &self.value)?;
        s.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Versioned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Versioned", FIELDS, VersionedVisitor(PhantomData))
    }
}

struct VersionedVisitor<T>(PhantomData<T>);

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    FormatVersion,
    Value,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for VersionedVisitor<T> {
    type Value = Versioned<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pflash value with its format version")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut version = None;
        let mut value = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::FormatVersion if version.is_none() => version = Some(map.next_value()?),
                Field::Value if value.is_none() => {
                    // The version is written first; a value of another version is skipped
                    // rather than misread.
                    value = match version {
                        Some(v) if v != FORMAT_VERSION => {
                            map.next_value::<IgnoredAny>()?;
                            None
                        }
                        _ => map.next_value::<Option<T>>()?,
                    };
                }
                Field::FormatVersion => return Err(de::Error::duplicate_field("format_version")),
                Field::Value => return Err(de::Error::duplicate_field("value")),
            }
        }
        let version = version.ok_or_else(|| de::Error::missing_field("format_version"))?;
        if version == FORMAT_VERSION && value.is_none() {
            return Err(de::Error::missing_field("value"));
        }
        Ok(Versioned { version, value })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let version: u32 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        if version != FORMAT_VERSION {
            // A non-self-describing format cannot skip what it does not know: stop here.
            return Ok(Versioned {
                version,
                value: None,
            });
        }
        let value: Option<T> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if value.is_none() {
            return Err(de::Error::missing_field("value"));
        }
        Ok(Versioned { version, value })
    }
}
