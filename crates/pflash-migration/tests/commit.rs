//! The destination's commit point (`pflash::migration::commit`) after a live migration:
//! atomic replacement of a regular file, refusal while the source holds the file, refusal of
//! a FIFO, in-place write of a block device.

mod common;

use common::{busy_source, live, VARS};
use pflash::migration::{self, commit};
use pflash::{Durability, FileStorage};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;

#[test]
fn the_destination_serves_from_memory_until_an_atomic_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    let template = vec![0u8; VARS as usize];
    fs::write(&path, &template).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();

    let (mut src, _, _) = busy_source();
    let g = src.geometry().clone();
    let (mut dest, _) = live(&mut src, &g, 1).unwrap();
    // The guest runs on the destination before the commit: memory only.
    dest.write(0x3001, &[0xbb]);
    dest.write(0x3002, &[0xcc]);
    dest.write(0x3003, &[0xdd]);
    dest.write(0x3000, &[0xd0]);
    dest.write(0x3000, &[0xff]);
    dest.write(0x5000, &[0x20]);
    dest.write(0x5000, &[0xff]);
    assert_eq!(dest.storage().deferred_changes(), 2);
    assert!(
        fs::read(&path).unwrap() == template,
        "written before the commit"
    );

    // Someone (the source) still holds the file: no commit.
    let held = FileStorage::open(&path, VARS as usize, false, Durability::None).unwrap();
    let e = commit(&mut dest, &path, Durability::FlushPoints).unwrap_err();
    assert!(
        e.to_string()
            .contains("locked by another process (has the migration source stopped?)"),
        "{e}"
    );
    assert!(fs::read(&path).unwrap() == template);
    drop(held);

    let stats = commit(&mut dest, &path, Durability::FlushPoints).unwrap();
    assert!(stats.atomic);
    assert_eq!(stats.bytes, VARS);
    assert!(
        fs::read(&path).unwrap() == dest.memory(),
        "the commit wrote the memory"
    );
    let meta = fs::metadata(&path).unwrap();
    assert_ne!(meta.ino(), inode, "replaced by rename");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
    // The file is locked by the destination now, and later changes reach it.
    assert!(FileStorage::open(&path, VARS as usize, false, Durability::None).is_err());
    dest.write(0x6000, &[0x10]);
    dest.write(0x6000, &[0x12]);
    dest.write(0x6000, &[0xff]);
    assert_eq!(fs::read(&path).unwrap()[0x6000], 0x12);
    assert!(commit(&mut dest, &path, Durability::None).is_err(), "twice");
    let storage = dest.into_parts().1.into_inner().unwrap();
    drop(storage);
    // A commit can also create the file.
    let fresh = dir.path().join("new.fd");
    let (storage, _) = migration::commit_file(&fresh, &template, Durability::None).unwrap();
    assert_eq!(storage.path(), fresh);
    assert!(fs::read(&fresh).unwrap() == template);
}

/// A commit onto a FIFO (or anything but a regular file or block device) is refused at once,
/// naming the path, instead of blocking in the lock probe's open until a writer comes.
#[test]
fn a_commit_onto_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("vars.fd");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (done, result) = std::sync::mpsc::channel();
    let path = fifo.clone();
    thread::spawn(move || {
        let outcome = migration::commit_file(&path, &[0xff; 4096], Durability::None);
        let _ = done.send(outcome.err().map(|e| e.to_string()));
    });
    let message = result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the commit returned instead of blocking on the FIFO")
        .expect("the commit onto a FIFO failed");
    assert!(message.contains(&fifo.display().to_string()), "{message}");
    assert!(message.contains("not a regular file"), "{message}");
}

/// A loop device over a file of `len` zero bytes, detached on drop.
struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    /// `None` where loop devices cannot be attached (not root, no /dev/loop-control).
    fn attach(dir: &Path, name: &str, len: u64) -> Option<Self> {
        let backing = dir.join(name);
        fs::write(&backing, vec![0u8; len as usize]).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let device = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Some(LoopDevice { device, backing })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("--detach")
            .arg(&self.device)
            .status();
    }
}

/// A destination whose flash is a block device (a loop device here, an LVM volume or a SAN
/// LUN in production) commits in place, since a device node cannot be replaced by rename:
/// the content lands on the device, fsync'ed, the device stays locked by the destination,
/// and later guest writes reach it. A device of the wrong size is refused before anything
/// is written.
#[test]
fn the_commit_writes_a_block_device_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let flash = LoopDevice::attach(dir.path(), "lv.img", VARS)
        .expect("this test needs a loop device (root and /dev/loop-control; CI has both)");
    let meta = fs::metadata(&flash.device).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()),
        "{} is a block device",
        flash.device.display()
    );
    let (mut src, _, _) = busy_source();
    let g = src.geometry().clone();
    let (mut dest, _) = live(&mut src, &g, 1).unwrap();
    // The guest finishes the buffered write it was in and programs a byte, before the commit.
    for (offset, byte) in [
        (0x3001, 0xbb),
        (0x3002, 0xcc),
        (0x3003, 0xdd),
        (0x3000, 0xd0),
    ] {
        dest.write(offset, &[byte]);
    }
    dest.write(0x3000, &[0xff]);
    dest.write(0x5000, &[0x40]);
    dest.write(0x5000, &[0x7e]);
    dest.write(0x5000, &[0xff]);
    assert_eq!(dest.storage().deferred_changes(), 2);

    let stats = commit(&mut dest, &flash.device, Durability::FlushPoints).unwrap();
    assert!(!stats.atomic, "a block device is written in place");
    assert_eq!(stats.bytes, VARS);
    let on_device = fs::read(&flash.device).unwrap();
    assert!(on_device == dest.memory(), "the device holds the memory");
    assert_eq!(on_device[0x5000], 0x7e);
    assert_eq!(
        fs::metadata(&flash.device).unwrap().rdev(),
        meta.rdev(),
        "still the same device node"
    );
    // Locked by the destination, like a file.
    assert!(FileStorage::open(&flash.device, VARS as usize, false, Durability::None).is_err());
    dest.write(0x6000, &[0x10]);
    dest.write(0x6000, &[0x12]);
    dest.write(0x6000, &[0xff]);
    assert_eq!(fs::read(&flash.device).unwrap()[0x6000], 0x12);
    let expected = dest.memory().to_vec();
    drop(dest);

    // What reached the device is in its backing store once detached.
    let backing = flash.backing.clone();
    drop(flash);
    assert!(fs::read(&backing).unwrap() == expected);

    // The wrong size: refused, nothing written.
    let Some(small) = LoopDevice::attach(dir.path(), "small.img", 131_072) else {
        panic!("a second loop device could not be attached");
    };
    let (mut src, _, _) = busy_source();
    let (mut dest, _) = live(&mut src, &g, 1).unwrap();
    let e = commit(&mut dest, &small.device, Durability::None).unwrap_err();
    assert!(e.to_string().contains("131072"), "{e}");
    assert!(fs::read(&small.device).unwrap() == vec![0u8; 131_072]);
}
