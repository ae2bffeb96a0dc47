//! `FileStorage`: locking, write coalescing and ordering, durability policies, errors.

use pflash::{Durability, FileStorage, Storage, StorageStats};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

const LEN: usize = 64 * 1024;

fn image(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join("vars.fd");
    fs::write(&path, content).unwrap();
    path
}

/// A fake device: applies an operation to the content and tells the storage, as the device
/// does after a completed program or erase.
struct Fake {
    content: Vec<u8>,
    storage: FileStorage,
}

impl Fake {
    fn new(path: &Path, durability: Durability) -> Self {
        let storage = FileStorage::open(path, LEN, false, durability).unwrap();
        let content = storage.read_content().unwrap();
        Self { content, storage }
    }

    fn op(&mut self, range: Range<usize>, value: u8) {
        self.content[range.clone()].fill(value);
        self.storage.record_change(&self.content, range).unwrap();
    }

    fn flush_point(&mut self) {
        self.storage.flush_point(&self.content).unwrap();
    }
}

#[test]
fn a_second_open_fails_at_once_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let first = FileStorage::open(&path, LEN, false, Durability::None).unwrap();
    for read_only in [false, true] {
        let error = FileStorage::open(&path, LEN, read_only, Durability::None).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("locked by another process (a running VM?)"),
            "{message}"
        );
    }
    drop(first);
    // The lock goes with the storage.
    FileStorage::open(&path, LEN, false, Durability::None).unwrap();
}

#[test]
fn read_only_flashes_share_the_lock_and_exclude_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let a = FileStorage::open(&path, LEN, true, Durability::None).unwrap();
    let b = FileStorage::open(&path, LEN, true, Durability::None).unwrap();
    assert!(a.is_read_only() && b.is_read_only());
    let error = FileStorage::open(&path, LEN, false, Durability::None).unwrap_err();
    assert!(error.to_string().contains("locked by another process"));
    drop((a, b));
    FileStorage::open(&path, LEN, false, Durability::None).unwrap();
}

#[test]
fn a_read_only_storage_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    // Read-only opens need no write permission on the file.
    let mut perms = fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    fs::set_permissions(&path, perms).unwrap();
    let mut storage = FileStorage::open(&path, LEN, true, Durability::FlushPoints).unwrap();
    let mut content = storage.read_content().unwrap();
    content[0] = 0;
    let error = storage.record_change(&content, 0..1).unwrap_err();
    assert!(error.to_string().contains("read-only"), "{error}");
    storage.flush_point(&content).unwrap();
    assert_eq!(storage.stats().bytes_written, 0);
    assert!(fs::read(&path).unwrap() == vec![0xff; LEN]);
}

#[test]
fn wrong_size_and_non_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN - 4096]);
    let message = FileStorage::open(&path, LEN, false, Durability::None)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!("{}", LEN - 4096))
            && message.contains(&format!("{LEN}")),
        "{message}"
    );
    let message = FileStorage::open(dir.path(), LEN, true, Durability::None)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("not a regular file or block device"),
        "{message}"
    );
    let missing = dir.path().join("missing.fd");
    let message = FileStorage::open(&missing, LEN, false, Durability::None)
        .unwrap_err()
        .to_string();
    assert!(message.contains("missing.fd: cannot open"), "{message}");
}

#[test]
fn a_sequence_of_contiguous_programs_is_one_write_at_its_flush_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut dev = Fake::new(&path, Durability::FlushPoints);
    // A variable programmed byte by byte, as OVMF does.
    for i in 0..100 {
        dev.op(0x1000 + i..0x1001 + i, i as u8);
    }
    assert_eq!(
        dev.storage.stats().write_syscalls,
        0,
        "nothing before the flush point"
    );
    assert!(fs::read(&path).unwrap() == vec![0xff; LEN]);
    assert_eq!(dev.storage.pending_bytes(), 100);
    dev.flush_point();
    assert!(fs::read(&path).unwrap() == dev.content);
    assert_eq!(
        dev.storage.stats(),
        StorageStats {
            operations: 100,
            flush_points: 1,
            flushes: 1,
            write_syscalls: 1,
            fsyncs: 1,
            bytes_written: 100,
        }
    );
    // A flush point with nothing buffered writes and syncs nothing.
    dev.flush_point();
    assert_eq!(dev.storage.stats().write_syscalls, 1);
    assert_eq!(dev.storage.stats().fsyncs, 1);
}

