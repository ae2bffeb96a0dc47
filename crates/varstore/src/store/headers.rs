//! The firmware volume header, its block map and the variable store header (spec §2–§4).

use super::*;

pub(super) fn parse_fv_header(
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
pub(super) fn tail_is_padding(image: &[u8], from: usize) -> bool {
    let tail = &image[from..];
    tail.first()
        .is_none_or(|&fill| (fill == 0 || fill == 0xFF) && first_byte_not(tail, fill).is_none())
}

pub(super) fn parse_store_header(
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
