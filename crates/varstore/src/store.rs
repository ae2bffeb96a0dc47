//! Parsing and validating a whole variable flash image (spec §2–§9).

use crate::error::ParseError;
use crate::finding::{Finding, FirmwareVerdict, Severity};
use crate::format::{
    align_header, ftw_header_crc, fv_header_word_sum, AuthVariableHeader, BlockMapEntry,
    FtwWorkingBlockHeader, FvHeader, PlainVariableHeader, StoreHeader, AUTH_HEADER_LEN,
    FTW_HEADER_LEN, FTW_STATE_VALID, FV_HEADER_FIXED_LEN, FV_REVISION, FV_SIGNATURE,
    PLAIN_HEADER_LEN, STORE_FORMATTED, STORE_HEADER_LEN, STORE_HEALTHY, VARIABLE_START_ID,
};
use crate::ftw::{parse_write_queue, FtwWorkingBlock, PendingWrite};
use crate::guid;
use crate::layout::Layout;
use crate::record::{Attributes, EfiTime, RecordState, VariableRecord};
use crate::Guid;
use zerocopy::FromBytes;

/// Which variable header format the store uses, chosen by its signature (spec §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFormat {
    /// `gEfiAuthenticatedVariableGuid`: 60-byte headers with timestamps (all OVMF/AAVMF builds).
    Authenticated,
    /// `gEfiVariableGuid`: 32-byte headers.
    Plain,
}

impl StoreFormat {
    /// Size of one variable header in this format.
    pub fn header_len(self) -> usize {
        match self {
            Self::Authenticated => AUTH_HEADER_LEN,
            Self::Plain => PLAIN_HEADER_LEN,
        }
    }
}

/// The decoded firmware volume header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FvInfo {
    /// `FvLength`.
    pub length: u64,
    /// `Attributes`.
    pub attributes: u32,
    /// `HeaderLength`: where the variable store header starts.
    pub header_length: u16,
    /// `Checksum` as stored.
    pub checksum: u16,
    /// `Revision`.
    pub revision: u8,
    /// Block map entries as (number of blocks, block length), without the terminator.
    pub block_map: Vec<(u32, u32)>,
}

/// The decoded variable store header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// File offset of the store header.
    pub offset: u64,
    /// `Size`: store header plus variable area.
    pub size: u32,
    /// Header format.
    pub format: StoreFormat,
    /// `Format` byte (0x5A when formatted).
    pub format_byte: u8,
    /// `State` byte (0xFE when healthy).
    pub state_byte: u8,
}

/// A parsed variable store. Borrows the image; nothing is copied.
#[derive(Debug, Clone)]
pub struct Varstore<'a> {
    image: &'a [u8],
    fv: FvInfo,
    store: StoreInfo,
    layout: Option<&'static Layout>,
    records: Vec<VariableRecord<'a>>,
    /// Indices into `records` of the live variables, in store order (spec §7).
    live: Vec<usize>,
    free_offset: u64,
    store_end: u64,
    ftw: Option<FtwWorkingBlock>,
    findings: Vec<Finding>,
}

struct Findings(Vec<Finding>);

impl Findings {
    fn add(
        &mut self,
        severity: Severity,
        offset: usize,
        field: &'static str,
        verdict: FirmwareVerdict,
        message: String,
    ) {
        self.0.push(Finding {
            severity,
            offset: offset as u64,
            field,
            message,
            verdict,
        });
    }
}

fn damaged(offset: usize, field: &'static str, problem: String) -> ParseError {
    ParseError::Damaged {
        offset: offset as u64,
        field,
        problem,
    }
}

