//! Value types and parsers shared by the subcommands' arguments: every option is parsed by
//! clap into a typed value, so `run()` functions never parse text.

use clap::ValueEnum;
use nvram::secureboot::{Distro, Microsoft, MicrosoftDb};
use varstore::edit::Strategy;
use varstore::{guid, Attributes, EfiTime, Guid};

/// How an edit is written: `append` like the firmware (only clears bits; compacts first when
/// the store is full), `compact` rewrites the variable area with the live variables only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// New copy after the last record, old copies marked replaced/deleted (what the firmware does).
    Append,
    /// Rewrite the variable area with the live variables only (what a reclaim and virt-fw-vars do).
    Compact,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Append => Strategy::Append,
            StrategyArg::Compact => Strategy::Compact,
        }
    }
}

/// Which Microsoft certificates: 2011, 2023 or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MicrosoftArg {
    /// KEK CA 2011; Windows Production PCA 2011 and UEFI CA 2011.
    #[value(name = "2011")]
    Y2011,
    /// KEK 2K CA 2023; Windows UEFI CA 2023, Microsoft UEFI CA 2023, Option ROM UEFI CA 2023.
    #[value(name = "2023")]
    Y2023,
    /// Both generations.
    All,
}

impl From<MicrosoftArg> for Microsoft {
    fn from(m: MicrosoftArg) -> Self {
        match m {
            MicrosoftArg::Y2011 => Microsoft::Y2011,
            MicrosoftArg::Y2023 => Microsoft::Y2023,
            MicrosoftArg::All => Microsoft::All,
        }
    }
}

/// virt-firmware's db profiles (`--microsoft-db`): which Microsoft (or Red Hat) certificates
/// go into db.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MicrosoftDbArg {
    /// Windows Production PCA 2011 and Windows UEFI CA 2023.
    Win11,
    /// Windows UEFI CA 2023.
    Win23,
    /// Windows UEFI CA 2023 and Option ROM UEFI CA 2023.
    #[value(name = "win+rom23")]
    WinRom23,
    /// Microsoft UEFI CA 2011 and 2023 (shim, drivers; not Windows).
    Uefi11,
    /// Microsoft UEFI CA 2023.
    Uefi23,
    /// Microsoft UEFI CA 2023 and Option ROM UEFI CA 2023.
    #[value(name = "uefi+rom23")]
    UefiRom23,
    /// Red Hat UEFI CA 2024.
    Redhat,
    /// Red Hat UEFI CA 2024 and Option ROM UEFI CA 2023.
    #[value(name = "redhat+rom")]
    RedhatRom,
    /// All five Microsoft db certificates.
    All,
}

impl From<MicrosoftDbArg> for MicrosoftDb {
    fn from(m: MicrosoftDbArg) -> Self {
        match m {
            MicrosoftDbArg::Win11 => MicrosoftDb::Win11,
            MicrosoftDbArg::Win23 => MicrosoftDb::Win23,
            MicrosoftDbArg::WinRom23 => MicrosoftDb::WinRom23,
            MicrosoftDbArg::Uefi11 => MicrosoftDb::Uefi11,
            MicrosoftDbArg::Uefi23 => MicrosoftDb::Uefi23,
            MicrosoftDbArg::UefiRom23 => MicrosoftDb::UefiRom23,
            MicrosoftDbArg::Redhat => MicrosoftDb::RedHat,
            MicrosoftDbArg::RedhatRom => MicrosoftDb::RedHatRom,
            MicrosoftDbArg::All => MicrosoftDb::All,
        }
    }
}

/// A SHA-256 hash as 64 hex digits.
pub fn sha256(text: &str) -> Result<[u8; 32], nvram::secureboot::HashError> {
    nvram::secureboot::parse_sha256(text)
}

/// Distribution db certificates that nvram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistroArg {
    /// Debian Secure Boot CA (2016): Debian's grub, shim helpers and kernels.
    Debian,
    /// Red Hat UEFI CA (2024), virt-firmware's rh-uefi.
    #[value(alias = "rh-uefi")]
    Redhat,
    /// Canonical Ltd. Master Certificate Authority (2012): Ubuntu's grub and kernels.
    Ubuntu,
    /// Microsoft's Windows CAs (Production PCA 2011, Windows UEFI CA 2023), owned as
    /// virt-fw-vars' --distro-keys windows owns them.
    Windows,
    /// Microsoft's third-party UEFI CAs (2011, 2023).
    MsUefi,
    /// Microsoft's Option ROM UEFI CA 2023.
    MsUefiRom,
}

impl From<DistroArg> for Distro {
    fn from(d: DistroArg) -> Self {
        match d {
            DistroArg::Debian => Distro::Debian,
            DistroArg::Redhat => Distro::RedHat,
            DistroArg::Ubuntu => Distro::Ubuntu,
            DistroArg::Windows => Distro::Windows,
            DistroArg::MsUefi => Distro::MicrosoftUefi,
            DistroArg::MsUefiRom => Distro::MicrosoftUefiRom,
        }
    }
}

