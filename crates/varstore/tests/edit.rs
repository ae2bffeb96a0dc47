//! The editor against a model: random sequences of sets and deletes, with both strategies, on
//! blank layouts and the Debian templates, keep the store healthy (verdict Accept) and its
//! live view equal to a map; the append strategy only ever clears bits until it compacts; the
//! firmware's limits are refused and a refused edit changes nothing.
//!
//! The Debian images come from the `ovmf` and `qemu-efi-aarch64` packages, which the test
//! script installs.

use std::collections::BTreeMap;
use varstore::edit::{Change, EditError, Editor, Limits, Strategy};
use varstore::{guid, Attributes, EfiTime, FirmwareVerdict, Guid, Layout, Varstore};

/// splitmix64: tiny and deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TEST_GUID: Guid = uguid::guid!("4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01");
const NV_BS_RT: Attributes = Attributes(0x7);

/// (name, guid) -> (attributes, data, timestamp of AT variables)
type Model = BTreeMap<(String, Guid), (u32, Vec<u8>, Option<[u8; 16]>)>;

fn live_view(image: &[u8]) -> Model {
    let store = Varstore::parse(image).expect("the edited image parses");
    assert_eq!(
        store.verdict(),
        FirmwareVerdict::Accept,
        "{:#?}",
        store.findings()
    );
    assert!(store.is_healthy(), "{:#?}", store.findings());
    store
        .live_variables()
        .into_iter()
        .map(|r| {
            let time = r
                .attributes
                .is_time_based_authenticated()
                .then(|| r.timestamp.unwrap().0);
            ((r.name(), r.guid), (r.attributes.0, r.data.to_vec(), time))
        })
        .collect()
}

/// Bytes of `new` that have a bit set that `old` had clear: impossible on NOR flash without
/// an erase.
fn set_bits(old: &[u8], new: &[u8]) -> Vec<usize> {
    old.iter()
        .zip(new)
        .enumerate()
        .filter(|(_, (o, n))| *n & !*o != 0)
        .map(|(i, _)| i)
        .collect()
}

fn random_sequence(image: Vec<u8>, seed: u64, steps: usize, strategy: Strategy) -> usize {
    let mut rng = Rng(seed);
    let mut model = live_view(&image);
    let mut current = image;
    let names: Vec<String> = (0..12).map(|i| format!("Var{i}")).collect();
    let guids = [TEST_GUID, guid::EFI_GLOBAL_VARIABLE];
    let attrs = [0x3u32, 0x7, 0x27];
    let mut appended = 0;
    let mut compactions = 0;
    for step in 0..steps {
        let mut editor = Editor::new(&current).unwrap();
        let pick_existing = !model.is_empty() && rng.below(3) == 0;
        let (name, guid) = if pick_existing {
            let keys: Vec<_> = model.keys().cloned().collect();
            keys[rng.below(keys.len())].clone()
        } else {
            (names[rng.below(names.len())].clone(), guids[rng.below(2)])
        };
        let outcome = if rng.below(4) == 0 {
            let result = editor.delete(&name, guid, strategy);
            match model.remove(&(name.clone(), guid)) {
                Some(_) => result.unwrap(),
                None => {
                    assert!(
                        matches!(result, Err(EditError::NotFound { .. })),
                        "{result:?}"
                    );
                    assert_eq!(editor.image(), current, "a failed delete changed nothing");
                    continue;
                }
            }
        } else {
            let attr = attrs[rng.below(attrs.len())];
            // Sizes from one byte to a few KiB, so that stores fill up and get compacted.
            let max = if rng.below(4) == 0 { 4000 } else { 40 };
            let len = 1 + rng.below(max);
            let byte = rng.next() as u8;
            let data = vec![byte; len];
            let time = (attr & 0x20 != 0 && rng.below(2) == 0).then(|| {
                let mut t = [0u8; 16];
                t[..2].copy_from_slice(&(2000 + rng.below(100) as u16).to_le_bytes());
                t[2] = 1 + rng.below(12) as u8;
                t[3] = 1 + rng.below(28) as u8;
                t
            });
            let before = model.get(&(name.clone(), guid)).cloned();
            let outcome = editor
                .set(
                    &name,
                    guid,
                    Attributes(attr),
                    &data,
                    time.map(EfiTime),
                    strategy,
                )
                .unwrap_or_else(|e| panic!("step {step}: set {name}: {e}"));
            let time = (attr & 0x20 != 0).then(|| {
                time.or(before.as_ref().and_then(|b| b.2))
                    .unwrap_or([0; 16])
            });
            let entry = (attr, data, time);
            let expected = match &before {
                None => Change::Added,
                Some(b) if *b == entry => Change::Unchanged,
                Some(_) => Change::Replaced,
            };
            assert_eq!(outcome.change, expected, "step {step}: set {name}");
            model.insert((name, guid), entry);
            outcome
        };
        let edited = editor.finish();
        assert_eq!(live_view(&edited), model, "step {step}");
        if outcome.compacted {
            compactions += 1;
        } else {
            appended += 1;
            let grown = set_bits(&current, &edited);
            assert!(
                grown.is_empty(),
                "step {step}: append set bits at {grown:x?}"
            );
        }
        if strategy == Strategy::Compact {
            assert!(outcome.compacted || outcome.change == Change::Unchanged);
            let store = Varstore::parse(&edited).unwrap();
            assert_eq!(store.records().len(), store.live_variables().len());
        }
        if outcome.change == Change::Unchanged {
            assert_eq!(edited, current, "an unchanged set writes nothing");
        }
        // Nothing outside the variable area moves (FV header, FTW working block, spare).
        let store = Varstore::parse(&edited).unwrap();
        let start = store.store().offset as usize + 28;
        let end = store.store_end() as usize;
        assert_eq!(edited[..start], current[..start], "step {step}");
        assert_eq!(edited[end..], current[end..], "step {step}");
        current = edited;
    }
    if strategy == Strategy::Append {
        assert!(appended > steps / 2, "most appends fit ({appended})");
    }
    compactions
}