impl<'a> Varstore<'a> {
    /// Parses and validates a variable flash image.
    ///
    /// Returns an error only when the variables cannot be located at all; every other problem
    /// becomes a [`Finding`]. Never panics, whatever the bytes, and its work is bounded by the
    /// image length.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    /// let store = varstore::Varstore::parse(&image)?;
    /// assert_eq!(store.verdict(), varstore::FirmwareVerdict::Accept);
    /// # Ok::<(), varstore::ParseError>(())
    /// ```
    pub fn parse(image: &'a [u8]) -> Result<Self, ParseError> {
        if let Some(&first) = image.first() {
            if (first == 0x00 || first == 0xFF) && first_byte_not(image, first).is_none() {
                return Err(ParseError::Unformatted {
                    len: image.len(),
                    fill: first,
                });
            }
        }
        let min_len = FV_HEADER_FIXED_LEN + 16 + STORE_HEADER_LEN;
        let Some((header, _)) = FvHeader::ref_from_prefix(image)
            .ok()
            .filter(|_| image.len() >= min_len)
        else {
            return Err(ParseError::TooShort { len: image.len() });
        };
        if header.signature != FV_SIGNATURE {
            return Err(ParseError::NotFirmwareVolume {
                found: header.signature,
            });
        }
        let fs_guid = Guid::from_bytes(header.file_system_guid);
        if fs_guid != guid::SYSTEM_NV_DATA_FV {
            return Err(ParseError::NotNvDataVolume { found: fs_guid });
        }
        let mut findings = Findings(Vec::new());
        let fv = parse_fv_header(image, header, &mut findings)?;
        let store = parse_store_header(image, &fv, &mut findings)?;
        let layout = Layout::matching_file(image.len() as u64, fv.length, store.size);

        let store_start = store.offset as usize;
        // `store.offset + size` was bounds-checked against the image by parse_store_header.
        let store_end = (align_header(store_start + store.size as usize).unwrap_or(image.len()))
            .min(image.len());
        let (records, free_offset, walk_complete) =
            walk_records(image, store_start, store_end, store.format, &mut findings);
        if walk_complete {
            check_free_space(image, free_offset, store_end, &mut findings);
        }
        let live = live_indices(&records);
        check_live_view(&records, &live, &mut findings);
        let ftw = locate_ftw(image, &fv, store_end, layout, &mut findings);

        Ok(Self {
            image,
            fv,
            store,
            layout,
            records,
            live,
            free_offset: free_offset as u64,
            store_end: store_end as u64,
            ftw,
            findings: findings.0,
        })
    }

    /// The image this store was parsed from.
    pub fn image(&self) -> &'a [u8] {
        self.image
    }

    /// The firmware volume header.
    pub fn fv(&self) -> &FvInfo {
        &self.fv
    }

    /// The variable store header.
    pub fn store(&self) -> &StoreInfo {
        &self.store
    }

    /// The built-in layout this image matches, if any.
    pub fn layout(&self) -> Option<&'static Layout> {
        self.layout
    }

    /// Every record the firmware's walk visits, in store order, whatever its state: the
    /// "show all records" view.
    pub fn records(&self) -> &[VariableRecord<'a>] {
        &self.records
    }

    /// File offset where the firmware appends the next record (`lastVariableOffset`).
    pub fn free_offset(&self) -> u64 {
        self.free_offset
    }

    /// File offset where the variable area ends.
    pub fn store_end(&self) -> u64 {
        self.store_end
    }

    /// Bytes still free for new records without a reclaim.
    pub fn free_space(&self) -> u64 {
        self.store_end.saturating_sub(self.free_offset)
    }

    /// The FTW working block, if one was found.
    pub fn ftw(&self) -> Option<&FtwWorkingBlock> {
        self.ftw.as_ref()
    }

    /// Every problem found, in image order of discovery.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// What the firmware will do with this store at its next boot: the gravest verdict of all
    /// findings.
    pub fn verdict(&self) -> FirmwareVerdict {
        self.findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(FirmwareVerdict::Accept)
    }

    /// Whether nothing worse than a notice was found.
    pub fn is_healthy(&self) -> bool {
        self.findings.iter().all(|f| f.severity == Severity::Notice)
    }

    /// The variables the firmware sees, in store order (spec §7): for each name and GUID the
    /// first record in state 0x3F, or, if there is none, the last one in state 0x3E.
    pub fn live_variables(&self) -> Vec<&VariableRecord<'a>> {
        self.live.iter().map(|&i| &self.records[i]).collect()
    }

    /// The live variable with this name, and GUID if given. Without a GUID, the first live
    /// variable of that name.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    /// let store = varstore::Varstore::parse(&image).unwrap();
    /// assert!(store.find("BootOrder", None).is_none());
    /// ```
    pub fn find(&self, name: &str, guid: Option<Guid>) -> Option<&VariableRecord<'a>> {
        self.live_variables()
            .into_iter()
            .find(|r| guid.is_none_or(|g| g == r.guid) && r.name() == name)
    }
}

