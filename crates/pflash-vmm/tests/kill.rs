//! SIGKILL of `pflash-vmm run` at random instants of a guest's run: the varstore file must
//! always equal the content after some prefix of the flash operations the device completed,
//! with the background writer (the default) and with the inline writer, for the recorded
//! OVMF boot and for a random workload.
//!
//! The prefix states come from the `pflash` model replaying the guest's own operation table
//! ([`workload::program`], the very table `pflash-vmm guest` puts into the image): a storage
//! of the test keeps one hash per completed program or erase, so that a killed run's file is
//! looked up by hash instead of being compared with hundreds of thousands of images.
//!
//! Each kill targets a random flash access of the guest's run (`run --progress-every` reports
//! the count on standard error; the signal follows the first report at or past the target),
//! so that it falls inside the flash operations rather than in the VMM's start-up or after
//! the guest's end, whatever the machine's load; the test counts how many files ended
//! strictly between the initial and the final state, and requires most of them to.
//!
//! These tests need `/dev/kvm` and fail without it, unless `NVRAM_TESTS_WITHOUT_KVM=1`
//! opts out explicitly. `PFLASH_VMM_KILL_SEED` replays a failing run's seed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pflash::{Compat, Geometry, NoEvents, Pflash, Storage, StorageError};
use pflash_vmm::guest::{self, workload, Op};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const VMM: &str = env!("CARGO_BIN_EXE_pflash-vmm");
/// Generous: an uninterrupted run takes a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Kills per (workload, writer) case: four cases, 24 kills.
const KILLS_PER_CASE: usize = 6;

