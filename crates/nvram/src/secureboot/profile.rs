//! virt-firmware's db profiles (`--microsoft-db`) and the externally managed platform
//! (`--enroll-mgmt`): which certificates each profile means, and the PK entry that tells the
//! firmware its keys are managed from outside.

use super::KnownCertificate;
use crate::certs::{bundled, distro_certs};
use varstore::guid::{self, Guid};
use varstore::secureboot::{OwnedList, SignatureDb, OVMF_ENROLL_DEFAULT_KEYS};

/// `EFI_CERT_EXTERNAL_MANAGEMENT_GUID`: a PK entry saying that the platform's keys are managed
/// by an external party (UEFI 2.10 §32.4.1). Its signature data is one byte.
pub const CERT_EXTERNAL_MANAGEMENT: Guid =
    Guid::parse_or_panic("452e8ced-dfff-4b8c-ae01-5118862e682c");

/// The PK virt-fw-vars' `--enroll-mgmt` writes: one `EFI_CERT_EXTERNAL_MANAGEMENT` list whose
/// single entry, one zero byte, is owned by `owner` (virt-firmware: OVMF's a0baa8a3-…).
///
/// ```
/// use nvram::secureboot::external_management_pk;
/// let pk = external_management_pk(varstore::secureboot::OVMF_ENROLL_DEFAULT_KEYS);
/// assert_eq!(pk.to_bytes().len(), 28 + 16 + 1);
/// ```
pub fn external_management_pk(owner: Guid) -> SignatureDb {
    SignatureDb {
        lists: vec![OwnedList {
            signature_type: CERT_EXTERNAL_MANAGEMENT,
            entries: vec![(owner, vec![0])],
        }],
    }
}

/// Whether `db` is exactly an external-management PK ([`external_management_pk`], any owner).
pub fn is_external_management(db: &SignatureDb) -> bool {
    matches!(&db.lists[..], [l] if l.signature_type == CERT_EXTERNAL_MANAGEMENT
        && l.entries.len() == 1 && l.entries[0].1 == [0])
}

/// The db certificates of one of virt-firmware's `--microsoft-db` profiles (virt-firmware's
/// `add_microsoft_keys`): each enrolled with Microsoft's owner GUID, in virt-firmware's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicrosoftDb {
    /// Windows Production PCA 2011 and Windows UEFI CA 2023: Windows only.
    Win11,
    /// Windows UEFI CA 2023.
    Win23,
    /// Windows UEFI CA 2023 and Option ROM UEFI CA 2023.
    WinRom23,
    /// Microsoft UEFI CA 2011 and 2023: third-party binaries (shim, drivers), not Windows.
    Uefi11,
    /// Microsoft UEFI CA 2023.
    Uefi23,
    /// Microsoft UEFI CA 2023 and Option ROM UEFI CA 2023.
    UefiRom23,
    /// Red Hat UEFI CA 2024 (owned by Microsoft's GUID, as virt-firmware enrols it).
    RedHat,
    /// Red Hat UEFI CA 2024 and Option ROM UEFI CA 2023.
    RedHatRom,
    /// All of Microsoft's: Windows 2011/2023, UEFI CA 2011/2023, Option ROM 2023.
    All,
}

/// A db certificate a profile can mean.
const WIN_2011: KnownCertificate = known(0);
const WIN_2023: KnownCertificate = known(1);
const UEFI_2011: KnownCertificate = known(2);
const UEFI_2023: KnownCertificate = known(3);
const ROM_2023: KnownCertificate = known(4);
const REDHAT_2024: KnownCertificate = KnownCertificate {
    name: "Red Hat UEFI CA 2024",
    database: super::Database::Db,
    year: 2024,
    der: bundled::REDHAT_DB_UEFI_2024,
};

/// The `index`-th db certificate of [`super::MICROSOFT_CERTIFICATES`].
const fn known(index: usize) -> KnownCertificate {
    // KEK 2011 and KEK 2023 come first.
    super::MICROSOFT_CERTIFICATES[2 + index]
}

impl MicrosoftDb {
    /// Every profile, as virt-firmware names them.
    pub const ALL_PROFILES: [MicrosoftDb; 9] = [
        Self::Win11,
        Self::Win23,
        Self::WinRom23,
        Self::Uefi11,
        Self::Uefi23,
        Self::UefiRom23,
        Self::RedHat,
        Self::RedHatRom,
        Self::All,
    ];

    /// virt-firmware's name of the profile (`win+rom23`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Win11 => "win11",
            Self::Win23 => "win23",
            Self::WinRom23 => "win+rom23",
            Self::Uefi11 => "uefi11",
            Self::Uefi23 => "uefi23",
            Self::UefiRom23 => "uefi+rom23",
            Self::RedHat => "redhat",
            Self::RedHatRom => "redhat+rom",
            Self::All => "all",
        }
    }

    /// The profile virt-firmware calls `name`.
    ///
    /// ```
    /// use nvram::secureboot::MicrosoftDb;
    /// assert_eq!(MicrosoftDb::by_name("uefi+rom23"), Some(MicrosoftDb::UefiRom23));
    /// assert_eq!(MicrosoftDb::by_name("win95"), None);
    /// ```
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL_PROFILES.into_iter().find(|p| p.name() == name)
    }

    /// Its certificates in the order virt-firmware adds them (all owned by Microsoft's GUID).
    ///
    /// ```
    /// use nvram::secureboot::MicrosoftDb;
    /// let names: Vec<_> = MicrosoftDb::Win11.certificates().iter().map(|c| c.name).collect();
    /// assert_eq!(names, ["Microsoft Windows Production PCA 2011", "Windows UEFI CA 2023"]);
    /// ```
    pub fn certificates(self) -> Vec<KnownCertificate> {
        use MicrosoftDb::*;
        let mut out = Vec::new();
        // virt-firmware's order: Windows 2011, Windows 2023, UEFI 2011, UEFI 2023, Red Hat,
        // Option ROM 2023.
        if matches!(self, Win11 | All) {
            out.push(WIN_2011);
        }
        if matches!(self, Win11 | Win23 | WinRom23 | All) {
            out.push(WIN_2023);
        }
        if matches!(self, Uefi11 | All) {
            out.push(UEFI_2011);
        }
        if matches!(self, Uefi11 | Uefi23 | UefiRom23 | All) {
            out.push(UEFI_2023);
        }
        if matches!(self, RedHat | RedHatRom) {
            out.push(REDHAT_2024);
        }
        if matches!(self, WinRom23 | UefiRom23 | RedHatRom | All) {
            out.push(ROM_2023);
        }
        out
    }

    /// The owner GUID virt-firmware gives every certificate of a profile: Microsoft's.
    pub fn owner(self) -> Guid {
        guid::MICROSOFT_OWNER
    }
}

