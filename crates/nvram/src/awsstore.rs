//! AWS EC2's UEFI variable store (the `uefi-data` of `aws ec2 register-image`, what
//! virt-fw-vars reads with `-i` and writes with `--output-aws`) as a flash image, so that
//! every command reads and edits it like a flash store, as for QEMU's JSON store.
//!
//! The format (Amazon's python-uefivars, MIT, which virt-firmware follows):
//!
//! - the file is base64 (standard alphabet, with padding) of a binary blob;
//! - the blob is `u64` magic `AMZNUEFI` (0x494645554e5a4d41), `u32` CRC-32C of everything
//!   after it, `u32` version 0, then a zlib stream compressed with a preset dictionary
//!   ([`DICTIONARY`], "v0");
//! - the stream holds a `u64` count of variables, then per variable: `u64` length and UTF-8
//!   name (no NUL), `u64` length and data, the vendor GUID (16 bytes, mixed-endian), `u32`
//!   attributes and, for time-based authenticated variables only, the 16-byte `EFI_TIME` and
//!   a `u64` length and "digest" (EC2's certificate digest; virt-fw-vars writes it empty).
//!
//! Integers are little-endian. virt-fw-vars writes the variables sorted by name, compresses
//! at level 9, and writes an `EFI_TIME` with only its date, time and nanoseconds (time zone
//! and daylight flags zero): [`encode`] does the same, so its output equals virt-fw-vars' for
//! the same variables, byte for byte (both use the C zlib).
//!
//! ```
//! use nvram::awsstore::{AwsStore, looks_like_aws};
//! use varstore::edit::{Editor, Strategy};
//! use varstore::{guid, Attributes};
//!
//! let (store, image) = AwsStore::open(&AwsStore::empty())?;
//! let mut editor = Editor::new(&image)?;
//! editor.set("Timeout", guid::EFI_GLOBAL_VARIABLE, Attributes(7), &[5, 0], None, Strategy::Append)?;
//! let file = store.save(&editor.finish())?;
//! assert!(looks_like_aws(&file));
//! let (_, again) = AwsStore::open(&file)?;
//! assert_eq!(varstore::Varstore::parse(&again)?.find("Timeout", None).unwrap().data, [5, 0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64ct::{Base64, Encoding};
use std::collections::HashMap;
use varstore::edit::{EditError, Editor, Strategy};
use varstore::{Attributes, EfiTime, Guid, Layout, Varstore};

/// The file's magic, "AMZNUEFI" read as a little-endian `u64`.
pub const MAGIC: u64 = 0x4946_4555_4e5a_4d41;

/// The zlib preset dictionary of format version 0, from Amazon's python-uefivars (MIT
/// licence; virt-firmware ships the same bytes as `aws/dict.v0`).
pub static DICTIONARY: &[u8] = include_bytes!("../data/aws-dict.v0");

/// Largest decompressed variable list read: far more than any flash store holds, small
/// enough that a crafted stream cannot exhaust memory.
pub const MAX_DECOMPRESSED: usize = 16 << 20;

/// The synthetic flash layout of the image [`AwsStore::open`] returns (the geometry of
/// [`crate::jsonstore::LAYOUT`]: a 1 MiB variable region). No firmware uses it.
pub const LAYOUT: Layout = Layout {
    name: "aws-ec2",
    description: "AWS EC2 uefi-data store (synthetic image, 1 MiB variable region)",
    ..crate::jsonstore::LAYOUT
};

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Why a file is not an AWS store nvram can read, or an image cannot be written as one.
#[derive(Debug, thiserror::Error)]
pub enum AwsStoreError {
    /// The file is not base64.
    #[error("AWS store: not base64 text ({0})")]
    Base64(String),
    /// The blob is shorter than its 16-byte header.
    #[error("AWS store: {0} bytes after base64 decoding, fewer than the 16-byte header")]
    Short(usize),
    /// The magic is not `AMZNUEFI`.
    #[error("AWS store: magic {0:#018x} at offset 0 is not AMZNUEFI")]
    Magic(u64),
    /// The CRC-32C at offset 8 does not match the data.
    #[error("AWS store: CRC-32C at offset 8 is {stored:#010x}, the data's is {computed:#010x}")]
    Crc {
        /// What the file says.
        stored: u32,
        /// What the data gives.
        computed: u32,
    },
    /// A version other than 0.
    #[error("AWS store: version {0} at offset 12 is not 0, the only one known")]
    Version(u32),
    /// The zlib stream is damaged or too large.
    #[error("AWS store: the zlib stream at offset 16: {0}")]
    Zlib(String),
    /// The variable list is cut short or inconsistent.
    #[error("AWS store: variable list offset {offset}: {field}: {problem}")]
    List {
        /// Offset in the decompressed list.
        offset: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Two variables with the same name and GUID.
    #[error("AWS store: variable {name} {guid} is there twice")]
    Duplicate {
        /// Its name.
        name: String,
        /// Its GUID.
        guid: Guid,
    },
    /// A variable does not fit the image or breaks the editor's rules.
    #[error("AWS store: variable {name}: {error}")]
    Refused {
        /// Its name.
        name: String,
        /// Why.
        error: EditError,
    },
    /// The edited image is not a store.
    #[error("AWS store: the image is not a variable store: {0}")]
    Image(varstore::ParseError),
}

/// One variable of an AWS store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsVariable {
    /// Its name.
    pub name: String,
    /// Its vendor GUID.
    pub guid: Guid,
    /// Its attributes.
    pub attributes: u32,
    /// Its data.
    pub data: Vec<u8>,
    /// The timestamp, for time-based authenticated variables.
    pub time: Option<EfiTime>,
    /// EC2's digest, for time-based authenticated variables (empty when unknown).
    pub digest: Vec<u8>,
}

