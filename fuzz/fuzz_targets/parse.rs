//! Parses arbitrary bytes as a variable store and walks everything reachable from the result.
//! `Varstore::parse` promises never to panic and to do work bounded by the image length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varstore::{decode, json::VariableList, Varstore};

fuzz_target!(|data: &[u8]| {
    let store = match Varstore::parse(data) {
        Ok(store) => store,
        Err(err) => {
            let _ = (err.to_string(), err.kind(), err.offset());
            return;
        }
    };
    // Each record has at least a 32-byte header.
    assert!(store.records().len() <= data.len() / 32 + 1);
    for finding in store.findings() {
        let _ = finding.to_string();
    }
    let _ = (
        store.verdict(),
        store.verdict().explain(),
        store.is_healthy(),
    );
    let _ = (
        store.fv(),
        store.store(),
        store.layout(),
        store.free_space(),
    );
    assert!(store.free_offset() <= store.store_end());
    assert!(store.store_end() <= data.len() as u64);
    for record in store.records() {
        let _ = (
            record.name(),
            record.state(),
            record.time(),
            record.attributes.flags(),
        );
        let _ = decode::summary(record);
    }
    for record in store.live_variables() {
        let _ = decode::summary(record);
    }
    let _ = serde_json::to_string(&VariableList::from_store(&store)).expect("serialises");
    if let Some(ftw) = store.ftw() {
        for write in &ftw.writes {
            let _ = write.spare_complete_without_destination();
        }
    }
    let _ = store.find("PK", None);
});