#[test]
fn separate_ranges_are_written_in_operation_order_and_only_changed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut dev = Fake::new(&path, Durability::None);
    // Descending and with gaps: three ranges, three writes, no gap bytes written.
    dev.op(0x3000..0x3004, 1);
    dev.op(0x2000..0x2004, 2);
    dev.op(0x2004..0x2008, 3); // extends the last range
    dev.op(0x2010..0x2011, 4);
    dev.flush_point();
    assert!(fs::read(&path).unwrap() == dev.content);
    let stats = dev.storage.stats();
    assert_eq!((stats.write_syscalls, stats.bytes_written), (3, 13));
    assert_eq!(stats.fsyncs, 0, "Durability::None never syncs");
}

#[test]
fn a_change_overwriting_buffered_bytes_is_written_after_them_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut dev = Fake::new(&path, Durability::None);
    dev.op(0x000..0x004, 1);
    dev.op(0x100..0x104, 2);
    // Rewrites a byte of the first change: it must not reach the file with the first change
    // (ahead of the second), so it is a third write; the first keeps the byte it wrote.
    dev.op(0x002..0x003, 3);
    dev.op(0x003..0x004, 4); // contiguous with the third change: merged
    dev.op(0x101..0x102, 5);
    assert_eq!(dev.storage.pending_bytes(), 4 + 4 + 2 + 1);
    assert!(
        fs::read(&path).unwrap() == vec![0xff; LEN],
        "nothing before the flush point"
    );
    dev.flush_point();
    assert!(fs::read(&path).unwrap() == dev.content);
    let stats = dev.storage.stats();
    assert_eq!((stats.flushes, stats.write_syscalls), (1, 4));
}

#[test]
fn changes_after_the_last_flush_point_are_written_by_flush_or_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut dev = Fake::new(&path, Durability::FlushPoints);
    dev.op(0x10..0x11, 0);
    dev.storage.flush().unwrap();
    assert_eq!(fs::read(&path).unwrap()[0x10], 0);
    dev.op(0x11..0x12, 0);
    drop(dev.storage);
    assert!(fs::read(&path).unwrap() == dev.content);
}

#[test]
fn every_operation_writes_through_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut dev = Fake::new(&path, Durability::EveryOperation);
    for i in 0..10 {
        dev.op(i..i + 1, 0);
        assert!(fs::read(&path).unwrap() == dev.content, "written at once");
    }
    dev.op(0x1000..0x2000, 0xff); // an erase
    dev.flush_point();
    let stats = dev.storage.stats();
    assert_eq!(
        (stats.write_syscalls, stats.fsyncs, stats.bytes_written),
        (11, 11, 10 + 0x1000)
    );
}

#[test]
fn write_all_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut storage = FileStorage::open(&path, LEN, false, Durability::None).unwrap();
    let content: Vec<u8> = (0..LEN).map(|i| i as u8).collect();
    storage.write_all(&content).unwrap();
    assert!(fs::read(&path).unwrap() == content);
    assert_eq!(storage.stats().fsyncs, 0);
    storage.sync().unwrap();
    storage.sync().unwrap();
    assert_eq!(storage.stats().fsyncs, 1, "only when something was written");
}

#[test]
fn write_errors_name_the_file_and_keep_the_changes_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    // A descriptor that cannot write (as a revoked or broken one would): every pwrite fails.
    let file = fs::File::open(&path).unwrap();
    let mut storage =
        FileStorage::from_file(file, &path, LEN, false, Durability::FlushPoints).unwrap();
    let mut content = vec![0xff; LEN];
    content[0x10] = 0;
    storage.record_change(&content, 0x10..0x11).unwrap();
    let message = storage.flush_point(&content).unwrap_err().to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains("cannot write 1 bytes at offset 0x10"),
        "{message}"
    );
    assert_eq!(storage.pending_bytes(), 1, "kept for a retry");
    // Bad ranges are errors, not panics.
    assert!(storage.record_change(&content, 0..LEN + 1).is_err());
    assert!(storage.record_change(&content[1..], 0..1).is_err());
}

// ---------------------------------------------------------------------------------------
// With the device.

