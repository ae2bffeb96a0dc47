//! Reading one flash's `pflash_cfi01` fields out of a QEMU migration stream.

/// The `pflash_cfi01` vmstate fields (version 1) of one flash, as QEMU migrates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PflashVmstate {
    /// Write cycle.
    pub wcycle: u8,
    /// Current command (0 is read array).
    pub cmd: u8,
    /// Status register.
    pub status: u8,
    /// Buffered-write counter.
    pub counter: u64,
}

impl PflashVmstate {
    /// Finds the full device section `pflash_cfi01` of `instance` in a QEMU migration stream
    /// (`QEMU_VM_SECTION_FULL` 0x04, section id, the name with its length byte, instance id
    /// and version id as big-endian u32, then the fields: three bytes and a big-endian u64).
    pub(super) fn find(stream: &[u8], instance: u32) -> Option<PflashVmstate> {
        const NAME: &[u8] = b"\x0cpflash_cfi01";
        let mut from = 0;
        while let Some(at) = stream[from..]
            .windows(NAME.len())
            .position(|w| w == NAME)
            .map(|p| from + p)
        {
            from = at + 1;
            let fields = at + NAME.len();
            let Some(rest) = stream.get(fields..fields + 8 + 11) else {
                break;
            };
            let is_full_section = at >= 5 && stream[at - 5] == 0x04;
            let id = u32::from_be_bytes(rest[..4].try_into().ok()?);
            let version = u32::from_be_bytes(rest[4..8].try_into().ok()?);
            if is_full_section && id == instance && version == 1 {
                return Some(PflashVmstate {
                    wcycle: rest[8],
                    cmd: rest[9],
                    status: rest[10],
                    counter: u64::from_be_bytes(rest[11..19].try_into().ok()?),
                });
            }
        }
        None
    }
}
