//! The guest's flash workload under our KVM VMM and under QEMU-KVM, side by side in one run:
//! wall time, exits to user space, system calls and bytes written to the varstore file, as
//! ratios ours/QEMU, and the latency of the vars flash's write call per MMIO write exit.
//!
//! ```text
//! cargo bench -p pflash-vmm --bench side_by_side
//! PFLASH_VMM_BENCH_ROUNDS=5 PFLASH_VMM_BENCH_RANDOM=random:5000:7 cargo bench -p pflash-vmm --bench side_by_side
//! ```
//!
//! Cases: our VMM with the background writer (the default) and with the inline writer, both
//! with the default durability (`fdatasync` at flush points, persistence on), and QEMU 10.0
//! and 7.2 (`target/peers`) with `-machine q35,accel=kvm` and their own `cfi.pflash01`.
//! Workloads: `random:0:1` (start-up, probe and the two checksums only: the baseline), the
//! recorded OVMF boot, and a random workload (`random:5000:7` unless
//! `PFLASH_VMM_BENCH_RANDOM` says otherwise).
//!
//! - **Wall time**: the median over interleaved rounds (each round runs every case once, in
//!   a rotated order), from spawn to exit, on a fresh copy of the varstore. Every run must
//!   end with the guest reporting no mismatch.
//! - **CPU time**: the median of the process's user + system time (`getrusage` of the
//!   reaped child; the guest's time counts as the vCPU thread's), which other load on the
//!   machine disturbs less than the wall time.
//! - **Exits, system calls, bytes**: one extra run per case under `strace -f -ff -y` (not
//!   timed). Exits are the vCPU thread's `KVM_RUN` calls (each return is an exit to user
//!   space; exits KVM handles in the kernel are not counted: `perf stat -e kvm:kvm_exit`
//!   counts 0 on these machines, so it is not used). Bytes are the return values of
//!   `pwrite64`/`pwritev`/`pwritev2`/`write`/`writev` on a descriptor `strace -y` names as
//!   the varstore file.
//! - **Handler latency**: our `run --json`'s `mmio_write_latency` (median over the rounds of
//!   each percentile).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Stack;

const VMM: &str = env!("CARGO_BIN_EXE_pflash-vmm");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Ours(&'static str),
    Qemu(Stack),
}

impl Case {
    const ALL: [Case; 4] = [
        Case::Ours("background"),
        Case::Ours("inline"),
        Case::Qemu(Stack::Current),
        Case::Qemu(Stack::Debian12),
    ];

    fn name(self) -> String {
        match self {
            Case::Ours(writer) => format!("pflash-vmm ({writer})"),
            Case::Qemu(stack) => format!("QEMU {}", stack.qemu_version()),
        }
    }

    fn command(self, code: &Path, vars: &Path, serial: &Path) -> Command {
        match self {
            Case::Ours(writer) => {
                let mut command = Command::new(VMM);
                command
                    .args(["run", "--compat", "qemu-10.0", "--writer", writer, "--json"])
                    .arg("--code")
                    .arg(code)
                    .arg("--vars")
                    .arg(vars)
                    .arg("--serial")
                    .arg(serial);
                command
            }
            Case::Qemu(stack) => {
                let mut command = Command::new(stack.qemu("x86_64"));
                command
                    .args(["-machine", "q35,accel=kvm", "-m", "16", "-nodefaults"])
                    .args(["-display", "none"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,unit=0,readonly=on,format=raw,file={}",
                        code.display()
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,unit=1,format=raw,file={}",
                        vars.display()
                    ))
                    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
                    .arg("-serial")
                    .arg(format!("file:{}", serial.display()));
                command
            }
        }
    }
}

/// One run: spawn to exit, and our JSON report.
struct Run {
    wall: Duration,
    /// User + system time of the process (guest time included), seconds: less sensitive
    /// than the wall time to other work on the machine.
    cpu: f64,
    report: Option<serde_json::Value>,
}

