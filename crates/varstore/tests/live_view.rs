//! The live view follows the firmware's lookup rules (spec §7) on a real firmware-written store.

use varstore::{FirmwareVerdict, RecordState, Severity, Varstore};

fn ms_image() -> Vec<u8> {
    let path = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("{path}: {e}: install Debian's ovmf package (scripts/test does)")
    })
}

fn offset_of(store: &Varstore<'_>, name: &str, state: RecordState) -> usize {
    store
        .records()
        .iter()
        .find(|r| r.name() == name && r.state() == state)
        .unwrap_or_else(|| panic!("no {state} record named {name}"))
        .offset as usize
}

#[test]
fn a_record_in_transition_without_a_live_twin_is_visible() {
    let mut image = ms_image();
    let timeout = offset_of(
        &Varstore::parse(&image).unwrap(),
        "Timeout",
        RecordState::Added,
    );
    image[timeout + 2] = 0x3E;
    let store = Varstore::parse(&image).unwrap();
    let live = store
        .find("Timeout", None)
        .expect("0x3E without a 0x3F twin stays visible");
    assert_eq!(live.state(), RecordState::InDeletedTransition);
    assert_eq!(store.live_variables().len(), 31);
    let finding = &store.findings()[0];
    assert_eq!(
        (finding.offset, finding.severity),
        (timeout as u64, Severity::Notice)
    );
    assert_eq!(store.verdict(), FirmwareVerdict::Accept);
}

#[test]
fn a_record_in_transition_with_a_live_twin_is_hidden() {
    let mut image = ms_image();
    let old_conin = offset_of(
        &Varstore::parse(&image).unwrap(),
        "ConIn",
        RecordState::Replaced,
    );
    image[old_conin + 2] = 0x3E;
    let store = Varstore::parse(&image).unwrap();
    let conin: Vec<_> = store
        .live_variables()
        .into_iter()
        .filter(|r| r.name() == "ConIn")
        .collect();
    assert_eq!(conin.len(), 1);
    assert_eq!(conin[0].state(), RecordState::Added);
    assert!(store.is_healthy(), "{:?}", store.findings());
}

#[test]
fn deleted_and_replaced_records_are_only_in_the_all_records_view() {
    let image = ms_image();
    let store = Varstore::parse(&image).unwrap();
    assert!(
        store.find("BootOrder", None).is_none(),
        "BootOrder was deleted (0x3D)"
    );
    let all: Vec<_> = store
        .records()
        .iter()
        .filter(|r| r.name() == "BootOrder")
        .collect();
    assert!(all.iter().any(|r| r.state() == RecordState::Deleted));
    assert_eq!(store.records().len(), 57);
}

#[test]
fn an_interrupted_header_write_makes_the_firmware_reclaim() {
    // A header programmed with State still 0xFF after the last record: the firmware walks over
    // the header alone, finds non-0xFF bytes in "free" space and reclaims (spec §6.2, §8.5).
    let mut image = ms_image();
    let store = Varstore::parse(&image).unwrap();
    let free = store.free_offset() as usize;
    let timeout = offset_of(&store, "Timeout", RecordState::Added);
    let record: Vec<u8> = image[timeout..timeout + 80].to_vec();
    image[free..free + 80].copy_from_slice(&record);
    image[free + 2] = 0xFF;
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(store.verdict(), FirmwareVerdict::ReclaimAtBoot);
    assert!(store.records().last().unwrap().header_only);
    assert_eq!(store.live_variables().len(), 31);
}

#[test]
fn a_pending_ftw_write_that_reached_the_spare_is_reported() {
    // Experiment A's write queue (spec §9.2), with DestinationComplete not yet set.
    let mut image = varstore::OVMF_4M.create();
    let queue = 0x41020;
    image[queue] = 0xFC; // header allocated, writes allocated, not complete
    image[queue + 4..queue + 20]
        .copy_from_slice(&uguid::guid!("fe5cea76-4f72-49e8-986f-2cd899dffe5d").to_bytes());
    image[queue + 24..queue + 32].copy_from_slice(&1u64.to_le_bytes());
    image[queue + 32..queue + 40].copy_from_slice(&0u64.to_le_bytes());
    let record = queue + 40;
    image[record] = 0xFD; // SpareComplete only
    image[record + 8..record + 16].copy_from_slice(&0u64.to_le_bytes());
    image[record + 16..record + 24].copy_from_slice(&0x48u64.to_le_bytes());
    image[record + 24..record + 32].copy_from_slice(&0x3FFB8u64.to_le_bytes());
    image[record + 32..record + 40].copy_from_slice(&(-0x42000i64).to_le_bytes());
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(store.verdict(), FirmwareVerdict::RestartFtwWrite);
    let ftw = store.ftw().unwrap();
    assert_eq!(ftw.writes.len(), 1);
    assert_eq!(ftw.writes[0].records[0].length, 0x3FFB8);

    // Once complete (header 0xF8, record 0xF9) it is history, and the store is healthy.
    image[queue] = 0xF8;
    image[record] = 0xF9;
    let store = Varstore::parse(&image).unwrap();
    assert_eq!(store.verdict(), FirmwareVerdict::Accept);
    assert!(store.ftw().unwrap().writes[0].complete);
}
