//! Decoding of well-known variable values for display: load options and device paths
//! (spec §13), signature databases (spec §12), and small scalars.
//!
//! Every decoder is bounded by its input. The structures ([`LoadOption::parse`],
//! [`signature_lists`]) return a [`DecodeError`] naming the field and its offset; the display
//! helpers mark malformed parts in their text rather than failing. None panics on malformed
//! data.

use crate::format::{DevicePathHeader, LoadOptionHeader, SignatureListHeader};
use crate::guid;
use crate::record::ucs2_to_string;
use crate::record::VariableRecord;
use crate::Guid;
use std::fmt::Write as _;
use zerocopy::{FromBytes, Immutable, KnownLayout};

/// A variable value whose structure does not add up: the field, its offset from the start of
/// the value, and what is wrong with it.
///
/// ```
/// let err = varstore::decode::signature_lists(&[0u8; 20]).unwrap_err();
/// assert_eq!((err.offset, err.field), (0, "EFI_SIGNATURE_LIST"));
/// assert_eq!(err.to_string(), "offset 0 (EFI_SIGNATURE_LIST): a list header needs 28 bytes, 20 are left");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} ({field}): {problem}")]
pub struct DecodeError {
    /// Offset of the field from the start of the value.
    pub offset: usize,
    /// The field, as the UEFI specification names it.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl DecodeError {
    fn new(offset: usize, field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            offset,
            field,
            problem: problem.into(),
        }
    }
}

/// A decoded `EFI_LOAD_OPTION` (Boot####, Driver####, SysPrep####).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    /// LOAD_OPTION_* attribute bits.
    pub attributes: u32,
    /// Description.
    pub description: String,
    /// The device path list as text.
    pub device_path: String,
    /// OptionalData bytes.
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// LOAD_OPTION_ACTIVE.
    pub const ACTIVE: u32 = 0x1;

    /// Parses a load option; a [`DecodeError`] names the field that does not fit.
    ///
    /// ```
    /// use varstore::decode::LoadOption;
    /// // attributes 1, path list of 4 bytes, "A", End node.
    /// let data = [1, 0, 0, 0, 4, 0, b'A', 0, 0, 0, 0x7f, 0xff, 4, 0];
    /// let option = LoadOption::parse(&data).unwrap();
    /// assert_eq!(option.description, "A");
    /// assert_eq!(option.device_path, "");
    /// let err = LoadOption::parse(&data[..12]).unwrap_err();
    /// assert_eq!((err.offset, err.field), (10, "FilePathList"));
    /// ```
    pub fn parse(data: &[u8]) -> Result<Self, DecodeError> {
        let (header, rest) = LoadOptionHeader::ref_from_prefix(data).map_err(|_| {
            DecodeError::new(
                0,
                "EFI_LOAD_OPTION",
                format!(
                    "Attributes and FilePathListLength need 6 bytes, {} are left",
                    data.len()
                ),
            )
        })?;
        let path_len = usize::from(header.file_path_list_length.get());
        let description_len = rest
            .chunks_exact(2)
            .position(|unit| unit == [0, 0])
            .map(|units| units * 2)
            .ok_or_else(|| {
                DecodeError::new(
                    6,
                    "Description",
                    format!("no NUL terminator in the {} bytes left", rest.len()),
                )
            })?;
        let description = ucs2_to_string(&rest[..description_len]);
        let at = 6 + description_len + 2;
        let after = &rest[description_len + 2..];
        if after.len() < path_len {
            return Err(DecodeError::new(
                at,
                "FilePathList",
                format!(
                    "FilePathListLength is {path_len} bytes, {} are left",
                    after.len()
                ),
            ));
        }
        let (path, optional_data) = after.split_at(path_len);
        Ok(Self {
            attributes: header.attributes.get(),
            description,
            device_path: device_path_to_text(path),
            optional_data: optional_data.to_vec(),
        })
    }
}

/// Renders a (possibly multi-instance) device path in the UEFI text notation, e.g.
/// `PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)`. Malformed nodes end the text with
/// `<malformed at N>` instead of failing.
///
/// ```
/// let path = [2, 1, 12, 0, 0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0, 0x7f, 0xff, 4, 0];
/// assert_eq!(varstore::decode::device_path_to_text(&path), "PciRoot(0x0)");
/// ```
pub fn device_path_to_text(path: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    let mut first = true;
    while at < path.len() {
        let Some((header, _)) = DevicePathHeader::ref_from_prefix(&path[at..]).ok() else {
            let _ = write!(out, "<malformed at {at}>");
            break;
        };
        let (kind, sub, len) = (
            header.kind,
            header.sub_type,
            usize::from(header.length.get()),
        );
        let Some(body) = path.get(at + 4..at + len.max(4)).filter(|_| len >= 4) else {
            let _ = write!(out, "<malformed at {at}>");
            break;
        };
        at += len;
        match (kind, sub) {
            (0x7F, 0xFF) => break,
            (0x7F, 0x01) => {
                out.push(',');
                first = true;
                continue;
            }
            _ => {}
        }
        if !first {
            out.push('/');
        }
        first = false;
        out.push_str(&node_to_text(kind, sub, body));
    }
    out
}

