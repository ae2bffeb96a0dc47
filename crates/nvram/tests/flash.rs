//! `nvram flash replay`: a real OVMF boot replayed on the device model backed by the image
//! file, and the crash-consistency of that file under `SIGKILL`.

mod common;

use common::{nvram, path_str as s, stderr, stdout};
use pflash::{Geometry, NoEvents, Pflash, Storage, StorageError};
use pflash_trace::{parse_trace, read_trace_file, replay};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn boot_trace() -> PathBuf {
    testkit::trace_data("ovmf-boot-ops.txt.xz")
}

/// A copy of the image before the boot, in `dir`.
fn before_image(dir: &Path) -> PathBuf {
    let path = dir.join("vars.fd");
    fs::write(
        &path,
        testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz")),
    )
    .unwrap();
    path
}

/// The QEMU 7.2 recording, replayed as QEMU 7.2 (`--compat qemu-7.2`), then with the
/// default `qemu-10.0` (OVMF sends no buffered write, the only command that differs).
#[test]
fn replaying_the_boot_ends_byte_identical_to_qemu_with_far_fewer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let image = before_image(dir.path());
    let out = nvram(&[
        "flash",
        "replay",
        "--compat",
        "qemu-7.2",
        "--image",
        s(&image),
        "--trace",
        s(&boot_trace()),
        "--writer",
        "inline",
        "--stats",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fs::read(&image).unwrap()
            == testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz")),
        "the image differs from the one QEMU left"
    );
    let text = stdout(&out);
    for line in [
        "operations:     16319",
        "flush points:   272",
        "write syscalls: 271",
        "fsyncs:         271",
        "bytes written:  16319",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }

    // The JSON form, with the default background writer: the same bytes and image. Its
    // write count depends on where the batches fell (a run of programs cut by a batch is two
    // writes, sequences contiguous within one batch are one), so only QEMU's bound holds.
    let image = before_image(dir.path());
    let out = nvram(&[
        "flash",
        "replay",
        "--image",
        s(&image),
        "--trace",
        s(&boot_trace()),
        "--durability",
        "none",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["matched"], true);
    assert_eq!(doc["compat"], "qemu-10.0");
    assert_eq!(doc["replayed"]["writes"], 32912);
    assert!(
        fs::read(&image).unwrap()
            == testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz")),
        "the background writer's image differs from the one QEMU left"
    );
    let storage = &doc["storage"];
    assert_eq!(storage["durability"], "none");
    assert_eq!(storage["writer"], "background");
    assert_eq!(storage["operations"], 16319);
    assert_eq!(storage["flush_points"], 272);
    assert_eq!(storage["bytes_written"], 16319);
    assert_eq!(storage["fsyncs"], 0);
    // QEMU: one 512-byte pwrite per programmed byte.
    let (qemu_writes, qemu_bytes) = (16_319u64, 16_319u64 * 512);
    let writes = storage["write_syscalls"].as_u64().unwrap();
    let bytes = storage["bytes_written"].as_u64().unwrap();
    assert!(
        writes * 20 <= qemu_writes && bytes * 20 <= qemu_bytes,
        "{storage}"
    );
}

#[test]
fn a_wrong_read_value_exits_1_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let image = before_image(dir.path());
    let trace = dir.path().join("bad.txt");
    // The probe reads the status after a clear status: 0, not 0x80.
    fs::write(
        &trace,
        "# probe\nX\nW 0x10 1 0x50\nW 0x10 1 0x70\nR 0x10 1 0x80\nW 0x10 1 0xff\n",
    )
    .unwrap();
    let out = nvram(&[
        "flash",
        "replay",
        "--image",
        s(&image),
        "--trace",
        s(&trace),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("{}:5:", trace.display()))
            && message.contains("offset 0x10")
            && message.contains("expected 0x80, got 0x0"),
        "{message}"
    );

    fs::write(&trace, "X\nW 0x10 one 0x50\n").unwrap();
    let out = nvram(&[
        "flash",
        "replay",
        "--image",
        s(&image),
        "--trace",
        s(&trace),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}: line 2", trace.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_locked_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = before_image(dir.path());
    let before = fs::read(&image).unwrap();
    let len = before.len();
    let held = pflash::FileStorage::open(&image, len, false, pflash::Durability::None).unwrap();
    let out = nvram(&[
        "flash",
        "replay",
        "--image",
        s(&image),
        "--trace",
        s(&boot_trace()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "{}: locked by another process (a running VM?)",
            image.display()
        )),
        "{message}"
    );
    assert!(fs::read(&image).unwrap() == before, "untouched");
    drop(held);
}

#[test]
fn bad_images_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("odd.fd");
    fs::write(&image, vec![0xff; 1000]).unwrap();
    let out = nvram(&[
        "flash",
        "replay",
        "--image",
        s(&image),
        "--trace",
        s(&boot_trace()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("odd.fd"), "{}", stderr(&out));
    // The arm virt preset wants a 64 MiB bank.
    let image = before_image(dir.path());
    let out = nvram(&[
        "flash",
        "replay",
        "--preset",
        "virt",
        "--image",
        s(&image),
        "--trace",
        s(&boot_trace()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("vars.fd: wrong size for this flash"),
        "{}",
        stderr(&out)
    );
}

/// The QEMU 10.0 + edk2 2025.02 recording (`crates/pflash/tests/data`) through the CLI
/// with `--compat qemu-10.0`: every read matches and the image ends as QEMU 10.0 left it.
#[test]
fn the_qemu10_recording_replays_byte_identical_with_compat_qemu_10_0() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pflash/tests/data");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vars.fd");
    fs::write(
        &image,
        testkit::unxz(&data.join("ovmf2025-qemu10-setvar-before.fd.xz")),
    )
    .unwrap();
    let trace = data.join("ovmf2025-qemu10-setvar-ops.txt.xz");
    let out = nvram(&[
        "flash",
        "replay",
        "--compat",
        "qemu-10.0",
        "--image",
        s(&image),
        "--trace",
        s(&trace),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["matched"], true);
    assert_eq!(doc["compat"], "qemu-10.0");
    assert!(
        fs::read(&image).unwrap()
            == testkit::unxz(&data.join("ovmf2025-qemu10-setvar-after.fd.xz")),
        "the image differs from the one QEMU 10.0 left"
    );
}

/// A one-word buffered write with QEMU 10.0's answers (status 0x90, nothing written; the
/// same sequence against both real QEMUs is in `crates/pflash/tests/compat.rs`) matches
/// with the default `--compat qemu-10.0` and fails with `--compat qemu-7.2`, naming the
/// line of the status read.
#[test]
fn compat_selects_the_qemu_release_the_trace_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("one-word.txt");
    fs::write(
        &trace,
        "# one-word buffered write as QEMU 10.0 answers it\n\
         W 0x100 1 0xe8\n\
         W 0x100 1 0x0\n\
         W 0x100 1 0x42\n\
         R 0x100 1 0x90\n\
         W 0x100 1 0xd0\n\
         R 0x100 1 0xff\n",
    )
    .unwrap();
    for (compat, code) in [(None, 0), (Some("qemu-10.0"), 0), (Some("qemu-7.2"), 1)] {
        let image = dir.path().join("vars.fd");
        fs::write(&image, vec![0xff; 8192]).unwrap();
        let mut args = vec![
            "flash",
            "replay",
            "--image",
            s(&image),
            "--trace",
            s(&trace),
        ];
        if let Some(c) = compat {
            args.extend(["--compat", c]);
        }
        let out = nvram(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{compat:?}: {}",
            stderr(&out)
        );
        if code == 1 {
            assert!(
                stderr(&out)
                    .contains("one-word.txt:5: read at offset 0x100: expected 0x90, got 0x80"),
                "{}",
                stderr(&out)
            );
        } else {
            assert!(stdout(&out).contains("as qemu-10.0"), "{}", stdout(&out));
            assert!(fs::read(&image).unwrap().iter().all(|&b| b == 0xff));
        }
    }
    let out = nvram(&[
        "flash", "replay", "--compat", "qemu-8.0", "--image", "x", "--trace", "y",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("qemu-7.2") && stderr(&out).contains("qemu-10.0"));
}

/// The riscv and loongarch `virt` presets: 32 MiB and 16 MiB banks of two 16-bit chips
/// (ids 0x89, 0x18 in each), and the bank size checked against the image.
#[test]
fn riscv_and_loongarch_virt_presets() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("ids.txt");
    fs::write(
        &trace,
        "W 0x0 4 0x900090\nR 0x0 4 0x890089\nR 0x4 4 0x180018\nW 0x0 4 0xff00ff\nR 0x0 4 0x0\n",
    )
    .unwrap();
    for (preset, len) in [("riscv-virt", 32usize << 20), ("loongarch-virt", 16 << 20)] {
        let image = dir.path().join(format!("{preset}.fd"));
        fs::write(&image, vec![0u8; len]).unwrap();
        let out = nvram(&[
            "flash",
            "replay",
            "--preset",
            preset,
            "--image",
            s(&image),
            "--trace",
            s(&trace),
        ]);
        assert!(out.status.success(), "{preset}: {}", stderr(&out));
        // The other bank size is refused, naming the file.
        fs::write(&image, vec![0u8; len / 2]).unwrap();
        let out = nvram(&[
            "flash",
            "replay",
            "--preset",
            preset,
            "--image",
            s(&image),
            "--trace",
            s(&trace),
        ]);
        assert_eq!(out.status.code(), Some(2), "{preset}");
        assert!(
            stderr(&out).contains(&format!("{preset}.fd: wrong size for this flash")),
            "{}",
            stderr(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// SIGKILL at random instants: the image must always be the content after a prefix of the
// operations.

/// Records every completed operation (offset and bytes written), as the device reports it.
#[derive(Default)]
struct Recorder {
    ops: Vec<(usize, Vec<u8>)>,
}

impl Storage for Recorder {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.ops.push((range.start, content[range].to_vec()));
        Ok(())
    }

    fn flush_point(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The operations a replay of `trace` from `initial` performs.
fn operations(initial: &[u8], trace: &[pflash_trace::TraceLine]) -> Vec<(usize, Vec<u8>)> {
    let geometry = Geometry::q35(initial.len() as u64).unwrap();
    let mut dev = Pflash::new(geometry, initial.to_vec(), Recorder::default(), NoEvents).unwrap();
    replay(&mut dev, trace).expect("the trace replays");
    dev.into_parts().1.ops
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// An erase-heavy trace, like a variable-store reclaim: erase sectors, reprogram them byte
/// by byte, sometimes downwards and over bytes just written, plus buffered writes.
fn reclaim_trace(len: usize) -> String {
    use std::fmt::Write as _;
    let mut rng = Rng(0x5eed);
    let mut t = String::from("# synthetic reclaim\nX\n");
    let sectors = len / 4096;
    for round in 0..3u64 {
        for sector in (0..sectors).step_by(2) {
            let base = sector * 4096 + (round as usize % 2) * 4096;
            if base >= len {
                continue;
            }
            let _ = writeln!(
                t,
                "W {base:#x} 1 0x20\nW {base:#x} 1 0xd0\nR {base:#x} 1 0x80"
            );
            let _ = writeln!(t, "W {base:#x} 1 0xff");
            // An ascending run, then a few bytes downwards and a rewrite, in one sequence.
            let run = 64 + (rng.next() % 192) as usize;
            for i in 0..run {
                let v = rng.next() & 0xff;
                let _ = writeln!(t, "W {:#x} 1 0x10\nW {:#x} 1 {v:#x}", base + i, base + i);
            }
            for i in (0..8).rev() {
                let at = base + 2048 + i * 16;
                let _ = writeln!(t, "W {at:#x} 1 0x40\nW {at:#x} 1 {:#x}", rng.next() & 0xff);
            }
            let at = base + 3;
            let _ = writeln!(t, "W {at:#x} 1 0x10\nW {at:#x} 1 0x00\nW {base:#x} 1 0xff");
            // A buffered write of 16 bytes in the sector's second write block.
            let at = base + 256;
            let _ = writeln!(t, "W {at:#x} 1 0xe8\nW {at:#x} 1 0xf");
            for i in 0..16 {
                let _ = writeln!(t, "W {:#x} 1 {:#x}", at + i, rng.next() & 0xff);
            }
            let _ = writeln!(t, "W {at:#x} 1 0xd0\nW {at:#x} 1 0xff");
        }
    }
    t
}

struct KillReport {
    kills: usize,
    untouched: usize,
    intermediate: usize,
    complete: usize,
}

/// Replays `trace` on copies of `initial` with `nvram flash replay`, killing it with SIGKILL
/// after random delays spread over the replay itself (after the start-up), `kills` times for
/// each durability policy, and checks every killed image.
fn kill_replays(
    initial: &[u8],
    trace: &Path,
    plan: &[(&str, &str, usize)],
    seed: u64,
) -> KillReport {
    let lines = read_trace_file(trace).unwrap();
    let ops = operations(initial, &lines);
    let mut final_content = initial.to_vec();
    for (offset, data) in &ops {
        final_content[*offset..offset + data.len()].copy_from_slice(data);
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vars.fd");
    let run = |writer: &str, durability: &str, stdout: Stdio| {
        Command::new(env!("CARGO_BIN_EXE_nvram"))
            .args(["flash", "replay", "--image", s(&image), "--trace", s(trace)])
            .args(["--writer", writer, "--durability", durability, "--json"])
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("run nvram")
    };

    let mut rng = Rng(seed);
    let mut report = KillReport {
        kills: 0,
        untouched: 0,
        intermediate: 0,
        complete: 0,
    };
    for &(writer, durability, kills) in plan {
        // A whole run: it must end in the last state; and when its replay starts and ends.
        fs::write(&image, initial).unwrap();
        let started = Instant::now();
        let out = run(writer, durability, Stdio::piped())
            .wait_with_output()
            .unwrap();
        let total = started.elapsed();
        assert!(
            out.status.success(),
            "replay with --writer {writer} --durability {durability}"
        );
        assert!(
            fs::read(&image).unwrap() == final_content,
            "replay with --writer {writer} --durability {durability} did not end at the last state"
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let replay = Duration::from_secs_f64(doc["seconds"].as_f64().unwrap());
        // Aim at the replay, with some slack for start-up jitter on both sides.
        let window_start = total.saturating_sub(replay + replay / 5);
        let window = (replay + replay / 5).as_micros().max(1) as u64;

        for k in 0..kills {
            fs::write(&image, initial).unwrap();
            let delay = window_start + Duration::from_micros(rng.next() % window);
            let mut child = run(writer, durability, Stdio::null());
            std::thread::sleep(delay);
            let _ = child.kill(); // SIGKILL; it may have finished already
            child.wait().unwrap();
            let file = fs::read(&image).unwrap();
            let Some(n) = testkit::prefix_len(initial, &ops, &file) else {
                panic!(
                    "kill {k} after {delay:?} (--writer {writer} --durability {durability}): {} is not the \
                     content after any prefix of the {} operations",
                    image.display(),
                    ops.len()
                );
            };
            report.kills += 1;
            if file == final_content {
                report.complete += 1;
            } else if n == 0 {
                report.untouched += 1;
            } else {
                report.intermediate += 1;
            }
        }
    }
    report
}

#[test]
fn sigkill_leaves_the_image_at_a_prefix_of_the_operations() {
    let started = Instant::now();
    let initial = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    // Both writers. The background writer takes a boot in a few batches, so few of its
    // kills land in the middle of its writes; `crates/pflash/tests/background_kill.rs`
    // slows it down to get hundreds of intermediate states. Here it is the real CLI.
    let plan = [
        ("background", "flush-points", 12),
        ("background", "none", 4),
        ("inline", "flush-points", 12),
        ("inline", "none", 8),
        ("inline", "every-op", 4),
    ];
    let boot = kill_replays(&initial, &boot_trace(), &plan, 1);

    let dir = tempfile::tempdir().unwrap();
    let reclaim = dir.path().join("reclaim.txt");
    fs::write(&reclaim, reclaim_trace(initial.len())).unwrap();
    // The synthetic trace must be one the device accepts as intended.
    let lines = parse_trace(&fs::read_to_string(&reclaim).unwrap()).unwrap();
    let ops = operations(&initial, &lines);
    assert!(ops.iter().filter(|(_, d)| d.len() == 4096).count() >= 3 * 60);
    let erases = kill_replays(&initial, &reclaim, &plan[..4], 2);

    for (name, r) in [("boot", &boot), ("reclaim", &erases)] {
        eprintln!(
            "{name}: {} kills: {} before the first write, {} in the middle, {} after the last",
            r.kills, r.untouched, r.intermediate, r.complete
        );
    }
    assert!(
        boot.intermediate + erases.intermediate >= 10,
        "too few kills landed during the replays to test anything"
    );
    eprintln!("{:?} in all", started.elapsed());
}
