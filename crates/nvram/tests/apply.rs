//! `nvram apply` over a fleet: 200+ good stores and a handful of bad ones (truncated, not a
//! varstore, a symlink, a directory, a missing file, one locked by a running "VM", one in a
//! read-only directory). Each file gets its own result, the good ones are edited, the bad
//! ones are left byte for byte, and a second run changes nothing.

mod common;

use common::path_str as p;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const GOOD: usize = 210;
const VENDOR: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";

fn nvram(args: &[&str]) -> Output {
    nvram_as(None, args)
}

/// Runs `nvram` as user and group `uid` (root only) or as this process's user.
fn nvram_as(uid: Option<u32>, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_nvram"));
    if let Some(id) = uid {
        // std drops the supplementary groups too when root changes the user.
        command.uid(id).gid(id);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nvram")
}

fn get_hex(path: &Path, name: &str) -> Option<String> {
    let out = nvram(&["get", p(path), name, "--hex"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The edit of every test: an import, a set and a delete of something absent.
fn edit_args(dir: &Path) -> Vec<String> {
    let json = dir.join("edit.json");
    fs::write(
        &json,
        format!(
            r#"{{"version": 2, "variables": [
                {{"name": "FleetTag", "guid": "{VENDOR}", "attr": 7, "data": "0102030405"}},
                {{"name": "PlatformLang", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "656e00"}}]}}"#
        ),
    )
    .unwrap();
    vec![
        "--import".into(),
        p(&json).into(),
        "--set".into(),
        "Timeout=u16:7".into(),
        "--delete".into(),
        "NoSuchVariable".into(),
    ]
}

struct Fleet {
    _dir: tempfile::TempDir,
    root: PathBuf,
    good: Vec<PathBuf>,
    /// Bad files (or non-files) with the result each must get.
    bad: Vec<(PathBuf, &'static str)>,
}

fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let vms = root.join("vms");
    fs::create_dir(&vms).unwrap();
    let good: Vec<PathBuf> = (0..GOOD)
        .map(|i| {
            let f = vms.join(format!("vm{i:04}.fd"));
            let out = nvram(&["create", p(&f)]);
            assert!(out.status.success(), "{out:?}");
            f
        })
        .collect();
    let image = fs::read(&good[0]).unwrap();
    let mut bad = Vec::new();
    let truncated = vms.join("truncated.fd");
    fs::write(&truncated, &image[..image.len() / 3]).unwrap();
    bad.push((truncated, "failed"));
    let garbage = vms.join("garbage.fd");
    fs::write(
        &garbage,
        (0..image.len())
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    bad.push((garbage, "failed"));
    // The link's target is a good store outside the fleet, which must stay as it is.
    let target = root.join("target.fd");
    fs::write(&target, &image).unwrap();
    let link = vms.join("link.fd");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    bad.push((link, "failed"));
    let subdir = vms.join("directory.fd");
    fs::create_dir(&subdir).unwrap();
    bad.push((subdir, "failed"));
    bad.push((vms.join("missing.fd"), "failed"));
    let locked = vms.join("locked.fd");
    fs::write(&locked, &image).unwrap();
    bad.push((locked, "skipped"));
    Fleet {
        _dir: dir,
        root,
        good,
        bad,
    }
}

/// Runs `nvram apply --json` and returns the exit code and the results by file.
fn apply_json(
    extra: &[String],
    files: &[&Path],
    edit: &[String],
) -> (i32, HashMap<PathBuf, (String, String)>, String) {
    apply_json_as(None, extra, files, edit)
}

/// [`apply_json`] run as user and group `uid` (see [`nvram_as`]).
fn apply_json_as(
    uid: Option<u32>,
    extra: &[String],
    files: &[&Path],
    edit: &[String],
) -> (i32, HashMap<PathBuf, (String, String)>, String) {
    let mut args: Vec<String> = vec!["apply".into(), "--json".into()];
    args.extend(extra.iter().cloned());
    args.extend(edit.iter().cloned());
    args.push("--".into());
    args.extend(files.iter().map(|f| p(f).to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nvram_as(uid, &refs);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let list = json.as_array().expect("an array");
    assert_eq!(list.len(), files.len(), "one result per file");
    let mut by_file = HashMap::new();
    for (entry, file) in list.iter().zip(files) {
        assert_eq!(entry["file"].as_str().unwrap(), p(file), "input order");
        by_file.insert(
            PathBuf::from(entry["file"].as_str().unwrap()),
            (
                entry["result"].as_str().unwrap().to_string(),
                entry["detail"].as_str().unwrap().to_string(),
            ),
        );
    }
    (out.status.code().unwrap(), by_file, stderr)
}

#[test]
fn a_fleet_with_bad_files_gets_one_result_each_and_only_good_files_change() {
    let fleet = fleet();
    let edit = edit_args(&fleet.root);
    let snapshot = |paths: &[(PathBuf, &str)]| -> Vec<Option<Vec<u8>>> {
        paths.iter().map(|(f, _)| fs::read(f).ok()).collect()
    };
    let bad_before = snapshot(&fleet.bad);
    let target_before = fs::read(fleet.root.join("target.fd")).unwrap();

    // Hold the lock a running nvram pflash device holds on the "running VM"'s store.
    let (locked, _) = fleet.bad.iter().find(|(_, r)| *r == "skipped").unwrap();
    let holder = fs::File::open(locked).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let mut files: Vec<&Path> = fleet.good.iter().map(PathBuf::as_path).collect();
    // Bad files spread through the list, so they sit between good ones on every worker.
    for (i, (bad, _)) in fleet.bad.iter().enumerate() {
        files.insert(i * 37 + 5, bad);
    }
    let jobs = vec!["--jobs".to_string(), "4".to_string()];
    let (code, results, stderr) = apply_json(&jobs, &files, &edit);
    assert_eq!(code, 1, "some files failed: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{} files: {GOOD} changed, 0 unchanged, 1 skipped (locked), 5 failed",
            GOOD + 6
        )),
        "{stderr}"
    );
    for f in &fleet.good {
        let (result, detail) = &results[f];
        assert_eq!(result, "changed", "{}: {detail}", f.display());
        assert!(detail.contains("Timeout: added"), "{detail}");
        assert!(detail.contains("NoSuchVariable: not present"), "{detail}");
    }
    for (f, want) in &fleet.bad {
        let (result, detail) = &results[f];
        assert_eq!(result, want, "{}: {detail}", f.display());
        assert!(!detail.is_empty());
    }
    let detail_of = |name: &str| &results[&fleet.root.join("vms").join(name)].1;
    assert!(detail_of("link.fd").contains("symbolic link"));
    assert!(detail_of("locked.fd").contains("flock"));
    assert!(detail_of("directory.fd").contains("directory"));
    assert!(detail_of("missing.fd").contains("No such file"));

    // The bad ones are byte for byte as they were, the link's target too.
    assert_eq!(snapshot(&fleet.bad), bad_before);
    assert_eq!(
        fs::read(fleet.root.join("target.fd")).unwrap(),
        target_before
    );
    // The good ones read back right (through `nvram get` on a sample, the parser on all).
    for f in fleet.good.iter().step_by(15) {
        assert_eq!(get_hex(f, "Timeout").as_deref(), Some("0700"));
        assert_eq!(get_hex(f, "PlatformLang").as_deref(), Some("656e00"));
        assert_eq!(get_hex(f, "FleetTag").as_deref(), Some("0102030405"));
    }
    for f in &fleet.good {
        let image = fs::read(f).unwrap();
        let store = varstore::Varstore::parse(&image).unwrap();
        assert!(
            store.is_healthy(),
            "{}: {:?}",
            f.display(),
            store.findings()
        );
        assert_eq!(store.live_variables().len(), 3, "{}", f.display());
    }
    let leftovers: Vec<_> = fs::read_dir(fleet.root.join("vms"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".fd"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Again, with the VM stopped: nothing left to do but the locked one.
    drop(holder);
    let good_after: Vec<Vec<u8>> = fleet.good.iter().map(|f| fs::read(f).unwrap()).collect();
    let (code, results, stderr) = apply_json(&jobs, &files, &edit);
    assert_eq!(code, 1, "{stderr}");
    for f in &fleet.good {
        assert_eq!(
            results[f].0,
            "unchanged",
            "{}: {}",
            f.display(),
            results[f].1
        );
    }
    assert_eq!(results[locked].0, "changed", "{}", results[locked].1);
    let good_again: Vec<Vec<u8>> = fleet.good.iter().map(|f| fs::read(f).unwrap()).collect();
    assert!(good_again == good_after, "an unchanged file was rewritten");
}

#[test]
fn locked_files_are_skipped_and_fail_only_with_strict() {
    let fleet = fleet();
    let edit = edit_args(&fleet.root);
    let (locked, _) = fleet.bad.iter().find(|(_, r)| *r == "skipped").unwrap();
    let holder = fs::File::open(locked).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockShared).unwrap();
    let files = [fleet.good[0].as_path(), locked.as_path()];
    let (code, results, _) = apply_json(&[], &files, &edit);
    assert_eq!(code, 0);
    assert_eq!(results[locked.as_path()].0, "skipped");
    let (code, results, _) = apply_json(&["--strict".into()], &files, &edit);
    assert_eq!(code, 1);
    assert_eq!(results[fleet.good[0].as_path()].0, "unchanged");
    assert_eq!(results[locked.as_path()].0, "skipped");
}

#[test]
fn text_output_files_from_and_dir() {
    let fleet = fleet();
    let edit = edit_args(&fleet.root);
    let list = fleet.root.join("list.txt");
    let some: Vec<&PathBuf> = fleet.good.iter().take(20).collect();
    fs::write(
        &list,
        some.iter()
            .map(|f| format!("{}\n\n", f.display()))
            .collect::<String>(),
    )
    .unwrap();
    let mut args = vec!["apply".to_string(), "--files-from".into(), p(&list).into()];
    args.extend(edit.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nvram(&refs);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 20, "{stdout}");
    assert!(stdout
        .lines()
        .all(|l| l.starts_with("changed ") && l.contains(".fd: ")));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("20 files: 20 changed, 0 unchanged, 0 skipped (locked), 0 failed"));

    // --dir: every *.fd entry, the bad ones included (locked.fd is not locked now).
    let mut args = vec![
        "apply".to_string(),
        "--dir".into(),
        p(&fleet.root.join("vms")).into(),
    ];
    args.extend(edit.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nvram(&refs);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The missing file is not in the directory; the other four bad entries fail.
    assert!(
        stderr.contains(&format!(
            "{} files: {} changed, 20 unchanged, 0 skipped (locked), 4 failed",
            GOOD + 5,
            GOOD - 20 + 1
        )),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_touch_nothing() {
    let fleet = fleet();
    let before = fs::read(&fleet.good[0]).unwrap();
    for args in [
        vec!["--set", "Timeout=u99:1"],
        vec!["--set", "Timeout"],
        vec!["--set", "Timeout:nv,xx=u16:1"],
        // Without bs: refused by the firmware's rules on every store.
        vec!["--set", "Timeout:nv=u16:1"],
        vec!["--set", "Timeout=hex:"],
        vec!["--delete", "X@not-a-guid"],
        vec!["--import", "/nonexistent.json"],
        vec![],
        vec!["--jobs", "0", "--set", "Timeout=u16:1"],
        // --libvirt takes domains, not files; and it needs --domain or --all.
        vec!["--libvirt", "--all", "--set", "Timeout=u16:1"],
        vec!["--libvirt", "--set", "Timeout=u16:1"],
    ] {
        let mut all = vec!["apply"];
        all.extend(args.iter().copied());
        all.push(p(&fleet.good[0]));
        let out = nvram(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
    }
    let out = nvram(&["apply", "--set", "Timeout=u16:1"]);
    assert_eq!(out.status.code(), Some(2), "no files");
    assert_eq!(fs::read(&fleet.good[0]).unwrap(), before);
}

/// The user and group `nobody`: root writes into any directory, so as root (CI) the edit
/// runs as this user, on files given to it, for directory permissions to mean anything.
const NOBODY: u32 = 65534;

#[test]
fn a_read_only_directory_fails_its_files_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let edit = edit_args(root);
    let good = root.join("good.fd");
    assert!(nvram(&["create", p(&good)]).status.success());
    let ro = root.join("ro");
    fs::create_dir(&ro).unwrap();
    let stuck = ro.join("vm.fd");
    fs::copy(&good, &stuck).unwrap();
    let before = fs::read(&stuck).unwrap();
    // /proc/self belongs to the process's effective user.
    let as_root = fs::metadata("/proc/self").unwrap().uid() == 0;
    let user = as_root.then_some(NOBODY);
    if as_root {
        for path in [root, &root.join("edit.json"), &good, &ro, &stuck] {
            std::os::unix::fs::chown(path, user, user).unwrap();
        }
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let files = [good.as_path(), stuck.as_path()];
    let (code, results, stderr) = apply_json_as(user, &[], &files, &edit);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(results[good.as_path()].0, "changed", "{results:?} {stderr}");
    let (result, detail) = &results[stuck.as_path()];
    assert_eq!(result, "failed", "{detail}");
    assert!(detail.contains("Permission denied"), "{detail}");
    assert_eq!(code, 1);
    assert_eq!(fs::read(&stuck).unwrap(), before);
}

/// Secure Boot enrolment as one more step of a plan (through the library, as the CLI will).
#[test]
fn enrolment_is_a_plan_step_and_idempotent() {
    use nvram::apply::{apply_all, Plan, Status, Step};
    use nvram::certs::{bundled, SignatureInput};
    use nvram::secureboot::{EnrollPlan, Microsoft};

    let dir = tempfile::tempdir().unwrap();
    let blank = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    let mut files: Vec<PathBuf> = (0..20)
        .map(|i| {
            let f = dir.path().join(format!("vm{i}.fd"));
            fs::write(&f, &blank).unwrap();
            f
        })
        .collect();
    let garbage = dir.path().join("garbage.fd");
    fs::write(&garbage, vec![0x55; blank.len()]).unwrap();
    files.insert(7, garbage.clone());
    let pk = SignatureInput::Certificates(vec![bundled::MICROSOFT_PK_2023.to_vec()]);
    let enrolment = EnrollPlan {
        microsoft: Some(Microsoft::All),
        ..EnrollPlan::with_pk(pk)
    };
    let plan = Plan::new(vec![
        Step::Enroll(Box::new(enrolment)),
        Step::Set {
            name: "Timeout".into(),
            guid: varstore::guid::EFI_GLOBAL_VARIABLE,
            attributes: varstore::Attributes(7),
            data: vec![3, 0],
            time: None,
        },
    ]);
    let results = apply_all(&files, &plan, 2, &|_| {});
    for r in &results {
        let want = if r.file == garbage {
            Status::Failed
        } else {
            Status::Changed
        };
        assert_eq!(r.status, want, "{}: {}", r.file.display(), r.detail);
    }
    assert_eq!(fs::read(&garbage).unwrap(), vec![0x55; blank.len()]);
    for f in files.iter().filter(|f| **f != garbage) {
        let image = fs::read(f).unwrap();
        let store = varstore::Varstore::parse(&image).unwrap();
        let state = nvram::secureboot::status(&store);
        assert!(!state.setup_mode && state.secure_boot_at_next_boot);
        assert!(state.microsoft.iter().all(|c| c.present));
        assert_eq!(get_hex(f, "Timeout").as_deref(), Some("0300"));
    }
    let again = apply_all(&files, &plan, 2, &|_| {});
    for r in again.iter().filter(|r| r.file != garbage) {
        assert_eq!(
            r.status,
            Status::Unchanged,
            "{}: {}",
            r.file.display(),
            r.detail
        );
    }
}

#[test]
fn enroll_options_enrol_every_file_once() {
    let fleet = fleet();
    let pk = fleet.root.join("pk.der");
    fs::write(&pk, nvram::certs::bundled::MICROSOFT_PK_2023).unwrap();
    let files: Vec<&Path> = fleet.good.iter().take(12).map(PathBuf::as_path).collect();
    let edit: Vec<String> = [
        "--enroll-pk",
        p(&pk),
        "--enroll-microsoft",
        "2023",
        "--set",
        "Timeout=u16:2",
    ]
    .map(String::from)
    .to_vec();
    let (code, results, stderr) = apply_json(&[], &files, &edit);
    assert_eq!(code, 0, "{stderr}");
    for f in &files {
        let (result, detail) = &results[*f];
        assert_eq!(result, "changed", "{detail}");
        assert!(detail.starts_with("PK: added; KEK: added"), "{detail}");
        let image = fs::read(f).unwrap();
        let state = nvram::secureboot::status(&varstore::Varstore::parse(&image).unwrap());
        assert!(state.secure_boot_at_next_boot && state.microsoft_2023_ready);
    }
    let (code, results, _) = apply_json(&[], &files, &edit);
    assert_eq!(code, 0);
    assert!(results.values().all(|(r, _)| r == "unchanged"));
    // Without a PK the other enrolment options are refused.
    let out = nvram(&["apply", "--enroll-microsoft", "all", p(files[0])]);
    assert_eq!(out.status.code(), Some(2));
}

/// The Microsoft 2023 rollout over a fleet of Debian's Microsoft-enrolled stores: KEK and db
/// get the 2023 certificates (and the Debian CA), dbx the revocation list signed with the 2023
/// KEK, every other variable stays as it was, a store that has them
/// already and a second run are unchanged, and a bad file fails alone.
#[test]
fn microsoft_2023_rollout_over_a_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let ms = fs::read(testkit::debian_firmware("OVMF_VARS_4M.ms.fd")).unwrap();
    let mut files: Vec<PathBuf> = (0..12)
        .map(|i| {
            let f = dir.path().join(format!("vm{i:02}.fd"));
            fs::write(&f, &ms).unwrap();
            f
        })
        .collect();
    let done_already = files[3].clone();
    let out = nvram(&[
        "secureboot",
        "add-kek",
        p(&done_already),
        "--microsoft",
        "2023",
    ]);
    assert!(out.status.success());
    let out = nvram(&[
        "secureboot",
        "add-db",
        p(&done_already),
        "--microsoft",
        "2023",
    ]);
    assert!(out.status.success());
    let truncated = dir.path().join("truncated.fd");
    fs::write(&truncated, &ms[..4096]).unwrap();
    files.push(truncated.clone());
    let before: HashMap<PathBuf, Vec<u8>> = files
        .iter()
        .map(|f| (f.clone(), fs::read(f).unwrap()))
        .collect();

    let edit: Vec<String> = [
        "--add-microsoft",
        "2023",
        "--add-distro",
        "debian",
        "--add-microsoft-dbx",
        "2023",
    ]
    .map(String::from)
    .to_vec();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();

    // A dry run first: what would change, nothing written.
    let (code, dry, stderr) = apply_json(&["--dry-run".to_string()], &refs, &edit);
    assert_eq!(
        code, 1,
        "the truncated file fails the dry run too: {stderr}"
    );
    assert!(stderr.contains("12 would change (dry run"), "{stderr}");
    for f in &files {
        let want = if *f == truncated {
            "failed"
        } else {
            "would-change"
        };
        assert_eq!(dry[f].0, want, "{}: {}", f.display(), dry[f].1);
        assert!(
            fs::read(f).unwrap() == before[f],
            "{}: written by a dry run",
            f.display()
        );
    }

    let (code, results, stderr) = apply_json(&[], &refs, &edit);
    assert_eq!(code, 1, "the truncated file fails the run: {stderr}");
    let (result, _) = &results[&truncated];
    assert_eq!(result, "failed");
    assert_eq!(fs::read(&truncated).unwrap(), before[&truncated]);
    for f in files.iter().filter(|f| **f != truncated) {
        let (result, detail) = &results[f];
        assert_eq!(result, "changed", "{}: {detail}", f.display());
        let want = if *f == done_already {
            "KEK: unchanged; db: replaced (+1); dbx: replaced (+"
        } else {
            "KEK: replaced (+1); db: replaced (+4); dbx: replaced (+"
        };
        assert!(detail.starts_with(want), "{}: {detail}", f.display());
        assert_eq!(&dry[f].1, detail, "the dry run told what the run did");
        let image = fs::read(f).unwrap();
        let store = varstore::Varstore::parse(&image).unwrap();
        let state = nvram::secureboot::status(&store);
        assert!(state.microsoft_2023_ready && state.secure_boot_at_next_boot);
        assert!(state.microsoft.iter().all(|c| c.present), "{}", f.display());
        let old_image = &before[f];
        let old = varstore::Varstore::parse(old_image).unwrap();
        let others = |store: &varstore::Varstore<'_>| -> Vec<(String, varstore::Guid, Vec<u8>)> {
            store
                .live_variables()
                .iter()
                .filter(|v| !["KEK", "db", "dbx"].contains(&v.name().as_str()))
                .map(|v| (v.name(), v.guid, v.data.to_vec()))
                .collect()
        };
        let (old_vars, new_vars) = (others(&old), others(&store));
        assert_eq!(
            old_vars,
            new_vars,
            "{}: other variables changed",
            f.display()
        );
    }
    let good: Vec<&Path> = refs.iter().copied().filter(|f| *f != truncated).collect();
    let (code, results, _) = apply_json(&[], &good, &edit);
    assert_eq!(code, 0);
    for (f, (result, detail)) in &results {
        assert_eq!(result, "unchanged", "{}: {detail}", f.display());
    }
}

/// The progress bar is drawn on a terminal only: with stderr a pipe (a log, CI) the only
/// thing on stderr is the summary line, with no carriage return or escape sequence; on a
/// terminal (a pty from util-linux `script`) the bar appears and is cleared at the end.
#[test]
fn progress_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..20)
        .map(|i| dir.path().join(format!("vm{i}.fd")))
        .collect();
    for f in &files {
        fs::write(f, varstore::Layout::by_name("ovmf-4m").unwrap().create()).unwrap();
    }
    let mut args = vec!["apply", "--set", "Timeout=u16:4"];
    args.extend(files.iter().map(|f| p(f)));
    let out = nvram(&args);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "only the summary: {stderr:?}");
    assert!(
        stderr.starts_with("nvram: 20 files: 20 changed"),
        "{stderr:?}"
    );
    assert!(!stderr.contains(['\r', '\x1b']), "{stderr:?}");

    // The same edit again on a terminal: every file unchanged, the bar drawn meanwhile.
    let command = std::iter::once(env!("CARGO_BIN_EXE_nvram"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs a command on a terminal for this test");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("/20 files, 0 failed, 0 skipped"),
        "{shown:?}"
    );
    assert!(shown.contains("[##"), "{shown:?}");
    assert!(
        shown.contains("nvram: 20 files: 0 changed, 20 unchanged"),
        "{shown:?}"
    );
}
