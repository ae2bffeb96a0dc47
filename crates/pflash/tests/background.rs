//! `BackgroundStorage`: the writer thread's order, back-pressure, wake-ups and errors.

use pflash::{
    BackgroundOptions, BackgroundStorage, Durability, FileStorage, Geometry, Pflash, PflashEvents,
    StorageError, Wake,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LEN: usize = 64 * 1024;

fn image(dir: &Path) -> PathBuf {
    let path = dir.join("vars.fd");
    fs::write(&path, vec![0xff; LEN]).unwrap();
    path
}

fn device(path: &Path, options: BackgroundOptions) -> Pflash<Vec<u8>, BackgroundStorage, Errors> {
    let file = FileStorage::open(path, LEN, false, Durability::FlushPoints).unwrap();
    let content = file.read_content().unwrap();
    let storage = BackgroundStorage::spawn(file, options).unwrap();
    Pflash::new(
        Geometry::q35(LEN as u64).unwrap(),
        content,
        storage,
        Errors::default(),
    )
    .unwrap()
}

/// Programs `bytes` at `at` the way OVMF does, one command sequence per byte.
fn program<S: pflash::Storage, E: PflashEvents>(
    dev: &mut Pflash<Vec<u8>, S, E>,
    at: u64,
    bytes: &[u8],
) {
    for (i, &b) in bytes.iter().enumerate() {
        dev.write(at + i as u64, &[0x10]);
        dev.write(at + i as u64, &[b]);
        dev.write(at + i as u64, &[0xff]);
    }
}

fn erase<S: pflash::Storage, E: PflashEvents>(dev: &mut Pflash<Vec<u8>, S, E>, at: u64) {
    dev.write(at, &[0x20]);
    dev.write(at, &[0xd0]);
    dev.write(at, &[0xff]);
}

#[derive(Default)]
struct Errors(Vec<String>);

impl PflashEvents for Errors {
    fn storage_error(&mut self, error: &StorageError) {
        self.0.push(error.to_string());
    }
}

/// A pseudo-random mix of programs and erases; the file must end equal to the content.
#[test]
fn the_file_ends_equal_to_the_content_after_flush_and_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let mut dev = device(&path, BackgroundOptions::default());
    let mut x = 0x2545_f491u32;
    for round in 0..40u64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let at = u64::from(x) % (LEN as u64 - 64);
        program(&mut dev, at, &x.to_le_bytes());
        if round % 7 == 0 {
            erase(&mut dev, at);
        }
    }
    dev.storage_mut().flush().unwrap();
    assert!(fs::read(&path).unwrap() == dev.memory());
    let stats = dev.storage().stats();
    assert_eq!(stats.file.operations, 40 * 4 + 6);
    assert!(stats.file.flush_points >= 40 * 4, "{stats:?}");
    // Programs after the last flush point, then drop.
    dev.write(0x10, &[0x10]);
    dev.write(0x10, &[0x00]);
    let (content, storage, events) = dev.into_parts();
    drop(storage);
    assert!(fs::read(&path).unwrap() == content);
    assert!(events.0.is_empty(), "{:?}", events.0);
}

#[test]
fn a_full_backlog_blocks_the_handler_until_the_writer_took_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    // Room for a few entries only: a burst of scattered programs must wait.
    let options = BackgroundOptions {
        backlog_bytes: 128,
        ..BackgroundOptions::default()
    };
    let mut dev = device(&path, options);
    for i in 0..500u64 {
        program(&mut dev, (i * 97) % LEN as u64, &[i as u8]);
    }
    // A sector erase is bigger than the whole backlog: taken alone.
    erase(&mut dev, 0x4000);
    let storage = dev.storage();
    let stats = storage.stats();
    assert!(stats.backpressure_waits > 0, "{stats:?}");
    let content = dev.memory().to_vec();
    let (_, storage, _) = dev.into_parts();
    let file = storage.finish().unwrap();
    assert_eq!(file.stats().operations, 501);
    assert!(fs::read(&path).unwrap() == content);
}

#[test]
fn a_writer_that_never_parks_is_never_woken_by_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let polling = BackgroundOptions {
        park_after: None,
        ..BackgroundOptions::default()
    };
    let mut dev = device(&path, polling);
    for i in 0..2000u64 {
        program(&mut dev, 0x1000 + i, &[i as u8]);
    }
    dev.storage_mut().flush().unwrap();
    assert_eq!(dev.storage().stats().wakeups, 0);
    assert!(fs::read(&path).unwrap() == dev.memory());
    drop(dev);

    // A writer that parks as soon as it is idle is woken by flush points.
    let eager = BackgroundOptions {
        park_after: Some(Duration::ZERO),
        ..BackgroundOptions::default()
    };
    let mut dev = device(&path, eager);
    wait_until_parked(dev.storage());
    program(&mut dev, 0x3000, &[1, 2, 3]);
    let (_, storage, _) = dev.into_parts();
    assert!(storage.stats().wakeups >= 1);
}