/// A vendor's platform key, as virt-fw-vars' `--enroll-redhat` and `--enroll-microsoft`
/// enrol it (certificates from virtfw-libefi's bundle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Red Hat's "Red Hat Secure Boot (PK/KEK key 1)" (2014) as PK and as KEK, owned by
    /// OVMF's a0baa8a3-….
    RedHat,
    /// Microsoft's "Windows OEM Devices PK" (2023) as PK, owned by Microsoft's GUID; no KEK
    /// of its own (Microsoft's KEK certificates come with `microsoft`).
    Microsoft,
}

impl Platform {
    /// The PK: one certificate with its owner.
    pub fn pk(self) -> crate::certs::SignatureInput {
        let (owner, der) = match self {
            Self::RedHat => (OVMF_ENROLL_DEFAULT_KEYS, bundled::REDHAT_PK_KEK_2014),
            Self::Microsoft => (guid::MICROSOFT_OWNER, bundled::MICROSOFT_PK_2023),
        };
        let mut db = SignatureDb::default();
        db.add_x509(owner, der);
        crate::certs::SignatureInput::Lists { db, time: None }
    }

    /// What goes into KEK before Microsoft's certificates.
    pub fn kek(self) -> Option<crate::certs::SignatureInput> {
        match self {
            Self::RedHat => Some(self.pk()),
            Self::Microsoft => None,
        }
    }
}

/// A distribution (or Microsoft signing scope) whose db certificates nvram carries. Each is
/// owned by OVMF's EnrollDefaultKeys GUID, as virt-firmware's `--distro-keys` enrols it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// Red Hat UEFI CA (2024); virt-firmware's `rh-uefi`.
    RedHat,
    /// Debian Secure Boot CA (2016).
    Debian,
    /// Canonical Ltd. Master Certificate Authority (2012), for Ubuntu.
    Ubuntu,
    /// Microsoft's Windows signing CAs (Production PCA 2011, Windows UEFI CA 2023);
    /// virt-firmware's `windows`.
    Windows,
    /// Microsoft's third-party UEFI CAs (2011, 2023); virt-firmware's `ms-uefi`.
    MicrosoftUefi,
    /// Microsoft's Option ROM UEFI CA 2023; virt-firmware's `ms-uefi-rom`.
    MicrosoftUefiRom,
}

impl Distro {
    /// The db certificates (DER), in virt-firmware's order.
    pub fn certificates(self) -> &'static [&'static [u8]] {
        match self {
            Self::RedHat => &[bundled::REDHAT_DB_UEFI_2024],
            Self::Debian => &[distro_certs::DEBIAN_SECURE_BOOT_CA_2016],
            Self::Ubuntu => &[distro_certs::CANONICAL_MASTER_CA_2012],
            Self::Windows => &[
                bundled::MICROSOFT_DB_WINDOWS_2011,
                bundled::MICROSOFT_DB_WINDOWS_2023,
            ],
            Self::MicrosoftUefi => &[
                bundled::MICROSOFT_DB_UEFI_2011,
                bundled::MICROSOFT_DB_UEFI_2023,
            ],
            Self::MicrosoftUefiRom => &[bundled::MICROSOFT_DB_UEFI_ROM_2023],
        }
    }

    /// The distribution called `name`, also by virt-firmware's name (`rh-uefi`).
    ///
    /// ```
    /// use nvram::secureboot::Distro;
    /// assert_eq!(Distro::from_name("rh-uefi"), Some(Distro::RedHat));
    /// assert_eq!(Distro::from_name("Debian"), Some(Distro::Debian));
    /// assert_eq!(Distro::from_name("slackware"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "redhat" | "rh-uefi" => Some(Self::RedHat),
            "debian" => Some(Self::Debian),
            "ubuntu" => Some(Self::Ubuntu),
            "windows" => Some(Self::Windows),
            "ms-uefi" => Some(Self::MicrosoftUefi),
            "ms-uefi-rom" => Some(Self::MicrosoftUefiRom),
            _ => None,
        }
    }
}

/// The owner GUID of the external-management entry virt-firmware writes.
pub const EXTERNAL_MANAGEMENT_OWNER: Guid = OVMF_ENROLL_DEFAULT_KEYS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_certificates_have_the_names_they_claim() {
        for p in MicrosoftDb::ALL_PROFILES {
            for c in p.certificates() {
                let subject = varstore::secureboot::certificate_subject(c.der).unwrap();
                assert_eq!(subject, c.name, "{}", p.name());
            }
        }
        assert_eq!(MicrosoftDb::All.certificates().len(), 5);
    }
}