/// User + system seconds of every child this process has waited for so far.
fn children_cpu() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` to the pointer, which points at one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: zero-initialised and filled by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn run(case: Case, code: &Path, initial: &Path, dir: &Path, strace: Option<&Path>) -> Run {
    let vars = dir.join("vars.fd");
    let serial = dir.join("serial.txt");
    std::fs::copy(initial, &vars).unwrap();
    let _ = std::fs::remove_file(&serial);
    let mut command = case.command(code, &vars, &serial);
    if let Some(prefix) = strace {
        let inner = command;
        command = Command::new("strace");
        command
            .args(["-f", "-ff", "-y", "-qq", "-o"])
            .arg(prefix)
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args());
    }
    let cpu_before = children_cpu();
    let started = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .expect("spawn");
    let wall = started.elapsed();
    let cpu = children_cpu() - cpu_before;
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        output.status.code() == Some(1) && text.contains("result: mismatches 0x00000000"),
        "{}: {:?}\n{text}\n{}",
        case.name(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report = matches!(case, Case::Ours(_))
        .then(|| serde_json::from_slice(&output.stdout).expect("pflash-vmm run --json report"));
    Run { wall, cpu, report }
}

/// What `strace -f -ff -y` saw of one run.
#[derive(Default)]
struct Traced {
    syscalls: u64,
    vcpu_syscalls: u64,
    kvm_runs: u64,
    /// The vCPU thread's system calls other than `KVM_RUN`, by name.
    vcpu_other: BTreeMap<String, u64>,
    varstore_bytes: u64,
}

fn parse_strace(prefix: &Path, vars: &Path) -> Traced {
    let vars = std::fs::canonicalize(vars).unwrap();
    let tag = format!("<{}>", vars.display());
    let dir = prefix.parent().unwrap();
    let stem = prefix.file_name().unwrap().to_str().unwrap().to_owned();
    let mut traced = Traced::default();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if !name.starts_with(&format!("{stem}.")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut count = 0;
        let mut kvm_runs = 0;
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some(open) = line.find('(') else { continue };
            let call = &line[..open];
            if call.is_empty() || !call.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue; // signals, exits
            }
            count += 1;
            if call == "ioctl" && line.contains("KVM_RUN") {
                kvm_runs += 1;
            } else {
                *by_name.entry(call.to_owned()).or_insert(0u64) += 1;
            }
            let is_write = matches!(
                call,
                "pwrite64" | "pwritev" | "pwritev2" | "write" | "writev"
            );
            if is_write && line[open..].split(',').next().unwrap().contains(&tag) {
                if let Some(result) = line.rsplit("= ").next() {
                    traced.varstore_bytes += result.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        traced.syscalls += count;
        if kvm_runs > 0 {
            traced.vcpu_syscalls += count;
            traced.kvm_runs += kvm_runs;
            for (name, n) in by_name {
                *traced.vcpu_other.entry(name).or_insert(0) += n;
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
    traced
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn build_guest(dir: &Path, workload: &str) -> PathBuf {
    let path = dir.join(format!("{}.bin", workload.replace(':', "-")));
    let status = Command::new(VMM)
        .args(["guest", "--workload", workload, "-o"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pflash-vmm guest --workload {workload}");
    path
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only for
    // `cargo bench`, so that a test run of the workspace does not start VMs for minutes.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("PFLASH_VMM_BENCH_ROUNDS")
        .map(|v| v.parse().expect("PFLASH_VMM_BENCH_ROUNDS: a number"))
        .unwrap_or(3);
    let random =
        std::env::var("PFLASH_VMM_BENCH_RANDOM").unwrap_or_else(|_| "random:5000:7".into());
    let dir = tempfile::tempdir().unwrap();
    let initial = dir.path().join("before.fd");
    let status = Command::new(VMM)
        .args(["vars", "-o"])
        .arg(&initial)
        .status()
        .unwrap();
    assert!(status.success());
    let workloads = ["random:0:1".to_owned(), "boot".to_owned(), random];
    let codes: Vec<PathBuf> = workloads
        .iter()
        .map(|w| build_guest(dir.path(), w))
        .collect();

    // Wall times and our reports, interleaved.
    let mut walls: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    let mut cpus: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    let mut latencies: BTreeMap<(usize, usize), Vec<serde_json::Value>> = BTreeMap::new();
    for round in 0..rounds {
        for (w, code) in codes.iter().enumerate() {
            for k in 0..Case::ALL.len() {
                let c = (k + round) % Case::ALL.len();
                let result = run(Case::ALL[c], code, &initial, dir.path(), None);
                walls
                    .entry((w, c))
                    .or_default()
                    .push(result.wall.as_secs_f64());
                cpus.entry((w, c)).or_default().push(result.cpu);
                if let Some(report) = result.report {
                    latencies
                        .entry((w, c))
                        .or_default()
                        .push(report["mmio_write_latency"].clone());
                }
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    // One traced run per case.
    let strace = strace_works();
    let mut traced: BTreeMap<(usize, usize), Traced> = BTreeMap::new();
    let mut our_exits: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    if strace {
        for (w, code) in codes.iter().enumerate() {
            for (c, &case) in Case::ALL.iter().enumerate() {
                let prefix = dir.path().join("trace");
                let result = run(case, code, &initial, dir.path(), Some(&prefix));
                if let Some(report) = result.report {
                    our_exits.insert((w, c), report["exits"]["total"].as_u64().unwrap());
                }
                traced.insert((w, c), parse_strace(&prefix, &dir.path().join("vars.fd")));
            }
        }
    }

    println!();
    println!("rounds: {rounds}; wall time: median, spawn to exit; CPU: median user+sys of the process (guest included); exits, system calls and bytes: one run under strace -f -ff -y");
    for (w, workload) in workloads.iter().enumerate() {
        println!();
        println!("### {workload}");
        println!();
        println!("| case | wall s | CPU s | KVM_RUN exits | syscalls | vCPU-thread syscalls (besides KVM_RUN) | varstore bytes written |");
        println!("|---|---|---|---|---|---|---|");
        for (c, case) in Case::ALL.iter().enumerate() {
            let wall = median(walls[&(w, c)].clone());
            let cpu = median(cpus[&(w, c)].clone());
            let (exits, syscalls, vcpu, bytes) = match traced.get(&(w, c)) {
                Some(t) => {
                    let others: Vec<String> = t
                        .vcpu_other
                        .iter()
                        .map(|(name, n)| format!("{name} {n}"))
                        .collect();
                    (
                        t.kvm_runs.to_string(),
                        t.syscalls.to_string(),
                        format!("{} ({})", t.vcpu_syscalls - t.kvm_runs, others.join(", ")),
                        t.varstore_bytes.to_string(),
                    )
                }
                None => {
                    let na = "not measured (no strace)".to_owned();
                    (na.clone(), na.clone(), na.clone(), na)
                }
            };
            let exits = match our_exits.get(&(w, c)) {
                Some(ours) => format!("{exits} (--json: {ours})"),
                None => exits,
            };
            println!(
                "| {} | {wall:.3} | {cpu:.3} | {exits} | {syscalls} | {vcpu} | {bytes} |",
                case.name()
            );
        }
        println!();
        println!("| ratio ours/QEMU | wall | CPU | exits | syscalls | bytes written |");
        println!("|---|---|---|---|---|---|");
        for (c, ours) in Case::ALL.iter().enumerate().take(2) {
            for (q, qemu) in Case::ALL.iter().enumerate().skip(2) {
                let ratio = |a: f64, b: f64| {
                    if b == 0.0 {
                        "n/a".to_owned()
                    } else {
                        format!("{:.3}", a / b)
                    }
                };
                let wall = ratio(
                    median(walls[&(w, c)].clone()),
                    median(walls[&(w, q)].clone()),
                );
                let cpu = ratio(median(cpus[&(w, c)].clone()), median(cpus[&(w, q)].clone()));
                let (exits, syscalls, bytes) = match (traced.get(&(w, c)), traced.get(&(w, q))) {
                    (Some(a), Some(b)) => (
                        ratio(a.kvm_runs as f64, b.kvm_runs as f64),
                        ratio(a.syscalls as f64, b.syscalls as f64),
                        ratio(a.varstore_bytes as f64, b.varstore_bytes as f64),
                    ),
                    _ => ("n/a".into(), "n/a".into(), "n/a".into()),
                };
                println!(
                    "| {} / {} | {wall} | {cpu} | {exits} | {syscalls} | {bytes} |",
                    ours.name(),
                    qemu.name()
                );
            }
        }
        println!();
        println!("| MMIO write handler (device write call), ns | p50 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|");
        for (c, case) in Case::ALL.iter().enumerate().take(2) {
            let reports = &latencies[&(w, c)];
            let field = |name: &str| {
                median(
                    reports
                        .iter()
                        .map(|r| r[name].as_u64().unwrap() as f64)
                        .collect(),
                )
            };
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                case.name(),
                field("p50_ns"),
                field("p99_ns"),
                field("p999_ns"),
                field("max_ns")
            );
        }
    }
}