/// Whether `file` starts like an AWS store: base64 whose first bytes are the magic.
///
/// ```
/// assert!(nvram::awsstore::looks_like_aws(b"QU1aTlVFRkk="));
/// assert!(!nvram::awsstore::looks_like_aws(b"{}"));
/// ```
pub fn looks_like_aws(file: &[u8]) -> bool {
    let start = file.iter().position(|b| !b.is_ascii_whitespace());
    let Some(head) = start.and_then(|s| file.get(s..s + 12)) else {
        return false;
    };
    let mut out = [0u8; 9];
    matches!(Base64::decode(head, &mut out), Ok(b) if b[..8] == MAGIC.to_le_bytes())
}

/// A reader of the decompressed list that names the field it could not read.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, field: &'static str) -> Result<&'a [u8], AwsStoreError> {
        let left = self.data.len() - self.pos;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= left)
            .ok_or_else(|| AwsStoreError::List {
                offset: self.pos,
                field,
                problem: format!("needs {n} bytes, {left} left"),
            })?;
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, AwsStoreError> {
        let b = self.take(8, field)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn blob(&mut self, field: &'static str) -> Result<&'a [u8], AwsStoreError> {
        let len = self.u64(field)?;
        self.take(len, field)
    }
}

/// Decodes an AWS store file into its variables, in file order.
pub fn decode(file: &[u8]) -> Result<Vec<AwsVariable>, AwsStoreError> {
    let text: Vec<u8> = file
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let blob = Base64::decode_vec(
        std::str::from_utf8(&text).map_err(|_| AwsStoreError::Base64("not ASCII".into()))?,
    )
    .map_err(|e| AwsStoreError::Base64(e.to_string()))?;
    if blob.len() < 16 {
        return Err(AwsStoreError::Short(blob.len()));
    }
    let magic = u64::from_le_bytes(blob[0..8].try_into().unwrap_or_default());
    if magic != MAGIC {
        return Err(AwsStoreError::Magic(magic));
    }
    let stored = u32::from_le_bytes(blob[8..12].try_into().unwrap_or_default());
    let computed = CRC32C.checksum(&blob[12..]);
    if stored != computed {
        return Err(AwsStoreError::Crc { stored, computed });
    }
    let version = u32::from_le_bytes(blob[12..16].try_into().unwrap_or_default());
    if version != 0 {
        return Err(AwsStoreError::Version(version));
    }
    let list = inflate(&blob[16..])?;
    let mut cursor = Cursor {
        data: &list,
        pos: 0,
    };
    let count = cursor.u64("count")?;
    let mut vars = Vec::new();
    for _ in 0..count {
        let at = cursor.pos;
        let name = cursor.blob("name")?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| AwsStoreError::List {
            offset: at,
            field: "name",
            problem: "not UTF-8".into(),
        })?;
        let data = cursor.blob("data")?.to_vec();
        let guid = Guid::from_bytes(cursor.take(16, "guid")?.try_into().unwrap_or_default());
        let attributes =
            u32::from_le_bytes(cursor.take(4, "attributes")?.try_into().unwrap_or_default());
        let (time, digest) = if Attributes(attributes).is_time_based_authenticated() {
            let time: [u8; 16] = cursor.take(16, "timestamp")?.try_into().unwrap_or_default();
            (Some(EfiTime(time)), cursor.blob("digest")?.to_vec())
        } else {
            (None, Vec::new())
        };
        vars.push(AwsVariable {
            name,
            guid,
            attributes,
            data,
            time,
            digest,
        });
    }
    Ok(vars)
}

