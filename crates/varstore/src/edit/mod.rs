//! Editing a variable store offline: set, replace and delete variables the way the firmware
//! does, so that the result is a store the firmware accepts as it is (spec §8, §9.5).
//!
//! The reader ([`Varstore`]) borrows an image and never changes it; the [`Editor`] owns a copy,
//! changes it one operation at a time and hands it back with [`Editor::finish`]. It reads the
//! store once, with the same walk as the reader, into an index of the variables' copies, and
//! keeps that index in step with every change it makes, so both always agree on what is live
//! and an operation costs time in proportion to the variable it touches, not to the store
//! (an import of thousands of variables into a 64 MiB AAVMF image is linear in their number).
//! A compaction rewrites the variable area, so it costs time in proportion to the live
//! variables; a store the editor itself compacted stays packed while variables are only
//! added, so adding with [`Strategy::Compact`] then appends too (with the same result).
//!
//! Two strategies ([`Strategy`]):
//!
//! - **append** does what the firmware's `SetVariable` does (spec §8.1, §8.2): the new copy goes
//!   after the last record and old copies are retired by clearing bits of their state byte
//!   (0x3F → 0x3E → 0x3C, or 0x3F → 0x3D for a delete). Every byte of the store only changes
//!   from 1 to 0, as on NOR flash without an erase. When the new copy does not fit, or would
//!   leave less free space than the firmware keeps for itself (it would compact the store at
//!   its next boot anyway, spec §8.5), the store is compacted first, as the firmware's
//!   `Reclaim` does.
//! - **compact** rewrites the variable area with the live variables only, in store order, each
//!   in state 0x3F with 0xFF padding, the new copy last (spec §8.3, what a reclaim and
//!   virt-fw-vars produce).
//!
//! Neither touches anything outside the variable area: the firmware volume header, the store
//! header, the FTW working block and the spare stay as they were. A store whose FTW queue holds
//! an unfinished write is refused, because the firmware could copy the spare area over the
//! store at its next boot and undo the edit (spec §9.4, §9.5).
//!
//! ```
//! use varstore::edit::{Change, Editor, Strategy};
//! use varstore::{guid, Attributes, Layout, Varstore};
//!
//! let image = Layout::by_name("ovmf-4m").unwrap().create();
//! let mut editor = Editor::new(&image)?;
//! let attrs = Attributes(0x7); // nv,bs,rt
//! let timeout = 5u16.to_le_bytes();
//! let outcome = editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, attrs, &timeout, None, Strategy::Append)?;
//! assert_eq!(outcome.change, Change::Added);
//! let same = editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, attrs, &timeout, None, Strategy::Append)?;
//! assert_eq!(same.change, Change::Unchanged);
//!
//! let edited = editor.finish();
//! let store = Varstore::parse(&edited)?;
//! assert!(store.is_healthy());
//! assert_eq!(store.find("Timeout", None).unwrap().data, [5, 0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::finding::FirmwareVerdict;
use crate::format::{
    align_header, AuthVariableHeader, PlainVariableHeader, STORE_HEADER_LEN, VARIABLE_START_ID,
};
use crate::record::{Attributes, EfiTime, RecordState};
use crate::store::{StoreFormat, Varstore};
use crate::{Guid, ParseError};
use std::collections::HashMap;
use std::fmt;
use thiserror::Error;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// `VAR_ADDED` (spec §7).
const STATE_ADDED: u8 = 0x3F;
/// AND mask of `VAR_IN_DELETED_TRANSITION` (spec §7).
const MASK_IN_DELETED_TRANSITION: u8 = 0xFE;
/// AND mask of `VAR_DELETED` (spec §7).
const MASK_DELETED: u8 = 0xFD;

mod records;
mod types;

use records::*;
pub use types::{Change, EditError, Limits, Outcome, Strategy};

/// An editor over an owned copy of a store image. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Editor {
    image: Vec<u8>,
    format: StoreFormat,
    first_record: usize,
    store_end: usize,
    limits: Limits,
    index: Index,
}

