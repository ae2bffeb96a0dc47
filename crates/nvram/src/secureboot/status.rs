//! [`status`]: the Secure Boot state of a store as the firmware will see it at the next boot.

use super::{Database, MICROSOFT_CERTIFICATES};
use serde::Serialize;
use varstore::decode::describe_signature;
use varstore::guid::{self, Guid};
use varstore::secureboot::{
    certificate_subject, SignatureDb, CUSTOM_MODE_GUID, SECURE_BOOT_ENABLE_GUID,
};
use varstore::Varstore;

/// One entry of a database, for display.
#[derive(Debug, Clone, Serialize)]
pub struct EntryStatus {
    /// Signature type GUID.
    pub signature_type: String,
    /// Owner GUID.
    pub owner: String,
    /// Certificate subject or hash.
    pub description: String,
}

/// One database in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    /// Variable name.
    pub name: &'static str,
    /// Whether the variable exists.
    pub present: bool,
    /// Its attributes.
    pub attributes: Option<u32>,
    /// Its timestamp.
    pub time: Option<String>,
    /// The data is not a valid signature database.
    pub malformed: bool,
    /// Its entries.
    pub entries: Vec<EntryStatus>,
}

/// Whether one of Microsoft's certificates is enrolled.
#[derive(Debug, Clone, Serialize)]
pub struct MicrosoftStatus {
    /// Subject CN.
    pub name: &'static str,
    /// KEK or db.
    pub database: Database,
    /// 2011 or 2023.
    pub year: u16,
    /// Enrolled.
    pub present: bool,
}

/// The Secure Boot state of a store, as the firmware will see it at the next boot.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// No PK: the firmware starts in setup mode and runs anything.
    pub setup_mode: bool,
    /// The stored `SecureBootEnable` value.
    pub secure_boot_enable: Option<u8>,
    /// The stored `CustomMode` value (the firmware resets it to 0 at boot).
    pub custom_mode: Option<u8>,
    /// PK present and `SecureBootEnable` not 0 (the firmware creates it as 1 if missing).
    pub secure_boot_at_next_boot: bool,
    /// PK, KEK, db, dbx.
    pub databases: Vec<DatabaseStatus>,
    /// Microsoft's 2011 and 2023 certificates.
    pub microsoft: Vec<MicrosoftStatus>,
    /// KEK 2K CA 2023, Windows UEFI CA 2023 and Microsoft UEFI CA 2023 are all enrolled.
    pub microsoft_2023_ready: bool,
}

/// Reports the Secure Boot state of `store`.
pub fn status(store: &Varstore<'_>) -> Status {
    let live = store.live_variables();
    let find = |name: &str, guid: Guid| live.iter().find(|v| v.guid == guid && v.name() == name);
    let mut databases = Vec::new();
    let mut parsed: Vec<(Database, SignatureDb)> = Vec::new();
    for database in Database::ALL {
        let record = find(database.name(), database.guid());
        let db = record.and_then(|r| SignatureDb::parse(r.data).ok());
        let entries = db
            .iter()
            .flat_map(|db| db.lists.iter())
            .flat_map(|l| {
                l.entries.iter().map(move |(owner, data)| EntryStatus {
                    signature_type: guid::name_of(l.signature_type)
                        .map_or_else(|| l.signature_type.to_string(), str::to_string),
                    owner: guid::to_text(*owner),
                    description: if l.signature_type == guid::CERT_X509 {
                        certificate_subject(data)
                            .unwrap_or_else(|| "(unparsable certificate)".into())
                    } else {
                        describe_signature(l.signature_type, data)
                    },
                })
            })
            .collect();
        databases.push(DatabaseStatus {
            name: database.name(),
            present: record.is_some(),
            attributes: record.map(|r| r.attributes.0),
            time: record.and_then(|r| r.time()).map(|t| t.to_string()),
            malformed: record.is_some() && db.is_none(),
            entries,
        });
        if let Some(db) = db {
            parsed.push((database, db));
        }
    }
    let byte = |name: &str, guid: Guid| find(name, guid).and_then(|r| r.data.first().copied());
    let secure_boot_enable = byte("SecureBootEnable", SECURE_BOOT_ENABLE_GUID);
    let setup_mode = find("PK", guid::EFI_GLOBAL_VARIABLE).is_none();
    let microsoft: Vec<MicrosoftStatus> = MICROSOFT_CERTIFICATES
        .iter()
        .map(|c| MicrosoftStatus {
            name: c.name,
            database: c.database,
            year: c.year,
            present: parsed
                .iter()
                .any(|(d, db)| *d == c.database && db.contains_x509(c.der)),
        })
        .collect();
    let ready = [
        "Microsoft Corporation KEK 2K CA 2023",
        "Windows UEFI CA 2023",
        "Microsoft UEFI CA 2023",
    ]
    .iter()
    .all(|n| microsoft.iter().any(|m| m.name == *n && m.present));
    Status {
        setup_mode,
        secure_boot_enable,
        custom_mode: byte("CustomMode", CUSTOM_MODE_GUID),
        secure_boot_at_next_boot: !setup_mode && secure_boot_enable != Some(0),
        databases,
        microsoft,
        microsoft_2023_ready: ready,
    }
}
