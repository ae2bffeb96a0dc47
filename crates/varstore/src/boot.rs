//! Building boot entries: device path nodes, `EFI_LOAD_OPTION`s, and the `Boot####` /
//! `BootOrder` / `BootNext` edits that add, reorder and remove them (spec §13).
//!
//! The read side is [`crate::decode`]: everything built here parses back with
//! [`LoadOption::parse`](crate::decode::LoadOption::parse) and renders with
//! [`device_path_to_text`](crate::decode::device_path_to_text).
//!
//! Entries are written as *short-form* device paths, the form that survives hardware changes
//! and that edk2's boot manager (`MdeModulePkg/Library/UefiBootManagerLib/BmBoot.c`,
//! `BmGetNextLoadOptionDevicePath`) expands at boot:
//!
//! * `HD(n,GPT,guid,start,size)/File(\…)`: `BmExpandPartitionDevicePath` finds the disk whose
//!   partition node matches by `BmMatchPartitionDevicePathNode`, which compares only MBRType,
//!   SignatureType and Signature (the partition GUID). Partition number, start and size are not
//!   compared, so [`hard_drive_gpt`] may be given 0 for start and size when they are unknown.
//! * `File(\…)` alone: `BmExpandFileDevicePath` tries the path on every simple-file-system
//!   (removable media first) and boots the first where the file exists.
//! * `Uri(…)` alone: `BmExpandUriDevicePath` hands it to every `LoadFile` handle; edk2's
//!   HTTP boot driver takes the URI from the path, so no MAC/IPv4 prefix is needed.
//!
//! ```
//! use varstore::boot::{self, LoadOptionSpec};
//! use varstore::decode::LoadOption;
//!
//! let path = boot::device_path(&[boot::file_path(r"\EFI\BOOT\TEST.EFI")?]);
//! let bytes = LoadOptionSpec::new("Test", path).to_bytes()?;
//! let parsed = LoadOption::parse(&bytes).unwrap();
//! assert_eq!(parsed.description, "Test");
//! assert_eq!(parsed.device_path, r"\EFI\BOOT\TEST.EFI");
//! # Ok::<(), varstore::boot::BootError>(())
//! ```

use crate::decode::LoadOption;
use crate::edit::{EditError, Editor, Strategy};
use crate::{guid, Attributes, Guid, Varstore};
use thiserror::Error;

/// Attributes of `Boot####`, `BootOrder` and `BootNext`: NV+BS+RT (spec §13.1).
pub const BOOT_VARIABLE_ATTRIBUTES: Attributes = Attributes(0x7);

/// The End-of-entire-device-path node (0x7F/0xFF).
pub const END_ENTIRE: [u8; 4] = [0x7F, 0xFF, 4, 0];

