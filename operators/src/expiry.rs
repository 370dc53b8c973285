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

/// Keys by the event time (Unix ms) from which a sweep should look at them again, in
/// minute buckets: a sweep visits the keys that may release something, not every key held.
/// A sweep over every key cost the whole state each time, and nothing at all while the
/// stream is younger than the horizon.
///
/// A key may be scheduled more than once (again, earlier, when a late event lands before
/// its scheduled time); the owner treats a visit as "look now" and schedules the key again
/// if it still holds something.
#[derive(Debug)]
pub(crate) struct DueIndex<K> {
    buckets: std::collections::BTreeMap<i64, Vec<K>>,
}

impl<K> Default for DueIndex<K> {
    fn default() -> Self {
        DueIndex {
            buckets: std::collections::BTreeMap::new(),
        }
    }
}

/// The width of a [`DueIndex`] bucket: a key is visited up to this long after its time.
const BUCKET_MS: i64 = 60_000;

impl<K> DueIndex<K> {
    /// Looks at `key` again once the release time passes `time_ms`.
    pub(crate) fn schedule(&mut self, key: K, time_ms: i64) {
        let bucket = time_ms.div_euclid(BUCKET_MS);
        self.buckets.entry(bucket).or_default().push(key);
    }

    /// Takes the keys scheduled at times whole buckets before `release_ms` (everything
    /// before it may be released).
    pub(crate) fn take_due(&mut self, release_ms: i64) -> Vec<K> {
        let mut due = Vec::new();
        let first_kept = release_ms.div_euclid(BUCKET_MS);
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= first_kept {
                break;
            }
            due.append(&mut entry.remove());
        }
        due
    }
}
