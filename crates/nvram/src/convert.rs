//! A store in another format ([`crate::container::Format`]) or layout: what `nvram convert`
//! does.
//!
//! Between formats the flash image is carried over as it is (raw ↔ qcow2), so every record,
//! deleted ones included, survives. A new layout (`ovmf-2m` → `ovmf-4m`, or a JSON store
//! becoming a flash image) is written variable by variable, the way the firmware would write
//! them into a fresh store: every live variable with its attributes, data and (for
//! time-based authenticated variables) timestamp, in store order. A variable the target
//! cannot hold (too large for its firmware's limits, or the store is full) is an error naming
//! it, and nothing is produced. QEMU's `digest` fields of a JSON source have no place in a
//! flash image (the firmware keeps its own certificate database) and are not carried over.
//!
//! ```
//! use nvram::container::Format;
//! use nvram::convert::{convert, Target};
//! use varstore::edit::{Editor, Strategy};
//! use varstore::{guid, Attributes, Layout};
//!
//! let mut editor = Editor::new(&Layout::by_name("ovmf-2m").unwrap().create())?;
//! editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, Attributes(7), &[3, 0], None, Strategy::Append)?;
//! let small = nvram::container::StoreFile::from_bytes(editor.finish(), None)?;
//! let target = Target { format: Format::Qcow2, layout: Layout::by_name("ovmf-4m") };
//! let (file, report) = convert(&small, &target)?;
//! assert_eq!(report.variables, 1);
//! assert_eq!(report.to_layout.as_deref(), Some("ovmf-4m"));
//! assert!(qcow2::is_qcow2(&file));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::container::{self, ContainerError, Format, StoreFile};
use serde::Serialize;
use varstore::edit::{EditError, Editor, Strategy};
use varstore::{Layout, ParseError, Varstore};

/// What to convert to.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The format of the new file.
    pub format: Format,
    /// The layout of the new flash image; `None` keeps the source's (required when the
    /// source is a JSON store and the target a flash image).
    pub layout: Option<&'static Layout>,
}

/// What [`convert`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Converted {
    /// The source's format.
    pub from: Format,
    /// The new file's format.
    pub to: Format,
    /// The source's built-in layout, if it has one (a JSON store has none).
    pub from_layout: Option<String>,
    /// The new file's built-in layout (`None` for JSON).
    pub to_layout: Option<String>,
    /// Live variables carried over.
    pub variables: usize,
    /// Whether the variables were written into a fresh store (a layout change) rather than
    /// the flash image copied as it is.
    pub relaid: bool,
}

/// Why a store could not be converted. Nothing is produced.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The source holds no readable store.
    #[error("the source is not a readable variable store: {0}")]
    Parse(#[from] ParseError),
    /// A JSON or AWS source has no flash layout of its own.
    #[error(
        "a JSON or AWS store has no flash layout: name the layout of the flash image to write"
    )]
    LayoutNeeded,
    /// A layout was given for a JSON or AWS target, which has none.
    #[error(
        "a JSON or AWS store has no flash layout; a layout applies only to a raw or qcow2 target"
    )]
    LayoutForJson,
    /// A variable does not fit the target (or breaks its rules).
    #[error("{0}")]
    Variable(EditError),
    /// Wrapping the result failed (a JSON target over QEMU's limits…).
    #[error(transparent)]
    Container(#[from] ContainerError),
}

/// Converts `source` to `target`: the content of the new file and a report.
pub fn convert(source: &StoreFile, target: &Target) -> Result<(Vec<u8>, Converted), ConvertError> {
    let store = Varstore::parse(source.image())?;
    let from_layout = if source.format().is_flash() {
        store.layout()
    } else {
        None
    };
    let variables = store.live_variables().len();
    let mut report = Converted {
        from: source.format(),
        to: target.format,
        from_layout: from_layout.map(|l| l.name.to_string()),
        to_layout: None,
        variables,
        relaid: false,
    };
    if !target.format.is_flash() {
        if target.layout.is_some() {
            return Err(ConvertError::LayoutForJson);
        }
        // A JSON or AWS store is made of the live variables, whatever the layout.
        let file = if source.format() == target.format {
            source.rewrap(source.image())?
        } else {
            container::wrap(source.image(), target.format)?
        };
        return Ok((file, report));
    }
    let layout = match (target.layout, from_layout) {
        (Some(to), Some(from)) if to.name == from.name => None,
        (Some(to), _) => Some(to),
        (None, Some(_)) => None,
        (None, None) => return Err(ConvertError::LayoutNeeded),
    };
    report.to_layout = layout.or(from_layout).map(|l| l.name.to_string());
    let image = match layout {
        None => source.image().to_vec(),
        Some(layout) => {
            report.relaid = true;
            relay(&store, layout)?
        }
    };
    Ok((container::wrap(&image, target.format)?, report))
}

/// The live variables of `store` written into a fresh store of `layout`.
fn relay(store: &Varstore<'_>, layout: &Layout) -> Result<Vec<u8>, ConvertError> {
    let mut editor = Editor::new(&layout.create()).map_err(ConvertError::Variable)?;
    for record in store.live_variables() {
        let timestamp = record
            .time()
            .filter(|_| record.attributes.is_time_based_authenticated());
        editor
            .set(
                &record.name(),
                record.guid,
                record.attributes,
                record.data,
                timestamp,
                Strategy::Append,
            )
            .map_err(ConvertError::Variable)?;
    }
    Ok(editor.finish())
}
