//! The editor's bookkeeping and record bytes: the index of variable copies kept in step with
//! every change, reading and building records, and compaction.

use super::*;

/// A variable's identity: its name as stored (UCS-2LE with the NUL) and its GUID.
pub(super) type Key = (Vec<u8>, Guid);

/// What a parse of the current image would say about the variables, kept in step with every
/// change the editor makes so that no operation has to re-read the store.
#[derive(Debug, Clone)]
pub(super) struct Index {
    /// Per key with at least one complete copy in state 0x3F or 0x3E.
    pub(super) keys: HashMap<Key, Copies>,
    /// `lastVariableOffset`.
    pub(super) free_offset: usize,
    /// Bytes the live variables take after a compaction (aligned records).
    pub(super) live_bytes: usize,
    /// Nothing in the store makes the firmware reclaim it at boot.
    pub(super) clean: bool,
    /// The variable area holds exactly the live variables, each in state 0x3F with 0xFF
    /// padding, then free space: what a compaction writes. Only known after the editor
    /// compacted; appending a new variable keeps it so.
    pub(super) packed: bool,
}

/// The complete copies of one variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Copies {
    /// (offset, state byte) of every complete copy in state 0x3F or 0x3E, in store order.
    pub(super) copies: Vec<(usize, u8)>,
    /// The live copy's offset (spec §7: the first 0x3F copy, else the last 0x3E one).
    pub(super) live: Option<usize>,
}

impl Index {
    pub(super) fn of(store: &Varstore<'_>, header_len: usize) -> Self {
        let mut keys: HashMap<Key, Copies> = HashMap::new();
        for r in store.records() {
            if !r.header_only
                && matches!(
                    r.state(),
                    RecordState::Added | RecordState::InDeletedTransition
                )
            {
                keys.entry((r.name_raw.to_vec(), r.guid))
                    .or_default()
                    .copies
                    .push((r.offset as usize, r.state_byte));
            }
        }
        let mut live_bytes = 0;
        for r in store.live_variables() {
            if let Some(copies) = keys.get_mut(&(r.name_raw.to_vec(), r.guid)) {
                copies.live = Some(r.offset as usize);
            }
            live_bytes += record_size(header_len, r.name_raw.len(), r.data.len());
        }
        Self {
            keys,
            free_offset: usize::try_from(store.free_offset()).expect("offset within the image"),
            live_bytes,
            clean: !store
                .findings()
                .iter()
                .any(|f| f.verdict == FirmwareVerdict::ReclaimAtBoot),
            packed: false,
        }
    }
}

/// The aligned size of a record.
pub(super) fn record_size(header_len: usize, name_len: usize, data_len: usize) -> usize {
    align_header(header_len + name_len + data_len).expect("record length is small")
}

/// What one operation needs to know about the current store, copied out of the parse so the
/// image can be changed afterwards.
pub(super) struct Snapshot {
    /// (offset, state byte) of every complete copy (0x3F or 0x3E) of the key.
    pub(super) copies: Vec<(usize, u8)>,
    /// The live copy's attributes, data and timestamp, if the key is live.
    pub(super) live: Option<(u32, Vec<u8>, Option<EfiTime>)>,
    /// `lastVariableOffset`.
    pub(super) free_offset: usize,
    /// Bytes the live variables other than the key would take after a compaction.
    pub(super) other_live_bytes: usize,
    /// Nothing in the store makes the firmware reclaim it at boot (garbage after the last
    /// record, interrupted writes): appending there is safe.
    pub(super) clean: bool,
}

impl Editor {
    /// The attributes, data and timestamp of the complete record at `at`.
    pub(super) fn read_record(&self, at: usize) -> (u32, &[u8], Option<EfiTime>) {
        record_at(&self.image, self.format, at)
    }

    /// The bytes of a record in state 0x3F, without padding.
    pub(super) fn build_record(
        &self,
        key: &Key,
        attributes: u32,
        data: &[u8],
        timestamp: Option<EfiTime>,
    ) -> Vec<u8> {
        let name_size = U32::new(key.0.len() as u32);
        let data_size = U32::new(data.len() as u32);
        let mut out = match self.format {
            StoreFormat::Authenticated => AuthVariableHeader {
                start_id: U16::new(VARIABLE_START_ID),
                state: STATE_ADDED,
                reserved: 0,
                attributes: U32::new(attributes),
                monotonic_count: U64::new(0),
                timestamp: timestamp.map_or([0; 16], |t| t.0),
                pub_key_index: U32::new(0),
                name_size,
                data_size,
                vendor_guid: key.1.to_bytes(),
            }
            .as_bytes()
            .to_vec(),
            StoreFormat::Plain => PlainVariableHeader {
                start_id: U16::new(VARIABLE_START_ID),
                state: STATE_ADDED,
                reserved: 0,
                attributes: U32::new(attributes),
                name_size,
                data_size,
                vendor_guid: key.1.to_bytes(),
            }
            .as_bytes()
            .to_vec(),
        };
        out.extend_from_slice(&key.0);
        out.extend_from_slice(data);
        out
    }

