//! Opening and reading a file given as input, without hanging and without unbounded reads.
//!
//! A path on a command line can name anything: a FIFO (whose `open` waits for a writer and
//! whose reads wait for data), `/dev/zero` (which never ends), a directory, a socket, or a
//! regular file far bigger than anything the reader could use. [`Input::open`] opens with
//! `O_NONBLOCK` (so a FIFO opens at once), looks at what it opened with `fstat`, refuses
//! anything but a regular file (or a block device, where the caller says one is allowed: a
//! varstore may live on one), then clears `O_NONBLOCK` for the reads. [`Input::read_to_end`]
//! reads at most a caller-given limit: it refuses a regular file whose size is over it
//! before reading anything, and reads at most `limit + 1` bytes of anything else, refusing
//! the input if the extra byte arrives.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("list.txt");
//! std::fs::write(&path, b"a\nb\n")?;
//! assert_eq!(safefile::read_input(&path, safefile::Accept::RegularFile, 16, "a list")?, b"a\nb\n");
//! let err = safefile::read_input(&path, safefile::Accept::RegularFile, 2, "a list").unwrap_err();
//! assert!(err.to_string().contains("too large"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use rustix::fs::OFlags;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A block device.
    BlockDevice,
    /// A FIFO (named pipe), including the pipes of `<(…)`.
    Fifo,
    /// A character device (`/dev/zero`, a terminal…).
    CharDevice,
    /// A directory.
    Directory,
    /// A Unix domain socket.
    Socket,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of a file type from `stat`.
    pub fn of(file_type: std::fs::FileType) -> Self {
        if file_type.is_file() {
            Self::Regular
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_char_device() {
            Self::CharDevice
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_socket() {
            Self::Socket
        } else {
            Self::Other
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Regular => "a regular file",
            Self::BlockDevice => "a block device",
            Self::Fifo => "a FIFO (named pipe)",
            Self::CharDevice => "a character device",
            Self::Directory => "a directory",
            Self::Socket => "a socket",
            Self::Other => "not a regular file",
        })
    }
}

/// What an input may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only a regular file.
    RegularFile,
    /// A regular file or a block device (where a varstore may live).
    RegularFileOrBlockDevice,
}

impl Accept {
    fn allows(self, kind: FileKind) -> bool {
        kind == FileKind::Regular
            || (self == Self::RegularFileOrBlockDevice && kind == FileKind::BlockDevice)
    }
}

impl std::fmt::Display for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RegularFile => "a regular file",
            Self::RegularFileOrBlockDevice => "a regular file or a block device",
        })
    }
}

/// Why an input could not be read; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The path is not something that may be read as this input (a FIFO, a character device,
    /// a directory, a socket, or a block device where only files are allowed).
    #[error("{path}: is {kind}, not {accept}; refusing to read it")]
    NotAccepted {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
        /// What it may be.
        accept: Accept,
    },
    /// The input is longer than the limit for its kind.
    #[error("{path}: too large for {what}: more than {limit} bytes")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// What kind of input it is ("a variable store", "a certificate"…).
        what: &'static str,
        /// The most bytes accepted.
        limit: u64,
    },
    /// An I/O error.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl InputError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotAccepted { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Io { path, .. } => path,
        }
    }
}