fn parse_fv_header(
    image: &[u8],
    header: &FvHeader,
    findings: &mut Findings,
) -> Result<FvInfo, ParseError> {
    use FirmwareVerdict::*;
    use Severity::*;
    let header_length = header.header_length.get();
    let hl = usize::from(header_length);
    if hl % 2 != 0 || hl < FV_HEADER_FIXED_LEN + 16 || hl + STORE_HEADER_LEN > image.len() {
        return Err(damaged(
            0x30,
            "FV header HeaderLength",
            format!(
                "0x{header_length:X} cannot be right: it must be even, at least 0x48 and leave room for the variable store header in a {}-byte image",
                image.len()
            ),
        ));
    }
    if header.zero_vector != [0; 16] {
        findings.add(
            Notice,
            0,
            "FV header ZeroVector",
            Accept,
            "not all zero".into(),
        );
    }
    if header.revision != FV_REVISION {
        findings.add(
            Error,
            0x37,
            "FV header Revision",
            Refuse,
            format!(
                "{} (expected 2): OVMF erases the whole volume",
                header.revision
            ),
        );
    }
    let sum = fv_header_word_sum(&image[..hl]);
    if sum != 0 {
        let expected = header.checksum.get().wrapping_sub(sum);
        findings.add(
            Error,
            0x32,
            "FV header Checksum",
            Refuse,
            format!(
                "0x{:04X} does not make the header sum to zero (0x{expected:04X} would): OVMF erases the whole volume",
                header.checksum.get()
            ),
        );
    }
    let length = header.fv_length.get();
    if length > image.len() as u64 {
        findings.add(
            Error,
            0x20,
            "FV header FvLength",
            Refuse,
            format!(
                "0x{length:X} is beyond the end of the {}-byte image",
                image.len()
            ),
        );
    } else if length < image.len() as u64 && !tail_is_padding(image, length as usize) {
        findings.add(
            Notice,
            0x20,
            "FV header FvLength",
            Accept,
            format!(
                "0x{length:X} is shorter than the {}-byte image, and the bytes after it are not padding",
                image.len()
            ),
        );
    }
    let mut block_map = Vec::new();
    let mut at = FV_HEADER_FIXED_LEN;
    let mut terminated = false;
    while at + 8 <= hl {
        let Some((entry, _)) = BlockMapEntry::ref_from_prefix(&image[at..]).ok() else {
            break;
        };
        let (count, len) = (entry.num_blocks.get(), entry.length.get());
        if count == 0 && len == 0 {
            terminated = true;
            break;
        }
        block_map.push((count, len));
        at += 8;
    }
    if !terminated {
        findings.add(
            Error,
            at,
            "FV header BlockMap",
            Refuse,
            "no {0, 0} terminator inside HeaderLength".into(),
        );
    } else if block_map.is_empty() {
        findings.add(
            Error,
            at,
            "FV header BlockMap",
            Refuse,
            "empty block map".into(),
        );
    } else {
        let covered = block_map.iter().fold(0u64, |acc, &(n, l)| {
            acc.saturating_add(u64::from(n) * u64::from(l))
        });
        if covered < length {
            findings.add(
                Error,
                FV_HEADER_FIXED_LEN,
                "FV header BlockMap",
                Refuse,
                format!("covers 0x{covered:X} bytes, less than FvLength 0x{length:X}"),
            );
        }
    }
    Ok(FvInfo {
        length,
        attributes: header.attributes.get(),
        header_length,
        checksum: header.checksum.get(),
        revision: header.revision,
        block_map,
    })
}

