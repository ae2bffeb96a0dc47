//! Bounds-checked little-endian reads. Every read names the field it is for, so a short input
//! becomes an error that says what was being read and where.

pub(crate) fn slice(data: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    data.get(offset..offset.checked_add(len)?)
}

pub(crate) fn u8_at(data: &[u8], offset: usize) -> Option<u8> {
    data.get(offset).copied()
}

pub(crate) fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    slice(data, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    slice(data, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    slice(data, offset, 8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    })
}

pub(crate) fn guid_at(data: &[u8], offset: usize) -> Option<crate::Guid> {
    slice(data, offset, 16).map(|b| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        crate::Guid::from_bytes(a)
    })
}

/// Decodes UCS-2LE code units up to the first NUL (or the end), replacing unpaired surrogates.
pub(crate) fn ucs2_to_string(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
