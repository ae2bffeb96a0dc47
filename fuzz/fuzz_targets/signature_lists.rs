//! EFI_SIGNATURE_LIST parsing (`varstore::decode::signature_lists`,
//! `varstore::secureboot::SignatureDb::parse`), the checks enrolment applies to them and the
//! decoding `secureboot status` shows. No panic; a database written back parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varstore::decode::{describe_signature, signature_lists};
use varstore::secureboot::{check_signature_lists, SignatureDb};

fuzz_target!(|data: &[u8]| {
    if let Ok(lists) = signature_lists(data) {
        for list in &lists {
            for (_, entry) in &list.entries {
                let _ = describe_signature(list.signature_type, entry);
            }
        }
    }
    let Ok(db) = SignatureDb::parse(data) else {
        return;
    };
    let _ = check_signature_lists(&db);
    let _ = (db.has_hashes(), db.newest_certificate_time(), db.is_empty());
    let bytes = db.to_bytes();
    let again = SignatureDb::parse(&bytes).expect("a written database parses");
    assert_eq!(again, db);
    // Merging into itself adds nothing; into an empty database, everything once.
    let mut same = db.clone();
    assert_eq!(same.merge(&db), 0);
    let mut fresh = SignatureDb::default();
    fresh.merge(&db);
    let mut twice = fresh.clone();
    assert_eq!(twice.merge(&db), 0);
    assert_eq!(twice, fresh);
});
