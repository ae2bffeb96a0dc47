//! qcow2 images holding a UEFI variable store: read them, rewrite them with new content while
//! keeping every internal snapshot, and create them.
//!
//! libvirt can keep a VM's NVRAM as a qcow2 file, and Fedora ships its varstore templates as
//! qcow2 (`qemu-img convert -f raw -O qcow2 -o cluster_size=4096 -S 4096`). A varstore is
//! small (at most [`MAX_VIRTUAL_SIZE`], AAVMF's 64 MiB bank), so this crate works on the
//! whole file in memory:
//!
//! - [`Image::parse`] borrows the file and validates the header, its extensions, the snapshot
//!   table and every L1 and L2 table, naming the field and the file offset of any problem.
//! - [`Image::read_active`] and [`Image::read_snapshot`] return guest content.
//! - [`Image::with_active`] returns a **whole new file** rather than patching in place; the
//!   caller replaces the old file atomically (temporary file and rename), so an edit is
//!   all-or-nothing, and no refcount or COPIED-bit bookkeeping of a partial update can go
//!   wrong: refcounts are recomputed from scratch for the new layout.
//! - [`create`] makes a version 3 image from raw content.
//!
//! ```
//! # fn main() -> Result<(), qcow2::Qcow2Error> {
//! let mut store = vec![0u8; 128 * 1024];
//! store[..4].copy_from_slice(b"_FVH");
//! let file = qcow2::create(&store, qcow2::CreateOptions { cluster_bits: 12 });
//! let image = qcow2::Image::parse(&file)?;
//! assert_eq!(image.read_active()?, store);
//!
//! store[100] = 1;
//! let rewritten = image.with_active(&store)?;
//! assert_eq!(qcow2::Image::parse(&rewritten)?.read_active()?, store);
//! # Ok(()) }
//! ```
//!
//! # The rewrite
//!
//! The new file has the same version, cluster size, refcount width, virtual size, active L1
//! size, compatible features and header extensions as the old one, except that:
//!
//! - the dirty bit is cleared (the refcounts are exact) and all autoclear bits are cleared,
//!   as the specification asks of a writer that does not maintain what they vouch for; the
//!   bitmaps extension, whose dirty bitmaps would be stale, is dropped;
//! - clusters are deduplicated by content: a snapshot that shares data with the active image
//!   shares its clusters (and identical L2 tables are shared too), with refcounts counted the
//!   way QEMU counts them, once per path from an L1 table; COPIED bits are set exactly where
//!   the refcount is 1;
//! - all-zero clusters become unallocated, which reads as zeros in both versions since no
//!   backing file is ever accepted;
//! - compressed clusters are stored uncompressed.
//!
//! Every internal snapshot is kept: its table entry byte for byte except the L1 offset (id,
//! name, dates, VM clock, VM state size, extra data), and its whole L1 range, including the
//! VM state that `savevm` stores past the end of the disk.
//!
//! # What is refused
//!
//! [`Qcow2Error::Unsupported`] names the feature: a backing file, encryption (AES or LUKS),
//! an external data file, an image marked corrupt, extended L2 entries (subclusters),
//! zstd-compressed clusters, unknown incompatible features, and sizes past the limits below.
//! Deflate-compressed clusters (`qemu-img convert -c`) are read.
//!
//! # Bounds
//!
//! Parsing never panics and never allocates more than a small multiple of the file's size:
//! every table is checked to lie inside the file before it is read, the virtual size is
//! capped at [`MAX_VIRTUAL_SIZE`], snapshots at QEMU's limits (65536 entries, 64 MiB of
//! table, 1 KiB of extra data each), L1 tables at 32 MiB, and the snapshots' L1 tables must
//! fit in the file together. A rewrite visits at most 2^26 old L2 entries, inflates at most
//! 1 GiB of compressed clusters, and writes at most four times the old file plus the new
//! content (plus 64 MiB for metadata); past that it returns `Unsupported` instead of working
//! on. Images with refcounts narrower than 16 bits whose clusters are shared (QEMU makes none:
//! it refuses snapshots there) are refused rather than given a copy per reference.
//!
//! # Why not an existing crate
//!
//! Evaluated on crates.io in November 2026:
//!
//! - `imago` 0.2 (gitlab hreitz/imago): the most complete (reads and writes, COW on shared
//!   clusters), but async-first (tokio; a `sync` feature through `maybe-async`), file/IO
//!   based rather than in-memory, cannot list, read or keep the snapshot table as a
//!   first-class thing (snapshot fields are marked "TODO: should be mutable"), and has no
//!   fuzz targets.
//! - `qcow2-rs` 0.1 (ublk-org): async/io_uring oriented, no internal snapshot support beyond
//!   printing the header fields, no fuzzing.
//! - `qcow2` 0.1.2 (vasi): read-only, unmaintained for years.
//! - `qcow` 1.2 (panda-re): read-only.
//!
//! None writes while keeping internal snapshots correct and is fuzzed, which is what a
//! varstore editor needs; the format subset involved is small, so it is implemented here
//! (from the specification in QEMU's `docs/interop/qcow2.txt`).
//!
//! Fields are read with bounds-checked big-endian reads rather than `zerocopy` overlays: the
//! header's length varies with the version and `header_length`, and each field needs its own
//! range check anyway.
#![warn(missing_docs)]

