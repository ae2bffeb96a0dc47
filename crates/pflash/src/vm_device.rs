//! rust-vmm `vm-device` support (feature `vm-device`): [`Pflash`] is a `MutDeviceMmio`, so a
//! `Mutex<Pflash<…>>` (or `Arc` of it) is a `DeviceMmio` that registers on a vm-device bus
//! such as `IoManager`, which hands the device offsets relative to the range's base.
//!
//! The bus dispatches every access it receives. In read-array mode a VMM normally maps
//! [`Pflash::memory`] read-only into the guest (see
//! [`PflashEvents::array_mode_changed`]), so that only writes reach the bus; a VMM that does
//! not map it gets the same answers through the bus, one exit per read.

use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;

use crate::device::{Pflash, PflashEvents};
use crate::storage::Storage;

/// ```
/// use pflash::{Geometry, NoEvents, NoStorage, Pflash};
/// use std::sync::{Arc, Mutex};
/// use vm_device::bus::{MmioAddress, MmioRange};
/// use vm_device::device_manager::{IoManager, MmioManager};
///
/// let geometry = Geometry::q35(0x84000)?;
/// let flash = Arc::new(Mutex::new(Pflash::new(geometry, vec![0xff; 0x84000], NoStorage, NoEvents)?));
/// let mut bus = IoManager::new();
/// bus.register_mmio(MmioRange::new(MmioAddress(0xffc0_0000), 0x84000)?, flash.clone())?;
///
/// bus.mmio_write(MmioAddress(0xffc0_0100), &[0x10])?;
/// bus.mmio_write(MmioAddress(0xffc0_0100), &[0x42])?;
/// bus.mmio_write(MmioAddress(0xffc0_0100), &[0xff])?;
/// assert_eq!(flash.lock().unwrap().memory()[0x100], 0x42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<M, S, E> MutDeviceMmio for Pflash<M, S, E>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    S: Storage,
    E: PflashEvents,
{
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}