impl Editor {
    /// Starts editing a copy of `image`.
    ///
    /// Refuses an image that is not a variable store, one the firmware would refuse (see
    /// [`FirmwareVerdict::Refuse`]) and one whose FTW queue holds an unfinished write.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-2m").unwrap().create();
    /// let editor = varstore::edit::Editor::new(&image)?;
    /// assert_eq!(editor.limits().max_auth_variable_size, 0x2800);
    /// # Ok::<(), varstore::edit::EditError>(())
    /// ```
    pub fn new(image: &[u8]) -> Result<Self, EditError> {
        let store = Varstore::parse(image)?;
        if let Some(f) = store
            .findings()
            .iter()
            .find(|f| f.verdict == FirmwareVerdict::Refuse)
        {
            return Err(EditError::Unusable {
                offset: f.offset,
                field: f.field,
                problem: f.message.clone(),
            });
        }
        if let Some(w) = store
            .ftw()
            .and_then(|ftw| ftw.writes.iter().find(|w| !w.complete))
        {
            return Err(EditError::PendingFtwWrite { offset: w.offset });
        }
        let store_start = usize::try_from(store.store().offset).expect("offset within the image");
        let first_record =
            align_header(store_start + STORE_HEADER_LEN).expect("store header within the image");
        let store_end = usize::try_from(store.store_end()).expect("offset within the image");
        let limits = store.layout().map_or(Limits::CONSERVATIVE, |l| Limits {
            max_variable_size: l.max_variable_size,
            max_auth_variable_size: l.max_auth_variable_size,
        });
        let format = store.store().format;
        let index = Index::of(&store, format.header_len());
        Ok(Self {
            format,
            image: image.to_vec(),
            first_record,
            store_end,
            limits,
            index,
        })
    }

