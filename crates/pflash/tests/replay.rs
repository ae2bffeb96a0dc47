//! Replays a real OVMF boot (QEMU 7.2 `cfi.pflash01` MMIO trace) on the model: every read
//! must match and the final content must equal what QEMU's device left. The device is in
//! QEMU 7.2's compatibility, the recording's.

use std::ops::Range;

use pflash::{Compat, Geometry, NoEvents, Pflash, PflashEvents, Storage, StorageError};
use pflash_trace::{read_trace_file, replay, TraceOp};

/// Counts storage calls and checks each change against the content it is given.
#[derive(Debug, Default)]
struct Counting {
    changes: usize,
    changed_bytes: usize,
    flushes: usize,
    /// The content as of the last flush point.
    flushed: Vec<u8>,
}

impl Storage for Counting {
    fn record_change(&mut self, _: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.changes += 1;
        self.changed_bytes += range.len();
        Ok(())
    }

    fn flush_point(&mut self, content: &[u8]) -> Result<(), StorageError> {
        self.flushes += 1;
        self.flushed.clear();
        self.flushed.extend_from_slice(content);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Transitions(usize, usize);

impl PflashEvents for Transitions {
    fn array_mode_changed(&mut self, _: bool) {
        self.0 += 1;
    }
    fn invalid_command(&mut self, _: u64, _: u8) {
        self.1 += 1;
    }
}

#[test]
fn ovmf_boot_replays_byte_identical() {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    assert_eq!(before.len(), after.len());
    let lines = read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).unwrap();
    let ops = lines.iter().filter(|l| l.op.is_some()).count();
    assert!(ops > 30_000, "{ops} operations");

    let geometry = Geometry::q35(before.len() as u64)
        .unwrap()
        .with_compat(Compat::Qemu7_2);
    assert_eq!(geometry.num_blocks, 132);
    let mut dev = Pflash::new(
        geometry,
        before,
        Counting::default(),
        Transitions::default(),
    )
    .unwrap();
    let stats = replay(&mut dev, &lines).unwrap_or_else(|m| panic!("{m}"));
    assert!(dev.is_array_mode());
    let first_diff = dev.memory().iter().zip(&after).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "content differs from QEMU's");
    assert_eq!(dev.memory(), &after[..]);

    let writes = lines
        .iter()
        .filter(|l| matches!(l.op, Some(TraceOp::Write { .. })))
        .count();
    assert_eq!(stats.writes, writes);
    let storage = dev.storage();
    // The spec counts 16,319 programmed bytes and 272 returns to read array for this boot.
    println!(
        "replayed {} writes, {} reads, {} resets: {} record_change calls ({} bytes), {} flush_point calls, {} array-mode transitions, {} invalid commands",
        stats.writes,
        stats.reads,
        stats.resets,
        storage.changes,
        storage.changed_bytes,
        storage.flushes,
        dev.events().0,
        dev.events().1,
    );
    assert_eq!(storage.changes, 16_319);
    assert_eq!(storage.changed_bytes, 16_319);
    assert!(storage.flushes >= 272);
    assert_eq!(
        storage.flushed, after,
        "the last flush point saw the final content"
    );
    assert_eq!(dev.events().1, 0);
}

#[test]
fn replay_without_hooks() {
    // The default type parameters: no storage, no events.
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let lines = read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).unwrap();
    let mut dev: Pflash = Pflash::new(
        Geometry::q35(before.len() as u64)
            .unwrap()
            .with_compat(Compat::Qemu7_2),
        before,
        Default::default(),
        NoEvents,
    )
    .unwrap();
    replay(&mut dev, &lines).unwrap();
    assert_eq!(
        dev.memory(),
        &testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"))[..]
    );
}
