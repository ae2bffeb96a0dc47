//! Which QEMU release's `cfi.pflash01` the device reproduces.

use std::fmt;
use std::str::FromStr;

/// The QEMU release whose `cfi.pflash01` behaviour a [`Pflash`](crate::Pflash) reproduces
/// exactly, chosen with [`Geometry::compat`](crate::Geometry::compat).
///
/// QEMU's device changed between releases in ways a guest can see (the status register after
/// some buffered writes, which block a buffered write stages), so a VMM that takes over a
/// varstore from one QEMU, or replays a trace recorded under one, picks that release. It is
/// part of the device's configuration like QEMU's own version-dependent properties (for
/// example `old-multiple-chip-handling`, which machine types set for old versions).
///
/// Every difference is documented in the device code next to the branch that takes it, with
/// the QEMU commit that introduced it. In short:
///
/// | behaviour | `Qemu7_2` | `Qemu10_0` |
/// |---|---|---|
/// | block staged by a buffered write (0xE8) | the one addressed by the count cycle | the one addressed by the first data cycle |
/// | buffered write of one word (count 0) | programs the word | fails with a program error (status 0x90), nothing written |
/// | buffer counter after the last data cycle (seen only in snapshots) | wrapped to `u64::MAX` | 0 |
///
/// `Qemu7_2` is Debian 12's QEMU 7.2 (7.2.x stable, with the update buffer of 7.2.9);
/// `Qemu10_0` is QEMU 10.0 (checked against 10.0.2), and since it is the newest, the default.
///
/// ```
/// use pflash::{Compat, Geometry, Pflash};
///
/// assert_eq!(Compat::default(), Compat::Qemu10_0);
/// assert_eq!("qemu-7.2".parse::<Compat>(), Ok(Compat::Qemu7_2));
/// assert_eq!(Compat::Qemu10_0.to_string(), "qemu-10.0");
///
/// // A one-word buffered write: QEMU 7.2 programs it, QEMU 10.0 refuses it.
/// for (compat, status, byte) in [(Compat::Qemu7_2, 0x80, 0x42), (Compat::Qemu10_0, 0x90, 0xff)] {
///     let g = Geometry::q35(4096).unwrap().with_compat(compat);
///     let mut dev: Pflash = Pflash::new(g, vec![0xff; 4096], Default::default(), Default::default()).unwrap();
///     dev.write(0x100, &[0xe8]);
///     dev.write(0x100, &[0x00]); // count - 1 = 0: one word
///     dev.write(0x100, &[0x42]);
///     let mut s = [0u8];
///     dev.read(0x100, &mut s);
///     assert_eq!(s[0], status);
///     dev.write(0x100, &[0xd0]);
///     dev.write(0x100, &[0xff]);
///     assert_eq!(dev.memory()[0x100], byte);
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Compat {
    /// QEMU 7.2 as Debian 12 ships it (7.2.x stable).
    #[cfg_attr(feature = "serde", serde(rename = "qemu-7.2"))]
    Qemu7_2,
    /// QEMU 10.0 (the behaviour QEMU has had since 9.1 and 9.0.1).
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "qemu-10.0"))]
    Qemu10_0,
}

impl Compat {
    /// Every compatibility, oldest first.
    pub const ALL: [Compat; 2] = [Compat::Qemu7_2, Compat::Qemu10_0];

    /// The name used on command lines and in messages: `qemu-7.2`, `qemu-10.0`.
    pub fn name(self) -> &'static str {
        match self {
            Compat::Qemu7_2 => "qemu-7.2",
            Compat::Qemu10_0 => "qemu-10.0",
        }
    }
}

impl fmt::Display for Compat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Compat::name`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown QEMU compatibility {0:?}: expected qemu-7.2 or qemu-10.0")]
pub struct UnknownCompat(pub String);

impl FromStr for Compat {
    type Err = UnknownCompat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compat::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCompat(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Compat::ALL {
            assert_eq!(c.name().parse::<Compat>(), Ok(c));
        }
        assert!("qemu-8.0".parse::<Compat>().is_err());
    }
}
