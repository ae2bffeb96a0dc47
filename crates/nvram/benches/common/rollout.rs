//! What virt-fw-vars needs for the Microsoft 2023 rollout, shared by the fleet benchmarks.

use std::ffi::OsString;
use std::path::Path;

/// virt-fw-vars arguments adding the four Microsoft 2023 certificates (KEK 2K CA 2023 and
/// the three 2023 db CAs, owner Microsoft), written as DER files into `dir`.
pub fn virt_fw_vars_microsoft_2023_args(dir: &Path) -> Vec<OsString> {
    let microsoft = "77fa9abd-0359-4d32-bd60-28f4e78f784b";
    let mut args: Vec<OsString> = Vec::new();
    for (flag, name, der) in [
        (
            "--add-kek",
            "kek2023.der",
            nvram::certs::bundled::MICROSOFT_KEK_2023,
        ),
        (
            "--add-db",
            "win2023.der",
            nvram::certs::bundled::MICROSOFT_DB_WINDOWS_2023,
        ),
        (
            "--add-db",
            "uefi2023.der",
            nvram::certs::bundled::MICROSOFT_DB_UEFI_2023,
        ),
        (
            "--add-db",
            "rom2023.der",
            nvram::certs::bundled::MICROSOFT_DB_UEFI_ROM_2023,
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, der).unwrap();
        args.extend([flag.into(), microsoft.into(), path.into_os_string()]);
    }
    args
}
