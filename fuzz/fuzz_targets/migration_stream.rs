//! The incoming side of the pflash migration stream (`pflash::migration::incoming_with`, what
//! a live-migration destination reads, and `load_with`, what a snapshot restore reads), from
//! bytes. Two kinds of input: the bytes as a stream (mostly refused at the magic or a CRC),
//! and a real snapshot of an 8 KiB device whose content comes from the input, with a few of
//! its bytes changed as the input says. No panic; both readers agree on a stream they
//! accept; an unchanged snapshot loads back to the same content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pflash::migration::{incoming_with, load_with, save, IncomingOptions};
use pflash::{Geometry, NoEvents, NoStorage, Pflash};
use std::path::Path;

const SIZE: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let local = Geometry::q35(SIZE as u64).unwrap();
    let options = IncomingOptions {
        accept_compat_mismatch: true,
    };
    let backing = Path::new("fuzz.fd");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // The live destination and the snapshot restore read the same stream.
        let live = incoming_with(rest, std::io::sink(), &local, backing, &options);
        let snapshot = load_with(rest, &local, backing, &options);
        if let (Ok(live), Ok(snapshot)) = (&live, &snapshot) {
            assert_eq!(live.memory(), snapshot.memory());
        }
        if let Err(e) = snapshot {
            let _ = e.to_string();
        }
        return;
    }
    // A snapshot of a device holding the input (repeated), then edits: (offset, xor) pairs.
    let split = usize::from(mode >> 1) * 2 % (rest.len() + 1);
    let (content_seed, edits) = rest.split_at(split);
    let mut content = vec![0xFFu8; SIZE];
    if !content_seed.is_empty() {
        for (i, b) in content.iter_mut().enumerate() {
            *b = content_seed[i % content_seed.len()];
        }
    }
    let dev = Pflash::new(local.clone(), content.clone(), NoStorage, NoEvents).unwrap();
    let mut stream = Vec::new();
    save(&dev, &mut stream).unwrap();
    if edits.len() < 3 {
        let back = load_with(&stream[..], &local, backing, &options).expect("a snapshot loads");
        assert_eq!(back.memory(), &content[..]);
        return;
    }
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % stream.len();
        stream[at] ^= edit[2];
    }
    match load_with(&stream[..], &local, backing, &options) {
        Ok(back) => assert_eq!(back.memory().len(), SIZE),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
