//! Counters of the vCPU's exits by kind.

/// The exits of one run, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exits {
    /// Reads that reached the vars flash device.
    pub mmio_read: u64,
    /// Writes that reached the vars flash device.
    pub mmio_write: u64,
    /// MMIO reads while the device was in read-array mode, when its memory should have been
    /// mapped: a VMM serving array mode from a read-only slot keeps this at 0.
    pub array_mode_read_exits: u64,
    /// MMIO accesses outside the vars flash (a write to the read-only code flash, a stray
    /// access): ignored, reads return all ones.
    pub mmio_unhandled: u64,
    /// Port I/O (COM1, `isa-debug-exit`, anything else).
    pub pio: u64,
    /// `hlt` instructions (without an interrupt controller they end the run).
    pub hlt: u64,
    /// Times the vars flash slot was mapped (the device entered array mode).
    pub slot_maps: u64,
    /// Times it was removed (the device left array mode).
    pub slot_unmaps: u64,
    /// Microseconds spent in `KVM_SET_USER_MEMORY_REGION` for those (KVM waits for the
    /// vCPUs to leave the old memory map before it returns).
    pub slot_change_micros: u64,
    /// Every exit to the VMM.
    pub total: u64,
}

impl Exits {
    /// Flash accesses the device handled: the guest's flash operations that left the vCPU.
    pub fn flash_accesses(&self) -> u64 {
        self.mmio_read + self.mmio_write
    }
}
