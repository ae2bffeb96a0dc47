//! `nvram list` at the floor: how close a whole `nvram list` process comes to the cheapest
//! Rust process there is, on the same machine in the same run.
//!
//! Times, per process (spawn, run, wait; output to /dev/null):
//! - a hello-world Rust binary, compiled here by `rustc -C opt-level=3` into a temporary
//!   directory (`$RUSTC` or `rustc`), linked like `nvram` (dynamically against glibc);
//! - `nvram --version` (start-up and argument parsing only);
//! - `nvram list /usr/share/OVMF/OVMF_VARS_4M.ms.fd` (the Microsoft-enrolled template: 4
//!   certificates in KEK and db whose subjects are decoded, a dbx of 1,700-odd hashes);
//! - `virt-fw-vars -i … --print` (`testkit::virt_fw_vars()`, after `scripts/install-test-deps`
//!   or with `NVRAM_VIRT_FW_VARS`).
//!
//! The cases are interleaved round by round, so that a busy machine slows them alike; the
//! median and the minimum of each are printed with the ratio to hello-world.
//!
//! Run with `cargo bench -p nvram --bench list_floor` (`LIST_FLOOR_ROUNDS=N` for more
//! rounds; 400 by default, virt-fw-vars once every 20 rounds).
//!
//! Figures (2 shared cores, Debian 12, load average 5.6–6.4 from other builds, 1,000 rounds;
//! medians / minima): hello-world 1.08 / 0.88 ms; `nvram --version` 1.39× / 1.36×; `nvram
//! list` 2.09× / 1.96×; `virt-fw-vars --print` 103× / 95× (49× `nvram list`). Where the rest
//! goes, by `valgrind --tool=callgrind` (instruction counts do not depend on the load):
//! hello-world 0.30 M instructions and 89 page faults; `nvram list` 1.21 M and about 335,
//! of which the dynamic loader is 0.42 M (11,000 relative relocations of a position-
//! independent executable and the symbols of libc, libm and libgcc_s; linking without PIE
//! saves 0.15 M and 35 faults, not taken: it gives up address randomisation of the binary),
//! Rust's start-up 0.12 M as in hello-world, reading the 528 KiB image 130 faults, parsing
//! and checking it 0.17 M, decoding and printing the values 0.4 M. Parsing the command line
//! builds only the subcommand named (0.6 M for the whole tree).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hello-world binary built by rustc in `dir`.
fn hello_world(dir: &Path) -> PathBuf {
    let src = dir.join("hello.rs");
    std::fs::write(&src, "fn main() {\n    println!(\"hello, world\");\n}\n").unwrap();
    let bin = dir.join("hello");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(&rustc)
        .args(["--edition", "2021", "-C", "opt-level=3", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&rustc).display()));
    assert!(status.success(), "rustc failed to build hello-world");
    bin
}

/// One process of `argv`, output to /dev/null; its wall time.
fn run_once(argv: &[PathBuf]) -> Duration {
    let start = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv[0].display()));
    let elapsed = start.elapsed();
    assert!(status.success(), "{argv:?} failed: {status}");
    elapsed
}

struct Case {
    name: &'static str,
    argv: Vec<PathBuf>,
    /// Run in one round of this many.
    every: u32,
    times: Vec<Duration>,
}

impl Case {
    fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t[t.len() / 2]
    }

    fn min(&self) -> Duration {
        *self.times.iter().min().unwrap()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let rounds: u32 = std::env::var("LIST_FLOOR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let dir = tempfile::tempdir().unwrap();
    let hello = hello_world(dir.path());
    let nvram = PathBuf::from(env!("CARGO_BIN_EXE_nvram"));
    let template = testkit::debian_firmware("OVMF_VARS_4M.ms.fd");
    let peer = testkit::virt_fw_vars();
    let mut cases = vec![
        Case {
            name: "hello-world",
            argv: vec![hello],
            every: 1,
            times: Vec::new(),
        },
        Case {
            name: "nvram --version",
            argv: vec![nvram.clone(), "--version".into()],
            every: 1,
            times: Vec::new(),
        },
        Case {
            name: "nvram list",
            argv: vec![nvram, "list".into(), template.clone()],
            every: 1,
            times: Vec::new(),
        },
        Case {
            name: "virt-fw-vars --print",
            argv: vec![peer, "-i".into(), template, "--print".into()],
            every: 20,
            times: Vec::new(),
        },
    ];
    // Warm-up: page cache and dynamic loader cache for every binary.
    for case in &cases {
        run_once(&case.argv);
    }
    for round in 0..rounds {
        for case in &mut cases {
            if round % case.every == 0 {
                let t = run_once(&case.argv);
                case.times.push(t);
            }
        }
    }
    let floor = cases[0].median();
    let floor_min = cases[0].min();
    let list = cases[2].median();
    println!(
        "{rounds} rounds, wall time per process (spawn to exit), {}",
        cases[2].argv[2].display()
    );
    println!(
        "{:<22} {:>6} {:>11} {:>9} {:>11} {:>9}",
        "process", "runs", "median ms", "ratio", "min ms", "ratio"
    );
    for case in &cases {
        println!(
            "{:<22} {:>6} {:>11.3} {:>8.2}x {:>11.3} {:>8.2}x",
            case.name,
            case.times.len(),
            ms(case.median()),
            case.median().as_secs_f64() / floor.as_secs_f64(),
            ms(case.min()),
            case.min().as_secs_f64() / floor_min.as_secs_f64()
        );
    }
    println!(
        "virt-fw-vars --print / nvram list (medians): {:.0}x",
        cases[3].median().as_secs_f64() / list.as_secs_f64()
    );
}
