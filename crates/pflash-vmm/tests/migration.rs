//! Live migration of the whole VM between `pflash-vmm` processes: the guest migrates along a
//! chain of processes (each destination migrates it on), at random flash accesses, over
//! unix and TCP sockets, and finishes with 0 mismatches and the same varstore as a run that
//! never migrated; a destination with a wrong-sized varstore is refused while the source
//! finishes; a corrupted start image is caught after migrating (the checks can fail).
//!
//! These tests need `/dev/kvm` and fail without it, unless `NVRAM_TESTS_WITHOUT_KVM=1`
//! opts out explicitly.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const VMM: &str = env!("CARGO_BIN_EXE_pflash-vmm");
/// Per process: generous, a run takes a second or two.
const TIMEOUT_SECS: &str = "120";
/// Flash accesses a migration lets the guest run during pre-copy (3 rounds × 40, the
/// defaults), plus slack: the next hop's start must come after the previous pause.
const PRECOPY_WINDOW: u64 = 200;

fn vmm_ok(args: &[&str]) {
    let out = Command::new(VMM)
        .args(args)
        .output()
        .expect("run pflash-vmm");
    assert!(
        out.status.success(),
        "pflash-vmm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build_guest(dir: &Path, workload: &str) -> PathBuf {
    let path = dir.join(format!("{}.bin", workload.replace(':', "-")));
    vmm_ok(&[
        "guest",
        "--workload",
        workload,
        "-o",
        path.to_str().unwrap(),
    ]);
    path
}

fn image(dir: &Path, name: &str, after: bool) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["vars", "-o", path.to_str().unwrap()];
    if after {
        args.push("--after");
    }
    vmm_ok(&args);
    path
}

fn seed() -> u64 {
    let seed = std::env::var("NVRAM_MIGRATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("migration points seed: {seed} (rerun with NVRAM_MIGRATION_SEED={seed})");
    seed
}

/// A running `pflash-vmm` whose JSON report and standard error are collected.
struct Process {
    what: String,
    child: Child,
    stderr: JoinHandle<String>,
}

/// What a finished process left.
struct Finished {
    what: String,
    status: i32,
    report: Value,
    stderr: String,
}

impl Process {
    /// Starts `pflash-vmm args`; for `incoming`, waits until it listens and returns the
    /// address it listens on (the real port for `tcp:…:0`).
    fn start(args: &[String]) -> (Process, Option<String>) {
        let mut child = Command::new(VMM)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pflash-vmm");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut head = String::new();
        let mut address = None;
        if args[0] == "incoming" {
            while stderr.read_line(&mut head).unwrap_or(0) > 0 {
                if let Some(a) = head
                    .lines()
                    .last()
                    .and_then(|l| l.strip_prefix("pflash-vmm: listening on "))
                {
                    address = Some(a.to_owned());
                    break;
                }
            }
            assert!(
                address.is_some(),
                "pflash-vmm {args:?} did not listen: {head}"
            );
        }
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            head + &rest
        });
        let what = format!("pflash-vmm {}", args.join(" "));
        (
            Process {
                what,
                child,
                stderr,
            },
            address,
        )
    }

    fn finish(mut self) -> Finished {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        let status = status
            .code()
            .unwrap_or_else(|| panic!("{} died by a signal: {stderr}", self.what));
        // A refused destination prints no report: its status and message say it all.
        let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Finished {
            what: self.what,
            status,
            report,
            stderr,
        }
    }
}

/// One hop of a chain: where the guest goes, and the varstore file its VMM uses there.
struct Hop {
    at: u64,
    address: String,
    vars: PathBuf,
}