/// Why a boot entry could not be built or edited. Nothing is changed in the store when an
/// operation fails with anything but [`BootError::Edit`] (and [`crate::edit::Editor`] users
/// discard the copy on that one).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BootError {
    /// A string cannot be stored as UCS-2 (CHAR16) or is empty.
    #[error("{what} {text:?}: {reason}")]
    BadText {
        /// Which argument.
        what: &'static str,
        /// The text.
        text: String,
        /// Why.
        reason: &'static str,
    },
    /// A node or path list would exceed the 16-bit length fields.
    #[error("{what} is {len} bytes; device path lengths are 16-bit")]
    TooLong {
        /// Which part.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// All 65536 Boot#### numbers are in use.
    #[error("no free Boot#### number")]
    NoFreeNumber,
    /// The entry does not exist.
    #[error("Boot{0:04X} does not exist")]
    NotFound(u16),
    /// An entry appears twice in a requested order.
    #[error("Boot{0:04X} is listed twice")]
    Duplicate(u16),
    /// `BootOrder` or `BootNext` has an odd size or is otherwise unreadable.
    #[error("{0} is malformed (not a list of 16-bit numbers)")]
    Malformed(&'static str),
    /// The store edit itself failed.
    #[error(transparent)]
    Edit(#[from] EditError),
}

fn ucs2(what: &'static str, text: &str, allow_empty: bool) -> Result<Vec<u8>, BootError> {
    let bad = |reason| BootError::BadText {
        what,
        text: text.into(),
        reason,
    };
    if text.is_empty() && !allow_empty {
        return Err(bad("must not be empty"));
    }
    if text.contains('\0') {
        return Err(bad("contains a NUL character"));
    }
    // UCS-2, not UTF-16: firmware string functions count one CHAR16 per character.
    if text.chars().any(|c| u32::from(c) > 0xFFFF) {
        return Err(bad(
            "has characters outside the Basic Multilingual Plane (UCS-2)",
        ));
    }
    let mut out: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    Ok(out)
}

fn node(kind: u8, sub: u8, body: &[u8], what: &'static str) -> Result<Vec<u8>, BootError> {
    let len = body.len() + 4;
    let len16 = u16::try_from(len).map_err(|_| BootError::TooLong { what, len })?;
    let mut out = vec![kind, sub];
    out.extend_from_slice(&len16.to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// A media file path node (0x04/0x04) for a path on the ESP.
///
/// `/` is turned into the `\` UEFI uses, and a missing leading `\` is added: the firmware
/// appends this node to a file system's device path and opens it from the root.
///
/// ```
/// let node = varstore::boot::file_path("EFI/BOOT/A.EFI")?;
/// assert_eq!(&node[..4], &[4, 4, 36, 0]);
/// assert_eq!(varstore::decode::device_path_to_text(&node), r"\EFI\BOOT\A.EFI");
/// # Ok::<(), varstore::boot::BootError>(())
/// ```
pub fn file_path(path: &str) -> Result<Vec<u8>, BootError> {
    let mut text = path.replace('/', "\\");
    if !text.starts_with('\\') {
        text.insert(0, '\\');
    }
    if text == "\\" {
        return Err(BootError::BadText {
            what: "file path",
            text: path.into(),
            reason: "names no file",
        });
    }
    node(
        0x04,
        0x04,
        &ucs2("file path", &text, false)?,
        "file path node",
    )
}

/// A hard drive media node (0x04/0x01) for GPT partition `number` with unique partition GUID
/// `partition` (MBRType 2, SignatureType 2).
///
/// edk2 matches a short-form `HD()` path by the signature only (see the [module
/// documentation](self)), so `start` and `size` (in LBAs) may be 0 when unknown; tools such
/// as efibootmgr fill them in from the partition table, which other firmware may compare.
///
/// ```
/// let part = uguid::guid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
/// let node = varstore::boot::hard_drive_gpt(1, part, 0x800, 0x32000);
/// assert_eq!(node.len(), 42);
/// assert_eq!(
///     varstore::decode::device_path_to_text(&node),
///     "HD(1,GPT,C12A7328-F81F-11D2-BA4B-00A0C93EC93B,0x800,0x32000)"
/// );
/// ```
pub fn hard_drive_gpt(number: u32, partition: Guid, start: u64, size: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(38);
    body.extend_from_slice(&number.to_le_bytes());
    body.extend_from_slice(&start.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    body.extend_from_slice(&partition.to_bytes());
    body.push(2); // MBRType: GPT
    body.push(2); // SignatureType: GUID
    node(0x04, 0x01, &body, "hard drive node").expect("42 bytes fit")
}

/// A URI messaging node (0x03/0x18): the ASCII URI without a NUL (the length gives the size).
///
/// ```
/// let node = varstore::boot::uri("http://192.0.2.1/boot.efi")?;
/// assert_eq!(varstore::decode::device_path_to_text(&node), "Uri(http://192.0.2.1/boot.efi)");
/// assert!(varstore::boot::uri("").is_err());
/// # Ok::<(), varstore::boot::BootError>(())
/// ```
pub fn uri(uri: &str) -> Result<Vec<u8>, BootError> {
    let bad = |reason| BootError::BadText {
        what: "URI",
        text: uri.into(),
        reason,
    };
    if uri.is_empty() {
        return Err(bad("must not be empty"));
    }
    // RFC 3986 URIs are printable ASCII; HttpBootDxe parses the bytes as such.
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "must be printable ASCII without spaces (percent-encode the rest)",
        ));
    }
    node(0x03, 0x18, uri.as_bytes(), "URI node")
}

/// Joins nodes into one device path instance and terminates it with [`END_ENTIRE`].
///
/// ```
/// let path = varstore::boot::device_path(&[]);
/// assert_eq!(path, varstore::boot::END_ENTIRE);
/// ```
pub fn device_path(nodes: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = nodes.concat();
    out.extend_from_slice(&END_ENTIRE);
    out
}

/// The fields of an `EFI_LOAD_OPTION` to build (spec §13.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptionSpec {
    /// LOAD_OPTION_* attribute bits; [`LoadOptionSpec::new`] sets ACTIVE.
    pub attributes: u32,
    /// Description shown in boot menus.
    pub description: String,
    /// FilePathList: device path(s), each ending with an End node (see [`device_path`]).
    pub file_path_list: Vec<u8>,
    /// OptionalData, passed to the loaded image; empty for new entries.
    pub optional_data: Vec<u8>,
}

impl LoadOptionSpec {
    /// An active entry without optional data.
    ///
    /// ```
    /// let spec = varstore::boot::LoadOptionSpec::new("X", varstore::boot::device_path(&[]));
    /// assert_eq!(spec.attributes, 1);
    /// ```
    pub fn new(description: &str, file_path_list: Vec<u8>) -> Self {
        Self {
            attributes: LoadOption::ACTIVE,
            description: description.into(),
            file_path_list,
            optional_data: Vec::new(),
        }
    }

    /// The packed `EFI_LOAD_OPTION` bytes.
    ///
    /// ```
    /// let spec = varstore::boot::LoadOptionSpec::new("A", varstore::boot::device_path(&[]));
    /// assert_eq!(spec.to_bytes()?, [1, 0, 0, 0, 4, 0, b'A', 0, 0, 0, 0x7f, 0xff, 4, 0]);
    /// # Ok::<(), varstore::boot::BootError>(())
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>, BootError> {
        let len = self.file_path_list.len();
        let len16 = u16::try_from(len).map_err(|_| BootError::TooLong {
            what: "the device path list",
            len,
        })?;
        let mut out = self.attributes.to_le_bytes().to_vec();
        out.extend_from_slice(&len16.to_le_bytes());
        out.extend_from_slice(&ucs2("description", &self.description, false)?);
        out.extend_from_slice(&self.file_path_list);
        out.extend_from_slice(&self.optional_data);
        Ok(out)
    }
}

/// `Boot####` for an option number (upper-case hex, as the firmware names them).
///
/// ```
/// assert_eq!(varstore::boot::boot_variable_name(0x1a), "Boot001A");
/// ```
pub fn boot_variable_name(number: u16) -> String {
    format!("Boot{number:04X}")
}

/// Parses an option number as written on command lines: `0003`, `3`, `Boot0003`, `0x3`.
///
/// ```
/// assert_eq!(varstore::boot::parse_option_number("Boot000a"), Some(10));
/// assert_eq!(varstore::boot::parse_option_number("10000"), None);
/// ```
pub fn parse_option_number(text: &str) -> Option<u16> {
    let t = text.trim();
    let t = t.strip_prefix("Boot").unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 4 {
        return None;
    }
    u16::from_str_radix(t, 16).ok()
}

/// One `Boot####` entry of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The option number.
    pub number: u16,
    /// The decoded option, or which field of the data is malformed.
    pub option: Result<LoadOption, crate::decode::DecodeError>,
}

