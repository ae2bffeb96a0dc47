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

mod check;
mod headers;
mod walk;
mod working_block;

use check::*;
use headers::*;
use walk::*;
use working_block::*;

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

impl Layout {
    /// The built-in layout with this FvLength, if any.
    pub fn by_fv_length(fv_length: u64) -> Option<&'static Layout> {
        crate::layout::LAYOUTS
            .iter()
            .find(|l| l.fv_length == fv_length)
    }
}