/// Runs `code` from `first_vars` and migrates it at each hop, each destination migrating it
/// on to the next; returns every process's result, source first.
fn chain(code: &Path, first_vars: &Path, hops: &[Hop]) -> Vec<Finished> {
    let common = ["--json", "--timeout", TIMEOUT_SECS];
    let mut processes = Vec::new();
    // Started from the last destination back, so that each knows where to go next.
    let mut next: Option<(u64, String)> = None;
    for hop in hops.iter().rev() {
        let mut args: Vec<String> = ["incoming", "--listen", &hop.address, "--vars"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(hop.vars.to_str().unwrap().into());
        args.extend(common.iter().map(|s| s.to_string()));
        if let Some((at, to)) = &next {
            args.extend([
                "--migrate-at".into(),
                at.to_string(),
                "--to".into(),
                to.clone(),
            ]);
        }
        let (process, address) = Process::start(&args);
        processes.push(process);
        next = Some((hop.at, address.unwrap()));
    }
    let mut args: Vec<String> = vec![
        "run".into(),
        "--code".into(),
        code.to_str().unwrap().into(),
        "--vars".into(),
        first_vars.to_str().unwrap().into(),
    ];
    args.extend(common.iter().map(|s| s.to_string()));
    if let Some((at, to)) = next {
        args.extend(["--migrate-at".into(), at.to_string(), "--to".into(), to]);
    }
    processes.push(Process::start(&args).0);
    processes.into_iter().rev().map(Process::finish).collect()
}

/// `count` increasing points in `range`, at least [`PRECOPY_WINDOW`] apart.
fn points(rng: &mut ChaCha8Rng, count: usize, range: std::ops::Range<u64>) -> Vec<u64> {
    let span = range.end - range.start - count as u64 * PRECOPY_WINDOW;
    let mut offsets: Vec<u64> = (0..count).map(|_| rng.gen_range(0..span)).collect();
    offsets.sort_unstable();
    offsets
        .iter()
        .enumerate()
        .map(|(i, o)| range.start + o + i as u64 * PRECOPY_WINDOW)
        .collect()
}

/// Every process but the last migrated, the last finished its guest with no mismatch;
/// returns how many pauses fell inside a command sequence.
fn assert_migrated_and_clean(results: &[Finished]) -> usize {
    let (last, migrated) = results.split_last().unwrap();
    let mut inside_sequences = 0;
    for (i, r) in migrated.iter().enumerate() {
        let m = &r.report["migration"];
        assert_eq!(
            (r.status, m["result"].as_str()),
            (0, Some("migrated")),
            "{}: {}\n{}",
            r.what,
            r.report,
            r.stderr
        );
        let rounds = m["rounds"].as_array().unwrap();
        assert!(rounds.len() >= 2, "{}: {rounds:?}", r.what);
        // Round 1 is the whole flash; the destination received what the source sent.
        assert_eq!(rounds[0]["content_bytes"], 0x84000, "{}", r.what);
        let arrived = &results[i + 1].report["incoming"];
        assert_eq!(arrived["total_bytes"], m["total_bytes"], "{}", r.what);
        assert_eq!(arrived["resumed_at_access"], m["paused_at_access"]);
        if m["array_mode_at_pause"] == false {
            inside_sequences += 1;
        }
        eprintln!(
            "hop {}: paused at access {}, {} rounds, {} bytes, downtime {:.1} ms",
            i + 1,
            m["paused_at_access"],
            rounds.len(),
            m["total_bytes"],
            arrived["downtime_ms"].as_f64().unwrap()
        );
    }
    assert_eq!(
        (last.status, last.report["outcome"].as_str()),
        (1, Some("debug-exit")),
        "{}: {}\n{}",
        last.what,
        last.report,
        last.stderr
    );
    let serial = last.report["serial"].as_str().unwrap();
    assert!(serial.contains("mismatches 0x00000000"), "{serial}");
    inside_sequences
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} and {} differ ({} and {} bytes; first difference at {:?})",
        a.display(),
        b.display(),
        x.len(),
        y.len(),
        x.iter().zip(&y).position(|(p, q)| p != q)
    );
}

/// Total flash accesses of a run, from its report.
fn accesses(report: &Value) -> u64 {
    report["exits"]["mmio_read"].as_u64().unwrap() + report["exits"]["mmio_write"].as_u64().unwrap()
}

#[test]
fn boot_workload_migrated_at_ten_random_points_ends_at_the_after_image() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let src = image(dir.path(), "src.fd", false);
    let after = image(dir.path(), "after.fd", true);
    let total = {
        let reference = image(dir.path(), "reference.fd", false);
        let r = chain(&code, &reference, &[]).pop().unwrap();
        assert_same_file(&reference, &after);
        accesses(&r.report)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let at = points(&mut rng, 10, 50..total - PRECOPY_WINDOW);
    let mut hops: Vec<Hop> = at
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            // Zeros of the right size: the content must come from the source.
            let vars = dir.path().join(format!("dst{i}.fd"));
            std::fs::write(&vars, vec![0u8; 0x84000]).unwrap();
            let address = if i % 2 == 0 {
                format!("unix:{}", dir.path().join(format!("hop{i}.sock")).display())
            } else {
                "tcp:127.0.0.1:0".to_owned()
            };
            Hop { at, address, vars }
        })
        .collect();
    // Shared storage: one destination takes over its source's own file, which it may
    // commit only after that source released it.
    hops[4].vars = hops[3].vars.clone();
    eprintln!("migrating at flash accesses {at:?} of {total}");
    let results = chain(&code, &src, &hops);
    let inside = assert_migrated_and_clean(&results);
    assert_same_file(&hops.last().unwrap().vars, &after);
    assert!(
        inside > 0,
        "no pause fell inside a command sequence among {at:?}"
    );
}

