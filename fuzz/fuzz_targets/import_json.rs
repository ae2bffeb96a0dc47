//! Import JSON in every dialect the importer reads (QEMU's uefi-vars, virt-fw-vars,
//! python-uefivars: `varstore::json::VariableList::from_json`, the model export writes
//! too), then the import itself into a blank store. No panic;
//! a list that imports is in the store afterwards, healthy, every variable with its data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvram::edit::import;
use std::sync::OnceLock;
use varstore::edit::{Editor, Strategy};
use varstore::json::VariableList;
use varstore::{Guid, Varstore};

fn blank() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| varstore::Layout::by_name("ovmf-2m").unwrap().create())
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<varstore::json::VariableList>(data);
    let list = match VariableList::from_json(data) {
        Ok(list) => list,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut editor = Editor::new(blank()).unwrap();
    let strategy = if data.len() % 2 == 0 {
        Strategy::Append
    } else {
        Strategy::Compact
    };
    match import(&mut editor, &list, strategy, data.len() % 3 == 0) {
        Ok(report) => {
            assert_eq!(
                report.added + report.replaced + report.unchanged,
                list.variables.len()
            );
            let image = editor.finish();
            let store = Varstore::parse(&image).expect("an edited store parses");
            assert!(store.is_healthy(), "{:?}", store.findings());
            assert_eq!(store.live_variables().len(), list.variables.len());
            for v in &list.variables {
                let guid = Guid::try_parse(&v.guid).unwrap();
                let found = store.find(&v.name, Some(guid)).expect("imported variable");
                assert_eq!(found.data, hex::decode(&v.data).unwrap());
                assert_eq!(found.attributes.0, v.attr);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