#[test]
fn random_edits_on_a_small_store_match_a_model_with_both_strategies() {
    for seed in 0..6 {
        for strategy in [Strategy::Append, Strategy::Compact] {
            let image = Layout::by_name("ovmf-2m").unwrap().create();
            let compactions = random_sequence(image, seed, 150, strategy);
            assert!(compactions > 0, "the sequence exercised compaction");
        }
    }
}

#[test]
fn random_edits_on_the_debian_templates_match_a_model() {
    // The 64 MiB AAVMF image is copied and parsed at every step: a few steps suffice to show
    // that its 0x00 padding and firmware-formatted header are kept.
    for (seed, path, steps) in [
        (100, "/usr/share/OVMF/OVMF_VARS.ms.fd", 120),
        (101, "/usr/share/AAVMF/AAVMF_VARS.ms.fd", 8),
    ] {
        let image = std::fs::read(path).unwrap_or_else(|e| {
            panic!("{path}: {e}: install Debian's ovmf and qemu-efi-aarch64 packages")
        });
        random_sequence(image, seed, steps, Strategy::Append);
    }
}

#[test]
fn append_retires_old_copies_like_the_firmware() {
    let image = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").unwrap();
    let before = Varstore::parse(&image).unwrap();
    let timeout_at = before.find("Timeout", None).unwrap().offset as usize;
    let lang_at = before.find("Lang", None).unwrap().offset as usize;
    let free = before.free_offset() as usize;
    let mut editor = Editor::new(&image).unwrap();
    let g = guid::EFI_GLOBAL_VARIABLE;
    let out = editor
        .set("Timeout", g, NV_BS_RT, &[3, 0], None, Strategy::Append)
        .unwrap();
    assert_eq!(out.change, Change::Replaced);
    assert!(!out.compacted);
    editor.delete("Lang", g, Strategy::Append).unwrap();
    let edited = editor.finish();
    assert_eq!(edited[timeout_at + 2], 0x3C, "replaced copy");
    assert_eq!(edited[lang_at + 2], 0x3D, "deleted directly");
    assert_eq!(edited[free..free + 2], [0xAA, 0x55], "new copy appended");
    assert_eq!(edited[free + 2], 0x3F);
    let after = Varstore::parse(&edited).unwrap();
    assert_eq!(after.find("Timeout", None).unwrap().offset as usize, free);
    assert!(after.find("Lang", None).is_none());
    assert_eq!(after.records().len(), before.records().len() + 1);
    assert!(set_bits(&image, &edited).is_empty());
}