    /// Rewrites the variable area like the firmware's reclaim (spec §8.3): first every live
    /// 0x3F copy, then every in-transition copy without a 0x3F twin (promoted to 0x3F), both
    /// in store order, leaving out `skip`; then `append` (name, record). Changes nothing if
    /// the result does not fit.
    pub(super) fn compact_with(
        &mut self,
        skip: Option<&Key>,
        append: Option<(&str, &[u8])>,
    ) -> Result<(), EditError> {
        let header_len = self.format.header_len();
        let (image, format, first_record) = (&self.image, self.format, self.first_record);
        // The live copies other than `skip` in store order: (offset, state, length, copies).
        let mut live: Vec<(usize, u8, usize, &mut Copies)> = self
            .index
            .keys
            .iter_mut()
            .filter(|(key, _)| skip != Some(*key))
            .filter_map(|(key, c)| {
                let at = c.live?;
                let state = c.copies.iter().find(|copy| copy.0 == at)?.1;
                let len = header_len + key.0.len() + record_at(image, format, at).1.len();
                Some((at, state, len, c))
            })
            .collect();
        live.sort_unstable_by_key(|l| l.0);
        // 0x3F copies first, then the in-transition ones, each in store order.
        let (mut ordered, in_transition): (Vec<_>, Vec<_>) =
            live.into_iter().partition(|l| l.1 == STATE_ADDED);
        ordered.extend(in_transition);
        let live_bytes: usize = ordered
            .iter()
            .map(|l| align_header(l.2).expect("record length is small"))
            .sum();
        let region_len = self.store_end - first_record;
        let appended = match append {
            Some((name, record)) => {
                let needed = align_header(record.len()).expect("record length is small");
                if live_bytes + needed > region_len {
                    return Err(EditError::StoreFull {
                        name: name.into(),
                        needed,
                        available: region_len - live_bytes,
                    });
                }
                needed
            }
            None => 0,
        };
        let mut region = vec![0xFFu8; region_len];
        let mut cursor = 0;
        for (at, _, len, copies) in ordered {
            // Copied byte for byte (MonotonicCount, PubKeyIndex and all), only the state
            // changes; padding becomes 0xFF.
            region[cursor..cursor + len].copy_from_slice(&image[at..at + len]);
            region[cursor + 2] = STATE_ADDED;
            let new_at = first_record + cursor;
            copies.copies.clear();
            copies.copies.push((new_at, STATE_ADDED));
            copies.live = Some(new_at);
            cursor += align_header(len).expect("record length is small");
        }
        if let Some(key) = skip {
            match append {
                Some((_, record)) => {
                    region[cursor..cursor + record.len()].copy_from_slice(record);
                    let new_at = first_record + cursor;
                    self.index.keys.insert(
                        key.clone(),
                        Copies {
                            copies: vec![(new_at, STATE_ADDED)],
                            live: Some(new_at),
                        },
                    );
                }
                None => {
                    self.index.keys.remove(key);
                }
            }
        }
        self.image[first_record..self.store_end].copy_from_slice(&region);
        self.index.free_offset = first_record + live_bytes + appended;
        self.index.live_bytes = live_bytes + appended;
        self.index.clean = true;
        self.index.packed = true;
        Ok(())
    }
}

/// The attributes, data and timestamp of the complete record at `at` in `image` (one the
/// index lists, so its header, name and data are inside the variable area).
pub(super) fn record_at(
    image: &[u8],
    format: StoreFormat,
    at: usize,
) -> (u32, &[u8], Option<EfiTime>) {
    let header = &image[at..at + format.header_len()];
    let (attributes, name_size, data_size, timestamp) = match format {
        StoreFormat::Authenticated => {
            let h = AuthVariableHeader::ref_from_bytes(header).expect("header length");
            let time = Some(EfiTime(h.timestamp));
            (
                h.attributes.get(),
                h.name_size.get(),
                h.data_size.get(),
                time,
            )
        }
        StoreFormat::Plain => {
            let h = PlainVariableHeader::ref_from_bytes(header).expect("header length");
            (
                h.attributes.get(),
                h.name_size.get(),
                h.data_size.get(),
                None,
            )
        }
    };
    let data_at = at + header.len() + name_size as usize;
    (
        attributes,
        &image[data_at..data_at + data_size as usize],
        timestamp,
    )
}

/// UCS-2LE with the terminating NUL, as names are stored and compared (spec §5.3).
pub(super) fn encode_name(name: &str) -> Result<Vec<u8>, EditError> {
    let invalid = |reason| EditError::InvalidName {
        name: name.into(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty names are not valid variables"));
    }
    if name.contains('\0') {
        return Err(invalid("contains a NUL character"));
    }
    let mut out = Vec::with_capacity(2 * name.len() + 2);
    for c in name.chars() {
        let unit = u16::try_from(u32::from(c))
            .map_err(|_| invalid("has a character outside UCS-2 (beyond U+FFFF)"))?;
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    Ok(out)
}
