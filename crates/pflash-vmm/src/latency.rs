//! The time the vars flash device's write call takes per MMIO write exit: what a guest's
//! flash write costs the VMM on top of the exit itself, persistence included (with the
//! background writer, a copy into its backlog; with the inline writer, the file's writes at
//! flush points).

use std::time::Duration;

use hdrhistogram::Histogram;

/// Longest latency told apart (1 s); longer ones count as 1 s.
const MAX_NANOS: u64 = 1_000_000_000;

/// A histogram of handler latencies (three significant digits, bounded memory).
#[derive(Debug, Clone)]
pub struct HandlerLatency(Histogram<u64>);

impl Default for HandlerLatency {
    fn default() -> Self {
        HandlerLatency(
            Histogram::new_with_bounds(1, MAX_NANOS, 3)
                .expect("constant bounds: 1 ns to 1 s, 3 significant digits"),
        )
    }
}

/// Percentiles of a [`HandlerLatency`], in nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Calls measured.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Slowest call.
    pub max_ns: u64,
}

impl HandlerLatency {
    /// Adds one call's duration.
    pub fn record(&mut self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(MAX_NANOS);
        self.0.saturating_record(nanos.clamp(1, MAX_NANOS));
    }

    /// The percentiles so far.
    ///
    /// ```
    /// use pflash_vmm::latency::HandlerLatency;
    /// use std::time::Duration;
    ///
    /// let mut latency = HandlerLatency::default();
    /// for nanos in 1..=100 {
    ///     latency.record(Duration::from_nanos(nanos * 10));
    /// }
    /// let summary = latency.summary();
    /// assert_eq!((summary.count, summary.p50_ns, summary.max_ns), (100, 500, 1000));
    /// ```
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        LatencySummary {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}