fn io_error<'p>(path: &'p Path, action: &'static str) -> impl FnOnce(io::Error) -> InputError + 'p {
    move |source| InputError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// An input file, open for reading, known to be what the caller accepts.
#[derive(Debug)]
pub struct Input {
    file: File,
    path: PathBuf,
    kind: FileKind,
}

/// The kind of `path`, or [`InputError::NotAccepted`] when `accept` does not allow it.
fn accepted(path: &Path, meta: &std::fs::Metadata, accept: Accept) -> Result<FileKind, InputError> {
    let kind = FileKind::of(meta.file_type());
    if accept.allows(kind) {
        Ok(kind)
    } else {
        Err(InputError::NotAccepted {
            path: path.to_path_buf(),
            kind,
            accept,
        })
    }
}

impl Input {
    /// Opens `path` for reading without blocking (a FIFO with no writer opens at once) and
    /// refuses it unless it is what `accept` allows. Symlinks are followed.
    ///
    /// # Errors
    ///
    /// [`InputError::NotAccepted`] naming what the path is, else the I/O error.
    pub fn open(path: &Path, accept: Accept) -> Result<Self, InputError> {
        let flags = OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
        {
            Ok(file) => file,
            Err(e) => {
                // A socket cannot be opened (ENXIO); say what it is rather than the errno.
                if let Ok(meta) = std::fs::metadata(path) {
                    accepted(path, &meta, accept)?;
                }
                return Err(io_error(path, "cannot open")(e));
            }
        };
        let meta = file.metadata().map_err(io_error(path, "cannot stat"))?;
        let kind = accepted(path, &meta, accept)?;
        let flags = rustix::fs::fcntl_getfl(&file)
            .map_err(|e| io_error(path, "cannot get the file status flags")(e.into()))?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)
            .map_err(|e| io_error(path, "cannot clear O_NONBLOCK")(e.into()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            kind,
        })
    }

    /// What was opened: [`FileKind::Regular`] or [`FileKind::BlockDevice`].
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size in bytes: `st_size` of a regular file, the end of a block device (whose
    /// `st_size` is 0).
    ///
    /// # Errors
    ///
    /// The I/O error, naming the path.
    pub fn size(&mut self) -> Result<u64, InputError> {
        match self.kind {
            FileKind::Regular => Ok(self
                .file
                .metadata()
                .map_err(io_error(&self.path, "cannot stat"))?
                .len()),
            _ => {
                let end = self
                    .file
                    .seek(SeekFrom::End(0))
                    .map_err(io_error(&self.path, "cannot seek"))?;
                self.file
                    .seek(SeekFrom::Start(0))
                    .map_err(io_error(&self.path, "cannot seek"))?;
                Ok(end)
            }
        }
    }

    /// Reads the rest of the input, at most `limit` bytes; `what` names the kind of input in
    /// the error ("a variable store", "a certificate"…).
    ///
    /// # Errors
    ///
    /// [`InputError::TooLarge`] (before reading anything when the file's size says so), else
    /// the I/O error.
    pub fn read_to_end(mut self, limit: u64, what: &'static str) -> Result<Vec<u8>, InputError> {
        let size = self.size()?;
        if size > limit {
            return Err(InputError::TooLarge {
                path: self.path,
                what,
                limit,
            });
        }
        // A buffer of the file's size (a block device's size is its length) from the start:
        // read_to_end then neither grows nor copies it. The size is a hint: `limit` still
        // bounds what is read.
        let mut out = Vec::new();
        out.reserve_exact(usize::try_from(size).unwrap_or(0).saturating_add(1));
        read_bounded_into(out, &mut self.file, &self.path, limit, what)
    }

    /// The open file (blocking reads, positioned at the start).
    pub fn into_file(self) -> File {
        self.file
    }
}

/// Reads `path` as [`Input::open`] and [`Input::read_to_end`] do.
///
/// # Errors
///
/// As [`Input::open`] and [`Input::read_to_end`].
pub fn read_input(
    path: &Path,
    accept: Accept,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, InputError> {
    Input::open(path, accept)?.read_to_end(limit, what)
}

/// Reads `reader` (an input already open, such as standard input, named `path` in errors)
/// to its end, refusing it once it has given more than `limit` bytes: at most `limit + 1`
/// bytes are read.
///
/// # Errors
///
/// [`InputError::TooLarge`], else the I/O error.
pub fn read_bounded(
    reader: impl Read,
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, InputError> {
    read_bounded_into(Vec::new(), reader, path, limit, what)
}

/// [`read_bounded`], appending to `out` (empty; its capacity is what the caller expects).
fn read_bounded_into(
    mut out: Vec<u8>,
    reader: impl Read,
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, InputError> {
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io_error(path, "cannot read"))?;
    if out.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            what,
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f.fd");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let start = Instant::now();
        let err =
            read_input(&fifo, Accept::RegularFileOrBlockDevice, 1 << 20, "a store").unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(
                err,
                InputError::NotAccepted {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("FIFO"), "{message}");
        assert!(message.contains(&fifo.display().to_string()), "{message}");
    }

    #[test]
    fn devices_directories_and_sockets_are_refused() {
        let err = read_input(Path::new("/dev/zero"), Accept::RegularFile, 16, "x").unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = read_input(dir.path(), Accept::RegularFileOrBlockDevice, 16, "x").unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let err = read_input(&socket, Accept::RegularFile, 16, "x").unwrap_err();
        assert!(err.to_string().contains("a socket"), "{err}");
        let err = read_input(&dir.path().join("none"), Accept::RegularFile, 16, "x").unwrap_err();
        assert!(matches!(err, InputError::Io { .. }), "{err}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        // Sparse: a terabyte costs nothing, and reading it would take forever.
        File::create(&path).unwrap().set_len(1 << 40).unwrap();
        let start = Instant::now();
        let err = read_input(&path, Accept::RegularFile, 1 << 20, "a certificate").unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        let message = err.to_string();
        assert!(
            message.contains("too large for a certificate: more than 1048576 bytes"),
            "{message}"
        );
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(
            read_input(&path, Accept::RegularFile, 5, "x").unwrap(),
            b"12345"
        );
        assert!(read_input(&path, Accept::RegularFile, 4, "x").is_err());
    }

    #[test]
    fn an_endless_stream_is_cut_at_the_limit() {
        let zeros = std::io::repeat(0);
        let err = read_bounded(zeros, Path::new("-"), 1000, "a file list").unwrap_err();
        assert!(
            matches!(err, InputError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
        assert_eq!(
            read_bounded(&b"abc"[..], Path::new("-"), 3, "x").unwrap(),
            b"abc"
        );
    }

    #[test]
    fn the_open_file_reads_blocking_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"content").unwrap();
        let mut input = Input::open(&path, Accept::RegularFile).unwrap();
        assert_eq!(input.kind(), FileKind::Regular);
        assert_eq!(input.size().unwrap(), 7);
        let file = input.into_file();
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
    }
}
