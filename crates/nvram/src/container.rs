//! The file formats a variable store is kept in: a raw flash image, a qcow2 image wrapping
//! one, QEMU's uefi-vars JSON (docs/varstore-format.md) or AWS EC2's `uefi-data` blob
//! ([`crate::awsstore`]). Every command works on the flash
//! image; this module unwraps a file into one ([`StoreFile::from_bytes`]) and wraps an
//! edited image back into the file's own format ([`StoreFile::rewrap`]).
//!
//! The format is recognised by content, never by name: a qcow2 image starts with its magic
//! (`QFI\xfb`), a JSON store with `{`, an AWS store with the base64 of `AMZNUEFI`, anything
//! else is a raw image. An empty file can be a
//! JSON store (QEMU starts with one) but is taken as raw unless the caller says JSON
//! ([`set_default_format`], the CLI's `--format`).
//!
//! ```
//! use nvram::container::{Format, StoreFile};
//!
//! let raw = varstore::Layout::by_name("ovmf-4m").unwrap().create();
//! let qcow2 = nvram::container::wrap(&raw, Format::Qcow2)?;
//! let opened = StoreFile::from_bytes(qcow2, None)?;
//! assert_eq!(opened.format(), Format::Qcow2);
//! assert_eq!(opened.image(), &raw[..]);
//! # Ok::<(), nvram::container::ContainerError>(())
//! ```

use crate::awsstore::{self, AwsStore, AwsStoreError};
use crate::jsonstore::{self, JsonStore, JsonStoreError};
use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};
use varstore::edit::Limits;

/// How a store is kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The flash image itself, as QEMU's `-drive if=pflash,format=raw` maps it.
    Raw,
    /// A qcow2 image whose guest content is the flash image (`format=qcow2`).
    Qcow2,
    /// QEMU's uefi-vars JSON variable list (`-device uefi-vars-*,jsonfile=FILE`).
    Json,
    /// AWS EC2's `uefi-data` (base64 of a zlib-compressed variable list).
    Aws,
}

