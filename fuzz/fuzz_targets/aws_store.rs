//! Reads arbitrary bytes as an AWS EC2 store (`nvram::awsstore::AwsStore::open`, what every
//! command does with an AWS `uefi-data` file). Random bytes rarely survive base64, magic and
//! CRC, so the first byte chooses: the file as it is, or the rest as the decompressed
//! variable list wrapped in a valid file. What is accepted must be a store the editor takes,
//! and saving it unchanged must give a file that opens to the same variables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => nvram::awsstore::wrap_list(rest),
        _ => data.to_vec(),
    };
    let _ = nvram::awsstore::looks_like_aws(&file);
    let (store, image) = match nvram::awsstore::AwsStore::open(&file) {
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
    let saved = store.save(&image).expect("an opened store saves");
    let (_, again) = nvram::awsstore::AwsStore::open(&saved).expect("a saved store opens");
    let reparsed = varstore::Varstore::parse(&again).expect("it parses");
    let key = |v: &&varstore::VariableRecord<'_>| {
        (v.name(), v.guid.to_bytes(), v.attributes.0, v.data.to_vec())
    };
    let mut a: Vec<_> = parsed.live_variables().iter().map(key).collect();
    let mut b: Vec<_> = reparsed.live_variables().iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
});
