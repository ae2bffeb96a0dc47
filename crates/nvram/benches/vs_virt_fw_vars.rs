//! Whole-process comparison with virt-firmware, in the same run on the same files:
//! `nvram list` vs `virt-fw-vars --print` and `nvram export` (to stdout, and durably with `-o`)
//! vs `virt-fw-vars --output-json`; then, per capability of issue 16 on Debian's
//! `OVMF_VARS_4M.ms.fd`, each nvram command against the virt-fw-vars option that does the same
//! (hashes, revoked certificates, MOK, `--set-dbx`, shim switches, SBAT level, AWS output,
//! `--hashes`, `--extract-certs`, `--set-true`, `--enroll-mgmt` with a db profile). nvram
//! edits a fresh copy of the store in place (the copy is inside the timing); virt-fw-vars
//! reads the store and writes another file with `-o`.
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
    capabilities(&nvram, &peer, out_dir.path());
}

/// Per-capability figures: (task, nvram arguments after the store, virt-fw-vars arguments
/// after `-i STORE`). `{work}` in them is a scratch directory.
fn capabilities(nvram: &Path, peer: &Path, dir: &Path) {
    let source = testkit::debian_firmware("OVMF_VARS_4M.ms.fd");
    let cert = dir.join("cert.der");
    std::fs::write(
        &cert,
        nvram::certs::distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
    )
    .unwrap();
    let update = dir.join("dbx.auth");
    std::fs::write(&update, nvram::certs::microsoft_dbx::DBX_2011_X86_64).unwrap();
    let sbat = dir.join("sbat.txt");
    std::fs::write(&sbat, b"sbat,1,2024010900\nshim,4\n").unwrap();
    let work = dir.join("work.fd");
    let out = dir.join("out.fd");
    let (c, u, l, o) = (
        cert.to_str().unwrap(),
        update.to_str().unwrap(),
        sbat.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let owner = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";
    let hash = "0102030405060708091011121314151617181920212223242526272829303132";
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "db hash",
            vec!["secureboot", "add-db", "{store}", "--hash", hash],
            vec!["--add-db-hash", owner, hash],
        ),
        (
            "dbx cert+hash",
            vec!["secureboot", "add-dbx", "{store}", c, "--hash", hash],
            vec!["--add-dbx-cert", owner, c, "--add-dbx-hash", owner, hash],
        ),
        (
            "MOK cert",
            vec!["secureboot", "add-mok", "{store}", c],
            vec!["--add-mok", owner, c],
        ),
        (
            "set dbx",
            vec!["secureboot", "add-dbx", "{store}", u, "--replace"],
            vec!["--set-dbx", u],
        ),
        (
            "shim verbose",
            vec!["shim", "set", "{store}", "verbose"],
            vec!["--set-shim-verbose"],
        ),
        (
            "SBAT level",
            vec!["shim", "sbat-level", "{store}", l],
            vec!["--set-sbat-level", l],
        ),
        (
            "set true",
            vec!["set", "{store}", "MyFlag", "--true"],
            vec!["--set-true", "MyFlag"],
        ),
        (
            "enroll mgmt",
            vec![
                "secureboot",
                "enroll",
                "{store}",
                "--external-management",
                "--microsoft",
                "all",
                "--microsoft-db",
                "uefi+rom23",
            ],
            vec!["--enroll-mgmt", "--microsoft-db", "uefi+rom23", "--sb"],
        ),
        (
            "AWS output",
            vec!["convert", "{store}", o, "--to", "aws", "--force"],
            vec!["--output-aws", o],
        ),
        (
            "hashes",
            vec!["secureboot", "hashes", "{store}"],
            vec!["-p", "-v", "--hashes"],
        ),
    ];
    println!(
        "\n{:<16} {:>12} {:>14} {:>8}   (OVMF_VARS_4M.ms.fd)",
        "capability", "nvram", "virt-fw-vars", "ratio"
    );
    for (task, ours_args, peer_args) in cases {
        let ours = time_runs(30, || {
            std::fs::copy(&source, &work).unwrap();
            let mut cmd = Command::new(nvram);
            cmd.args(ours_args.iter().map(|a| {
                if *a == "{store}" {
                    work.to_str().unwrap()
                } else {
                    a
                }
            }));
            cmd
        });
        let writes = !peer_args.contains(&"--output-aws") && !peer_args.contains(&"-p");
        let theirs = time_runs(5, || {
            let mut cmd = Command::new(peer);
            cmd.arg("-i").arg(&source).args(&peer_args);
            if writes {
                cmd.arg("-o").arg(&out);
            }
            cmd
        });
        println!(
            "{task:<16} {:>9.2} ms {:>11.1} ms {:>7.0}x",
            ours.as_secs_f64() * 1e3,
            theirs.as_secs_f64() * 1e3,
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
    // --extract-certs writes into the current directory: a fresh one per run for both.
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        let d = dir.join(format!("certs{n}"));
        std::fs::create_dir(&d).unwrap();
        d
    };
    let ours = time_runs(30, || {
        let mut cmd = Command::new(nvram);
        cmd.args(["secureboot", "extract-certs"])
            .arg(&source)
            .arg("-o")
            .arg(fresh());
        cmd
    });
    let theirs = time_runs(5, || {
        let mut cmd = Command::new(peer);
        cmd.arg("-i")
            .arg(&source)
            .arg("--extract-certs")
            .current_dir(fresh());
        cmd
    });
    println!(
        "{:<16} {:>9.2} ms {:>11.1} ms {:>7.0}x",
        "extract certs",
        ours.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