/// The node's fixed fields as `T`, borrowed from its body; `None` if the body is shorter.
fn node<T: FromBytes + KnownLayout + Immutable>(body: &[u8]) -> Option<&T> {
    T::ref_from_prefix(body).ok().map(|(node, _)| node)
}

fn node_to_text(kind: u8, sub: u8, b: &[u8]) -> String {
    use node::*;
    let vendor = |b| node::<Vendor>(b).map(|v| Guid::from_bytes(v.guid).to_string().to_uppercase());
    let text = match (kind, sub) {
        (0x01, 0x01) => node::<Pci>(b).map(|n| format!("Pci(0x{:X},0x{:X})", n.device, n.function)),
        (0x01, 0x03) => node::<MemoryMapped>(b).map(|n| {
            format!(
                "MemoryMapped(0x{:X},0x{:X},0x{:X})",
                n.memory_type.get(),
                n.start.get(),
                n.end.get()
            )
        }),
        (0x01, 0x04) => vendor(b).map(|g| format!("VenHw({g})")),
        (0x02, 0x01) => node::<Acpi>(b).map(|n| {
            let (hid, uid) = (n.hid.get(), n.uid.get());
            match hid {
                0x0A03_41D0 => format!("PciRoot(0x{uid:X})"),
                0x0A08_41D0 => format!("PcieRoot(0x{uid:X})"),
                _ if hid & 0xFFFF == 0x41D0 => format!("Acpi(PNP{:04X},0x{uid:X})", hid >> 16),
                _ => format!("Acpi(0x{hid:X},0x{uid:X})"),
            }
        }),
        (0x03, 0x02) => {
            node::<Scsi>(b).map(|n| format!("Scsi(0x{:X},0x{:X})", n.pun.get(), n.lun.get()))
        }
        (0x03, 0x05) => node::<Usb>(b).map(|n| format!("USB(0x{:X},0x{:X})", n.port, n.interface)),
        (0x03, 0x0A) => vendor(b).map(|g| match g.as_str() {
            "E0C14753-F9BE-11D2-9A0C-0090273FC14D" => "VenPcAnsi()".to_string(),
            "37499A9D-542F-4C89-A026-35DA142094E4" => "VenUtf8()".to_string(),
            "AD15A0D6-8BEC-4ACF-A073-D01DE77E2D88" => "VenVt100()".to_string(),
            "7BAEC70B-57E0-4C76-8E87-2F9E28088343" => "VenVt100Plus()".to_string(),
            _ => format!("VenMsg({g})"),
        }),
        // The interface type is at 32; shorter nodes (which the firmware never writes) show 0.
        (0x03, 0x0B) => b.get(..6).map(|m| {
            let hex: Vec<String> = m.iter().map(|x| format!("{x:02X}")).collect();
            format!(
                "MAC({},0x{:X})",
                hex.concat(),
                b.get(32).copied().unwrap_or(0)
            )
        }),
        (0x03, 0x0C) => node::<Ipv4>(b).map(|n| {
            let r = n.remote;
            format!("IPv4({}.{}.{}.{})", r[0], r[1], r[2], r[3])
        }),
        (0x03, 0x0D) => Some("IPv6()".to_string()),
        (0x03, 0x0E) => node::<Uart>(b).map(|n| format!("Uart({})", n.baud_rate.get())),
        (0x03, 0x0F) => node::<UsbClass>(b).map(|n| {
            format!(
                "UsbClass(0x{:X},0x{:X},0x{:X},0x{:X},0x{:X})",
                n.vendor.get(),
                n.product.get(),
                n.class,
                n.subclass,
                n.protocol
            )
        }),
        (0x03, 0x12) => node::<Sata>(b).map(|n| {
            format!(
                "Sata(0x{:X},0x{:X},0x{:X})",
                n.hba_port.get(),
                n.port_multiplier_port.get(),
                n.lun.get()
            )
        }),
        (0x03, 0x17) => node::<Nvme>(b).map(|n| format!("NVMe(0x{:X})", n.namespace_id.get())),
        (0x03, 0x18) => Some(format!("Uri({})", String::from_utf8_lossy(b))),
        (0x04, 0x01) => match node::<HardDrive>(b) {
            Some(n) if n.signature_type == 2 => Some(format!(
                "HD({},GPT,{},0x{:X},0x{:X})",
                n.partition.number.get(),
                Guid::from_bytes(n.signature).to_string().to_uppercase(),
                n.partition.start.get(),
                n.partition.size.get()
            )),
            Some(n) if n.signature_type == 1 => {
                let id = u32::from_le_bytes([
                    n.signature[0],
                    n.signature[1],
                    n.signature[2],
                    n.signature[3],
                ]);
                Some(format!(
                    "HD({},MBR,0x{id:08X},0x{:X},0x{:X})",
                    n.partition.number.get(),
                    n.partition.start.get(),
                    n.partition.size.get()
                ))
            }
            _ => node::<Partition>(b).map(|p| {
                format!(
                    "HD({},0x{:X},0x{:X})",
                    p.number.get(),
                    p.start.get(),
                    p.size.get()
                )
            }),
        },
        (0x04, 0x02) => node::<CdRom>(b).map(|n| format!("CDROM(0x{:X})", n.boot_entry.get())),
        (0x04, 0x03) => vendor(b).map(|g| format!("VenMedia({g})")),
        (0x04, 0x04) => Some(ucs2_to_string(b)),
        (0x04, 0x06) => vendor(b).map(|g| format!("FvFile({g})")),
        (0x04, 0x07) => vendor(b).map(|g| format!("Fv({g})")),
        _ => None,
    };
    text.unwrap_or_else(|| format!("Path({kind},{sub},{})", hex::encode_upper(b)))
}

