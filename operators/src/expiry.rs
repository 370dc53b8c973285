//! When a stateful operator releases what it holds: one clock and one sweep rule for every
//! operator.
//!
//! A worker's clock is the newest receive time (`received_at_ms`, Unix ms, the gateway's
//! clock) among the records the operator has applied: unlike event time it only moves
//! forward, and an event that arrives later than the lateness horizon after it happened is not
//! applied to state at all (`crate::is_late`), so state whose time lies more than the
//! operator's keep before the clock can no longer change. Workers' clocks differ by how far
//! their partitions are read; `Retention::margin_ms` covers that.

/// One operator's clock on one worker and its sweeps. Sweeping every map on every batch
/// would cost the whole state per batch, so sweeps are amortised: one is due once as many
/// records were applied as a quarter of the entries held (plus 1,024), which keeps a sweep's
/// cost per record constant and the entries past their keep at most a quarter more.
#[derive(Debug, Clone)]
pub(crate) struct Expiry {
    clock: i64,
    since_sweep: usize,
    keep_ms: i64,
}

impl Expiry {
    /// A clock that has seen nothing; state is kept `keep_ms` behind it.
    pub(crate) fn new(keep_ms: i64) -> Expiry {
        Expiry {
            clock: i64::MIN,
            since_sweep: 0,
            keep_ms,
        }
    }

    /// Notes a record applied, received at `received_at_ms`.
    pub(crate) fn observe(&mut self, received_at_ms: i64) {
        self.clock = self.clock.max(received_at_ms);
        self.since_sweep += 1;
    }

    /// Everything before this time (Unix ms) can no longer change.
    pub(crate) fn cutoff(&self) -> i64 {
        self.clock.saturating_sub(self.keep_ms)
    }

    /// The cutoff when a sweep of `entries` held is due, and then starts counting anew.
    pub(crate) fn sweep_due(&mut self, entries: usize) -> Option<i64> {
        if self.since_sweep < entries / 4 + 1024 {
            return None;
        }
        self.since_sweep = 0;
        Some(self.cutoff())
    }
}
