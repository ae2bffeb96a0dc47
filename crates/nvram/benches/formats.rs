//! `nvram list` and one `nvram set` on the same store kept as a raw flash image, as qcow2 and
//! as QEMU's uefi-vars JSON, against the raw store and against virt-fw-vars on the same
//! content, in one run. virt-fw-vars reads neither qcow2 nor a JSON store, so its figures are
//! for what an operator runs today: for qcow2, `qemu-img convert` to raw, virt-fw-vars, and
//! `qemu-img convert` back; for JSON, the JSON applied to a blank store with `--set-json`
//! (and `--output-json` to save it).
//!
//! Run with `cargo bench -p nvram --bench formats` after `scripts/install-test-deps` (or
//! point `NVRAM_VIRT_FW_VARS` at a virt-fw-vars). Prints the mean wall time per process and
//! the ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn time_runs(runs: u32, mut make: impl FnMut(u32) -> Command) -> Duration {
    // One unmeasured run warms the page cache for every tool alike.
    let _ = make(runs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    for i in 0..runs {
        let out = make(i)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .output();
        let out = out.expect("run");
        assert!(
            out.status.success(),
            "{:?} failed: {}",
            make(i),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start.elapsed() / runs
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let nvram = PathBuf::from(env!("CARGO_BIN_EXE_nvram"));
    let peer = testkit::virt_fw_vars();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
    let raw = d.join("vars.fd");
    std::fs::copy(source, &raw).unwrap();
    let qcow2 = d.join("vars.qcow2");
    let made = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .expect("qemu-img (qemu-utils) is needed");
    assert!(made.success());
    let json = d.join("vars.json");
    let made = Command::new(&nvram)
        .args(["convert", "--to", "json"])
        .arg(&raw)
        .arg(&json)
        .status()
        .unwrap();
    assert!(made.success());
    let blank = d.join("blank.fd");
    let made = Command::new(&nvram)
        .arg("create")
        .arg(&blank)
        .status()
        .unwrap();
    assert!(made.success());
    // One variable for virt-fw-vars' --set-json, alternating so every run writes.
    let one = |i: u32| {
        let path = d.join(format!("one{}.json", i % 2));
        let doc = format!(
            r#"{{"version": 2, "variables": [{{"name": "BenchVar", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "{:02x}00"}}]}}"#,
            i % 2 + 1
        );
        std::fs::write(&path, doc).unwrap();
        path
    };
    one(0);
    one(1);
    let runs = 100;
    let peer_runs = 10;

    let list = |file: &Path| {
        time_runs(runs, |_| {
            let mut c = Command::new(&nvram);
            c.arg("list").arg(file);
            c
        })
    };
    let set = |file: &Path| {
        time_runs(runs, |i| {
            let mut c = Command::new(&nvram);
            c.arg("set")
                .arg(file)
                .arg("BenchVar")
                .arg("--u16")
                .arg((i % 2 + 1).to_string());
            c
        })
    };
    let ours = [
        ("raw", list(&raw), set(&raw)),
        ("qcow2", list(&qcow2), set(&qcow2)),
        ("json", list(&json), set(&json)),
    ];

    let p = peer.display();
    let (q, j, b) = (qcow2.display(), json.display(), blank.display());
    let tmp = d.join("peer.fd");
    let t = tmp.display();
    let peer_raw = (
        time_runs(peer_runs, |_| {
            let mut c = Command::new(&peer);
            c.arg("-i").arg(&raw).arg("--print");
            c
        }),
        time_runs(peer_runs, |i| {
            let mut c = Command::new(&peer);
            c.arg("--inplace").arg(&raw).arg("--set-json").arg(one(i));
            c
        }),
    );
    let peer_qcow2 = (
        time_runs(peer_runs, |_| {
            sh(&format!(
                "qemu-img convert -f qcow2 -O raw {q} {t} && {p} -i {t} --print"
            ))
        }),
        time_runs(peer_runs, |i| {
            sh(&format!(
                "qemu-img convert -f qcow2 -O raw {q} {t} && {p} --inplace {t} --set-json {} \
                 && qemu-img convert -f raw -O qcow2 {t} {q}",
                one(i).display()
            ))
        }),
    );
    let peer_json = (
        time_runs(peer_runs, |_| {
            sh(&format!("{p} -i {b} --set-json {j} --print"))
        }),
        time_runs(peer_runs, |i| {
            sh(&format!(
                "{p} -i {b} --set-json {j} --set-json {} --output-json {j}.new && mv {j}.new {j}",
                one(i).display()
            ))
        }),
    );
    let peers = [peer_raw, peer_qcow2, peer_json];

    println!("OVMF_VARS_4M.ms.fd kept three ways; mean wall time per process");
    println!(
        "{:<7} {:<5} {:>10} {:>12} {:>10} {:>14}",
        "format", "task", "nvram", "vs raw", "peer", "peer/nvram"
    );
    let (raw_list, raw_set) = (ours[0].1, ours[0].2);
    for ((format, list, set), (peer_list, peer_set)) in ours.iter().zip(peers) {
        for (task, time, raw_time, peer_time) in [
            ("list", *list, raw_list, peer_list),
            ("set", *set, raw_set, peer_set),
        ] {
            println!(
                "{format:<7} {task:<5} {:>7.2} ms {:>11.2}x {:>7.1} ms {:>13.0}x",
                ms(time),
                time.as_secs_f64() / raw_time.as_secs_f64(),
                ms(peer_time),
                peer_time.as_secs_f64() / time.as_secs_f64()
            );
        }
    }
}