#[test]
fn random_workload_migrated_over_unix_and_tcp_ends_like_an_unmigrated_run() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let workload = format!("random:400:{}", rng.gen::<u32>());
    let code = build_guest(dir.path(), &workload);
    let reference = image(dir.path(), "reference.fd", false);
    let unmigrated = chain(&code, &reference, &[]).pop().unwrap();
    assert_eq!(unmigrated.status, 1, "{}", unmigrated.stderr);
    let total = accesses(&unmigrated.report);
    let at = points(&mut rng, 4, 20..total - PRECOPY_WINDOW);
    eprintln!("{workload}: migrating at flash accesses {at:?} of {total}");
    let hops: Vec<Hop> = at
        .iter()
        .enumerate()
        .map(|(i, &at)| Hop {
            at,
            address: if i % 2 == 0 {
                "tcp:127.0.0.1:0".to_owned()
            } else {
                format!("unix:{}", dir.path().join(format!("r{i}.sock")).display())
            },
            vars: image(dir.path(), &format!("dst{i}.fd"), true),
        })
        .collect();
    let src = image(dir.path(), "src.fd", false);
    let results = chain(&code, &src, &hops);
    assert_migrated_and_clean(&results);
    assert_same_file(&hops.last().unwrap().vars, &reference);
    assert_eq!(
        results.last().unwrap().report["exits"]["mmio_write"],
        unmigrated.report["exits"]["mmio_write"]
    );
}

#[test]
fn a_wrong_sized_destination_is_refused_and_the_source_guest_finishes() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let src = image(dir.path(), "src.fd", false);
    let after = image(dir.path(), "after.fd", true);
    let wrong = dir.path().join("wrong.fd");
    std::fs::write(&wrong, vec![0x5au8; 0x88000]).unwrap();
    let hop = Hop {
        at: 300,
        address: format!("unix:{}", dir.path().join("w.sock").display()),
        vars: wrong.clone(),
    };
    let (dst, src_run) = {
        let mut r = chain(&code, &src, &[hop]);
        let dst = r.pop().unwrap();
        (dst, r.pop().unwrap())
    };
    let refusal = format!(
        "size mismatch for {}: the incoming flash is 0x84000 (540672) bytes, the local flash \
         is 0x88000 (557056) bytes",
        wrong.display()
    );
    assert_ne!(dst.status, 0);
    assert!(dst.stderr.contains(&refusal), "{}", dst.stderr);
    assert_eq!(std::fs::read(&wrong).unwrap(), vec![0x5au8; 0x88000]);
    let m = &src_run.report["migration"];
    assert_eq!(m["result"], "refused", "{}", src_run.report);
    assert!(m["error"].as_str().unwrap().contains(&refusal), "{m}");
    assert_eq!(src_run.status, 1, "{}", src_run.stderr);
    assert!(src_run.report["serial"]
        .as_str()
        .unwrap()
        .contains("mismatches 0x00000000"));
    assert_same_file(&src, &after);
}

/// Negative control: the same migration from a start image with one byte changed must not
/// pass the checks the other tests rely on.
#[test]
fn a_corrupted_start_image_is_caught_after_migrating() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let src = image(dir.path(), "src.fd", false);
    let after = image(dir.path(), "after.fd", true);
    let mut bytes = std::fs::read(&src).unwrap();
    // Far from the variables the boot writes: the flipped byte survives the run.
    let offset = 0x7_0000;
    bytes[offset] ^= 0x01;
    std::fs::write(&src, bytes).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let hop = Hop {
        at: rng.gen_range(100..10_000),
        address: "tcp:127.0.0.1:0".into(),
        vars: dir.path().join("dst.fd"),
    };
    std::fs::write(&hop.vars, vec![0u8; 0x84000]).unwrap();
    let results = chain(&code, &src, std::slice::from_ref(&hop));
    assert_eq!(results[0].report["migration"]["result"], "migrated");
    let last = &results[1];
    let serial = last.report["serial"].as_str().unwrap();
    // Computed on the destination, over the content that migrated.
    assert!(
        serial.contains("mismatch: final content checksum"),
        "{serial}"
    );
    assert!(!serial.contains("mismatches 0x00000000"), "{serial}");
    assert_ne!(last.status, 1);
    let (result, after) = (
        std::fs::read(&hop.vars).unwrap(),
        std::fs::read(&after).unwrap(),
    );
    let differing: Vec<usize> = (0..after.len())
        .filter(|&i| result[i] != after[i])
        .collect();
    assert_eq!(differing, [offset]);
}