mod header;
mod map;
mod rebuild;
mod snapshot;

use std::collections::HashSet;

pub use snapshot::SnapshotInfo;

/// The qcow2 magic, `QFI\xfb`, at offset 0 of every qcow2 file.
///
/// ```
/// assert_eq!(&qcow2::MAGIC, b"QFI\xfb");
/// ```
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// The largest virtual size accepted: 64 MiB, AAVMF's variable bank, the largest varstore.
///
/// ```
/// assert_eq!(qcow2::MAX_VIRTUAL_SIZE, 64 << 20);
/// ```
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 20;

/// Whether `file` starts like a qcow2 image (its magic).
///
/// ```
/// assert!(qcow2::is_qcow2(b"QFI\xfb\0\0\0\x03"));
/// assert!(!qcow2::is_qcow2(b"\0\0\0\0"));
/// ```
pub fn is_qcow2(file: &[u8]) -> bool {
    file.starts_with(&MAGIC)
}

/// Why an image cannot be read or rewritten.
///
/// ```
/// let err = qcow2::Image::parse(b"QFI\xfb").unwrap_err();
/// assert!(matches!(err, qcow2::Qcow2Error::Invalid { field: "header", .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Qcow2Error {
    /// A field is out of range or inconsistent.
    #[error("qcow2 {field} at offset {offset:#x}: {problem}")]
    Invalid {
        /// Byte offset in the file.
        offset: u64,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A feature this crate does not handle (backing file, encryption, external data file…).
    #[error("qcow2 image uses {feature}, which is not supported for a variable store")]
    Unsupported {
        /// The feature.
        feature: String,
    },
    /// The new content's length is not the image's virtual size.
    #[error("the new content is {got} bytes but the qcow2 image's virtual size is {expected}")]
    SizeMismatch {
        /// The virtual size.
        expected: u64,
        /// The content's length.
        got: u64,
    },
    /// [`Image::read_snapshot`] was given an index past the snapshot table.
    #[error("qcow2 image has {count} snapshots, there is no snapshot {index}")]
    NoSuchSnapshot {
        /// The index asked for.
        index: usize,
        /// How many snapshots there are.
        count: usize,
    },
}

pub(crate) fn invalid(offset: u64, field: &'static str, problem: impl Into<String>) -> Qcow2Error {
    Qcow2Error::Invalid {
        offset,
        field,
        problem: problem.into(),
    }
}

pub(crate) fn unsupported(feature: impl Into<String>) -> Qcow2Error {
    Qcow2Error::Unsupported {
        feature: feature.into(),
    }
}

/// A parsed qcow2 image, borrowing the file.
///
/// ```
/// # fn main() -> Result<(), qcow2::Qcow2Error> {
/// let file = qcow2::create(&[7u8; 8192], qcow2::CreateOptions::default());
/// let image = qcow2::Image::parse(&file)?;
/// assert_eq!(image.virtual_size(), 8192);
/// assert_eq!(image.cluster_size(), 65536);
/// assert_eq!(image.version(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Image<'a> {
    file: &'a [u8],
    header: header::Header,
    snapshots: Vec<snapshot::Entry>,
    infos: Vec<SnapshotInfo>,
}

