//! Fleet-wide edit: `nvram apply --jobs 2` over thousands of blank ovmf-4m stores, twice:
//! importing the Secure Boot variables exported from the Microsoft-enrolled
//! OVMF_VARS_4M.ms.fd (PK, KEK, db, dbx, SecureBootEnable, CustomMode, VendorKeysNv, ~6.8 KB
//! of data; then once more, when nothing is left to do), and the real enrolment
//! (`--enroll-pk … --enroll-microsoft all --enroll-distro redhat`). Against it, on a sample in
//! the same run: virt-fw-vars doing the same import (`--set-json`) and its own
//! `--enroll-redhat`, one process per file as it is used. Then the Microsoft 2023 rollout
//! over stores enrolled with the 2011 certificates (Debian's OVMF_VARS_4M.ms.fd):
//! `--add-microsoft 2023` against virt-fw-vars adding the same four certificates with
//! `--add-kek`/`--add-db`.
//!
//! Run with `cargo bench -p nvram --bench fleet` after `scripts/install-test-deps` (or point
//! `NVRAM_VIRT_FW_VARS` at a virt-fw-vars). `NVRAM_FLEET_FILES` sets the fleet size
//! (default 10000: 5.3 GB of stores in a temporary directory under `NVRAM_FLEET_DIR`, or
//! the system's temporary directory), `NVRAM_FLEET_JOBS` the jobs (default 2) and
//! `NVRAM_FLEET_SAMPLE` the virt-fw-vars sample (default 20). Every nvram edit includes its
//! fsyncs (file and directory): that is part of its safety, so it is part of the figure.

#[path = "common/mod.rs"]
mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENROLLED: [&str; 7] = [
    "PK",
    "KEK",
    "db",
    "dbx",
    "SecureBootEnable",
    "CustomMode",
    "VendorKeysNv",
];

use common::{env_or, run};

