//! Unit tests of the atomic create/replace and leftover handling in `lib.rs`.

use super::*;
use std::os::unix::fs::symlink;

#[test]
fn create_new_is_exclusive_owner_only_and_refuses_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.fd");
    create_new(&path, b"abc").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"abc");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert!(matches!(
        create_new(&path, b"x"),
        Err(SafeFileError::Exists { .. })
    ));
    let link = dir.path().join("link.fd");
    symlink(dir.path().join("nowhere"), &link).unwrap();
    assert!(matches!(
        create_new(&link, b"x"),
        Err(SafeFileError::Exists { .. })
    ));
    assert!(!dir.path().join("nowhere").exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temporary left"
    );
}

#[test]
fn replace_keeps_mode_refuses_symlinks_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();
    replace(&path, b"new").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_ne!(
        meta.ino(),
        inode,
        "renamed into place, not written in place"
    );

    let link = dir.path().join("link.fd");
    symlink(&path, &link).unwrap();
    assert!(matches!(
        replace(&link, b"x"),
        Err(SafeFileError::Symlink { .. })
    ));
    assert!(matches!(
        replace(dir.path(), b"x"),
        Err(SafeFileError::NotRegular { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), b"new");
    let fresh = dir.path().join("fresh.fd");
    replace(&fresh, b"y").unwrap();
    assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_failing_preparation_leaves_the_file_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    fs::write(&path, b"old").unwrap();
    let e = replace_with(&path, b"new", |_| Err(io::Error::other("no lock"))).unwrap_err();
    assert!(e.to_string().contains("cannot prepare the new file"), "{e}");
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The new file is unnamed while written (O_TMPFILE) or has a random temporary name;
/// either way nothing is left after success or a failure.
#[test]
fn temporary_files_are_unnamed_or_randomly_named_and_never_left() {
    for named in [false, true] {
        NO_TMPFILE.with(|c| c.set(named));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.fd");
        create_new(&path, b"old").unwrap();
        let mut seen = Vec::new();
        replace_with(&path, b"new", |_| {
            seen = entries(dir.path());
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        if named {
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(
                is_temp_name(OsStr::new("vars.fd"), OsStr::new(&seen[0])),
                "{seen:?}"
            );
        } else {
            assert_eq!(seen, ["vars.fd"], "unnamed while written");
        }
        let e = replace_with(&path, b"newer", |_| Err(io::Error::other("no"))).unwrap_err();
        assert!(!e.is_in_place());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let fresh = dir.path().join("fresh.fd");
        create_new(&fresh, b"x").unwrap();
        assert!(matches!(
            create_new(&fresh, b"y"),
            Err(SafeFileError::Exists { .. })
        ));
        assert_eq!(
            entries(dir.path()),
            ["fresh.fd", "vars.fd"],
            "named: {named}"
        );
        // A pre-created name of a predictable scheme does not stop a write.
        for n in 0..4 {
            fs::write(
                dir.path()
                    .join(format!(".vars.fd.{}-{n}.tmp", std::process::id())),
                b"",
            )
            .unwrap();
        }
        replace(&path, b"again").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        NO_TMPFILE.with(|c| c.set(false));
    }
}

#[test]
fn leftovers_are_found_and_removed_safely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    fs::write(&path, b"store").unwrap();
    let d = dir.path();
    fs::write(d.join(".vars.fd.nvram-0123456789abcdef.tmp"), b"left").unwrap();
    fs::write(d.join(".vars.fd.4242-0.tmp"), b"legacy").unwrap();
    fs::write(d.join(".vars.fd.nvram-1111111111111111.tmp"), b"busy").unwrap();
    let busy = File::open(d.join(".vars.fd.nvram-1111111111111111.tmp")).unwrap();
    rustix::fs::flock(&busy, FlockOperation::LockExclusive).unwrap();
    // Not ours: another file's temporary, a symlink, a directory, a near miss.
    fs::write(d.join(".vars.fd.bak.nvram-0123456789abcdef.tmp"), b"other").unwrap();
    fs::write(d.join("victim"), b"victim").unwrap();
    symlink(
        d.join("victim"),
        d.join(".vars.fd.nvram-2222222222222222.tmp"),
    )
    .unwrap();
    fs::create_dir(d.join(".vars.fd.nvram-3333333333333333.tmp")).unwrap();
    fs::write(d.join(".vars.fd.nvram-0123.tmp"), b"short").unwrap();

    let found = leftovers(&path).unwrap();
    let names: Vec<_> = found
        .iter()
        .map(|l| {
            (
                l.path.file_name().unwrap().to_string_lossy().into_owned(),
                l.len,
                l.in_use,
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (".vars.fd.4242-0.tmp".to_string(), 6, false),
            (".vars.fd.nvram-0123456789abcdef.tmp".to_string(), 4, false),
            (".vars.fd.nvram-1111111111111111.tmp".to_string(), 4, true),
        ]
    );
    let removal = remove_leftovers(&path).unwrap();
    assert_eq!(removal.removed.len(), 2);
    assert_eq!(removal.in_use.len(), 1);
    drop(busy);
    assert_eq!(
        entries(d),
        [
            ".vars.fd.bak.nvram-0123456789abcdef.tmp",
            ".vars.fd.nvram-0123.tmp",
            ".vars.fd.nvram-1111111111111111.tmp",
            ".vars.fd.nvram-2222222222222222.tmp",
            ".vars.fd.nvram-3333333333333333.tmp",
            "vars.fd",
            "victim"
        ]
    );
    assert_eq!(fs::read(d.join("victim")).unwrap(), b"victim");
    assert_eq!(remove_leftovers(&path).unwrap().removed.len(), 1);
}

/// Root gives the replacement the old file's owner; this needs root (CI runs as root).
#[test]
fn replace_keeps_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    fs::write(&path, b"old").unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().uid(),
        0,
        "this test needs root to own files as another user (CI runs as root)"
    );
    std::os::unix::fs::chown(&path, Some(64055), Some(108)).unwrap();
    replace(&path, b"new").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (64055, 108));
}