/// Whether everything from `from` to the end is one fill byte (AAVMF pads with 0x00).
fn tail_is_padding(image: &[u8], from: usize) -> bool {
    let tail = &image[from..];
    tail.first()
        .is_none_or(|&fill| (fill == 0 || fill == 0xFF) && first_byte_not(tail, fill).is_none())
}

fn parse_store_header(
    image: &[u8],
    fv: &FvInfo,
    findings: &mut Findings,
) -> Result<StoreInfo, ParseError> {
    let at = usize::from(fv.header_length);
    let header = StoreHeader::ref_from_prefix(&image[at..])
        .map_err(|_| damaged(at, "store header", "does not fit in the image".into()))?
        .0;
    let signature = Guid::from_bytes(header.signature);
    let format = if signature == guid::AUTHENTICATED_VARIABLE_STORE {
        StoreFormat::Authenticated
    } else if signature == guid::VARIABLE_STORE {
        StoreFormat::Plain
    } else if header.signature == [0xFF; 16] {
        return Err(damaged(
            at,
            "store header Signature",
            "erased (0xFF): the variable store was never formatted; OVMF cannot boot with it"
                .into(),
        ));
    } else {
        return Err(damaged(
            at,
            "store header Signature",
            format!("{signature} is neither the authenticated nor the plain variable store GUID"),
        ));
    };
    let size = header.size.get();
    let limit = (fv.length.min(image.len() as u64)) as usize;
    if (size as usize) < STORE_HEADER_LEN || at.saturating_add(size as usize) > limit {
        return Err(damaged(
            at + 0x10,
            "store header Size",
            format!(
                "0x{size:X} does not fit: the store starts at 0x{at:X} and the volume ends at 0x{limit:X}"
            ),
        ));
    }
    if header.format != STORE_FORMATTED {
        findings.add(
            Severity::Error,
            at + 0x14,
            "store header Format",
            FirmwareVerdict::Refuse,
            format!("0x{:02X} (expected 0x5A, formatted)", header.format),
        );
    }
    if header.state != STORE_HEALTHY {
        findings.add(
            Severity::Error,
            at + 0x15,
            "store header State",
            FirmwareVerdict::Refuse,
            format!("0x{:02X} (expected 0xFE, healthy)", header.state),
        );
    }
    if let Some(layout) = Layout::by_fv_length(fv.length) {
        if layout.store_size() != size {
            findings.add(
                Severity::Warning,
                at + 0x10,
                "store header Size",
                FirmwareVerdict::Accept,
                format!(
                    "0x{size:X}, but the {} layout has 0x{:X}",
                    layout.name,
                    layout.store_size()
                ),
            );
        }
    }
    Ok(StoreInfo {
        offset: at as u64,
        size,
        format,
        format_byte: header.format,
        state_byte: header.state,
    })
}