/// The boot configuration of a store: entries, `BootOrder`, `BootNext`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// Every `Boot####` variable (EFI global GUID), by number.
    pub entries: Vec<BootEntry>,
    /// `BootOrder`, empty if absent.
    pub order: Vec<u16>,
    /// `BootNext`, if set.
    pub next: Option<u16>,
}

fn u16_list(data: &[u8], what: &'static str) -> Result<Vec<u16>, BootError> {
    if data.len() % 2 != 0 {
        return Err(BootError::Malformed(what));
    }
    Ok(data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

fn u16_bytes(list: &[u16]) -> Vec<u8> {
    list.iter().flat_map(|n| n.to_le_bytes()).collect()
}

impl BootConfig {
    /// Reads the boot variables of `store`.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    /// let store = varstore::Varstore::parse(&image)?;
    /// let config = varstore::boot::BootConfig::read(&store)?;
    /// assert!(config.entries.is_empty() && config.order.is_empty() && config.next.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(store: &Varstore<'_>) -> Result<Self, BootError> {
        let mut config = Self::default();
        for var in store.live_variables() {
            if var.guid != guid::EFI_GLOBAL_VARIABLE {
                continue;
            }
            let name = var.name();
            match name.as_str() {
                "BootOrder" => config.order = u16_list(var.data, "BootOrder")?,
                "BootNext" => {
                    let list = u16_list(var.data, "BootNext")?;
                    match list.as_slice() {
                        [n] => config.next = Some(*n),
                        _ => return Err(BootError::Malformed("BootNext")),
                    }
                }
                _ => {
                    // Only exactly four upper-case hex digits name a load option.
                    let Some(hex) = name.strip_prefix("Boot") else {
                        continue;
                    };
                    if hex.len() == 4 && hex.chars().all(|c| matches!(c, '0'..='9' | 'A'..='F')) {
                        let number = u16::from_str_radix(hex, 16).expect("four hex digits");
                        config.entries.push(BootEntry {
                            number,
                            option: LoadOption::parse(var.data),
                        });
                    }
                }
            }
        }
        config.entries.sort_by_key(|e| e.number);
        Ok(config)
    }

    /// Whether `Boot####` exists.
    pub fn has(&self, number: u16) -> bool {
        self.entries.iter().any(|e| e.number == number)
    }

    /// The lowest number without a `Boot####` variable.
    pub fn first_free(&self) -> Option<u16> {
        (0..=u16::MAX).find(|n| !self.has(*n))
    }

    /// Whether `BootOrder` lists `number`.
    pub fn in_order(&self, number: u16) -> bool {
        self.order.contains(&number)
    }

    /// The entries as the firmware tries them: those `BootOrder` lists, in its order (an
    /// entry listed twice comes twice), then the others by number.
    ///
    /// ```
    /// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
    /// let store = varstore::Varstore::parse(&image)?;
    /// let config = varstore::boot::BootConfig::read(&store)?;
    /// for entry in config.in_boot_order() {
    ///     println!("Boot{:04X} in BootOrder: {}", entry.number, config.in_order(entry.number));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn in_boot_order(&self) -> Vec<&BootEntry> {
        let mut ordered: Vec<&BootEntry> = self
            .order
            .iter()
            .filter_map(|n| self.entries.iter().find(|e| e.number == *n))
            .collect();
        ordered.extend(self.entries.iter().filter(|e| !self.in_order(e.number)));
        ordered
    }

    /// The numbers `BootOrder` lists without a `Boot####` variable (the firmware skips them).
    pub fn missing_from_order(&self) -> impl Iterator<Item = u16> + '_ {
        self.order.iter().copied().filter(|n| !self.has(*n))
    }
}