/// A hash of a whole image that a one-range change updates in time proportional to the
/// range: the wrapping sum of a 64-bit mix of every (offset, byte) pair.
fn byte_term(offset: usize, byte: u8) -> u64 {
    // splitmix64's finaliser: every input bit affects every output bit.
    let mut z = ((offset as u64) << 8 | u64::from(byte)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn image_hash(content: &[u8]) -> u64 {
    content
        .iter()
        .enumerate()
        .fold(0u64, |h, (i, &b)| h.wrapping_add(byte_term(i, b)))
}

/// A storage that keeps the hash of the content after every completed operation.
struct PrefixHashes {
    shadow: Vec<u8>,
    hash: u64,
    /// `hashes[k]`: the content after the first `k` operations (`hashes[0]`: the initial one).
    hashes: Vec<u64>,
}

impl Storage for PrefixHashes {
    fn record_change(&mut self, content: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        for i in range {
            self.hash = self
                .hash
                .wrapping_sub(byte_term(i, self.shadow[i]))
                .wrapping_add(byte_term(i, content[i]));
            self.shadow[i] = content[i];
        }
        self.hashes.push(self.hash);
        Ok(())
    }

    fn flush_point(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The states a killed run may leave: hash → number of completed operations.
struct PrefixStates {
    index: HashMap<u64, usize>,
    operations: usize,
    final_content: Vec<u8>,
}

impl PrefixStates {
    /// Replays `program` from `initial` through the model behaving like `compat`.
    fn of(program: &guest::Program, initial: &[u8], compat: Compat) -> Self {
        let geometry = Geometry::q35(initial.len() as u64)
            .unwrap()
            .with_compat(compat);
        let storage = PrefixHashes {
            shadow: initial.to_vec(),
            hash: image_hash(initial),
            hashes: vec![image_hash(initial)],
        };
        let mut model = Pflash::new(geometry, initial.to_vec(), storage, NoEvents).unwrap();
        for op in &program.ops {
            match *op {
                Op::Write {
                    offset,
                    size,
                    value,
                } => model.write(u64::from(offset), &value.to_le_bytes()[..usize::from(size)]),
                Op::Read { offset, size, .. } => {
                    let mut bytes = [0u8; 4];
                    model.read(u64::from(offset), &mut bytes[..usize::from(size)]);
                }
            }
        }
        let final_content = model.memory().to_vec();
        let hashes = &model.storage().hashes;
        let mut index = HashMap::with_capacity(hashes.len());
        // A state reached again later (a byte programmed back) keeps its first index.
        for (k, &h) in hashes.iter().enumerate().rev() {
            index.insert(h, k);
        }
        PrefixStates {
            index,
            operations: hashes.len() - 1,
            final_content,
        }
    }

    /// How many operations `content` is the result of, if it is a prefix state.
    fn prefix_of(&self, content: &[u8]) -> Option<usize> {
        self.index.get(&image_hash(content)).copied()
    }
}

struct Case {
    workload: workload::Workload,
    writer: &'static str,
    code: PathBuf,
    initial: Vec<u8>,
    states: PrefixStates,
}

fn build_case(dir: &Path, workload: workload::Workload, writer: &'static str) -> Case {
    let initial = workload::boot_before_image().unwrap();
    let program = workload::program(workload, Some(&initial)).unwrap();
    let code = dir.join(format!("{}.bin", workload.to_string().replace(':', "-")));
    if !code.exists() {
        std::fs::write(&code, guest::build_image(&program).unwrap()).unwrap();
    }
    let states = PrefixStates::of(&program, &initial, Compat::Qemu10_0);
    Case {
        workload,
        writer,
        code,
        initial,
        states,
    }
}

fn spawn_run(case: &Case, vars: &Path, progress_every: u64, json: bool) -> Child {
    let mut command = Command::new(VMM);
    // No fdatasync: a process crash loses nothing the kernel has (the durability policies
    // differ only after a host crash), and the runs stay short.
    command
        .args(["run", "--compat", "qemu-10.0", "--durability", "none"])
        .args(["--writer", case.writer])
        .arg("--code")
        .arg(&case.code)
        .arg("--vars")
        .arg(vars)
        .arg("--serial")
        .arg(vars.with_extension("serial"))
        .args(["--timeout", &RUN_LIMIT.as_secs().to_string()])
        .args(["--progress-every", &progress_every.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if json {
        command.arg("--json");
    }
    command.spawn().expect("start pflash-vmm run")
}

/// An uninterrupted run: ends at the model's final state; returns the flash accesses (exits)
/// of the whole run.
fn reference_run(case: &Case, dir: &Path) -> u64 {
    let vars = dir.join("reference.fd");
    std::fs::write(&vars, &case.initial).unwrap();
    let output = spawn_run(case, &vars, 0, true).wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{} {}: no JSON report ({e}): {}",
            case.workload,
            case.writer,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let content = std::fs::read(&vars).unwrap();
    assert!(
        content == case.states.final_content,
        "{} {}: an uninterrupted run does not end at the model's final state",
        case.workload,
        case.writer
    );
    assert_eq!(
        case.states.prefix_of(&content),
        Some(case.states.operations)
    );
    let exits = &report["exits"];
    exits["mmio_read"].as_u64().unwrap() + exits["mmio_write"].as_u64().unwrap()
}

/// What one kill found.
enum Landed {
    /// The file is at the prefix of this many operations.
    Prefix(usize),
    /// The VMM had finished before the signal.
    AfterTheEnd,
}

/// Runs the case and sends SIGKILL as soon as the VMM reports `target` flash accesses or
/// more (it reports every `progress_every`).
fn kill_at(case: &Case, dir: &Path, target: u64, progress_every: u64, context: &str) -> Landed {
    let vars = dir.join("killed.fd");
    std::fs::write(&vars, &case.initial).unwrap();
    let mut child = spawn_run(case, &vars, progress_every, false);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut other_output = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        match line.strip_prefix("flash accesses: ") {
            Some(count) if count.parse::<u64>().unwrap() >= target => {
                // SIGKILL: no destructor, no flush; the writer thread dies with the process.
                let _ = child.kill();
                break;
            }
            Some(_) => {}
            None => other_output.push_str(&line),
        }
    }
    let status = child.wait().unwrap();
    let content = std::fs::read(&vars).unwrap();
    match status.signal() {
        Some(libc::SIGKILL) => {}
        None if status.code() == Some(1) => {
            assert!(content == case.states.final_content, "{context}");
            return Landed::AfterTheEnd;
        }
        _ => panic!("{context}: {status:?}: {other_output}"),
    }
    match case.states.prefix_of(&content) {
        Some(k) => Landed::Prefix(k),
        None => {
            let kept = std::env::temp_dir().join(format!("not-a-prefix-{}.fd", std::process::id()));
            let _ = std::fs::copy(&vars, &kept);
            panic!(
                "{context}: after SIGKILL the varstore is at no prefix of the {} operations \
                 (kept as {})",
                case.states.operations,
                kept.display()
            )
        }
    }
}

fn seed() -> u64 {
    match std::env::var("PFLASH_VMM_KILL_SEED") {
        Ok(text) => text.parse().expect("PFLASH_VMM_KILL_SEED: a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[test]
fn sigkill_of_the_vmm_leaves_the_varstore_at_a_prefix_of_the_completed_operations() {
    if !testkit::kvm_available() {
        return;
    }
    let seed = seed();
    println!("seed {seed} (PFLASH_VMM_KILL_SEED={seed} replays it)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let random = workload::Workload::Random {
        count: 800,
        seed: rng.gen_range(0..1_000_000),
    };
    let mut mid_run = 0;
    let mut kills = 0;
    for workload in [workload::Workload::Boot, random] {
        let mut accesses = 0;
        for writer in ["background", "inline"] {
            let case = build_case(dir.path(), workload, writer);
            if accesses == 0 {
                accesses = reference_run(&case, dir.path());
            }
            let progress_every = (accesses / 400).max(1);
            let mut landed = Vec::new();
            for kill in 0..KILLS_PER_CASE {
                let target = rng.gen_range(1..=accesses);
                let context = format!(
                    "seed {seed}, {workload} {writer}, kill {kill} at flash access {target}"
                );
                let outcome = kill_at(&case, dir.path(), target, progress_every, &context);
                kills += 1;
                landed.push(match outcome {
                    Landed::Prefix(k) => {
                        if k > 0 && k < case.states.operations {
                            mid_run += 1;
                        }
                        format!("{target}→{k}")
                    }
                    Landed::AfterTheEnd => format!("{target}→finished"),
                });
            }
            println!(
                "{workload} {writer}: {accesses} flash accesses, {} operations; kills at flash \
                 access → prefix of operations in the file: [{}]",
                case.states.operations,
                landed.join(", ")
            );
        }
    }
    println!("{mid_run} of {kills} kills landed mid-run (seed {seed})");
    assert!(
        mid_run * 3 >= kills * 2,
        "only {mid_run} of {kills} kills landed strictly between the initial and the final \
         state (seed {seed}): the test no longer exercises a crash mid-run"
    );
}

/// The check can fail: a state the device never went through is no prefix state, whether it
/// differs from one by a single byte or has one operation done without the one before it.
#[test]
fn states_no_prefix_reaches_are_not_taken_for_prefix_states() {
    let initial = workload::boot_before_image().unwrap();
    let program = workload::program(workload::Workload::Boot, None).unwrap();
    let states = PrefixStates::of(&program, &initial, Compat::Qemu10_0);
    assert_eq!(states.prefix_of(&initial), Some(0));
    assert_eq!(
        states.prefix_of(&states.final_content),
        Some(states.operations)
    );
    assert!(states.operations > 1000, "{}", states.operations);

    let mut corrupted = states.final_content.clone();
    corrupted[0x7_0000] ^= 0x01;
    assert_eq!(states.prefix_of(&corrupted), None);

    // The boot programs variables byte by byte: the final content with one programmed byte
    // in the middle of the run put back to its erased value is a state with a hole.
    let (offset, _) = initial
        .iter()
        .zip(&states.final_content)
        .enumerate()
        .filter(|(_, (before, after))| before != after)
        .nth(200)
        .map(|(i, (&b, _))| (i, b))
        .unwrap();
    let mut hole = states.final_content.clone();
    hole[offset] = initial[offset];
    assert_eq!(states.prefix_of(&hole), None, "offset {offset:#x}");
}
