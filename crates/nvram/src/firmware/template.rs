//! Choosing a VM's varstore template: from a descriptor picked by criteria (libvirt's
//! autoselection) or named, with the format it must have.

use super::{varstore_template, Catalog, Criteria, Firmware, FirmwareError};
use crate::container::Format;
use std::path::PathBuf;

/// QEMU's target name for the architecture this program runs on (`x86_64`, `aarch64`,
/// `ppc64`, …): the default architecture of a VM.
///
/// ```
/// assert!(!nvram::firmware::host_arch().is_empty());
/// ```
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// Which descriptor a template comes from.
#[derive(Debug, Clone)]
pub enum FirmwareChoice {
    /// The first descriptor that fits (in priority order, as libvirt picks).
    Auto(Criteria),
    /// The descriptor with this file name (`.json` may be left out).
    Named(String),
}

/// A varstore template chosen from a descriptor.
#[derive(Debug, Clone)]
pub struct ChosenTemplate {
    /// The template image.
    pub template: PathBuf,
    /// Its format, as the descriptor says.
    pub format: Format,
    /// The descriptor.
    pub firmware: Firmware,
}

impl Catalog {
    /// The varstore template of the descriptor `choice` picks, which must be in `format` when
    /// one is given (with [`FirmwareChoice::Auto`] the criteria should ask for it too, so that
    /// descriptors in other formats are passed over rather than refused).
    ///
    /// ```
    /// use nvram::firmware::{Catalog, Criteria, FirmwareChoice};
    /// let dir = tempfile::tempdir()?;
    /// std::fs::write(dir.path().join("60-ovmf.json"), r#"{
    ///     "description": "OVMF", "interface-types": ["uefi"],
    ///     "mapping": {"device": "flash",
    ///                 "executable": {"filename": "/fw/CODE.fd", "format": "raw"},
    ///                 "nvram-template": {"filename": "/fw/VARS.fd", "format": "raw"}},
    ///     "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
    ///     "features": [], "tags": []}"#)?;
    /// let catalog = Catalog::load(&[dir.path().to_path_buf()]);
    /// let auto = FirmwareChoice::Auto(Criteria::uefi_varstore_in("x86_64", "raw"));
    /// let chosen = catalog.template(&auto, None)?;
    /// assert_eq!(chosen.template, std::path::Path::new("/fw/VARS.fd"));
    /// let named = catalog.template(&FirmwareChoice::Named("60-ovmf".into()), None)?;
    /// assert_eq!(named.firmware.name, "60-ovmf.json");
    /// assert!(catalog.template(&named_qcow2(), Some(nvram::container::Format::Qcow2)).is_err());
    /// # fn named_qcow2() -> FirmwareChoice { FirmwareChoice::Named("60-ovmf".into()) }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn template(
        &self,
        choice: &FirmwareChoice,
        format: Option<Format>,
    ) -> Result<ChosenTemplate, FirmwareError> {
        let firmware = match choice {
            FirmwareChoice::Auto(criteria) => self.select(criteria)?,
            FirmwareChoice::Named(name) => {
                self.by_name(name).ok_or_else(|| FirmwareError::NotFound {
                    name: name.clone(),
                    dirs: self.dirs.clone(),
                })?
            }
        };
        let (template, found) = varstore_template(firmware)?;
        if let Some(wanted) = format {
            if found != wanted {
                return Err(FirmwareError::TemplateFormat {
                    name: firmware.name.clone(),
                    path: firmware.path.clone(),
                    format: found,
                    wanted,
                });
            }
        }
        Ok(ChosenTemplate {
            template: template.to_path_buf(),
            format: found,
            firmware: firmware.clone(),
        })
    }
}
