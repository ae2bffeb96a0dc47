//! Problems found in a readable store, each with where it is and what the firmware will do.

use serde::Serialize;
use std::fmt;

/// How serious a finding is for the health of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Unusual but harmless; real firmware-written stores contain these.
    Notice,
    /// The firmware copes, but changes the store at the next boot or loses something.
    Warning,
    /// The firmware cannot use the store as it is.
    Error,
}

/// What the firmware does with a store at its next boot, from harmless to fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareVerdict {
    /// Uses it as it is.
    Accept,
    /// Re-initialises the fault-tolerant-write working block (no variable is affected).
    ReinitialiseFtw,
    /// Compacts the store at boot (spec §8.5): drops dead and incomplete records.
    ReclaimAtBoot,
    /// Finishes a pending fault-tolerant write: copies the spare area over the store (spec §9.4).
    RestartFtwWrite,
    /// Cannot use it: OVMF x86 stops during DXE (spec §8.6); ArmVirt re-formats it, losing
    /// every variable.
    Refuse,
}

impl FirmwareVerdict {
    /// A sentence for people.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Accept => "accept: the firmware uses the store as it is",
            Self::ReinitialiseFtw => {
                "accept, re-initialising the fault-tolerant-write working block at next boot"
            }
            Self::ReclaimAtBoot => {
                "reclaim at next boot: the firmware compacts the store, dropping dead and incomplete records"
            }
            Self::RestartFtwWrite => {
                "finish a pending fault-tolerant write at next boot: the spare area is copied over the store"
            }
            Self::Refuse => {
                "refuse: OVMF cannot boot with this store (it stops in DXE); ArmVirt firmware re-formats it, losing every variable"
            }
        }
    }
}

impl fmt::Display for FirmwareVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Self::Accept => "accept",
            Self::ReinitialiseFtw => "reinitialise-ftw",
            Self::ReclaimAtBoot => "reclaim-at-boot",
            Self::RestartFtwWrite => "restart-ftw-write",
            Self::Refuse => "refuse",
        };
        f.write_str(word)
    }
}

/// One problem in a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// File offset of the field.
    pub offset: u64,
    /// The field, in the edk2 headers' words (`FV header Checksum`, `variable State`, …).
    pub field: &'static str,
    /// What is wrong, for people.
    pub message: String,
    /// What the firmware does about it.
    pub verdict: FirmwareVerdict,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{severity}: offset 0x{:X} ({}): {} [{}]",
            self.offset, self.field, self.message, self.verdict
        )
    }
}
