//! The CFI 01 flash device model (see `../shared/spec/pflash-cfi01.md`).
//!
//! Empty for now: the device arrives with the pflash issue.