/// Where [`add`] puts a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// At the end of `BootOrder`.
    Last,
    /// At the start of `BootOrder`.
    First,
    /// At the end of `BootOrder`, and `BootNext` set to it: tried once at the next boot, and
    /// kept in the order afterwards.
    Next,
}

fn read_config(editor: &Editor) -> Result<BootConfig, BootError> {
    BootConfig::read(&editor.store()?)
}

fn write_order(editor: &mut Editor, order: &[u16], strategy: Strategy) -> Result<(), BootError> {
    let name = "BootOrder";
    let g = guid::EFI_GLOBAL_VARIABLE;
    if order.is_empty() {
        // Empty data is a delete for SetVariable; an absent BootOrder means the same.
        if editor.store()?.find(name, Some(g)).is_some() {
            editor.delete(name, g, strategy)?;
        }
    } else {
        editor.set(
            name,
            g,
            BOOT_VARIABLE_ATTRIBUTES,
            &u16_bytes(order),
            None,
            strategy,
        )?;
    }
    Ok(())
}

/// Adds `option` as `Boot####` with the lowest free number and puts it into `BootOrder`
/// (and `BootNext`) as `placement` says. Returns the number.
///
/// ```
/// use varstore::boot::{self, LoadOptionSpec, Placement};
/// use varstore::edit::{Editor, Strategy};
///
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let mut editor = Editor::new(&image)?;
/// let spec = LoadOptionSpec::new("T", boot::device_path(&[boot::file_path(r"\T.EFI")?]));
/// assert_eq!(boot::add(&mut editor, &spec, Placement::Next, Strategy::Append)?, 0);
/// let config = boot::BootConfig::read(&editor.store()?)?;
/// assert_eq!((config.order, config.next), (vec![0], Some(0)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn add(
    editor: &mut Editor,
    option: &LoadOptionSpec,
    placement: Placement,
    strategy: Strategy,
) -> Result<u16, BootError> {
    let data = option.to_bytes()?;
    let config = read_config(editor)?;
    let number = config.first_free().ok_or(BootError::NoFreeNumber)?;
    let g = guid::EFI_GLOBAL_VARIABLE;
    editor.set(
        &boot_variable_name(number),
        g,
        BOOT_VARIABLE_ATTRIBUTES,
        &data,
        None,
        strategy,
    )?;
    // A stale BootOrder may already name the number of a deleted entry; keep it once.
    let mut order: Vec<u16> = config
        .order
        .iter()
        .copied()
        .filter(|n| *n != number)
        .collect();
    match placement {
        Placement::First => order.insert(0, number),
        Placement::Last | Placement::Next => order.push(number),
    }
    write_order(editor, &order, strategy)?;
    if placement == Placement::Next {
        editor.set(
            "BootNext",
            g,
            BOOT_VARIABLE_ATTRIBUTES,
            &number.to_le_bytes(),
            None,
            strategy,
        )?;
    }
    Ok(number)
}