/// The fixed fields of the device path nodes shown as text (UEFI specification, "Device Path
/// Protocol"), after the 4-byte node header. Each is read only as far as the text needs.
mod node {
    use zerocopy::little_endian::{U16, U32, U64};
    use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

    macro_rules! nodes {
        ($($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? })*) => {$(
            $(#[$doc])*
            #[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
            #[repr(C)]
            pub(super) struct $name { $(pub(super) $field: $ty),* }
        )*};
    }

    nodes! {
        /// Hardware 1/1.
        Pci { function: u8, device: u8 }
        /// Hardware 1/3.
        MemoryMapped { memory_type: U32, start: U64, end: U64 }
        /// Any vendor-defined node, FvFile and Fv: a GUID first.
        Vendor { guid: [u8; 16] }
        /// ACPI 2/1.
        Acpi { hid: U32, uid: U32 }
        /// Messaging 3/2.
        Scsi { pun: U16, lun: U16 }
        /// Messaging 3/5.
        Usb { port: u8, interface: u8 }
        /// Messaging 3/12: local address, then remote.
        Ipv4 { local: [u8; 4], remote: [u8; 4] }
        /// Messaging 3/14.
        Uart { reserved: U32, baud_rate: U64 }
        /// Messaging 3/15.
        UsbClass { vendor: U16, product: U16, class: u8, subclass: u8, protocol: u8 }
        /// Messaging 3/18.
        Sata { hba_port: U16, port_multiplier_port: U16, lun: U16 }
        /// Messaging 3/23.
        Nvme { namespace_id: U32 }
        /// Media 4/1 up to the partition's extent.
        Partition { number: U32, start: U64, size: U64 }
        /// Media 4/1 whole.
        HardDrive { partition: Partition, signature: [u8; 16], mbr_type: u8, signature_type: u8 }
        /// Media 4/2.
        CdRom { boot_entry: U32 }
    }
}

/// One `EFI_SIGNATURE_LIST` (spec §12.1), borrowing its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList<'a> {
    /// SignatureType.
    pub signature_type: Guid,
    /// Each entry as (owner, signature data).
    pub entries: Vec<(Guid, &'a [u8])>,
}