/// Waits (up to 10 s, for a loaded machine) until the writer thread has parked.
fn wait_until_parked(storage: &BackgroundStorage) {
    for _ in 0..1000 {
        if storage.is_parked() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the writer did not park within 10 s");
}

#[test]
fn with_wake_by_caller_the_handler_never_wakes_the_writer_and_kick_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let before = fs::read(&path).unwrap();
    let options = BackgroundOptions {
        park_after: Some(Duration::ZERO),
        wake: Wake::ByCaller,
        ..BackgroundOptions::default()
    };
    let mut dev = device(&path, options);
    // Idle from the start, the writer parks at once.
    wait_until_parked(dev.storage());
    dev.storage().kick();
    assert_eq!(dev.storage().stats().kicks, 0, "nothing to do: no wake-up");
    for i in 0..300u64 {
        program(&mut dev, 0x1000 + i, &[i as u8]);
    }
    erase(&mut dev, 0x8000);
    // Flush points and a backlog past half full (the erase) woke nobody: the parked writer
    // took nothing.
    std::thread::sleep(Duration::from_millis(20));
    let stats = dev.storage().stats();
    assert_eq!((stats.wakeups, stats.batches), (0, 0), "{stats:?}");
    assert!(dev.storage().backlog_bytes() > 0);
    assert!(fs::read(&path).unwrap() == before);
    dev.storage().kick();
    assert_eq!(dev.storage().stats().kicks, 1);
    dev.storage_mut().flush().unwrap();
    assert!(fs::read(&path).unwrap() == dev.memory());
    assert_eq!(dev.storage().stats().wakeups, 0);
    drop(dev);

    // Under back-pressure the handler must wake the writer, even so; nothing is lost.
    let tight = BackgroundOptions {
        backlog_bytes: 256,
        ..options
    };
    let mut dev = device(&path, tight);
    wait_until_parked(dev.storage());
    for i in 0..200u64 {
        program(&mut dev, 0x2000 + i * 64, &[i as u8]);
    }
    assert!(dev.storage().stats().backpressure_waits >= 1);
    dev.storage_mut().flush().unwrap();
    assert!(fs::read(&path).unwrap() == dev.memory());
}

#[test]
fn a_writer_failure_reaches_the_status_register_at_the_next_operation() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    // A descriptor that cannot write: every pwrite fails with EBADF.
    let file = FileStorage::from_file(
        fs::File::open(&path).unwrap(),
        &path,
        LEN,
        false,
        Durability::FlushPoints,
    )
    .unwrap();
    let storage = BackgroundStorage::spawn(file, BackgroundOptions::default()).unwrap();
    let mut dev = Pflash::new(
        Geometry::q35(LEN as u64).unwrap(),
        vec![0xff; LEN],
        storage,
        Errors::default(),
    )
    .unwrap();
    program(&mut dev, 0x100, &[0xa5]);
    // The handler returned at once; the status is clean until the writer has failed.
    for _ in 0..10_000 {
        if dev.storage().has_failed() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(dev.storage().has_failed(), "the writer never failed");
    assert!(dev.events().0.is_empty());
    // The next program hands the failure over.
    dev.write(0x200, &[0x10]);
    dev.write(0x200, &[0x5a]);
    let mut status = [0];
    dev.read(0x200, &mut status);
    assert_eq!(status[0], 0x90, "program error bit");
    let errors = &dev.events().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&path.display().to_string())
            && errors[0].contains("cannot write 1 bytes at offset 0x100"),
        "{errors:?}"
    );
    dev.write(0, &[0xff]);
    // flush returns a failure of its own (the retry of the queued changes fails again).
    assert!(dev.storage_mut().flush().is_err());
    assert!(fs::read(&path).unwrap() == vec![0xff; LEN]);
}

#[test]
fn a_read_only_flash_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path());
    let file = FileStorage::open(&path, LEN, true, Durability::FlushPoints).unwrap();
    let mut storage = BackgroundStorage::spawn(file, BackgroundOptions::default()).unwrap();
    let content = vec![0u8; LEN];
    let error = pflash::Storage::record_change(&mut storage, &content, 0..1).unwrap_err();
    assert!(error.to_string().contains("read-only"), "{error}");
    assert!(pflash::Storage::record_change(&mut storage, &content[1..], 0..1).is_err());
}