/// Walks the records as the firmware does (spec §6.2), with the bounds checks it lacks
/// (spec §6.3). Returns the records, `lastVariableOffset`, and whether the walk ended normally.
fn walk_records<'a>(
    image: &'a [u8],
    store_start: usize,
    end: usize,
    format: StoreFormat,
    findings: &mut Findings,
) -> (Vec<VariableRecord<'a>>, usize, bool) {
    use FirmwareVerdict::*;
    use Severity::*;
    let header_len = format.header_len();
    let mut records = Vec::new();
    let mut p = align_header(store_start + STORE_HEADER_LEN).unwrap_or(end);
    // Each iteration advances `p` by at least one header, so the loop is bounded by `end`.
    while p < end && image[p..end].first_chunk() == Some(&VARIABLE_START_ID.to_le_bytes()) {
        if p + header_len > end {
            findings.add(
                Error,
                p,
                "variable StartId",
                Refuse,
                format!("a record starts here, but its {header_len}-byte header runs past the end of the store at 0x{end:X}"),
            );
            return (records, p, false);
        }
        let h = decode_header(&image[p..p + header_len], format);
        let header_only = h.state == 0xFF
            || h.name_size == u32::MAX
            || h.data_size == u32::MAX
            || h.attributes == u32::MAX;
        let body = if header_only {
            0
        } else {
            u64::from(h.name_size) + u64::from(h.data_size)
        };
        let unpadded = p as u64 + header_len as u64 + body;
        if unpadded > end as u64 {
            findings.add(
                Error,
                p + if format == StoreFormat::Authenticated {
                    0x24
                } else {
                    0x08
                },
                "variable NameSize/DataSize",
                Refuse,
                format!(
                    "NameSize 0x{:X} + DataSize 0x{:X} run past the end of the store at 0x{end:X}",
                    h.name_size, h.data_size
                ),
            );
            return (records, p, false);
        }
        let unpadded = unpadded as usize;
        let next = align_header(unpadded).unwrap_or(end).min(end);
        let name_at = p + header_len;
        let name_len = if header_only { 0 } else { h.name_size as usize };
        let name_raw = &image[name_at..name_at + name_len];
        let data_at = name_at + name_len;
        let data = if header_only {
            &image[data_at..data_at]
        } else {
            &image[data_at..data_at + h.data_size as usize]
        };
        let record = VariableRecord {
            offset: p as u64,
            state_byte: h.state,
            attributes: Attributes(h.attributes),
            guid: h.guid,
            name_raw,
            data,
            data_offset: data_at as u64,
            monotonic_count: h.monotonic_count,
            timestamp: h.timestamp,
            pub_key_index: h.pub_key_index,
            total_len: (next - p) as u64,
            header_only,
        };
        check_record(&record, image, unpadded, next, findings);
        records.push(record);
        p = next;
    }
    (records, p, true)
}

struct DecodedHeader {
    state: u8,
    attributes: u32,
    name_size: u32,
    data_size: u32,
    guid: Guid,
    monotonic_count: u64,
    timestamp: Option<EfiTime>,
    pub_key_index: u32,
}

fn decode_header(bytes: &[u8], format: StoreFormat) -> DecodedHeader {
    match format {
        StoreFormat::Authenticated => {
            let h =
                AuthVariableHeader::ref_from_bytes(bytes).expect("slice has the header's length");
            DecodedHeader {
                state: h.state,
                attributes: h.attributes.get(),
                name_size: h.name_size.get(),
                data_size: h.data_size.get(),
                guid: Guid::from_bytes(h.vendor_guid),
                monotonic_count: h.monotonic_count.get(),
                timestamp: Some(EfiTime(h.timestamp)),
                pub_key_index: h.pub_key_index.get(),
            }
        }
        StoreFormat::Plain => {
            let h =
                PlainVariableHeader::ref_from_bytes(bytes).expect("slice has the header's length");
            DecodedHeader {
                state: h.state,
                attributes: h.attributes.get(),
                name_size: h.name_size.get(),
                data_size: h.data_size.get(),
                guid: Guid::from_bytes(h.vendor_guid),
                monotonic_count: 0,
                timestamp: None,
                pub_key_index: 0,
            }
        }
    }
}