/// Counts the storage errors the device reports.
#[derive(Default)]
struct Errors(Vec<String>);

impl pflash::PflashEvents for Errors {
    fn storage_error(&mut self, error: &pflash::StorageError) {
        self.0.push(error.to_string());
    }
}

fn status<S: Storage, E: pflash::PflashEvents>(dev: &mut pflash::Pflash<Vec<u8>, S, E>) -> u8 {
    dev.write(0, &[0x70]);
    let mut status = [0];
    dev.read(0, &mut status);
    status[0]
}

#[test]
fn a_storage_error_sets_the_program_error_bit_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let geometry = pflash::Geometry::q35(LEN as u64).unwrap();
    for durability in [Durability::FlushPoints, Durability::EveryOperation] {
        // A descriptor that cannot write: every pwrite fails with EBADF.
        let file = fs::File::open(&path).unwrap();
        let storage = FileStorage::from_file(file, &path, LEN, false, durability).unwrap();
        let mut dev = pflash::Pflash::new(
            geometry.clone(),
            vec![0xff; LEN],
            storage,
            Errors::default(),
        )
        .unwrap();
        dev.write(0x100, &[0x10]);
        dev.write(0x100, &[0xa5]);
        dev.write(0x100, &[0xff]);
        assert_eq!(
            dev.memory()[0x100],
            0xa5,
            "the content is ahead of the file"
        );
        assert_eq!(status(&mut dev), 0x90, "{durability:?}");
        let errors = &dev.events().0;
        // With write-through, the program fails and the retry at the flush point fails again.
        assert!(!errors.is_empty() && errors.len() <= 2, "{errors:?}");
        assert!(
            errors[0].contains(&path.display().to_string())
                && errors[0].contains("cannot write 1 bytes at offset 0x100"),
            "{errors:?}"
        );
        // An erase that cannot reach the file sets the erase error bit.
        dev.write(0, &[0x50]);
        dev.write(0x1000, &[0x20]);
        dev.write(0x1000, &[0xd0]);
        assert_eq!(status(&mut dev) & 0x20, 0x20, "{durability:?}");
    }
    assert!(fs::read(&path).unwrap() == vec![0xff; LEN]);
}

#[test]
fn programs_and_erases_reach_the_file_in_order_through_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let geometry = pflash::Geometry::q35(LEN as u64).unwrap();
    let storage = FileStorage::open(&path, LEN, false, Durability::FlushPoints).unwrap();
    let content = storage.read_content().unwrap();
    let mut dev = pflash::Pflash::new(geometry, content, storage, pflash::NoEvents).unwrap();
    for (i, byte) in b"hello".iter().enumerate() {
        dev.write(0x2000 + i as u64, &[0x10]);
        dev.write(0x2000 + i as u64, &[*byte]);
    }
    assert!(
        fs::read(&path).unwrap() == vec![0xff; LEN],
        "buffered until the flush point"
    );
    dev.write(0x2000, &[0xff]);
    assert_eq!(&fs::read(&path).unwrap()[0x2000..0x2005], b"hello");
    // An erase is written (and synced) at once.
    dev.write(0x2000, &[0x20]);
    dev.write(0x2000, &[0xd0]);
    assert!(fs::read(&path).unwrap() == vec![0xff; LEN]);
    let stats = dev.storage().stats();
    assert_eq!(stats.operations, 6);
    assert_eq!(stats.write_syscalls, 2);
    assert_eq!(stats.bytes_written, 5 + 4096);
    assert_eq!(stats.fsyncs, 2);
}

#[test]
fn a_read_only_flash_keeps_its_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), &vec![0xff; LEN]);
    let mut geometry = pflash::Geometry::q35(LEN as u64).unwrap();
    geometry.read_only = true;
    let storage = FileStorage::open(&path, LEN, true, Durability::FlushPoints).unwrap();
    let content = storage.read_content().unwrap();
    let mut dev = pflash::Pflash::new(geometry, content, storage, pflash::NoEvents).unwrap();
    dev.write(0x10, &[0x10]);
    dev.write(0x10, &[0x00]);
    assert_eq!(status(&mut dev), 0x90);
    dev.write(0, &[0xff]);
    assert_eq!(dev.storage().stats().bytes_written, 0);
    assert!(fs::read(&path).unwrap() == vec![0xff; LEN]);
}
