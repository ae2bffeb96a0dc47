//! qcow2 images holding a UEFI variable store (skeleton: the API contract; bodies to come).

/// The qcow2 magic, `QFI\xfb`, at offset 0 of every qcow2 file.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Whether `file` starts like a qcow2 image (its magic).
pub fn is_qcow2(file: &[u8]) -> bool {
    file.starts_with(&MAGIC)
}

/// Why an image cannot be read or rewritten.
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
}

/// A parsed qcow2 image, borrowing the file.
#[derive(Debug)]
pub struct Image<'a> {
    file: &'a [u8],
}

impl<'a> Image<'a> {
    /// Parses and validates `file`.
    pub fn parse(file: &'a [u8]) -> Result<Self, Qcow2Error> {
        Ok(Self { file })
    }

    /// The guest-visible size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.file.len() as u64
    }

    /// The guest-visible content of the active image.
    pub fn read_active(&self) -> Result<Vec<u8>, Qcow2Error> {
        Err(Qcow2Error::Unsupported { feature: "anything yet".into() })
    }

    /// A new file whose active image is `content` (same virtual size), keeping every internal
    /// snapshot and header field it can.
    pub fn with_active(&self, content: &[u8]) -> Result<Vec<u8>, Qcow2Error> {
        let _ = content;
        Err(Qcow2Error::Unsupported { feature: "anything yet".into() })
    }
}

/// Options of [`create`].
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

/// A new qcow2 (version 3) file holding `content`.
pub fn create(content: &[u8], options: CreateOptions) -> Vec<u8> {
    let _ = (content, options);
    Vec::new()
}
