//! The `vm-device` feature: the device on a rust-vmm `IoManager` bus, persisted by the
//! background writer.

use pflash::{BackgroundStorage, Durability, FileStorage, Geometry, NoEvents, Pflash};
use std::sync::{Arc, Mutex};
use vm_device::bus::{MmioAddress, MmioRange};
use vm_device::device_manager::{IoManager, MmioManager};

const BASE: u64 = 0xffc0_0000;
const LEN: u64 = 0x84000;

#[test]
fn the_bus_reaches_the_device_at_offsets_from_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    std::fs::write(&path, vec![0xff; LEN as usize]).unwrap();
    let file = FileStorage::open(&path, LEN as usize, false, Durability::FlushPoints).unwrap();
    let content = file.read_content().unwrap();
    let storage = BackgroundStorage::spawn(file, Default::default()).unwrap();
    let geometry = Geometry::q35(LEN).unwrap();
    let flash = Arc::new(Mutex::new(
        Pflash::new(geometry, content, storage, NoEvents).unwrap(),
    ));
    let mut bus = IoManager::new();
    bus.register_mmio(
        MmioRange::new(MmioAddress(BASE), LEN).unwrap(),
        flash.clone(),
    )
    .unwrap();

    // CFI query through the bus: "QRY" at offsets 0x10..0x13 of the device.
    bus.mmio_write(MmioAddress(BASE + 0x55), &[0x98]).unwrap();
    let mut qry = [0u8; 3];
    for (i, b) in qry.iter_mut().enumerate() {
        let mut byte = [0u8];
        bus.mmio_read(MmioAddress(BASE + 0x10 + i as u64), &mut byte)
            .unwrap();
        *b = byte[0];
    }
    assert_eq!(&qry, b"QRY");
    bus.mmio_write(MmioAddress(BASE), &[0xff]).unwrap();

    // An OVMF-style program at the device's last byte reaches memory and the file.
    let last = MmioAddress(BASE + LEN - 1);
    bus.mmio_write(last, &[0x10]).unwrap();
    bus.mmio_write(last, &[0x5a]).unwrap();
    bus.mmio_write(last, &[0xff]).unwrap();
    let mut dev = flash.lock().unwrap();
    assert_eq!(dev.memory()[LEN as usize - 1], 0x5a);
    dev.storage_mut().flush().unwrap();
    assert_eq!(std::fs::read(&path).unwrap()[LEN as usize - 1], 0x5a);
    drop(dev);

    // The bus refuses what lies outside the range; the device never sees it.
    assert!(bus.mmio_write(MmioAddress(BASE + LEN), &[0x10]).is_err());
    assert!(bus
        .mmio_write(MmioAddress(BASE + LEN - 1), &[0x10, 0x10])
        .is_err());
    assert!(flash.lock().unwrap().is_array_mode());
}
