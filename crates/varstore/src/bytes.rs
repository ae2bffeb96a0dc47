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