#[test]
fn compact_keeps_live_variables_in_order_and_the_new_copy_last() {
    let image = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").unwrap();
    let before = Varstore::parse(&image).unwrap();
    let names: Vec<String> = before.live_variables().iter().map(|r| r.name()).collect();
    let mut editor = Editor::new(&image).unwrap();
    let out = editor
        .set(
            "Timeout",
            guid::EFI_GLOBAL_VARIABLE,
            NV_BS_RT,
            &[3, 0],
            None,
            Strategy::Compact,
        )
        .unwrap();
    assert!(out.compacted);
    let edited = editor.finish();
    let after = Varstore::parse(&edited).unwrap();
    let after_names: Vec<String> = after.live_variables().iter().map(|r| r.name()).collect();
    let mut expected: Vec<String> = names.into_iter().filter(|n| n != "Timeout").collect();
    expected.push("Timeout".into());
    assert_eq!(after_names, expected);
    assert_eq!(after.records().len(), after.live_variables().len());
    assert!(after.records().iter().all(|r| r.state_byte == 0x3F));
    // The rest of the flash is untouched: FTW working block and spare stay pristine.
    assert_eq!(edited[0x40000..], image[0x40000..]);
}

#[test]
fn a_full_store_is_compacted_then_refused_when_even_that_does_not_fit() {
    let image = Layout::by_name("ovmf-2m").unwrap().create();
    let mut editor = Editor::new(&image).unwrap();
    let big = vec![0x5A; 0x1F00];
    let mut compacted = false;
    // Rewriting one 8 KiB variable fills the 56 KiB store after a few copies.
    for i in 0..10u8 {
        let mut data = big.clone();
        data[0] = i;
        let out = editor
            .set("Big", TEST_GUID, NV_BS_RT, &data, None, Strategy::Append)
            .unwrap();
        compacted |= out.compacted;
    }
    assert!(compacted, "the store was reclaimed");
    let snapshot = editor.image().to_vec();
    assert_eq!(live_view(&snapshot).len(), 1);
    // Fill it with distinct variables until nothing more fits.
    let mut i = 0;
    let err = loop {
        match editor.set(
            &format!("Fill{i}"),
            TEST_GUID,
            NV_BS_RT,
            &big,
            None,
            Strategy::Append,
        ) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 20);
    };
    assert!(matches!(err, EditError::StoreFull { .. }), "{err}");
    assert!(err.to_string().contains("store is full"), "{err}");
    let full = editor.image().to_vec();
    assert_eq!(
        live_view(&full).len(),
        i + 1,
        "the refused set changed nothing"
    );
}

#[test]
fn the_firmware_limits_are_refused_with_the_rule() {
    let image = Layout::by_name("ovmf-2m").unwrap().create();
    let mut editor = Editor::new(&image).unwrap();
    let set = |editor: &mut Editor, attrs: u32, data: &[u8], time: Option<EfiTime>| {
        editor
            .set(
                "V",
                TEST_GUID,
                Attributes(attrs),
                data,
                time,
                Strategy::Append,
            )
            .unwrap_err()
            .to_string()
    };
    assert!(set(&mut editor, 0x5, b"x", None).contains("rt requires bs"));
    assert!(set(&mut editor, 0x1, b"x", None).contains("nv alone"));
    assert!(set(&mut editor, 0x6, b"x", None).contains("volatile"));
    assert!(set(&mut editor, 0xB, b"x", None).contains("hr"));
    assert!(set(&mut editor, 0x13, b"x", None).contains("aw"));
    assert!(set(&mut editor, 0x43, b"x", None).contains("append"));
    assert!(set(&mut editor, 0x103, b"x", None).contains("unknown"));
    assert!(set(&mut editor, 0x3, b"", None).contains("empty data"));
    assert!(set(&mut editor, 0x3, b"x", Some(EfiTime([1; 16]))).contains("timestamp"));
    // 2M: 0x2000 for ordinary variables, 0x2800 for authenticated ones; "V\0" is 4 bytes.
    let max_plain = 0x2000 - 60 - 4;
    assert!(set(&mut editor, 0x3, &vec![0; max_plain + 1], None).contains("limit of 8192"));
    editor
        .set(
            "V",
            TEST_GUID,
            Attributes(0x3),
            &vec![0; max_plain],
            None,
            Strategy::Append,
        )
        .unwrap();
    editor
        .set(
            "V",
            TEST_GUID,
            Attributes(0x27),
            &vec![0; max_plain + 1],
            None,
            Strategy::Append,
        )
        .unwrap();
    let err = editor
        .set("", TEST_GUID, Attributes(0x3), b"x", None, Strategy::Append)
        .unwrap_err();
    assert!(matches!(err, EditError::InvalidName { .. }));

    let mut editor4m = Editor::new(&Layout::by_name("ovmf-4m").unwrap().create()).unwrap();
    assert_eq!(
        editor4m.limits(),
        Limits {
            max_variable_size: 0x8400,
            max_auth_variable_size: 0x8400
        }
    );
    editor4m
        .set(
            "V",
            TEST_GUID,
            Attributes(0x3),
            &vec![0; 0x8000],
            None,
            Strategy::Append,
        )
        .unwrap();
}