/// The enrolment as a JSON variable list, taken from the Microsoft-enrolled OVMF store.
fn enrolment_json(nvram: &Path, dir: &Path) -> (PathBuf, usize) {
    let source = Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
    let out = run(Command::new(nvram).arg("export").arg(source));
    let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vars = json["variables"].as_array_mut().unwrap();
    vars.retain(|v| ENROLLED.contains(&v["name"].as_str().unwrap()));
    assert_eq!(
        vars.len(),
        ENROLLED.len(),
        "{source:?} lacks enrolled variables"
    );
    let bytes: usize = vars
        .iter()
        .map(|v| v["data"].as_str().unwrap().len() / 2)
        .sum();
    let path = dir.join("enrolment.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    (path, bytes)
}

/// Mean wall time of `edit` over fresh copies of `blank`.
fn per_file(dir: &Path, blank: &[u8], sample: usize, edit: impl Fn(&Path) -> Command) -> Duration {
    let files: Vec<PathBuf> = (0..sample)
        .map(|i| {
            let f = dir.join(format!("peer{i}.fd"));
            std::fs::write(&f, blank).unwrap();
            f
        })
        .collect();
    let start = Instant::now();
    for f in &files {
        run(&mut edit(f));
    }
    let elapsed = start.elapsed() / sample as u32;
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    elapsed
}

fn main() {
    let nvram = PathBuf::from(env!("CARGO_BIN_EXE_nvram"));
    let files = env_or("NVRAM_FLEET_FILES", 10_000);
    let jobs = env_or("NVRAM_FLEET_JOBS", 2);
    let sample = env_or("NVRAM_FLEET_SAMPLE", 20);
    let parent = std::env::var_os("NVRAM_FLEET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&parent).unwrap();
    let fleet = work.path().join("fleet");
    std::fs::create_dir(&fleet).unwrap();
    let (json, bytes) = enrolment_json(&nvram, work.path());
    let blank = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    println!(
        "fleet: {files} ovmf-4m stores ({:.1} GB) in {}, edit: import of {} enrolled variables ({bytes} bytes of data)",
        (files * blank.len()) as f64 / 1e9,
        parent.display(),
        ENROLLED.len()
    );

    let fleet_files: Vec<PathBuf> = (0..files)
        .map(|i| fleet.join(format!("vm{i:05}.fd")))
        .collect();
    let reset_to = |template: &[u8]| {
        for f in &fleet_files {
            std::fs::write(f, template).unwrap();
        }
        // Written back before timing, so the edits' fsyncs do not pay for the set-up's writes.
        run(&mut Command::new("sync"));
    };
    let reset = || reset_to(&blank);
    let pk = work.path().join("pk.der");
    std::fs::write(&pk, nvram::certs::bundled::MICROSOFT_PK_2023).unwrap();

    let apply = |label: &str, edit: &[&std::ffi::OsStr]| -> Duration {
        let mut command = Command::new(&nvram);
        command
            .args(["apply", "--jobs", &jobs.to_string()])
            .args(edit)
            .arg("--dir")
            .arg(&fleet);
        let start = Instant::now();
        let out = run(&mut command);
        let elapsed = start.elapsed();
        let summary = String::from_utf8_lossy(&out.stderr);
        println!(
            "nvram apply --jobs {jobs} {label} --dir fleet: {:.2} s, {:.3} ms/file, {:.0} files/s; {}",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e3 / files as f64,
            files as f64 / elapsed.as_secs_f64(),
            summary.trim()
        );
        elapsed
    };
    reset();
    let import = [std::ffi::OsStr::new("--import"), json.as_os_str()];
    let first = apply("--import enrolment.json", &import);
    // A no-op pass (lock, read, compare; nothing written), as when re-running over a fleet.
    apply("--import enrolment.json (again: unchanged)", &import);
    reset();
    let enroll = [
        std::ffi::OsStr::new("--enroll-pk"),
        pk.as_os_str(),
        std::ffi::OsStr::new("--enroll-microsoft"),
        std::ffi::OsStr::new("all"),
        std::ffi::OsStr::new("--enroll-distro"),
        std::ffi::OsStr::new("redhat"),
    ];
    let enrolled = apply(
        "--enroll-pk ms-oem-pk-2023.der --enroll-microsoft all --enroll-distro redhat",
        &enroll,
    );

    let ms_template = std::fs::read(testkit::debian_firmware("OVMF_VARS_4M.ms.fd")).unwrap();
    reset_to(&ms_template);
    let rollout = apply(
        "--add-microsoft 2023 (over OVMF_VARS_4M.ms.fd stores)",
        &[
            std::ffi::OsStr::new("--add-microsoft"),
            std::ffi::OsStr::new("2023"),
        ],
    );

    let peer = testkit::virt_fw_vars();
    let peer_rollout_args = common::rollout::virt_fw_vars_microsoft_2023_args(work.path());
    let peer_rollout = per_file(work.path(), &ms_template, sample, |f| {
        let mut c = Command::new(&peer);
        c.arg("--inplace").arg(f).args(&peer_rollout_args);
        c
    });
    let peer_same = per_file(work.path(), &blank, sample, |f| {
        let mut c = Command::new(&peer);
        c.arg("--inplace").arg(f).arg("--set-json").arg(&json);
        c.stdout(Stdio::null());
        c
    });
    let peer_enroll = per_file(work.path(), &blank, sample, |f| {
        let mut c = Command::new(&peer);
        c.arg("--inplace").arg(f).arg("--enroll-redhat");
        c
    });
    println!(
        "virt-fw-vars --inplace f --set-json enrolment.json ({sample} files, one after another): {:.1} ms/file",
        peer_same.as_secs_f64() * 1e3
    );
    println!(
        "virt-fw-vars --inplace f --enroll-redhat ({sample} files, one after another): {:.1} ms/file",
        peer_enroll.as_secs_f64() * 1e3
    );
    println!(
        "virt-fw-vars --inplace f --add-kek … --add-db … (the 2023 rollout, {sample} files, one after another): {:.1} ms/file",
        peer_rollout.as_secs_f64() * 1e3
    );
    for (what, ours, theirs) in [
        ("--import vs --set-json", first, peer_same),
        ("--enroll-pk vs --enroll-redhat", enrolled, peer_enroll),
        (
            "--add-microsoft 2023 vs --add-kek/--add-db",
            rollout,
            peer_rollout,
        ),
    ] {
        let ours = ours.as_secs_f64() / files as f64;
        let theirs = theirs.as_secs_f64();
        println!(
            "10,000 files, {what}: nvram apply --jobs {jobs} {:.1} s{}; virt-fw-vars {:.0} s one after another, {:.0} s with {jobs} in parallel; nvram is {:.0}x faster ({:.0}x against {jobs} virt-fw-vars in parallel)",
            ours * 10_000.0,
            if files == 10_000 { " (measured)" } else { " (extrapolated)" },
            theirs * 10_000.0,
            theirs * 10_000.0 / jobs as f64,
            theirs / ours,
            theirs / ours / jobs as f64
        );
    }
}