impl<'a> Image<'a> {
    /// Parses and validates `file`: header, extensions, snapshot table, and every L1 and L2
    /// table of the active image and the snapshots.
    ///
    /// ```
    /// let err = qcow2::Image::parse(&[0u8; 512]).unwrap_err();
    /// assert!(err.to_string().contains("magic"));
    /// ```
    pub fn parse(file: &'a [u8]) -> Result<Self, Qcow2Error> {
        let header = header::parse(file)?;
        let snapshots = snapshot::parse(file, &header)?;
        let mut seen = HashSet::new();
        map::validate(
            file,
            &header,
            header.l1_table_offset,
            header.l1_size,
            &mut seen,
        )?;
        for s in &snapshots {
            map::validate(file, &header, s.l1_offset, s.l1_size, &mut seen)?;
        }
        let infos = snapshots.iter().map(|s| s.info.clone()).collect();
        Ok(Self {
            file,
            header,
            snapshots,
            infos,
        })
    }

    /// The guest-visible size in bytes.
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(&[0u8; 4096], qcow2::CreateOptions::default());
    /// assert_eq!(qcow2::Image::parse(&file)?.virtual_size(), 4096);
    /// # Ok(()) }
    /// ```
    pub fn virtual_size(&self) -> u64 {
        self.header.size
    }

    /// The cluster size in bytes (512 to 2 MiB).
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(&[0u8; 4096], qcow2::CreateOptions { cluster_bits: 12 });
    /// assert_eq!(qcow2::Image::parse(&file)?.cluster_size(), 4096);
    /// # Ok(()) }
    /// ```
    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// The format version: 2 (`compat=0.10`) or 3 (`compat=1.1`).
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(&[0u8; 4096], qcow2::CreateOptions::default());
    /// assert_eq!(qcow2::Image::parse(&file)?.version(), 3);
    /// # Ok(()) }
    /// ```
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The internal snapshots, in table order (the order `qemu-img snapshot -l` lists).
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(&[0u8; 4096], qcow2::CreateOptions::default());
    /// assert!(qcow2::Image::parse(&file)?.snapshots().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn snapshots(&self) -> &[SnapshotInfo] {
        &self.infos
    }

    /// The guest-visible content of the active image.
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(b"hello, world", qcow2::CreateOptions::default());
    /// assert_eq!(qcow2::Image::parse(&file)?.read_active()?, b"hello, world");
    /// # Ok(()) }
    /// ```
    pub fn read_active(&self) -> Result<Vec<u8>, Qcow2Error> {
        let h = &self.header;
        map::read_content(self.file, h, h.l1_table_offset, h.l1_size, h.size)
    }

    /// The disk content of snapshot `index` (of [`snapshots`](Self::snapshots)), as long as
    /// that snapshot's virtual size; the VM state is not included.
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(&[0u8; 4096], qcow2::CreateOptions::default());
    /// let err = qcow2::Image::parse(&file)?.read_snapshot(0).unwrap_err();
    /// assert!(matches!(err, qcow2::Qcow2Error::NoSuchSnapshot { index: 0, count: 0 }));
    /// # Ok(()) }
    /// ```
    pub fn read_snapshot(&self, index: usize) -> Result<Vec<u8>, Qcow2Error> {
        let count = self.snapshots.len();
        let s = self
            .snapshots
            .get(index)
            .ok_or(Qcow2Error::NoSuchSnapshot { index, count })?;
        let size = s.info.virtual_size;
        if size > MAX_VIRTUAL_SIZE {
            return Err(unsupported(format!(
                "a snapshot of {size} bytes (a variable store is at most {MAX_VIRTUAL_SIZE})"
            )));
        }
        map::read_content(self.file, &self.header, s.l1_offset, s.l1_size, size)
    }

    /// A new file whose active image is `content` (exactly the virtual size), keeping every
    /// internal snapshot and the header's settings; see the crate documentation for what
    /// changes. Write it over the old file atomically.
    ///
    /// ```
    /// # fn main() -> Result<(), qcow2::Qcow2Error> {
    /// let file = qcow2::create(&[0u8; 8192], qcow2::CreateOptions::default());
    /// let image = qcow2::Image::parse(&file)?;
    /// let mut content = image.read_active()?;
    /// content[4096] = 0xaa;
    /// let new = image.with_active(&content)?;
    /// assert_eq!(qcow2::Image::parse(&new)?.read_active()?, content);
    /// assert!(image.with_active(&content[..4096]).is_err());
    /// # Ok(()) }
    /// ```
    pub fn with_active(&self, content: &[u8]) -> Result<Vec<u8>, Qcow2Error> {
        let h = &self.header;
        if content.len() as u64 != h.size {
            return Err(Qcow2Error::SizeMismatch {
                expected: h.size,
                got: content.len() as u64,
            });
        }
        let extensions = h
            .extensions
            .iter()
            .filter(|e| rebuild::keep_extension(e.kind))
            .map(|e| (e.kind, &self.file[e.data.clone()]))
            .collect();
        let snapshots = self
            .snapshots
            .iter()
            .map(|s| rebuild::SnapshotPlan {
                entry: &self.file[s.bytes.clone()],
                l1_offset: s.l1_offset,
                l1_size: s.l1_size,
            })
            .collect();
        rebuild::build(rebuild::Plan {
            file: self.file,
            header: h,
            header_bytes: self.file[..h.header_length].to_vec(),
            extensions,
            content,
            l1_size: h.l1_size,
            old_l1: (h.l1_size > 0).then_some(h.l1_table_offset),
            snapshots,
        })
    }
}

