//! Which files a fleet edit works on: lists of paths and directories of stores.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Largest list of files read (a file, or standard input): a million paths of 16
/// characters, or 100 000 of 160, far more than one fleet edit is meant for; a bigger input
/// (`/dev/zero`) is refused after `MAX_FILE_LIST_LEN + 1` bytes instead of filling the memory.
pub const MAX_FILE_LIST_LEN: u64 = 16 << 20;

/// How a file list is named in a too-large error.
pub const FILE_LIST_WHAT: &str = "a list of files";

/// The paths of a list, one per line (`\r\n` line ends too; blank lines are ignored). Paths
/// need not be UTF-8.
///
/// ```
/// let files = nvram::apply::parse_file_list(b"a.fd\r\n\n  \nvms/b.qcow2\n");
/// assert_eq!(files, [std::path::Path::new("a.fd"), std::path::Path::new("vms/b.qcow2")]);
/// ```
pub fn parse_file_list(text: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    text.split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.trim_ascii().is_empty())
        .map(|line| PathBuf::from(std::ffi::OsStr::from_bytes(line)))
        .collect()
}

/// The stores of a directory, not recursive, sorted: the entries named as libvirt names
/// them (`*.fd` for raw stores, `*.qcow2`, `*.json` for QEMU's uefi-vars). Symlinks and other
/// non-regular entries with those names are listed too, so that an edit reports them as
/// failed rather than leaving them out silently.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// for name in ["b.qcow2", "a.fd", "notes.txt", "c.json"] {
///     std::fs::write(dir.path().join(name), b"")?;
/// }
/// let found = nvram::apply::stores_in_dir(dir.path())?;
/// let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap()).collect();
/// assert_eq!(names, ["a.fd", "b.qcow2", "c.json"]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stores_in_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [".fd", ".qcow2", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Drops the second and later copies of a path, keeping the order: the same file twice in
/// one run would find its own lock and be reported as skipped.
pub fn dedup_files(files: &mut Vec<PathBuf>) {
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
}
