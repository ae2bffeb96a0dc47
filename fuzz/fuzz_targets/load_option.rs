//! Load options (`Boot####`: `varstore::decode::LoadOption::parse`), device paths
//! (`device_path_to_text`) and the device path builders that read user text
//! (`varstore::boot::file_path`, `uri`). No panic; a parsed option written back with
//! `LoadOptionSpec` parses to the same option, and built paths render without error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varstore::boot::{device_path, file_path, uri, LoadOptionSpec};
use varstore::decode::{device_path_to_text, LoadOption};

fuzz_target!(|data: &[u8]| {
    let _ = device_path_to_text(data);
    if let Ok(option) = LoadOption::parse(data) {
        // Where the description's NUL ends: the path list follows.
        let mut at = 6;
        while data[at..at + 2] != [0, 0] {
            at += 2;
        }
        at += 2;
        let path_len = usize::from(u16::from_le_bytes([data[4], data[5]]));
        let spec = LoadOptionSpec {
            attributes: option.attributes,
            description: option.description.clone(),
            file_path_list: data[at..at + path_len].to_vec(),
            optional_data: option.optional_data.clone(),
        };
        if let Ok(bytes) = spec.to_bytes() {
            if !option.description.contains('\u{FFFD}') {
                assert_eq!(LoadOption::parse(&bytes).as_ref(), Ok(&option));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for built in [file_path(text), uri(text)].into_iter().flatten() {
            let rendered = device_path_to_text(&device_path(&[built]));
            assert!(
                text.contains("<malformed") || !rendered.contains("<malformed at"),
                "{text:?} -> {rendered}"
            );
        }
    }
});