    /// The per-variable limits in force: those of the matching built-in layout, else
    /// [`Limits::CONSERVATIVE`].
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Overrides the per-variable limits, for a firmware built with other PCDs.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The current image.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// Reads the current image, e.g. to look up variables between edits.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    /// let editor = varstore::edit::Editor::new(&image)?;
    /// assert!(editor.store()?.live_variables().is_empty());
    /// # Ok::<(), varstore::edit::EditError>(())
    /// ```
    pub fn store(&self) -> Result<Varstore<'_>, EditError> {
        Ok(Varstore::parse(&self.image)?)
    }

    /// Bytes free after the last record: what the firmware can append before it must
    /// compact the store.
    pub fn free_space(&self) -> Result<usize, EditError> {
        Ok(self.store_end - self.index.free_offset)
    }

    /// Ends editing and returns the image.
    pub fn finish(self) -> Vec<u8> {
        self.image
    }

    /// Creates or replaces the variable `name` in vendor `guid`.
    ///
    /// `attributes` must follow the firmware's rules (spec §5.4): NV set (a flash store holds
    /// only non-volatile variables), BS set (RT requires it, NV alone is invalid), no HR (OVMF
    /// and ArmVirtQemu reserve no space for hardware error records), no AW (deprecated and
    /// rejected), no APPEND_WRITE (an operation, not an attribute). `data` must not be empty
    /// (that is a delete). `timestamp` is for time-based authenticated (AT) variables only;
    /// without one an AT variable keeps the timestamp of the copy it replaces, or gets none
    /// (all zero: any later authenticated write is newer).
    ///
    /// Setting exactly what is there already changes nothing ([`Change::Unchanged`]).
    ///
    /// ```
    /// use varstore::edit::{Editor, EditError, Strategy};
    /// use varstore::{guid, Attributes, Layout};
    ///
    /// let image = Layout::by_name("ovmf-4m").unwrap().create();
    /// let mut editor = Editor::new(&image)?;
    /// // RT without BS is refused, like SetVariable does.
    /// let err = editor.set("X", guid::EFI_GLOBAL_VARIABLE, Attributes(0x5), b"x", None, Strategy::Append);
    /// assert!(matches!(err, Err(EditError::InvalidAttributes { .. })));
    /// # Ok::<(), EditError>(())
    /// ```
    pub fn set(
        &mut self,
        name: &str,
        guid: Guid,
        attributes: Attributes,
        data: &[u8],
        timestamp: Option<EfiTime>,
        strategy: Strategy,
    ) -> Result<Outcome, EditError> {
        let name_raw = encode_name(name)?;
        self.check_attributes(name, attributes)?;
        if data.is_empty() {
            return Err(EditError::EmptyData { name: name.into() });
        }
        let at = attributes.is_time_based_authenticated();
        if timestamp.is_some() && !at {
            return Err(EditError::TimestampWithoutAt { name: name.into() });
        }
        let size = self.format.header_len() + name_raw.len() + data.len();
        let limit = if at {
            self.limits.max_auth_variable_size
        } else {
            self.limits.max_variable_size
        };
        if size > limit as usize {
            return Err(EditError::TooLarge {
                name: name.into(),
                size,
                limit,
                kind: if at {
                    "authenticated"
                } else {
                    "non-authenticated"
                },
            });
        }
        let key = (name_raw, guid);
        let snap = self.snapshot(&key)?;
        let timestamp = match (at, timestamp) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(
                snap.live
                    .as_ref()
                    .and_then(|l| l.2)
                    .unwrap_or(EfiTime([0; 16])),
            ),
        };
        let change = match &snap.live {
            Some((old_attrs, old_data, old_time)) => {
                let same_time = self.format == StoreFormat::Plain
                    || old_time.unwrap_or(EfiTime([0; 16]))
                        == timestamp.unwrap_or(EfiTime([0; 16]));
                if *old_attrs == attributes.0 && old_data == data && same_time {
                    return Ok(Outcome {
                        change: Change::Unchanged,
                        compacted: false,
                    });
                }
                Change::Replaced
            }
            None => Change::Added,
        };
        let record = self.build_record(&key, attributes.0, data, timestamp);
        let record_len = align_header(record.len()).expect("record length is small");
        let free_after = self.store_end.saturating_sub(snap.free_offset + record_len);
        let fits = snap.free_offset + record_len <= self.store_end;
        // Leaving less free space than the firmware keeps in reserve would only make it
        // compact the store at the next boot (ReclaimForOS): do it now instead, if compacting
        // gets above that reserve (else appending is as good and keeps to bit clears).
        let reserve = self.limits.largest() as usize;
        let free_compacted =
            (self.store_end - self.first_record).saturating_sub(snap.other_live_bytes + record_len);
        let roomy = free_after >= reserve || free_compacted < reserve;
        let append = match strategy {
            Strategy::Append => snap.clean && fits && roomy,
            // A packed store compacts to itself, so compacting it with a new variable last
            // is appending that variable.
            Strategy::Compact => self.index.packed && snap.copies.is_empty() && fits,
        };
        if append {
            // The order the firmware uses (spec §8.2): older in-transition twins deleted,
            // the live copy in transition, the new copy, the live copy deleted. Offline only
            // the final bytes matter, and they are the same.
            let at = snap.free_offset;
            self.image[at..at + record.len()].copy_from_slice(&record);
            for &(offset, _) in &snap.copies {
                self.image[offset + 2] &= MASK_IN_DELETED_TRANSITION & MASK_DELETED;
            }
            let old_live_bytes = self.index.live_bytes - snap.other_live_bytes;
            self.index.live_bytes = snap.other_live_bytes + record_len;
            self.index.free_offset = at + record_len;
            // Retired copies stay behind as dead records.
            self.index.packed &= snap.copies.is_empty();
            debug_assert!(snap.copies.is_empty() == (old_live_bytes == 0));
            self.index.keys.insert(
                key,
                Copies {
                    copies: vec![(at, STATE_ADDED)],
                    live: Some(at),
                },
            );
            return Ok(Outcome {
                change,
                compacted: strategy == Strategy::Compact,
            });
        }
        self.compact_with(Some(&key), Some((name, &record)))?;
        Ok(Outcome {
            change,
            compacted: true,
        })
    }

    /// Deletes the live variable `name` in vendor `guid`.
    ///
    /// With [`Strategy::Append`] its copies are marked deleted in place (0x3F → 0x3D, an
    /// in-transition 0x3E → 0x3C), as the firmware does; with [`Strategy::Compact`] the
    /// variable area is rewritten without them.
    ///
    /// ```
    /// use varstore::edit::{Change, Editor, EditError, Strategy};
    /// use varstore::{guid, Attributes, Layout};
    ///
    /// let image = Layout::by_name("ovmf-4m").unwrap().create();
    /// let mut editor = Editor::new(&image)?;
    /// editor.set("Gone", guid::EFI_GLOBAL_VARIABLE, Attributes(0x3), b"x", None, Strategy::Append)?;
    /// let outcome = editor.delete("Gone", guid::EFI_GLOBAL_VARIABLE, Strategy::Append)?;
    /// assert_eq!(outcome.change, Change::Deleted);
    /// assert!(matches!(
    ///     editor.delete("Gone", guid::EFI_GLOBAL_VARIABLE, Strategy::Append),
    ///     Err(EditError::NotFound { .. })
    /// ));
    /// # Ok::<(), EditError>(())
    /// ```
    pub fn delete(
        &mut self,
        name: &str,
        guid: Guid,
        strategy: Strategy,
    ) -> Result<Outcome, EditError> {
        let key = (encode_name(name)?, guid);
        let snap = self.snapshot(&key)?;
        if snap.live.is_none() {
            return Err(EditError::NotFound {
                name: name.into(),
                guid,
            });
        }
        if strategy == Strategy::Append && snap.clean {
            for &(offset, _) in &snap.copies {
                self.image[offset + 2] &= MASK_DELETED;
            }
            self.index.keys.remove(&key);
            self.index.live_bytes = snap.other_live_bytes;
            self.index.packed = false;
            return Ok(Outcome {
                change: Change::Deleted,
                compacted: false,
            });
        }
        self.compact_with(Some(&key), None)?;
        Ok(Outcome {
            change: Change::Deleted,
            compacted: true,
        })
    }

    /// Rewrites the variable area with the live variables only, as the firmware's reclaim
    /// does (spec §8.3). The live view does not change.
    ///
    /// ```
    /// use varstore::edit::{Editor, Strategy};
    /// use varstore::{guid, Attributes, Layout, Varstore};
    ///
    /// let image = Layout::by_name("ovmf-4m").unwrap().create();
    /// let mut editor = Editor::new(&image)?;
    /// editor.set("V", guid::EFI_GLOBAL_VARIABLE, Attributes(0x3), b"1", None, Strategy::Append)?;
    /// editor.set("V", guid::EFI_GLOBAL_VARIABLE, Attributes(0x3), b"2", None, Strategy::Append)?;
    /// editor.compact()?;
    /// let image = editor.finish();
    /// assert_eq!(Varstore::parse(&image)?.records().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&mut self) -> Result<(), EditError> {
        self.compact_with(None, None)
    }

    fn check_attributes(&self, name: &str, attributes: Attributes) -> Result<(), EditError> {
        let a = attributes.0;
        let refuse = |reason| {
            Err(EditError::InvalidAttributes {
                name: name.into(),
                attributes: a,
                reason,
            })
        };
        if a & !0x7F != 0 {
            return refuse("unknown attribute bits");
        }
        if a & Attributes::APPEND_WRITE != 0 {
            return refuse(
                "append is an operation of SetVariable, not an attribute that is stored",
            );
        }
        if a & Attributes::NON_VOLATILE == 0 {
            return refuse(
                "without nv the variable is volatile and does not live in the flash store",
            );
        }
        if a & Attributes::BOOTSERVICE_ACCESS == 0 {
            return refuse(if a & Attributes::RUNTIME_ACCESS != 0 {
                "rt requires bs"
            } else {
                "nv alone is invalid: add bs (and rt for access from the OS)"
            });
        }
        if a & Attributes::HARDWARE_ERROR_RECORD != 0 {
            return refuse("hr (hardware error record) is unusable: OVMF and ArmVirtQemu reserve no space for it (PcdHwErrStorageSize 0)");
        }
        if a & Attributes::AUTHENTICATED_WRITE_ACCESS != 0 {
            return refuse(
                "aw (count-based authentication) is deprecated and the firmware rejects it; use at",
            );
        }
        if attributes.is_time_based_authenticated() && self.format == StoreFormat::Plain {
            return refuse("at needs the authenticated store format; this store has the plain one");
        }
        Ok(())
    }

    fn snapshot(&self, key: &Key) -> Result<Snapshot, EditError> {
        let entry = self.index.keys.get(key);
        let live = entry.and_then(|c| c.live).map(|at| {
            let (attributes, data, timestamp) = self.read_record(at);
            (attributes, data.to_vec(), timestamp)
        });
        let live_bytes = live.as_ref().map_or(0, |l| {
            record_size(self.format.header_len(), key.0.len(), l.1.len())
        });
        Ok(Snapshot {
            copies: entry.map_or_else(Vec::new, |c| c.copies.clone()),
            live,
            free_offset: self.index.free_offset,
            other_live_bytes: self.index.live_bytes - live_bytes,
            clean: self.index.clean,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{guid, Layout};

    #[test]
    fn names_are_ucs2_with_a_nul() {
        assert_eq!(encode_name("Ab").unwrap(), [b'A', 0, b'b', 0, 0, 0]);
        assert!(encode_name("").is_err());
        assert!(encode_name("a\0b").is_err());
        assert!(encode_name("\u{1F600}").is_err());
    }

    #[test]
    fn a_record_has_the_firmware_layout() {
        let image = Layout::by_name("ovmf-4m").unwrap().create();
        let mut editor = Editor::new(&image).unwrap();
        editor
            .set(
                "Timeout",
                guid::EFI_GLOBAL_VARIABLE,
                Attributes(7),
                &[0, 0],
                None,
                Strategy::Append,
            )
            .unwrap();
        let out = editor.finish();
        // The real record from OVMF_VARS_4M.ms.fd (spec §5.1).
        let expected = "aa553f0007000000000000000000000000000000000000000000000000000000\
                        000000001000000002000000\
                        61dfe48bca93d211aa0d00e098032b8c\
                        540069006d0065006f00750074000000\
                        0000ffff";
        assert_eq!(hex::encode(&out[0x64..0x64 + 80]), expected);
        assert!(out[0x64 + 80..0x40000].iter().all(|&b| b == 0xFF));
    }

    /// The editor's index says what a fresh parse says, and a store it calls packed is what
    /// compacting it gives.
    fn assert_index_agrees(editor: &Editor) {
        let store = Varstore::parse(&editor.image).unwrap();
        let fresh = Index::of(&store, editor.format.header_len());
        let index = &editor.index;
        assert_eq!(index.keys, fresh.keys);
        assert_eq!(index.free_offset, fresh.free_offset);
        assert_eq!(index.live_bytes, fresh.live_bytes);
        assert_eq!(index.clean, fresh.clean);
        if index.packed {
            let mut compacted = editor.clone();
            compacted.compact().unwrap();
            assert!(
                compacted.image == editor.image,
                "packed, but compacting changes it"
            );
        }
    }

    #[test]
    fn the_index_follows_every_edit() {
        let layout = Layout::by_name("ovmf-2m").unwrap();
        let mut image = layout.create();
        // Start from a store with an interrupted update: a live copy in transition (0x3E)
        // and an erased-state header after it, which makes the firmware reclaim at boot.
        {
            let mut editor = Editor::new(&image).unwrap();
            for name in ["A", "B", "C"] {
                let attrs = Attributes(7);
                editor
                    .set(
                        name,
                        guid::EFI_GLOBAL_VARIABLE,
                        attrs,
                        b"x",
                        None,
                        Strategy::Append,
                    )
                    .unwrap();
            }
            let free = editor.index.free_offset;
            image = editor.finish();
            let first = 0x64; // "A"
            image[first + 2] = 0x3E;
            image[free..free + 2].copy_from_slice(&VARIABLE_START_ID.to_le_bytes());
        }
        let mut editor = Editor::new(&image).unwrap();
        assert!(!editor.index.clean);
        assert_index_agrees(&editor);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..3000 {
            let name = format!("V{}", next(40));
            let strategy = if next(5) == 0 {
                Strategy::Compact
            } else {
                Strategy::Append
            };
            match next(10) {
                0..=5 => {
                    let data = vec![step as u8; 1 + next(700) as usize];
                    let attrs = Attributes(if next(2) == 0 { 0x7 } else { 0x27 });
                    let _ = editor.set(
                        &name,
                        guid::EFI_GLOBAL_VARIABLE,
                        attrs,
                        &data,
                        None,
                        strategy,
                    );
                }
                6..=8 => {
                    let _ = editor.delete(&name, guid::EFI_GLOBAL_VARIABLE, strategy);
                }
                _ => editor.compact().unwrap(),
            }
            if step < 200 || step % 37 == 0 {
                assert_index_agrees(&editor);
            }
        }
        assert_index_agrees(&editor);
        assert!(Varstore::parse(&editor.image).unwrap().is_healthy());
    }
}
