//! Certificate input: PEM (one or more blocks) and DER, as `read_signature_input` reads a
//! `--pk`/`--kek`/`--db` file, and the certificate decoding `secureboot status` shows
//! (`certificate_subject`, `certificate_not_before`). The input is tried as it is and, as
//! text, between PEM armour lines. No panic; accepted certificates parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvram::certs::{read_signature_input, SignatureInput};
use varstore::secureboot::{certificate_not_before, certificate_subject};

fn check(bytes: &[u8]) {
    match read_signature_input(bytes) {
        Ok(SignatureInput::Certificates(certs)) => {
            assert!(!certs.is_empty());
            for der in &certs {
                assert!(certificate_not_before(der).is_some());
                assert!(certificate_subject(der).is_some());
            }
        }
        Ok(other) => other
            .check()
            .expect("what is read passes the enrolment checks"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = (certificate_subject(data), certificate_not_before(data));
    check(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let pem = format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n");
        check(pem.as_bytes());
    }
});