/// Inflates the zlib stream with the v0 dictionary, up to [`MAX_DECOMPRESSED`] bytes.
fn inflate(stream: &[u8]) -> Result<Vec<u8>, AwsStoreError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let zlib = |e: &dyn std::fmt::Display| AwsStoreError::Zlib(e.to_string());
    let mut z = Decompress::new(true);
    let mut out = Vec::with_capacity(stream.len() * 4);
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MAX_DECOMPRESSED {
                return Err(zlib(&format!(
                    "decompresses to more than {MAX_DECOMPRESSED} bytes"
                )));
            }
            out.reserve((out.len()).clamp(4096, MAX_DECOMPRESSED - out.len()));
        }
        let consumed = z.total_in() as usize;
        match z.decompress_vec(&stream[consumed..], &mut out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) => return Ok(out),
            Ok(Status::Ok) => {}
            Ok(Status::BufError) if out.len() < out.capacity() => {
                return Err(zlib(&"the stream is cut short"))
            }
            Ok(Status::BufError) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                z.set_dictionary(DICTIONARY).map_err(|e| zlib(&e))?;
            }
            Err(e) => return Err(zlib(&e)),
        }
    }
}

/// The `EFI_TIME` as virt-fw-vars writes it: date, time and nanoseconds rounded down to the
/// microsecond (Python's datetime), the rest zero; a zero year stays all zero.
fn normalised(time: Option<EfiTime>) -> [u8; 16] {
    let Some(EfiTime(t)) = time else {
        return [0; 16];
    };
    if t[0] == 0 && t[1] == 0 {
        return [0; 16];
    }
    let mut out = [0u8; 16];
    out[..7].copy_from_slice(&t[..7]);
    let nanos = u32::from_le_bytes([t[8], t[9], t[10], t[11]]);
    out[8..12].copy_from_slice(&(nanos / 1000 * 1000).to_le_bytes());
    out
}

/// An AWS store file of `vars`, sorted by name as virt-fw-vars sorts them (then by GUID).
pub fn encode(vars: &[AwsVariable]) -> Vec<u8> {
    let mut sorted: Vec<&AwsVariable> = vars.iter().collect();
    sorted.sort_by(|a, b| (&a.name, a.guid.to_bytes()).cmp(&(&b.name, b.guid.to_bytes())));
    let mut list = Vec::new();
    list.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    for v in sorted {
        list.extend_from_slice(&(v.name.len() as u64).to_le_bytes());
        list.extend_from_slice(v.name.as_bytes());
        list.extend_from_slice(&(v.data.len() as u64).to_le_bytes());
        list.extend_from_slice(&v.data);
        list.extend_from_slice(&v.guid.to_bytes());
        list.extend_from_slice(&v.attributes.to_le_bytes());
        if Attributes(v.attributes).is_time_based_authenticated() {
            list.extend_from_slice(&normalised(v.time));
            list.extend_from_slice(&(v.digest.len() as u64).to_le_bytes());
            list.extend_from_slice(&v.digest);
        }
    }
    wrap_list(&list)
}

/// An AWS store file holding `list`, a serialised variable list (count, then the variables):
/// compressed at level 9 with the dictionary, headed by magic, CRC-32C and version 0, in
/// base64.
pub fn wrap_list(list: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut z = Compress::new(Compression::best(), true);
    // Setting a dictionary on a fresh stream cannot fail.
    let _ = z.set_dictionary(DICTIONARY);
    let mut blob = Vec::with_capacity(16 + list.len());
    blob.extend_from_slice(&MAGIC.to_le_bytes());
    blob.extend_from_slice(&[0; 4]);
    blob.extend_from_slice(&0u32.to_le_bytes());
    let mut compressed = Vec::with_capacity(list.len() / 2 + 64);
    loop {
        let consumed = z.total_in() as usize;
        if compressed.len() == compressed.capacity() {
            compressed.reserve(compressed.capacity().max(4096));
        }
        match z.compress_vec(&list[consumed..], &mut compressed, FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => break,
            Ok(_) => {}
            // Compressing into a growing buffer does not fail; stop rather than loop.
            Err(_) => break,
        }
    }
    blob.extend_from_slice(&compressed);
    let crc = CRC32C.checksum(&blob[12..]);
    blob[8..12].copy_from_slice(&crc.to_le_bytes());
    Base64::encode_string(&blob).into_bytes()
}