/// Splits a signature database into its lists; a [`DecodeError`] names the list field whose
/// size does not add up (the sizes must cover the value exactly).
///
/// ```
/// assert_eq!(varstore::decode::signature_lists(&[]).unwrap().len(), 0);
/// assert!(varstore::decode::signature_lists(&[0u8; 20]).is_err());
/// ```
pub fn signature_lists(data: &[u8]) -> Result<Vec<SignatureList<'_>>, DecodeError> {
    let mut lists = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        let (header, _) = SignatureListHeader::ref_from_prefix(rest).map_err(|_| {
            DecodeError::new(
                at,
                "EFI_SIGNATURE_LIST",
                format!("a list header needs 28 bytes, {} are left", rest.len()),
            )
        })?;
        let list_size = header.list_size.get() as usize;
        let header_size = header.header_size.get() as usize;
        let entry_size = header.entry_size.get() as usize;
        if list_size > rest.len() {
            return Err(DecodeError::new(
                at + 16,
                "SignatureListSize",
                format!("{list_size} bytes, {} are left", rest.len()),
            ));
        }
        if list_size < 28 {
            return Err(DecodeError::new(
                at + 16,
                "SignatureListSize",
                format!("{list_size} bytes, less than the 28-byte list header"),
            ));
        }
        if header_size > list_size - 28 {
            return Err(DecodeError::new(
                at + 20,
                "SignatureHeaderSize",
                format!(
                    "{header_size} bytes, {} are left in the list",
                    list_size - 28
                ),
            ));
        }
        let body = &rest[28 + header_size..list_size];
        if entry_size <= 16 {
            return Err(DecodeError::new(
                at + 24,
                "SignatureSize",
                format!("{entry_size} bytes, not more than the 16-byte SignatureOwner"),
            ));
        }
        if body.len() % entry_size != 0 {
            return Err(DecodeError::new(
                at + 24,
                "SignatureSize",
                format!(
                    "{entry_size} bytes does not divide the list's {} bytes of signatures",
                    body.len()
                ),
            ));
        }
        let entries = body
            .chunks_exact(entry_size)
            .map(|e| {
                let (owner, data) = e.split_at(16);
                let owner: [u8; 16] = owner.try_into().unwrap_or_default();
                (Guid::from_bytes(owner), data)
            })
            .collect();
        lists.push(SignatureList {
            signature_type: Guid::from_bytes(header.signature_type),
            entries,
        });
        at += list_size;
    }
    Ok(lists)
}

/// A short description of one signature: certificate subject or hash type.
pub fn describe_signature(signature_type: Guid, data: &[u8]) -> String {
    if signature_type == guid::CERT_X509 {
        match crate::secureboot::certificate_desc(data) {
            Some(desc) => format!("x509 \"{desc}\""),
            None => "x509 (unparsable certificate)".to_string(),
        }
    } else if signature_type == guid::CERT_SHA256 {
        format!("sha256 {}", hex::encode(data))
    } else {
        format!("{} ({} bytes)", signature_type, data.len())
    }
}

/// Names whose value is a signature database.
const SIGNATURE_DATABASES: &[&str] = &[
    "PK",
    "KEK",
    "db",
    "dbx",
    "dbt",
    "dbr",
    "PKDefault",
    "KEKDefault",
    "dbDefault",
    "dbxDefault",
    "dbtDefault",
    "MokList",
    "MokListX",
    "MokListRT",
    "MokListXRT",
    "MokListTrusted",
];

