//! Microsoft's certificate generations and signed dbx updates from virtfw-libefi's bundle:
//! what `--microsoft` and `--dbx` choose between, and what [`super::status`] looks for.

use super::Database;
use crate::certs::bundled;

/// Which generation of Microsoft's certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Microsoft {
    /// KEK CA 2011; Windows Production PCA 2011 and UEFI CA 2011 in db.
    Y2011,
    /// KEK 2K CA 2023; Windows UEFI CA 2023, Microsoft UEFI CA 2023 and Option ROM UEFI CA
    /// 2023 in db.
    Y2023,
    /// Both.
    All,
}

/// A Microsoft certificate nvram knows (from virtfw-libefi's bundle).
#[derive(Debug, Clone, Copy)]
pub struct KnownCertificate {
    /// Its subject CN.
    pub name: &'static str,
    /// The database it belongs in.
    pub database: Database,
    /// 2011 or 2023.
    pub year: u16,
    /// DER.
    pub der: &'static [u8],
}

/// Microsoft's KEK and db certificates, in the order virt-firmware enrols them.
pub const MICROSOFT_CERTIFICATES: [KnownCertificate; 7] = [
    KnownCertificate {
        name: "Microsoft Corporation KEK CA 2011",
        database: Database::Kek,
        year: 2011,
        der: bundled::MICROSOFT_KEK_2011,
    },
    KnownCertificate {
        name: "Microsoft Corporation KEK 2K CA 2023",
        database: Database::Kek,
        year: 2023,
        der: bundled::MICROSOFT_KEK_2023,
    },
    KnownCertificate {
        name: "Microsoft Windows Production PCA 2011",
        database: Database::Db,
        year: 2011,
        der: bundled::MICROSOFT_DB_WINDOWS_2011,
    },
    KnownCertificate {
        name: "Windows UEFI CA 2023",
        database: Database::Db,
        year: 2023,
        der: bundled::MICROSOFT_DB_WINDOWS_2023,
    },
    KnownCertificate {
        name: "Microsoft Corporation UEFI CA 2011",
        database: Database::Db,
        year: 2011,
        der: bundled::MICROSOFT_DB_UEFI_2011,
    },
    KnownCertificate {
        name: "Microsoft UEFI CA 2023",
        database: Database::Db,
        year: 2023,
        der: bundled::MICROSOFT_DB_UEFI_2023,
    },
    KnownCertificate {
        name: "Microsoft Option ROM UEFI CA 2023",
        database: Database::Db,
        year: 2023,
        der: bundled::MICROSOFT_DB_UEFI_ROM_2023,
    },
];

/// The CPU architecture a dbx update is for: Microsoft publishes one revocation list per
/// architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbxArch {
    /// x86_64 (OVMF).
    X64,
    /// aarch64 (AAVMF / ArmVirtQemu).
    Aa64,
}

impl DbxArch {
    /// The architecture of the firmware a built-in layout belongs to (`aavmf` is aarch64,
    /// the OVMF layouts x86_64), or `None` for an architecture Microsoft publishes no dbx
    /// update for (riscv64, loongarch64).
    pub fn of_layout(layout: &varstore::Layout) -> Option<Self> {
        match layout.arch {
            "x86_64" => Some(Self::X64),
            "aarch64" => Some(Self::Aa64),
            _ => None,
        }
    }
}

impl Microsoft {
    /// Microsoft's signed dbx updates (`EFI_VARIABLE_AUTHENTICATION_2` + signature lists) for
    /// `arch`, from virtfw-libefi's bundle: the one signed with the 2011 KEK, the one signed
    /// with the 2023 KEK, or both.
    pub fn dbx_updates(self, arch: DbxArch) -> Vec<&'static [u8]> {
        use crate::certs::microsoft_dbx as dbx;
        let (y2011, y2023) = match arch {
            DbxArch::X64 => (dbx::DBX_2011_X86_64, dbx::DBX_2023_X86_64),
            DbxArch::Aa64 => (dbx::DBX_2011_AARCH64, dbx::DBX_2023_AARCH64),
        };
        match self {
            Self::Y2011 => vec![y2011],
            Self::Y2023 => vec![y2023],
            Self::All => vec![y2011, y2023],
        }
    }

    /// Its certificates for `database`.
    pub fn certificates(
        self,
        database: Database,
    ) -> impl Iterator<Item = &'static KnownCertificate> {
        MICROSOFT_CERTIFICATES.iter().filter(move |c| {
            c.database == database
                && match self {
                    Self::Y2011 => c.year == 2011,
                    Self::Y2023 => c.year == 2023,
                    Self::All => true,
                }
        })
    }
}