fn check_record(
    record: &VariableRecord<'_>,
    image: &[u8],
    unpadded_end: usize,
    next: usize,
    findings: &mut Findings,
) {
    use FirmwareVerdict::*;
    use Severity::*;
    let at = record.offset as usize;
    match record.state() {
        RecordState::Erased => findings.add(
            Warning,
            at + 2,
            "variable State",
            ReclaimAtBoot,
            "0xFF: a record whose write was interrupted; the firmware walks over its header only"
                .into(),
        ),
        RecordState::HeaderValidOnly => findings.add(
            Notice,
            at + 2,
            "variable State",
            Accept,
            "0x7F: an incomplete write (header only); not visible, dropped at the next reclaim"
                .into(),
        ),
        RecordState::Unknown(b) => findings.add(
            Warning,
            at + 2,
            "variable State",
            Accept,
            format!("0x{b:02X} is not a state the firmware writes; the record is not visible"),
        ),
        _ => {}
    }
    if record.header_only {
        if record.state() != RecordState::Erased {
            findings.add(
                Warning,
                at,
                "variable header",
                ReclaimAtBoot,
                "an all-ones Attributes, NameSize or DataSize: the firmware treats the record as a bare header".into(),
            );
        }
        return;
    }
    let checks_name = matches!(
        record.state(),
        RecordState::Added
            | RecordState::InDeletedTransition
            | RecordState::Deleted
            | RecordState::Replaced
    );
    if checks_name {
        let n = record.name_raw;
        let terminated = n.len() >= 2 && n[n.len() - 2..] == [0, 0];
        if n.len() % 2 != 0 || n.len() < 4 || !terminated {
            findings.add(
                Warning,
                at + record_name_size_offset(record),
                "variable NameSize",
                Accept,
                format!(
                    "name of {} bytes is not a NUL-terminated UCS-2 string of at least one character (the ArmVirt validator re-formats such a store)",
                    n.len()
                ),
            );
        }
        if record.attributes.0 & Attributes::NON_VOLATILE == 0 {
            findings.add(
                Notice,
                at + 4,
                "variable Attributes",
                Accept,
                format!("0x{:X} lacks NON_VOLATILE", record.attributes.0),
            );
        }
    }
    let padding = &image[unpadded_end..next];
    if padding.iter().any(|&b| b != 0xFF) {
        findings.add(
            Notice,
            unpadded_end,
            "variable padding",
            Accept,
            "padding bytes are not 0xFF (the firmware ignores them; Debian's AAVMF_VARS.ms.fd has such padding)".into(),
        );
    }
}

fn record_name_size_offset(record: &VariableRecord<'_>) -> usize {
    if record.timestamp.is_some() {
        0x24
    } else {
        0x08
    }
}

fn check_free_space(image: &[u8], free: usize, end: usize, findings: &mut Findings) {
    if let Some(pos) = first_byte_not(&image[free..end], 0xFF) {
        let at = free + pos;
        findings.add(
            Severity::Warning,
            at,
            "free space",
            FirmwareVerdict::ReclaimAtBoot,
            format!(
                "byte 0x{:02X} after the last record (which ends at 0x{free:X}); the firmware reclaims the store at next boot",
                image[at]
            ),
        );
    }
}

