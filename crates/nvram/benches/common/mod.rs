//! Pieces shared by the benchmarks.

pub mod rollout;
