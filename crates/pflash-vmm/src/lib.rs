//! A small KVM VMM that runs the `pflash` device.
#![warn(missing_docs)]

pub mod exits;
pub mod flash;
pub mod guest;
pub mod layout;
pub mod vm;
