//! shim's and fallback's settings kept in variables under shim's GUID (605dab50-…): debug and
//! verbose switches and the SBAT revocation level, written as virt-fw-vars writes them.
//!
//! shim and its fallback loader read these at boot: `SHIM_DEBUG` makes shim wait for a
//! debugger, `SHIM_VERBOSE` and `FALLBACK_VERBOSE` make them print what they do, and
//! `FB_NO_REBOOT` stops fallback from resetting the machine after it created boot entries.
//! An enabled switch is the 32-bit number 1 (virt-fw-vars' `set_uint32`); a disabled one is
//! the variable deleted, which shim takes as off. `SbatLevel` is the SBAT revocation text
//! (`sbat,1,2021030218\n…`) that shim compares binaries' `.sbat` sections against.
//!
//! ```
//! use nvram::shim::{set_setting, Setting};
//! use varstore::edit::{Editor, Strategy};
//!
//! let mut editor = Editor::new(&varstore::Layout::by_name("ovmf-4m").unwrap().create())?;
//! set_setting(&mut editor, Setting::Verbose, true, Strategy::Append)?;
//! let store = editor.store()?;
//! let verbose = store.live_variables().into_iter().find(|v| v.name() == "SHIM_VERBOSE").unwrap();
//! assert_eq!((verbose.attributes.0, verbose.data), (0x3, &[1, 0, 0, 0][..]));
//! # Ok::<(), varstore::edit::EditError>(())
//! ```

use serde::Serialize;
use std::path::Path;
use varstore::edit::{Change, EditError, Editor, Strategy};
use varstore::guid::{self, Guid};
use varstore::Attributes;

/// shim's vendor GUID, under which all of its variables live.
pub const SHIM_GUID: Guid = guid::SHIM_LOCK;

/// Largest SBAT level file read: shim's own revocation texts are a few hundred bytes; the
/// variable must fit the firmware's variable size limit anyway.
pub const MAX_SBAT_LEVEL_LEN: u64 = 64 * 1024;

/// A switch of shim or fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Setting {
    /// `SHIM_DEBUG`: shim waits for a debugger to attach.
    Debug,
    /// `SHIM_VERBOSE`: shim prints what it does.
    Verbose,
    /// `FALLBACK_VERBOSE`: fallback prints what it does.
    FallbackVerbose,
    /// `FB_NO_REBOOT`: fallback does not reset the machine after creating boot entries.
    FallbackNoReboot,
}

impl Setting {
    /// The variable.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Debug => "SHIM_DEBUG",
            Self::Verbose => "SHIM_VERBOSE",
            Self::FallbackVerbose => "FALLBACK_VERBOSE",
            Self::FallbackNoReboot => "FB_NO_REBOOT",
        }
    }

    /// Its attributes as virt-firmware writes them: NV+BS, and NV+BS+RT for `FB_NO_REBOOT`.
    pub fn attributes(self) -> Attributes {
        match self {
            Self::FallbackNoReboot => Attributes(0x7),
            _ => Attributes(0x3),
        }
    }
}

/// What an edit of shim's variables did.
#[derive(Debug, Clone, Serialize)]
pub struct ShimChange {
    /// The variable.
    pub name: &'static str,
    /// Its GUID (shim's).
    pub guid: String,
    /// added, replaced, deleted or unchanged.
    pub change: &'static str,
}

fn change(name: &'static str, change: Change) -> ShimChange {
    ShimChange {
        name,
        guid: SHIM_GUID.to_string(),
        change: change.as_str(),
    }
}

/// Turns `setting` on (the variable holds the 32-bit number 1) or off (the variable is
/// deleted; already absent is unchanged).
pub fn set_setting(
    editor: &mut Editor,
    setting: Setting,
    on: bool,
    strategy: Strategy,
) -> Result<ShimChange, EditError> {
    let name = setting.variable();
    if on {
        let outcome = editor.set(
            name,
            SHIM_GUID,
            setting.attributes(),
            &1u32.to_le_bytes(),
            None,
            strategy,
        )?;
        return Ok(change(name, outcome.change));
    }
    match editor.delete(name, SHIM_GUID, strategy) {
        Ok(outcome) => Ok(change(name, outcome.change)),
        Err(EditError::NotFound { .. }) => Ok(change(name, Change::Unchanged)),
        Err(e) => Err(e),
    }
}

/// Sets `SbatLevel` (NV+BS, shim's GUID) to `level`, byte for byte.
pub fn set_sbat_level(
    editor: &mut Editor,
    level: &[u8],
    strategy: Strategy,
) -> Result<ShimChange, EditError> {
    let outcome = editor.set(
        "SbatLevel",
        SHIM_GUID,
        Attributes(0x3),
        level,
        None,
        strategy,
    )?;
    Ok(change("SbatLevel", outcome.change))
}

/// Reads an SBAT level file (a regular file of at most [`MAX_SBAT_LEVEL_LEN`] bytes).
pub fn read_sbat_level(path: &Path) -> Result<Vec<u8>, safefile::InputError> {
    safefile::read_input(
        path,
        safefile::Accept::RegularFile,
        MAX_SBAT_LEVEL_LEN,
        "an SBAT level",
    )
}