/// Options of [`create`].
///
/// ```
/// assert_eq!(qcow2::CreateOptions::default().cluster_bits, 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// log2 of the cluster size (9..=21); 16 (64 KiB) is qemu-img's default.
    pub cluster_bits: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self { cluster_bits: 16 }
    }
}

/// A new qcow2 (version 3, 16-bit refcounts, `qemu-img create`'s defaults) file holding
/// `content`; all-zero clusters are left unallocated.
///
/// The content is not capped here (it is the caller's), but [`Image::parse`] refuses a
/// virtual size over [`MAX_VIRTUAL_SIZE`].
///
/// # Panics
///
/// If `options.cluster_bits` is outside 9..=21: a program constant, not input.
///
/// ```
/// let file = qcow2::create(&[1u8; 4096], qcow2::CreateOptions { cluster_bits: 12 });
/// assert!(qcow2::is_qcow2(&file));
/// ```
pub fn create(content: &[u8], options: CreateOptions) -> Vec<u8> {
    let cluster_bits = options.cluster_bits;
    assert!(
        (9..=21).contains(&cluster_bits),
        "qcow2 cluster_bits {cluster_bits} is outside 9..=21 (512 bytes to 2 MiB clusters)"
    );
    let size = content.len() as u64;
    // QEMU 10's version 3 header: 112 bytes, the last 8 being the compression type (zlib)
    // and padding.
    let header_length = 112;
    let header = header::Header {
        version: 3,
        cluster_bits,
        size,
        l1_size: 0,
        l1_table_offset: 0,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible: 0,
        refcount_order: 4,
        header_length,
        compression_type: 0,
        extensions: Vec::new(),
    };
    let l1_size = header.l1_entries_for(size) as u32;
    let mut bytes = vec![0u8; header_length];
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
    bytes[96..100].copy_from_slice(&4u32.to_be_bytes());
    bytes[100..104].copy_from_slice(&(header_length as u32).to_be_bytes());
    let plan = rebuild::Plan {
        file: &[],
        header: &header,
        header_bytes: bytes,
        extensions: Vec::new(),
        content,
        l1_size,
        old_l1: None,
        snapshots: Vec::new(),
    };
    // Errors come only from reading an old image's tables, and there are none here.
    rebuild::build(plan).unwrap_or_else(|e| unreachable!("qcow2::create read an old table: {e}"))
}
