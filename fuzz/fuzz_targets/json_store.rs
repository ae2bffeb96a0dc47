//! Reads arbitrary bytes as a QEMU uefi-vars JSON store (`nvram::jsonstore::JsonStore::open`,
//! what every command does with a `.json` store). What it accepts must be a store the editor
//! accepts, and saving it unchanged must give a file that opens to the same variables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nvram::jsonstore::looks_like_json(data);
    let (store, image) = match nvram::jsonstore::JsonStore::open(data) {
        Ok(opened) => opened,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let parsed = varstore::Varstore::parse(&image).expect("an opened store parses");
    assert!(
        varstore::edit::Editor::new(&image).is_ok(),
        "the editor takes it"
    );
    let live = parsed.live_variables().len();
    // A store over QEMU's storage limit is read but refused when written.
    let Ok(saved) = store.save(&image) else {
        return;
    };
    let (_, again) = nvram::jsonstore::JsonStore::open(&saved).expect("a saved store opens");
    let reparsed = varstore::Varstore::parse(&again).expect("it parses");
    assert_eq!(reparsed.live_variables().len(), live);
    for (a, b) in parsed
        .live_variables()
        .iter()
        .zip(reparsed.live_variables())
    {
        assert_eq!(
            (a.name(), a.guid, a.attributes, a.data),
            (b.name(), b.guid, b.attributes, b.data)
        );
    }
    let _ = nvram::jsonstore::to_json(&image);
});