/// What an AWS store keeps beside the variables a flash image holds: EC2's digests.
#[derive(Debug, Clone, Default)]
pub struct AwsStore {
    digests: HashMap<(String, Guid), Vec<u8>>,
}

impl AwsStore {
    /// An AWS store file without variables.
    pub fn empty() -> Vec<u8> {
        encode(&[])
    }

    /// Reads an AWS store file and builds an equivalent flash image in [`LAYOUT`], each
    /// variable written by the editor in file order.
    pub fn open(file: &[u8]) -> Result<(AwsStore, Vec<u8>), AwsStoreError> {
        let vars = decode(file)?;
        let mut store = AwsStore::default();
        let mut editor = Editor::new(&LAYOUT.create()).map_err(|error| AwsStoreError::Refused {
            name: String::new(),
            error,
        })?;
        for v in vars {
            let key = (v.name.clone(), v.guid);
            if store.digests.contains_key(&key) {
                return Err(AwsStoreError::Duplicate {
                    name: v.name,
                    guid: v.guid,
                });
            }
            let at = Attributes(v.attributes).is_time_based_authenticated();
            editor
                .set(
                    &v.name,
                    v.guid,
                    Attributes(v.attributes),
                    &v.data,
                    at.then(|| v.time.unwrap_or(EfiTime([0; 16]))),
                    Strategy::Append,
                )
                .map_err(|error| AwsStoreError::Refused {
                    name: v.name.clone(),
                    error,
                })?;
            store.digests.insert(key, v.digest);
        }
        Ok((store, editor.finish()))
    }

    /// The AWS store file for an edited image: its live variables, with the digest each
    /// variable had (same name and GUID) if it is still time-based authenticated.
    pub fn save(&self, image: &[u8]) -> Result<Vec<u8>, AwsStoreError> {
        Ok(encode(&self.variables(image)?))
    }

    fn variables(&self, image: &[u8]) -> Result<Vec<AwsVariable>, AwsStoreError> {
        let store = Varstore::parse(image).map_err(AwsStoreError::Image)?;
        Ok(store
            .live_variables()
            .iter()
            .map(|r| {
                let name = r.name();
                let at = r.attributes.is_time_based_authenticated();
                let digest = if at {
                    self.digests
                        .get(&(name.clone(), r.guid))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                AwsVariable {
                    name,
                    guid: r.guid,
                    attributes: r.attributes.0,
                    data: r.data.to_vec(),
                    time: if at { r.time() } else { None },
                    digest,
                }
            })
            .collect())
    }
}

/// The AWS store file of the live variables of a flash image (digests empty).
pub fn to_aws(image: &[u8]) -> Result<Vec<u8>, AwsStoreError> {
    AwsStore::default().save(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_errors_naming_the_field() {
        let file = AwsStore::empty();
        assert!(AwsStore::open(&file).is_ok());
        // Every truncation and a flipped byte in each position: an error, never a panic.
        let blob = Base64::decode_vec(std::str::from_utf8(&file).unwrap()).unwrap();
        for n in 0..blob.len() {
            let _ = decode(Base64::encode_string(&blob[..n]).as_bytes());
            let mut bad = blob.clone();
            bad[n] ^= 0x40;
            assert!(
                decode(Base64::encode_string(&bad).as_bytes()).is_err(),
                "{n}"
            );
        }
        let mut wrong = blob.clone();
        wrong[12] = 1;
        let crc = CRC32C.checksum(&wrong[12..]);
        wrong[8..12].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(Base64::encode_string(&wrong).as_bytes()),
            Err(AwsStoreError::Version(1))
        ));
    }

    #[test]
    fn a_count_larger_than_the_list_is_refused() {
        let mut list = 5u64.to_le_bytes().to_vec();
        list.extend_from_slice(&3u64.to_le_bytes());
        let mut z = flate2::Compress::new(flate2::Compression::best(), true);
        let mut c = Vec::with_capacity(256);
        z.compress_vec(&list, &mut c, flate2::FlushCompress::Finish)
            .unwrap();
        let mut blob = MAGIC.to_le_bytes().to_vec();
        blob.extend_from_slice(&[0; 8]);
        blob.extend_from_slice(&c);
        let crc = CRC32C.checksum(&blob[12..]);
        blob[8..12].copy_from_slice(&crc.to_le_bytes());
        match decode(Base64::encode_string(&blob).as_bytes()) {
            Err(AwsStoreError::List { offset, field, .. }) => {
                assert_eq!((offset, field), (16, "name"))
            }
            other => panic!("{other:?}"),
        }
    }
}
