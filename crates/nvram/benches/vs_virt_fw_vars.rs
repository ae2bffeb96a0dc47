//! Whole-process comparison with virt-firmware, in the same run on the same files:
//! `nvram list` vs `virt-fw-vars --print` and `nvram export` (to stdout, and durably with `-o`)
//! vs `virt-fw-vars --output-json`.
//!
//! Run with `cargo bench -p nvram --bench vs_virt_fw_vars` after `scripts/install-test-deps`
//! (or point `NVRAM_VIRT_FW_VARS` at a virt-fw-vars). Prints mean wall time per process and
//! the ratio.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn time_runs(runs: u32, mut make: impl FnMut() -> Command) -> Duration {
    // One unmeasured run warms the page cache for both tools alike.
    let _ = make().stdout(Stdio::null()).stderr(Stdio::null()).status();
    let start = Instant::now();
    for _ in 0..runs {
        let status = make()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run");
        assert!(status.success(), "{:?} failed", make());
    }
    start.elapsed() / runs
}

fn main() {
    let nvram = PathBuf::from(env!("CARGO_BIN_EXE_nvram"));
    let peer = testkit::virt_fw_vars();
    let out_dir = tempfile::tempdir().unwrap();
    let json_out = out_dir.path().join("out.json");
    println!(
        "{:<28} {:<10} {:>12} {:>14} {:>8}",
        "file", "task", "nvram", "virt-fw-vars", "ratio"
    );
    for name in ["OVMF_VARS_4M.fd", "OVMF_VARS_4M.ms.fd", "OVMF_VARS.ms.fd"] {
        let file = Path::new("/usr/share/OVMF").join(name);
        let ours_list = time_runs(200, || {
            let mut c = Command::new(&nvram);
            c.arg("list").arg(&file);
            c
        });
        let peer_list = time_runs(10, || {
            let mut c = Command::new(&peer);
            c.arg("-i").arg(&file).arg("--print");
            c
        });
        let ours_export = time_runs(200, || {
            let mut c = Command::new(&nvram);
            c.arg("export").arg(&file);
            c
        });
        // `-o` adds what virt-fw-vars does not do: temp file, fsync, rename, fsync directory.
        let ours_export_durable = time_runs(200, || {
            let mut c = Command::new(&nvram);
            c.arg("export")
                .arg(&file)
                .arg("-o")
                .arg(&json_out)
                .arg("--force");
            c
        });
        let peer_export = time_runs(10, || {
            let mut c = Command::new(&peer);
            c.arg("-i").arg(&file).arg("--output-json").arg(&json_out);
            c
        });
        for (task, ours, theirs) in [
            ("list", ours_list, peer_list),
            ("export", ours_export, peer_export),
            ("export -o", ours_export_durable, peer_export),
        ] {
            println!(
                "{name:<28} {task:<10} {:>9.2} ms {:>11.1} ms {:>7.0}x",
                ours.as_secs_f64() * 1e3,
                theirs.as_secs_f64() * 1e3,
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
    }
}