/// Indices of the live records (spec §7).
fn live_indices(records: &[VariableRecord<'_>]) -> Vec<usize> {
    use std::collections::HashMap;
    let mut chosen: HashMap<(&[u8], Guid), usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.header_only {
            continue;
        }
        let key = (r.name_raw, r.guid);
        match r.state() {
            RecordState::Added => {
                let current = chosen.get(&key).map(|&j| records[j].state());
                if current != Some(RecordState::Added) {
                    chosen.insert(key, i);
                }
            }
            RecordState::InDeletedTransition => {
                let current = chosen.get(&key).map(|&j| records[j].state());
                if current != Some(RecordState::Added) {
                    chosen.insert(key, i);
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<usize> = chosen.into_values().collect();
    out.sort_unstable();
    out
}

fn check_live_view(records: &[VariableRecord<'_>], live: &[usize], findings: &mut Findings) {
    use std::collections::HashSet;
    let live: HashSet<usize> = live.iter().copied().collect();
    let mut seen_added: HashSet<(&[u8], Guid)> = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        if r.header_only {
            continue;
        }
        match r.state() {
            RecordState::Added if !seen_added.insert((r.name_raw, r.guid)) => findings.add(
                Severity::Warning,
                r.offset as usize,
                "variable State",
                FirmwareVerdict::Accept,
                format!(
                    "a second live (0x3F) copy of {}; the firmware reads only the first",
                    r.name()
                ),
            ),
            RecordState::InDeletedTransition if live.contains(&i) => findings.add(
                Severity::Notice,
                r.offset as usize,
                "variable State",
                FirmwareVerdict::Accept,
                format!(
                    "{} is in transition (0x3E) without a newer copy: an update was interrupted; the firmware uses this copy",
                    r.name()
                ),
            ),
            _ => {}
        }
    }
}

fn locate_ftw(
    image: &[u8],
    fv: &FvInfo,
    store_end: usize,
    layout: Option<&'static Layout>,
    findings: &mut Findings,
) -> Option<FtwWorkingBlock> {
    use FirmwareVerdict::*;
    use Severity::*;
    let fv_end = (fv.length.min(image.len() as u64)) as usize;
    let block = fv
        .block_map
        .first()
        .map_or(0x1000, |&(_, l)| l as usize)
        .max(1);
    let candidates: Vec<usize> = match layout {
        Some(l) => vec![l.ftw_working_offset() as usize],
        None => {
            let region_end = store_end.div_ceil(block).saturating_mul(block);
            vec![region_end, region_end.saturating_add(block)]
        }
    };
    let at = candidates.iter().copied().find(|&c| {
        image
            .get(c..)
            .and_then(|b| b.first_chunk::<16>())
            .map(|g| Guid::from_bytes(*g))
            .is_some_and(|g| g == guid::FTW_WORKING_BLOCK || g == guid::SYSTEM_NV_DATA_FV)
    });
    let Some(at) = at else {
        findings.add(
            Warning,
            candidates[0],
            "FTW working block Signature",
            ReinitialiseFtw,
            "no fault-tolerant-write working block here; the firmware creates one at next boot"
                .into(),
        );
        return None;
    };
    if at + FTW_HEADER_LEN > fv_end {
        return None;
    }
    let header = FtwWorkingBlockHeader::ref_from_bytes(&image[at..at + FTW_HEADER_LEN])
        .expect("slice has the header's length");
    let signature = Guid::from_bytes(header.signature);
    let mut valid = true;
    if signature != guid::FTW_WORKING_BLOCK {
        valid = false;
        findings.add(
            Warning,
            at,
            "FTW working block Signature",
            ReinitialiseFtw,
            "the old signature (gEfiSystemNvDataFvGuid); current firmware re-initialises the working block".into(),
        );
    }
    let crc = ftw_header_crc(header);
    if header.crc.get() != crc {
        valid = false;
        findings.add(
            Warning,
            at + 0x10,
            "FTW working block Crc",
            ReinitialiseFtw,
            format!("0x{:08X}, expected 0x{crc:08X}", header.crc.get()),
        );
    }
    if header.state != FTW_STATE_VALID {
        valid = false;
        findings.add(
            Warning,
            at + 0x14,
            "FTW working block state",
            ReinitialiseFtw,
            format!("0x{:02X}: not marked valid (expected 0xFE)", header.state),
        );
    }
    if header.reserved != [0xFF; 3] {
        valid = false;
        findings.add(
            Warning,
            at + 0x15,
            "FTW working block Reserved3",
            ReinitialiseFtw,
            format!(
                "{:02X?}: not erased (the firmware compares the whole header with FF FF FF there)",
                header.reserved
            ),
        );
    }
    let queue_size = header.write_queue_size.get();
    if let Some(expected) = layout.map(|l| u64::from(l.ftw_working) - FTW_HEADER_LEN as u64) {
        if queue_size != expected {
            valid = false;
            findings.add(
                Warning,
                at + 0x18,
                "FTW working block WriteQueueSize",
                ReinitialiseFtw,
                format!("0x{queue_size:X}, but the {} layout's working block needs 0x{expected:X}; the firmware re-initialises it", layout.map_or("", |l| l.name)),
            );
        }
    }
    let queue_start = at + FTW_HEADER_LEN;
    let queue_end = (queue_start as u64).saturating_add(queue_size);
    if queue_end > fv_end as u64 {
        findings.add(
            Warning,
            at + 0x18,
            "FTW working block WriteQueueSize",
            ReinitialiseFtw,
            format!("0x{queue_size:X} runs past the end of the volume at 0x{fv_end:X}"),
        );
        return Some(FtwWorkingBlock {
            offset: at as u64,
            valid: false,
            write_queue_size: queue_size,
            spare_offset: fv_end as u64,
            spare_len: 0,
            writes: Vec::new(),
        });
    }
    let queue_end = queue_end as usize;
    let spare_offset = queue_end;
    let writes = if valid {
        parse_write_queue(image, queue_start, queue_end, findings_sink(findings))
    } else {
        Vec::new()
    };
    let pending: Vec<&PendingWrite> = writes.iter().filter(|w| !w.complete).collect();
    for w in &pending {
        if w.spare_complete_without_destination() {
            findings.add(
                Warning,
                w.offset as usize,
                "FTW write header",
                RestartFtwWrite,
                "a fault-tolerant write reached the spare area but not its destination; the firmware copies the spare over the target at next boot".into(),
            );
        } else {
            findings.add(
                Notice,
                w.offset as usize,
                "FTW write header",
                Accept,
                "an unfinished fault-tolerant write that never reached the spare; the firmware abandons it".into(),
            );
        }
    }
    if pending.is_empty() {
        if let Some(pos) = first_byte_not(&image[spare_offset..fv_end], 0xFF) {
            findings.add(
                Notice,
                spare_offset + pos,
                "FTW spare area",
                Accept,
                "not erased although no write is pending".into(),
            );
        }
    }
    // The x86 "event log" block between the variable region and the working block.
    let log_start = layout
        .map_or(at, |l| l.variable_region as usize)
        .max(store_end)
        .min(at);
    if let Some(pos) = first_byte_not(&image[log_start..at], 0xFF) {
        findings.add(
            Notice,
            log_start + pos,
            "event log block",
            Accept,
            "not erased (the firmware does not use it)".into(),
        );
    }
    Some(FtwWorkingBlock {
        offset: at as u64,
        valid,
        write_queue_size: queue_size,
        spare_offset: spare_offset as u64,
        spare_len: (fv_end - spare_offset) as u64,
        writes,
    })
}

fn findings_sink(findings: &mut Findings) -> impl FnMut(usize, &'static str, String) + '_ {
    move |offset, field, message| {
        findings.add(
            Severity::Warning,
            offset,
            field,
            FirmwareVerdict::ReinitialiseFtw,
            message,
        )
    }
}

impl Layout {
    /// The built-in layout with this FvLength, if any.
    pub fn by_fv_length(fv_length: u64) -> Option<&'static Layout> {
        crate::layout::LAYOUTS
            .iter()
            .find(|l| l.fv_length == fv_length)
    }
}

/// Index of the first byte of `data` that is not `fill`. Flash images are mostly erased
/// space, so this runs over hundreds of KiB per parse: comparing whole chunks lets the
/// compiler vectorise the common case.
pub(crate) fn first_byte_not(data: &[u8], fill: u8) -> Option<usize> {
    const CHUNK: usize = 64;
    let mut chunks = data.chunks_exact(CHUNK);
    for (i, chunk) in chunks.by_ref().enumerate() {
        if !chunk.iter().fold(true, |all, &b| all & (b == fill)) {
            let pos = chunk.iter().position(|&b| b != fill)?;
            return Some(i * CHUNK + pos);
        }
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b != fill)
        .map(|pos| data.len() - rest.len() + pos)
}

#[cfg(test)]
mod tests {
    use super::first_byte_not;

    #[test]
    fn first_byte_not_finds_the_first_difference_anywhere() {
        for len in [0, 1, 63, 64, 65, 200] {
            assert_eq!(first_byte_not(&vec![0xFF; len], 0xFF), None);
            for at in 0..len {
                let mut data = vec![0xFF; len];
                data[at] = 0x7F;
                data[len - 1] = 0;
                assert_eq!(first_byte_not(&data, 0xFF), Some(at), "len {len} at {at}");
            }
        }
    }
}
