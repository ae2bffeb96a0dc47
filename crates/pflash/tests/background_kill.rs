//! SIGKILL of a process whose flash is persisted by the background writer, at random
//! instants of the real OVMF boot trace: the file must always equal the content after some
//! prefix of the completed operations.
//!
//! The victim is this test binary itself, re-run on the child test below. Its backlog is kept
//! tiny so that the handler runs at the writer's pace and the file goes through hundreds of
//! intermediate states that a kill can land in (with the default 1 MiB backlog the whole
//! boot fits in a few batches and a kill almost always finds the file before or after them;
//! `crates/nvram/tests/flash.rs` kills `nvram flash replay`, default backlog, as well).

use pflash::{
    BackgroundOptions, BackgroundStorage, Durability, FileStorage, Geometry, NoEvents, Pflash,
    Storage, StorageError,
};
use pflash_trace::{read_trace_file, replay, TraceLine};
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to the image's path) in the child's environment.
const CHILD_IMAGE: &str = "PFLASH_BACKGROUND_KILL_IMAGE";
const CHILD_TEST: &str = "a_replay_through_a_tiny_backlog_ends_at_the_after_image";

fn boot() -> (Vec<u8>, Vec<u8>, Vec<TraceLine>) {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    let trace = read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).unwrap();
    (before, after, trace)
}

/// Replays the boot on `image` through a background writer with a 64-byte backlog, syncing every batch.
fn replay_tiny_backlog(image: &Path, len: usize, trace: &[TraceLine], announce: bool) {
    let file = FileStorage::open(image, len, false, Durability::FlushPoints).unwrap();
    let content = file.read_content().unwrap();
    let options = BackgroundOptions {
        backlog_bytes: 64,
        poll_interval: Duration::from_micros(200),
        ..BackgroundOptions::default()
    };
    let storage = BackgroundStorage::spawn(file, options).unwrap();
    let geometry = Geometry::q35(len as u64).unwrap();
    let mut dev = Pflash::new(geometry, content, storage, NoEvents).unwrap();
    if announce {
        println!("replaying");
    }
    replay(&mut dev, trace).unwrap();
    dev.into_parts().1.finish().unwrap();
}

/// Without the environment variable: a whole replay must end byte-identical to QEMU's image.
/// With it: the victim of the test below, killed somewhere in the middle.
#[test]
fn a_replay_through_a_tiny_backlog_ends_at_the_after_image() {
    let (before, after, trace) = boot();
    if let Some(image) = std::env::var_os(CHILD_IMAGE) {
        replay_tiny_backlog(Path::new(&image), before.len(), &trace, true);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vars.fd");
    std::fs::write(&image, &before).unwrap();
    replay_tiny_backlog(&image, before.len(), &trace, false);
    assert!(std::fs::read(&image).unwrap() == after);
}

/// Records every completed operation (offset and bytes written), as the device reports it.
#[derive(Default)]
struct Recorder(Vec<(usize, Vec<u8>)>);

impl Storage for Recorder {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.0.push((range.start, content[range].to_vec()));
        Ok(())
    }

    fn flush_point(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }
}

#[test]
fn sigkill_leaves_the_background_writers_file_at_a_prefix() {
    let (before, after, trace) = boot();
    let geometry = Geometry::q35(before.len() as u64).unwrap();
    let mut recording =
        Pflash::new(geometry, before.clone(), Recorder::default(), NoEvents).unwrap();
    replay(&mut recording, &trace).unwrap();
    let ops = recording.into_parts().1 .0;

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vars.fd");
    let spawn = || {
        std::fs::write(&image, &before).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_IMAGE, &image)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it replays: the kills aim at the replay, not at the start-up.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.ends_with("replaying"))),
            "the child never started replaying"
        );
        // Keep reading: the child's last lines must not meet a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        (child, Instant::now())
    };

    // One whole run gives the replay's length.
    let (mut child, started) = spawn();
    assert!(child.wait().unwrap().success());
    let length = started.elapsed();
    assert!(std::fs::read(&image).unwrap() == after);

    let (mut rng, mut middle, kills) = (0x9e37_79b9_7f4a_7c15u64, 0, 20);
    for k in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_micros(rng % length.as_micros().max(1) as u64);
        let (mut child, started) = spawn();
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        let _ = child.kill(); // SIGKILL; it may have finished already
        child.wait().unwrap();
        let file = std::fs::read(&image).unwrap();
        let Some(n) = testkit::prefix_len(&before, &ops, &file) else {
            panic!(
                "kill {k} after {delay:?}: the file is not the content after any prefix of the \
                 {} operations",
                ops.len()
            );
        };
        middle += usize::from(n != 0 && n != ops.len());
    }
    eprintln!("{kills} kills over a {length:?} replay, {middle} in the middle");
    assert!(
        middle >= kills / 2,
        "too few kills landed in the middle: {middle}"
    );
}