impl Format {
    /// The name used on the command line and in firmware descriptors.
    ///
    /// ```
    /// assert_eq!(nvram::container::Format::Qcow2.as_str(), "qcow2");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Json => "json",
            Self::Aws => "aws",
        }
    }

    /// Whether the format holds a flash image (raw, qcow2) rather than a list of variables
    /// (JSON, AWS) that has no flash layout.
    ///
    /// ```
    /// use nvram::container::Format;
    /// assert!(Format::Qcow2.is_flash() && !Format::Aws.is_flash());
    /// ```
    pub fn is_flash(self) -> bool {
        matches!(self, Self::Raw | Self::Qcow2)
    }

    /// The format a name denotes (`raw`, `qcow2`, `json`).
    ///
    /// ```
    /// use nvram::container::Format;
    /// assert_eq!(Format::by_name("json"), Some(Format::Json));
    /// assert_eq!(Format::by_name("vmdk"), None);
    /// ```
    pub fn by_name(name: &str) -> Option<Self> {
        [Self::Raw, Self::Qcow2, Self::Json, Self::Aws]
            .into_iter()
            .find(|f| f.as_str() == name)
    }

    /// The format `file` is in, by its content.
    ///
    /// ```
    /// use nvram::container::Format;
    /// assert_eq!(Format::detect(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
    /// assert_eq!(Format::detect(b" {\"version\": 2}"), Format::Json);
    /// assert_eq!(Format::detect(&[0xff; 16]), Format::Raw);
    /// ```
    pub fn detect(file: &[u8]) -> Self {
        if qcow2::is_qcow2(file) {
            Self::Qcow2
        } else if jsonstore::looks_like_json(file) {
            Self::Json
        } else if awsstore::looks_like_aws(file) {
            Self::Aws
        } else {
            Self::Raw
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file could not be unwrapped into a flash image, or an image wrapped.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The qcow2 image is damaged or uses a feature a store cannot have.
    #[error(transparent)]
    Qcow2(#[from] qcow2::Qcow2Error),
    /// The JSON store is not one QEMU would load, or the store does not fit QEMU's limits.
    #[error(transparent)]
    Json(#[from] JsonStoreError),
    /// The AWS store does not decode, or an image cannot be written as one.
    #[error(transparent)]
    Aws(#[from] AwsStoreError),
    /// The file is in another format than the one asked for.
    #[error("the file is a {found} store, not {expected}")]
    NotThatFormat {
        /// What the content says.
        found: Format,
        /// What was asked for.
        expected: Format,
    },
}

/// The format a file without a recognisable one is taken as; see [`set_default_format`].
static DEFAULT_FORMAT: AtomicU8 = AtomicU8::new(0);

/// Makes every store this process opens (by [`crate::files::read_store`] and
/// [`crate::edit::edit_file`]) be read as `format` (`None`: by content, the default). A
/// forced format that the content contradicts is an error ([`ContainerError::NotThatFormat`]),
/// except that an empty file is a JSON store without variables when JSON is forced.
pub fn set_default_format(format: Option<Format>) {
    let code = match format {
        None => 0,
        Some(Format::Raw) => 1,
        Some(Format::Qcow2) => 2,
        Some(Format::Json) => 3,
        Some(Format::Aws) => 4,
    };
    DEFAULT_FORMAT.store(code, Ordering::Relaxed);
}

/// The format set by [`set_default_format`].
pub fn default_format() -> Option<Format> {
    match DEFAULT_FORMAT.load(Ordering::Relaxed) {
        1 => Some(Format::Raw),
        2 => Some(Format::Qcow2),
        3 => Some(Format::Json),
        4 => Some(Format::Aws),
        _ => None,
    }
}

/// A store file opened as a flash image, with what is needed to write it back in its format.
#[derive(Debug, Clone)]
pub struct StoreFile {
    image: Vec<u8>,
    wrapper: Wrapper,
}

#[derive(Debug, Clone)]
enum Wrapper {
    Raw,
    /// The whole qcow2 file: rewriting keeps its snapshots and header.
    Qcow2(Vec<u8>),
    Json(JsonStore),
    Aws(AwsStore),
}

impl StoreFile {
    /// Unwraps the content of a store file. With `forced`, the content must be in that format
    /// (a raw image is anything that is neither qcow2 nor JSON).
    pub fn from_bytes(file: Vec<u8>, forced: Option<Format>) -> Result<Self, ContainerError> {
        let found = Format::detect(&file);
        let format = match forced {
            None => found,
            Some(Format::Json) if file.iter().all(u8::is_ascii_whitespace) => Format::Json,
            Some(expected) if expected != found => {
                return Err(ContainerError::NotThatFormat { found, expected })
            }
            Some(expected) => expected,
        };
        match format {
            Format::Raw => Ok(Self {
                image: file,
                wrapper: Wrapper::Raw,
            }),
            Format::Qcow2 => {
                let image = qcow2::Image::parse(&file)?.read_active()?;
                Ok(Self {
                    image,
                    wrapper: Wrapper::Qcow2(file),
                })
            }
            Format::Json => {
                let (json, image) = JsonStore::open(&file)?;
                Ok(Self {
                    image,
                    wrapper: Wrapper::Json(json),
                })
            }
            Format::Aws => {
                let (aws, image) = AwsStore::open(&file)?;
                Ok(Self {
                    image,
                    wrapper: Wrapper::Aws(aws),
                })
            }
        }
    }

    /// The format of the file.
    pub fn format(&self) -> Format {
        match self.wrapper {
            Wrapper::Raw => Format::Raw,
            Wrapper::Qcow2(_) => Format::Qcow2,
            Wrapper::Json(_) => Format::Json,
            Wrapper::Aws(_) => Format::Aws,
        }
    }

    /// The flash image the file holds (for JSON, an equivalent image in a layout of its own).
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// The flash image, owned.
    pub fn into_image(self) -> Vec<u8> {
        self.image
    }

    /// Per-variable limits that replace the layout's when editing the image: QEMU's for a
    /// JSON store, `None` for flash (the layout's own apply).
    pub fn limits(&self) -> Option<Limits> {
        match self.wrapper {
            Wrapper::Json(_) => Some(JsonStore::limits()),
            _ => None,
        }
    }

    /// What the JSON store keeps beside its variables (digests, QEMU's storage limit), if the
    /// file is one.
    pub fn json(&self) -> Option<&JsonStore> {
        match &self.wrapper {
            Wrapper::Json(json) => Some(json),
            _ => None,
        }
    }

    /// Whether the firmware reads the image as a flash: it compacts a flash store at boot
    /// when little space is left, which a JSON store does not have.
    pub fn is_flash(&self) -> bool {
        self.format().is_flash()
    }

    /// The content of the file after its image became `image`: the same format, and for
    /// qcow2 the same header and internal snapshots, for JSON the same digests.
    pub fn rewrap(&self, image: &[u8]) -> Result<Vec<u8>, ContainerError> {
        match &self.wrapper {
            Wrapper::Raw => Ok(image.to_vec()),
            Wrapper::Qcow2(file) => Ok(qcow2::Image::parse(file)?.with_active(image)?),
            Wrapper::Json(json) => Ok(json.save(image)?),
            Wrapper::Aws(aws) => Ok(aws.save(image)?),
        }
    }
}

/// A new file of `format` holding the flash `image` (qcow2 with 64 KiB clusters, as
/// `qemu-img convert -O qcow2` makes; JSON and AWS without digests).
pub fn wrap(image: &[u8], format: Format) -> Result<Vec<u8>, ContainerError> {
    match format {
        Format::Raw => Ok(image.to_vec()),
        Format::Qcow2 => Ok(qcow2::create(image, qcow2::CreateOptions::default())),
        Format::Json => Ok(jsonstore::to_json(image)?),
        Format::Aws => Ok(awsstore::to_aws(image)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_format_must_match_the_content() {
        let raw = varstore::Layout::by_name("ovmf-2m").unwrap().create();
        let err = StoreFile::from_bytes(raw.clone(), Some(Format::Qcow2)).unwrap_err();
        assert_eq!(err.to_string(), "the file is a raw store, not qcow2");
        let opened = StoreFile::from_bytes(raw.clone(), Some(Format::Raw)).unwrap();
        assert_eq!(opened.rewrap(opened.image()).unwrap(), raw);
    }
}
