//! What an edit is told (strategy, limits) and what it reports (change, outcome, error).

use super::*;

/// How an edit is written into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Append the new copy and retire old ones by clearing state bits, like the firmware
    /// (compacting first only when the store is full).
    #[default]
    Append,
    /// Rewrite the variable area with the live variables only.
    Compact,
}

impl Strategy {
    /// The word used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Compact => "compact",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation did to the live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A variable that did not exist was created.
    Added,
    /// An existing variable got new data, attributes or timestamp.
    Replaced,
    /// The variable already had exactly this content: nothing was written.
    Unchanged,
    /// The variable was deleted.
    Deleted,
}

impl Change {
    /// A word for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What happened to the variable.
    pub change: Change,
    /// The variable area was rewritten with the live variables only (by request, or because
    /// appending did not fit).
    pub compacted: bool,
}

/// Per-variable size limits of the firmware build (spec §5.4): header + name + data must not
/// exceed them, or `SetVariable` fails and the firmware cannot read the variable back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `PcdMaxVariableSize`, for variables without the AT attribute.
    pub max_variable_size: u32,
    /// `PcdMaxAuthVariableSize`, for time-based authenticated variables.
    pub max_auth_variable_size: u32,
}

impl Limits {
    /// The limits used for a store that matches no built-in layout: the smallest of the
    /// built-in ones (OVMF 2M and ArmVirtQemu), which every firmware build here accepts.
    pub const CONSERVATIVE: Limits = Limits {
        max_variable_size: 0x2000,
        max_auth_variable_size: 0x2800,
    };

    /// The larger of the two: the firmware compacts its store at boot when less than this is
    /// free (`ReclaimForOS`, spec §8.5).
    pub fn largest(&self) -> u32 {
        self.max_variable_size.max(self.max_auth_variable_size)
    }
}

/// Why an edit was refused. Nothing is changed when an operation fails.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EditError {
    /// The image is not a readable variable store.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The firmware would refuse the store as it is; editing it would not help.
    #[error("offset 0x{offset:X} ({field}): {problem}: the firmware cannot use this store, so it is not edited")]
    Unusable {
        /// File offset of the problem.
        offset: u64,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The fault-tolerant-write queue holds an unfinished write.
    #[error("offset 0x{offset:X} (FTW write header): a fault-tolerant write is unfinished; at the next boot the firmware may copy the spare area over the store and undo any edit. Boot the VM once so the firmware finishes it, then edit")]
    PendingFtwWrite {
        /// File offset of the write header.
        offset: u64,
    },
    /// The name cannot be stored.
    #[error("variable name {:?}: {reason}", crate::json::bounded(name))]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The attributes break a rule the firmware enforces (spec §5.4).
    #[error("{}: attributes 0x{attributes:X} ({}): {reason}", crate::json::bounded(name), Attributes(*attributes))]
    InvalidAttributes {
        /// The variable.
        name: String,
        /// The attribute bits.
        attributes: u32,
        /// The rule.
        reason: &'static str,
    },
    /// Empty data: `SetVariable` treats it as a delete, so such a variable cannot exist.
    #[error(
        "{}: empty data would delete the variable; delete it instead",
        crate::json::bounded(name)
    )]
    EmptyData {
        /// The variable.
        name: String,
    },
    /// A timestamp for a variable without the AT attribute: the firmware stores none.
    #[error(
        "{}: only time-based authenticated (at) variables carry a timestamp",
        crate::json::bounded(name)
    )]
    TimestampWithoutAt {
        /// The variable.
        name: String,
    },
    /// Header + name + data exceed the firmware's per-variable limit.
    #[error("{}: {size} bytes (header + name + data) exceed the firmware's limit of {limit} bytes for {kind} variables", crate::json::bounded(name))]
    TooLarge {
        /// The variable.
        name: String,
        /// Header + name + data.
        size: usize,
        /// The limit.
        limit: u32,
        /// "authenticated" or "non-authenticated".
        kind: &'static str,
    },
    /// The store has no room even after compacting.
    #[error("{}: the store is full: the variable needs {needed} bytes, only {available} are free even after compacting", crate::json::bounded(name))]
    StoreFull {
        /// The variable.
        name: String,
        /// Bytes the record needs (aligned).
        needed: usize,
        /// Bytes free after compacting.
        available: usize,
    },
    /// No live variable with this name and GUID.
    #[error("no variable {} with GUID {guid}", crate::json::bounded(name))]
    NotFound {
        /// The name.
        name: String,
        /// The GUID.
        guid: Guid,
    },
}
