//! When a stateful operator releases what it holds: one clock for every operator, and either
//! amortised sweeps ([`Expiry::sweep_due`], for maps of small entries) or an index of keys by
//! their due time ([`DueIndex`], for keys that hold many events).
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

/// Keys by the event time (Unix ms) from which their owner should look at them again, in
/// minute buckets: a release visits the keys that may release something, not every key held
/// (a sweep over every key cost the whole state each time, and was all waste while the
/// stream is younger than the horizon).
///
/// The owner keeps each key's due time beside the key (`scheduled`, `i64::MAX` when none) and
/// goes through [`DueIndex::schedule_before`], [`DueIndex::is_due`] and
/// [`DueIndex::reschedule`]: a key scheduled earlier (a late event landed before its due time)
/// leaves its later copy in the index, and a visit from a copy that is not the key's due time
/// any more is skipped, which drops the copy.
#[derive(Debug)]
pub(crate) struct DueIndex<K> {
    buckets: std::collections::BTreeMap<i64, Vec<K>>,
    /// How long after a release a key that still holds something is looked at again, at the
    /// soonest: a key active every minute would otherwise be walked whole every minute.
    rescan_ms: i64,
}

/// The width of a [`DueIndex`] bucket: a key is visited up to this long after its time.
const BUCKET_MS: i64 = 60_000;

impl<K> DueIndex<K> {
    /// An empty index; see [`DueIndex::rescan_ms`].
    pub(crate) fn new(rescan_ms: i64) -> DueIndex<K> {
        DueIndex {
            buckets: std::collections::BTreeMap::new(),
            rescan_ms: rescan_ms.max(BUCKET_MS),
        }
    }

    fn schedule(&mut self, key: K, time_ms: i64) {
        let bucket = time_ms.div_euclid(BUCKET_MS);
        self.buckets.entry(bucket).or_default().push(key);
    }

    /// Schedules `key` at `time_ms` if that comes before its due time `scheduled`.
    pub(crate) fn schedule_before(&mut self, key: K, time_ms: i64, scheduled: &mut i64) {
        if time_ms < *scheduled {
            *scheduled = time_ms;
            self.schedule(key, time_ms);
        }
    }

    /// Takes the keys scheduled at times whole buckets before `release_ms` (everything
    /// before it may be released), with their copies.
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

    /// Whether a key due at `scheduled` is due at `release_ms`; a key taken by
    /// [`DueIndex::take_due`] that is not was taken from a stale copy.
    pub(crate) fn is_due(scheduled: i64, release_ms: i64) -> bool {
        scheduled.div_euclid(BUCKET_MS) < release_ms.div_euclid(BUCKET_MS)
    }

    /// Schedules a key visited at `release_ms` that still holds something next released
    /// past `next_ms`: then, or a rescan later, whichever comes last.
    pub(crate) fn reschedule(
        &mut self,
        key: K,
        next_ms: i64,
        release_ms: i64,
        scheduled: &mut i64,
    ) {
        let at = next_ms.max(release_ms.saturating_add(self.rescan_ms));
        *scheduled = at;
        self.schedule(key, at);
    }

    /// Keys scheduled, copies included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_copy_is_skipped_and_dropped() {
        let mut due = DueIndex::new(0);
        let mut scheduled = i64::MAX;
        due.schedule_before("k", 10 * BUCKET_MS, &mut scheduled);
        // A late event: due earlier now; the copy at 10 minutes stays in the index.
        due.schedule_before("k", 5 * BUCKET_MS, &mut scheduled);
        due.schedule_before("k", 7 * BUCKET_MS, &mut scheduled);
        assert_eq!((scheduled, due.len()), (5 * BUCKET_MS, 2));
        let release = 6 * BUCKET_MS;
        assert_eq!(due.take_due(release), ["k"]);
        assert!(DueIndex::<&str>::is_due(scheduled, release));
        // Visited, it still holds something released past 8 minutes.
        due.reschedule("k", 8 * BUCKET_MS, release, &mut scheduled);
        let release = 12 * BUCKET_MS;
        let taken = due.take_due(release);
        assert_eq!(taken, ["k", "k"], "the rescheduled key and its stale copy");
        // The first visit moves the due time past the release; the copy is then skipped.
        assert!(DueIndex::<&str>::is_due(scheduled, release));
        due.reschedule("k", 20 * BUCKET_MS, release, &mut scheduled);
        assert!(!DueIndex::<&str>::is_due(scheduled, release));
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn a_key_still_holding_something_is_rescanned_no_sooner_than_asked() {
        let mut due = DueIndex::new(60 * BUCKET_MS);
        let mut scheduled = i64::MAX;
        due.reschedule("busy", 0, 0, &mut scheduled);
        assert_eq!(scheduled, 60 * BUCKET_MS);
        assert!(due.take_due(59 * BUCKET_MS).is_empty());
        assert_eq!(due.take_due(61 * BUCKET_MS), ["busy"]);
    }
}