/// A one-line decoded value for well-known variables, `None` for others.
///
/// ```
/// let image = varstore::Layout::by_name("ovmf-4m").unwrap().create();
/// let store = varstore::Varstore::parse(&image).unwrap();
/// assert!(store.live_variables().iter().all(|v| varstore::decode::summary(v).is_some()));
/// ```
pub fn summary(record: &VariableRecord<'_>) -> Option<String> {
    let name = record.name();
    let data = record.data;
    let global = record.guid == guid::EFI_GLOBAL_VARIABLE;
    let is_option = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| n.len() == 4 && n.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if global && (is_option("Boot") || is_option("Driver") || is_option("SysPrep")) {
        let option = LoadOption::parse(data).ok()?;
        let active = if option.attributes & LoadOption::ACTIVE != 0 {
            ""
        } else {
            " [inactive]"
        };
        return Some(format!(
            "\"{}\" {}{active}",
            option.description, option.device_path
        ));
    }
    if global && matches!(name.as_str(), "BootOrder" | "DriverOrder" | "SysPrepOrder") {
        if data.len() % 2 != 0 {
            return None;
        }
        let items: Vec<String> = data
            .chunks_exact(2)
            .map(|c| format!("{:04X}", u16::from_le_bytes([c[0], c[1]])))
            .collect();
        return Some(items.join(","));
    }
    if global && matches!(name.as_str(), "BootNext" | "BootCurrent") && data.len() == 2 {
        return Some(format!("{:04X}", u16::from_le_bytes([data[0], data[1]])));
    }
    if global && name == "Timeout" && data.len() == 2 {
        return Some(format!("{} s", u16::from_le_bytes([data[0], data[1]])));
    }
    if global
        && matches!(
            name.as_str(),
            "Lang" | "PlatformLang" | "LangCodes" | "PlatformLangCodes"
        )
    {
        let text = data.split(|&b| b == 0).next().unwrap_or_default();
        return Some(format!("\"{}\"", String::from_utf8_lossy(text)));
    }
    if global && matches!(name.as_str(), "ConIn" | "ConOut" | "ErrOut") {
        return Some(device_path_to_text(data));
    }
    if matches!(
        name.as_str(),
        "SecureBoot"
            | "SetupMode"
            | "SecureBootEnable"
            | "CustomMode"
            | "VendorKeysNv"
            | "VendorKeys"
            | "AuditMode"
            | "DeployedMode"
    ) && data.len() == 1
    {
        return Some(data[0].to_string());
    }
    if SIGNATURE_DATABASES.contains(&name.as_str()) {
        let lists = signature_lists(data).ok()?;
        // Only the entries shown are described (a dbx has hundreds of hashes).
        let count: usize = lists.iter().map(|l| l.entries.len()).sum();
        let shown: Vec<String> = lists
            .iter()
            .flat_map(|l| {
                l.entries
                    .iter()
                    .map(|(_, d)| describe_signature(l.signature_type, d))
            })
            .take(4)
            .collect();
        let more = if count > shown.len() {
            format!(", … {} more", count - shown.len())
        } else {
            String::new()
        };
        return Some(format!(
            "{count} entr{}: {}{more}",
            if count == 1 { "y" } else { "ies" },
            shown.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SHA-256 list with these SignatureSize, SignatureHeaderSize and entries; `list_size`
    /// replaces the SignatureListSize that fits them.
    fn list(entry_size: u32, header_size: u32, body: &[u8], list_size: Option<u32>) -> Vec<u8> {
        let size = list_size.unwrap_or(28 + header_size + body.len() as u32);
        let mut out = guid::CERT_SHA256.to_bytes().to_vec();
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&header_size.to_le_bytes());
        out.extend_from_slice(&entry_size.to_le_bytes());
        out.extend_from_slice(&vec![0; header_size as usize]);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn each_signature_list_field_is_named_with_its_offset() {
        let good = list(48, 0, &[7; 96], None);
        assert_eq!(signature_lists(&good).unwrap()[0].entries.len(), 2);
        let after = |bad: Vec<u8>| [good.clone(), bad].concat();
        let at = good.len();
        for (bytes, offset, field, problem) in [
            (
                after(good[..27].to_vec()),
                at,
                "EFI_SIGNATURE_LIST",
                "needs 28 bytes, 27",
            ),
            (
                after(list(48, 0, &[7; 48], Some(77))),
                at + 16,
                "SignatureListSize",
                "77 bytes, 76 are left",
            ),
            (
                after(list(48, 0, &[], Some(20))),
                at + 16,
                "SignatureListSize",
                "less than the 28-byte",
            ),
            (
                after(list(48, 8, &[], Some(30))),
                at + 20,
                "SignatureHeaderSize",
                "8 bytes, 2 are left",
            ),
            (
                after(list(16, 0, &[7; 32], None)),
                at + 24,
                "SignatureSize",
                "not more than the 16-byte",
            ),
            (
                after(list(48, 0, &[7; 50], None)),
                at + 24,
                "SignatureSize",
                "does not divide the list's 50",
            ),
        ] {
            let err = signature_lists(&bytes).unwrap_err();
            assert_eq!((err.offset, err.field), (offset, field), "{err}");
            assert!(err.problem.contains(problem), "{err}");
            assert_eq!(crate::secureboot::SignatureDb::parse(&bytes), Err(err));
        }
    }

    #[test]
    fn each_load_option_field_is_named_with_its_offset() {
        // Attributes 1, FilePathListLength 4, "AB", End node, optional data 0xEE.
        let good = [
            1, 0, 0, 0, 4, 0, b'A', 0, b'B', 0, 0, 0, 0x7f, 0xff, 4, 0, 0xEE,
        ];
        let option = LoadOption::parse(&good).unwrap();
        assert_eq!(
            (option.description.as_str(), option.optional_data.as_slice()),
            ("AB", &[0xEE][..])
        );
        for (len, offset, field, problem) in [
            (5, 0, "EFI_LOAD_OPTION", "need 6 bytes, 5 are left"),
            (9, 6, "Description", "no NUL terminator in the 3 bytes left"),
            (
                10,
                6,
                "Description",
                "no NUL terminator in the 4 bytes left",
            ),
            (
                15,
                12,
                "FilePathList",
                "FilePathListLength is 4 bytes, 3 are left",
            ),
        ] {
            let err = LoadOption::parse(&good[..len]).unwrap_err();
            assert_eq!((err.offset, err.field), (offset, field), "{err}");
            assert!(err.problem.contains(problem), "{err}");
        }
    }
}
