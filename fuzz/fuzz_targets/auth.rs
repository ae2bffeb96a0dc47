//! `.auth` files (`EFI_VARIABLE_AUTHENTICATION_2` then signature lists):
//! `varstore::secureboot::split_auth2` and `nvram::certs::read_signature_input`. Half the inputs get a
//! valid authentication header in front, so the lists behind it are reached at once. No
//! panic; what is accepted passes the enrolment checks and holds a signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvram::certs::{read_signature_input, SignatureInput};
use varstore::secureboot::{split_auth2, CERT_TYPE_PKCS7};

fn header(cert_data: &[u8]) -> Vec<u8> {
    let mut auth = vec![0xE8, 0x07, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    auth.extend_from_slice(&(24 + cert_data.len() as u32).to_le_bytes());
    auth.extend_from_slice(&0x0200u16.to_le_bytes());
    auth.extend_from_slice(&0x0EF1u16.to_le_bytes());
    auth.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
    auth.extend_from_slice(cert_data);
    auth
}

fuzz_target!(|data: &[u8]| {
    let input = match data.split_first() {
        Some((&n, rest)) if n & 1 == 1 => {
            let cert_len = usize::from(n >> 1).min(rest.len());
            let mut auth = header(&rest[..cert_len]);
            auth.extend_from_slice(&rest[cert_len..]);
            auth
        }
        _ => data.to_vec(),
    };
    if let Some((time, payload)) = split_auth2(&input) {
        assert!(payload.len() <= input.len() - 40);
        assert_eq!(time.0[7..], [0; 9]);
    }
    match read_signature_input(&input) {
        Ok(read) => {
            read.check()
                .expect("what is read passes the enrolment checks");
            if let SignatureInput::Lists { db, .. } = &read {
                assert!(!db.is_empty());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