/// What a value that [`GuidParser`] refuses is not.
const NOT_A_GUID: &str = "not a GUID or a known GUID name (such as EfiGlobalVariable)";

/// The value parser of every option that takes a GUID (`set`/`get`/`delete --guid`,
/// `secureboot --owner`, `apply --add-owner/--enroll-owner`): a GUID
/// (`8be4df61-93ca-11d2-aa0d-00e098032b8c`, any case) or a well-known GUID name such as
/// `EfiGlobalVariable` ([`varstore::guid::parse`]). A refused value is quoted escaped, as
/// nvram's own errors quote it (clap's own message would print it raw).
#[derive(Debug, Clone, Copy)]
pub struct GuidParser;

impl clap::builder::TypedValueParser for GuidParser {
    type Value = Guid;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Guid, clap::Error> {
        if let Some(g) = value.to_str().and_then(guid::parse) {
            return Ok(g);
        }
        let flag = arg
            .and_then(clap::Arg::get_long)
            .map_or_else(|| "GUID".to_string(), |l| format!("--{l}"));
        let quoted = format!("{:?}", varstore::json::bounded(&value.to_string_lossy()));
        let message = format!(
            "{flag} {} is {NOT_A_GUID}\n",
            nvram::escape::terminal(&quoted)
        );
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

/// `--attr`: comma-separated nv, bs, rt, at, or a number ([`nvram::edit::parse_attributes`]).
pub fn attributes(text: &str) -> Result<Attributes, nvram::edit::AttributeError> {
    nvram::edit::parse_attributes(text)
}

/// `--time`: the 16-byte EFI_TIME as 32 hex digits.
pub fn efi_time(text: &str) -> Result<EfiTime, &'static str> {
    hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(EfiTime)
        .ok_or("not 32 hex digits (a 16-byte EFI_TIME)")
}

/// Variable data encoded from an option's text by its [`nvram::edit::DataKind`] (a newtype:
/// clap would take a bare `Vec<u8>` for a list of values).
#[derive(Debug, Clone)]
pub struct Data(pub Vec<u8>);

/// The value parser of `set --u8/--u16/--u32/--string/--ascii/--data-hex`.
pub fn data(kind: nvram::edit::DataKind) -> impl clap::builder::TypedValueParser<Value = Data> {
    use clap::builder::TypedValueParser as _;
    clap::builder::StringValueParser::new()
        .try_map(move |text: String| kind.encode(&text).map(Data))
}

/// `apply --set NAME[@GUID][:ATTRS]=KIND:VALUE` ([`nvram::apply::parse_set`]).
pub fn set_step(text: &str) -> Result<nvram::apply::Step, nvram::apply::SpecError> {
    nvram::apply::parse_set(text)
}

/// `apply --delete NAME[@GUID]` ([`nvram::apply::parse_delete`]).
pub fn delete_step(text: &str) -> Result<nvram::apply::Step, nvram::apply::SpecError> {
    nvram::apply::parse_delete(text)
}

/// `--layout`: a built-in layout by name.
pub fn layout(text: &str) -> Result<&'static varstore::Layout, String> {
    varstore::Layout::by_name(text).ok_or_else(|| {
        let names: Vec<&str> = varstore::LAYOUTS.iter().map(|l| l.name).collect();
        format!("unknown layout: choose one of {}", names.join(", "))
    })
}

/// A boot entry number: hex, with or without `Boot` (`0003`, `Boot0003`).
pub fn boot_number(text: &str) -> Result<u16, &'static str> {
    varstore::boot::parse_option_number(text).ok_or("not a boot entry number (hex, e.g. 0003)")
}

/// `boot order`: boot entry numbers, comma-separated (empty items ignored).
#[derive(Debug, Clone)]
pub struct BootOrder(pub Vec<u16>);

/// The value parser of [`BootOrder`].
pub fn boot_order(text: &str) -> Result<BootOrder, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|n| boot_number(n).map_err(|e| format!("{n:?}: {e}")))
        .collect::<Result<_, _>>()
        .map(BootOrder)
}

/// `boot add --partition UNIQUE-PARTITION-GUID/NUMBER`.
#[derive(Debug, Clone, Copy)]
pub struct Partition {
    /// The GPT partition's unique GUID.
    pub guid: Guid,
    /// Its number, from 1.
    pub number: u32,
}

/// The value parser of [`Partition`].
pub fn partition(text: &str) -> Result<Partition, String> {
    let (g, n) = text
        .split_once('/')
        .ok_or_else(|| "expected GUID/NUMBER".to_string())?;
    let guid = Guid::try_parse(g.trim()).map_err(|_| format!("{g:?} is not a GUID"))?;
    let number = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{n:?} is not a partition number"))?;
    Ok(Partition { guid, number })
}
