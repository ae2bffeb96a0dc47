//! pflash trace files (`pflash::trace::parse_trace`, the text `nvram flash replay` reads).
//! No panic; every parsed line has its 1-based line number.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match pflash::trace::parse_trace(&text) {
        Ok(lines) => {
            let count = text.lines().count();
            assert_eq!(lines.len(), count);
            for (i, line) in lines.iter().enumerate() {
                assert_eq!(line.line, i + 1);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
