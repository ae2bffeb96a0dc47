//! GUIDs that name things in a varstore, and their human names.

use uguid::guid;
pub use uguid::Guid;

/// `gEfiSystemNvDataFvGuid`: the FileSystemGuid of a firmware volume that holds NV variables (spec §2).
pub const SYSTEM_NV_DATA_FV: Guid = guid!("fff12b8d-7696-4c8b-a985-2747075b4f50");
/// `gEfiAuthenticatedVariableGuid`: store signature of the authenticated (60-byte header) format (spec §4).
pub const AUTHENTICATED_VARIABLE_STORE: Guid = guid!("aaf32c78-947b-439a-a180-2e144ec37792");
/// `gEfiVariableGuid`: store signature of the plain (32-byte header) format (spec §4).
pub const VARIABLE_STORE: Guid = guid!("ddcf3616-3275-4164-98b6-fe85707ffe7d");
/// `gEdkiiWorkingBlockSignatureGuid`: signature of the FTW working block (spec §9.1).
pub const FTW_WORKING_BLOCK: Guid = guid!("9e58292b-7c68-497d-a0ce-6500fd9f1b95");

/// `EFI_GLOBAL_VARIABLE`: Boot####, BootOrder, PK, KEK, Lang, …
pub const EFI_GLOBAL_VARIABLE: Guid = guid!("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: db, dbx, dbt.
pub const IMAGE_SECURITY_DATABASE: Guid = guid!("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// shim's vendor GUID: MokList, MokListX, SbatLevel.
pub const SHIM_LOCK: Guid = guid!("605dab50-e046-4300-abb6-3dd810dd8b23");

/// `EFI_CERT_X509_GUID` signature type.
pub const CERT_X509: Guid = guid!("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_CERT_SHA256_GUID` signature type.
pub const CERT_SHA256: Guid = guid!("c1c41626-504c-4092-aca9-41f936934328");

/// Microsoft's signature owner GUID.
pub const MICROSOFT_OWNER: Guid = guid!("77fa9abd-0359-4d32-bd60-28f4e78f784b");

/// Known GUIDs and the name people use for them, for display.
const NAMES: &[(Guid, &str)] = &[
    (EFI_GLOBAL_VARIABLE, "EfiGlobalVariable"),
    (IMAGE_SECURITY_DATABASE, "EfiImageSecurityDatabase"),
    (SHIM_LOCK, "ShimLock"),
    (guid!("d9bee56e-75dc-49d9-b4d7-b534210f637a"), "EfiCertDb"),
    (
        guid!("9073e4e0-60ec-4b6e-9903-4c223c260f3c"),
        "EfiVendorKeysNv",
    ),
    (
        guid!("f0a30bc7-af08-4556-99c4-001009c93a44"),
        "EfiSecureBootEnableDisable",
    ),
    (
        guid!("c076ec0c-7028-4399-a072-71ee5c448b9f"),
        "EfiCustomModeEnable",
    ),
    (guid!("eb704011-1402-11d3-8e77-00a0c969723b"), "MtcVendor"),
    (
        guid!("4c19049f-4137-4dd3-9c10-8b97a83ffdfa"),
        "MemoryTypeInformation",
    ),
    (
        guid!("04b37fe8-f6ae-480b-bdd5-37d98c5e89aa"),
        "VarErrorFlag",
    ),
    (guid!("59324945-ec44-4c0d-b1cd-9db139df070c"), "IScsiConfig"),
    (
        guid!("4b47d616-a8d6-4552-9d44-ccad2e0f4cf9"),
        "IScsiConfigHii",
    ),
    (MICROSOFT_OWNER, "Microsoft"),
    (CERT_X509, "EfiCertX509"),
    (CERT_SHA256, "EfiCertSha256"),
];

/// The well-known name of `guid`, if it has one.
///
/// ```
/// assert_eq!(varstore::guid::name_of(varstore::guid::EFI_GLOBAL_VARIABLE), Some("EfiGlobalVariable"));
/// ```
pub fn name_of(guid: Guid) -> Option<&'static str> {
    NAMES.iter().find(|(g, _)| *g == guid).map(|(_, n)| *n)
}

/// Parses a GUID given either as canonical text or as one of the well-known names above
/// (case-insensitive), so `EfiGlobalVariable` and its GUID's text name the same namespace.
///
/// ```
/// use varstore::guid;
/// assert_eq!(guid::parse("efiglobalvariable"), Some(guid::EFI_GLOBAL_VARIABLE));
/// assert_eq!(guid::parse("8BE4DF61-93CA-11D2-AA0D-00E098032B8C"), Some(guid::EFI_GLOBAL_VARIABLE));
/// ```
pub fn parse(text: &str) -> Option<Guid> {
    if let Ok(g) = Guid::try_parse(text) {
        return Some(g);
    }
    NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(text))
        .map(|(g, _)| *g)
}

/// Lower-case canonical text, the form JSON and the firmware tools use.
pub fn to_text(guid: Guid) -> String {
    guid.to_string()
}