/// Replaces `BootOrder` with `order`; every entry must exist and appear once.
///
/// ```
/// use varstore::edit::{Editor, Strategy};
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let mut editor = Editor::new(&image)?;
/// assert_eq!(
///     varstore::boot::set_order(&mut editor, &[3], Strategy::Append),
///     Err(varstore::boot::BootError::NotFound(3))
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn set_order(editor: &mut Editor, order: &[u16], strategy: Strategy) -> Result<(), BootError> {
    let config = read_config(editor)?;
    for (i, n) in order.iter().enumerate() {
        if !config.has(*n) {
            return Err(BootError::NotFound(*n));
        }
        if order[..i].contains(n) {
            return Err(BootError::Duplicate(*n));
        }
    }
    write_order(editor, order, strategy)
}

/// Deletes `Boot####` and removes it from `BootOrder`, and deletes `BootNext` if it points to
/// it (the firmware would otherwise try a missing entry once).
pub fn remove(editor: &mut Editor, number: u16, strategy: Strategy) -> Result<(), BootError> {
    let config = read_config(editor)?;
    if !config.has(number) {
        return Err(BootError::NotFound(number));
    }
    let g = guid::EFI_GLOBAL_VARIABLE;
    editor.delete(&boot_variable_name(number), g, strategy)?;
    if config.order.contains(&number) {
        let order: Vec<u16> = config
            .order
            .iter()
            .copied()
            .filter(|n| *n != number)
            .collect();
        write_order(editor, &order, strategy)?;
    }
    if config.next == Some(number) {
        editor.delete("BootNext", g, strategy)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::device_path_to_text;

    #[test]
    fn option_numbers() {
        assert_eq!(parse_option_number("0003"), Some(3));
        assert_eq!(parse_option_number("ffff"), Some(0xFFFF));
        assert_eq!(parse_option_number(""), None);
        assert_eq!(parse_option_number("x"), None);
    }

    #[test]
    fn text_checks() {
        assert!(file_path("/").is_err());
        assert!(file_path("a\0b").is_err());
        assert!(file_path("\u{1F600}").is_err());
        assert!(uri("http://a b").is_err());
        assert!(LoadOptionSpec::new("", device_path(&[]))
            .to_bytes()
            .is_err());
    }

    #[test]
    fn entries_come_in_boot_order_then_by_number() {
        let entry = |number: u16| BootEntry {
            number,
            option: LoadOption::parse(
                &LoadOptionSpec::new("x", device_path(&[file_path("\\x.efi").unwrap()]))
                    .to_bytes()
                    .unwrap(),
            ),
        };
        let config = BootConfig {
            entries: vec![entry(0), entry(1), entry(2), entry(3)],
            order: vec![2, 5, 0, 2],
            next: None,
        };
        let numbers: Vec<u16> = config.in_boot_order().iter().map(|e| e.number).collect();
        assert_eq!(numbers, [2, 0, 2, 1, 3]);
        assert_eq!(config.missing_from_order().collect::<Vec<_>>(), [5]);
        assert!(config.in_order(0) && !config.in_order(1));
    }

    #[test]
    fn hd_file_path_text() {
        let g = Guid::try_parse("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
        let path = device_path(&[
            hard_drive_gpt(2, g, 0, 0),
            file_path("\\EFI\\x.efi").unwrap(),
        ]);
        assert_eq!(
            device_path_to_text(&path),
            "HD(2,GPT,0FC63DAF-8483-4772-8E79-3D69D8477DE4,0x0,0x0)/\\EFI\\x.efi"
        );
    }
}