#[test]
fn a_pending_fault_tolerant_write_is_refused() {
    let mut image = Layout::by_name("ovmf-4m").unwrap().create();
    // A write header allocated (0xFE) with one record, not complete (spec §9.2).
    let q = 0x41020;
    image[q] = 0xFC;
    image[q + 24..q + 32].copy_from_slice(&1u64.to_le_bytes());
    image[q + 32..q + 40].copy_from_slice(&0u64.to_le_bytes());
    image[q + 40] = 0xFD; // spare complete, destination not
    let err = Editor::new(&image).unwrap_err();
    assert!(
        matches!(err, EditError::PendingFtwWrite { offset: 0x41020 }),
        "{err}"
    );
    assert!(err.to_string().contains("fault-tolerant write"), "{err}");
}

#[test]
fn a_store_the_firmware_refuses_is_not_edited() {
    let mut image = Layout::by_name("ovmf-4m").unwrap().create();
    image[0x5C] = 0; // store Format byte
    let err = Editor::new(&image).unwrap_err();
    assert!(
        matches!(err, EditError::Unusable { offset: 0x5C, .. }),
        "{err}"
    );
}

#[test]
fn garbage_after_the_last_record_is_compacted_away_before_appending() {
    let mut image = Layout::by_name("ovmf-4m").unwrap().create();
    image[0x5000] = 0; // the firmware would reclaim at boot (spec §8.5)
    let mut editor = Editor::new(&image).unwrap();
    let out = editor
        .set("V", TEST_GUID, NV_BS_RT, b"x", None, Strategy::Append)
        .unwrap();
    assert!(out.compacted, "appending after garbage would be pointless");
    let mut expected = live_view(&Layout::by_name("ovmf-4m").unwrap().create());
    expected.insert(
        ("V".to_string(), TEST_GUID),
        (NV_BS_RT.0, b"x".to_vec(), None),
    );
    assert_eq!(
        live_view(&editor.finish()),
        expected,
        "the template's variables and V, nothing lost"
    );
}

#[test]
fn at_variables_keep_their_timestamp_unless_given_one() {
    let image = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").unwrap();
    let store = Varstore::parse(&image).unwrap();
    let db = store.find("db", None).unwrap();
    let time = db.timestamp.unwrap();
    let data = db.data.to_vec();
    let mut editor = Editor::new(&image).unwrap();
    let g = guid::IMAGE_SECURITY_DATABASE;
    let same = editor
        .set("db", g, Attributes(0x27), &data, None, Strategy::Append)
        .unwrap();
    assert_eq!(same.change, Change::Unchanged);
    let mut newer = time.0;
    newer[0] = newer[0].wrapping_add(1);
    let out = editor
        .set(
            "db",
            g,
            Attributes(0x27),
            &data,
            Some(EfiTime(newer)),
            Strategy::Append,
        )
        .unwrap();
    assert_eq!(out.change, Change::Replaced, "a new timestamp is a change");
    let mut shorter = data.clone();
    shorter.truncate(100);
    editor
        .set("db", g, Attributes(0x27), &shorter, None, Strategy::Append)
        .unwrap();
    let edited = editor.finish();
    let after = Varstore::parse(&edited).unwrap();
    assert_eq!(
        after.find("db", None).unwrap().timestamp,
        Some(EfiTime(newer))
    );
}
