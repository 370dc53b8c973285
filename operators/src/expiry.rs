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

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use crate::growth::GrowByAQuarter as _;

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

    /// The newest receive time applied (Unix ms; `i64::MIN` before any).
    pub(crate) fn clock(&self) -> i64 {
        self.clock
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
/// Each value keeps its key's due time beside it ([`Due::scheduled_ms`], `i64::MAX` when
/// none). A key made due earlier (a late event landed before its due time) leaves its later
/// copy in the index; [`DueIndex::release_due`] skips a copy that is not the key's due time
/// any more, which drops it.
#[derive(Debug)]
pub(crate) struct DueIndex<K> {
    buckets: std::collections::BTreeMap<i64, Vec<K>>,
    /// Keys in `buckets`, copies included.
    scheduled: usize,
    /// How long after a release a key that still holds something is looked at again, at the
    /// soonest: a key active every minute would otherwise be walked whole every minute.
    rescan_ms: i64,
}

/// A value whose key a [`DueIndex`] schedules.
pub(crate) trait Due {
    /// When the key is due in its index (`i64::MAX` when it is not): the index's record of
    /// which of the key's copies is current.
    fn scheduled_ms(&mut self) -> &mut i64;
}

/// The width of a [`DueIndex`] bucket: a key is visited up to this long after its time.
const BUCKET_MS: i64 = 60_000;

impl<K> DueIndex<K> {
    /// An empty index; see [`DueIndex::rescan_ms`].
    pub(crate) fn new(rescan_ms: i64) -> DueIndex<K> {
        DueIndex {
            buckets: std::collections::BTreeMap::new(),
            scheduled: 0,
            rescan_ms: rescan_ms.max(BUCKET_MS),
        }
    }

    fn schedule(&mut self, key: K, time_ms: i64) {
        let bucket = self
            .buckets
            .entry(time_ms.div_euclid(BUCKET_MS))
            .or_default();
        bucket.make_room_for_one();
        bucket.push(key);
        self.scheduled += 1;
    }

    /// Schedules `key`, whose value is `value`, at `time_ms` if that comes before its due
    /// time.
    pub(crate) fn schedule_before(&mut self, key: K, time_ms: i64, value: &mut impl Due) {
        let scheduled = value.scheduled_ms();
        if time_ms < *scheduled {
            *scheduled = time_ms;
            self.schedule(key, time_ms);
        }
    }

    /// Visits the keys of `map` due before `release_ms` (whole buckets before it): `release`
    /// (given the key and its value) releases what the value holds before then and returns
    /// when it may next release something, or `None` when it holds nothing, and the key
    /// leaves `map`. A key still holding something is looked at again then, or a rescan
    /// later, whichever comes last.
    pub(crate) fn release_due<V: Due, S: BuildHasher>(
        &mut self,
        map: &mut HashMap<K, V, S>,
        release_ms: i64,
        mut release: impl FnMut(&K, &mut V) -> Option<i64>,
    ) where
        K: Eq + Hash + Clone,
    {
        let first_kept = release_ms.div_euclid(BUCKET_MS);
        let mut due = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= first_kept {
                break;
            }
            due.append(&mut entry.remove());
        }
        self.scheduled -= due.len();
        for key in due {
            let Some(held) = map.get_mut(&key) else {
                continue;
            };
            if held.scheduled_ms().div_euclid(BUCKET_MS) >= first_kept {
                // A stale copy: the key is due later now.
                continue;
            }
            match release(&key, held) {
                None => {
                    map.remove(&key);
                }
                Some(next_ms) => {
                    let at = next_ms.max(release_ms.saturating_add(self.rescan_ms));
                    *held.scheduled_ms() = at;
                    self.schedule(key, at);
                }
            }
        }
    }

    /// Keys scheduled, copies included.
    pub(crate) fn len(&self) -> usize {
        self.scheduled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that releases nothing itself: each visit counts, and says when it is next due.
    struct Held {
        scheduled: i64,
        visits: usize,
        next: Option<i64>,
    }

    impl Due for Held {
        fn scheduled_ms(&mut self) -> &mut i64 {
            &mut self.scheduled
        }
    }

    fn held(next: Option<i64>) -> Held {
        Held {
            scheduled: i64::MAX,
            visits: 0,
            next,
        }
    }

    fn visit(_key: &&str, held: &mut Held) -> Option<i64> {
        held.visits += 1;
        held.next
    }

    #[test]
    fn a_stale_copy_is_skipped_and_dropped() {
        let mut due = DueIndex::new(0);
        let mut map = HashMap::from([("k", held(Some(8 * BUCKET_MS)))]);
        let k = map.get_mut("k").expect("held");
        due.schedule_before("k", 10 * BUCKET_MS, k);
        // A late event: due earlier now; the copy at 10 minutes stays in the index.
        due.schedule_before("k", 5 * BUCKET_MS, k);
        due.schedule_before("k", 7 * BUCKET_MS, k);
        assert_eq!((k.scheduled, due.len()), (5 * BUCKET_MS, 2));
        // Visited at 6 minutes, it still holds something released past 8 minutes.
        due.release_due(&mut map, 6 * BUCKET_MS, visit);
        assert_eq!((map["k"].visits, map["k"].scheduled), (1, 8 * BUCKET_MS));
        assert_eq!(
            due.len(),
            2,
            "rescheduled at 8 minutes, the copy at 10 still there"
        );
        // At 12 minutes the rescheduled key is visited, which moves its due time past the
        // release; the copy at 10 minutes is then skipped, and dropped.
        map.get_mut("k").expect("held").next = Some(20 * BUCKET_MS);
        due.release_due(&mut map, 12 * BUCKET_MS, visit);
        assert_eq!(map["k"].visits, 2, "a stale copy was visited");
        assert_eq!(due.len(), 1);
        // Holding nothing, the key leaves the map and the index.
        map.get_mut("k").expect("held").next = None;
        due.release_due(&mut map, 21 * BUCKET_MS, visit);
        assert!(map.is_empty());
        assert_eq!(due.len(), 0);
    }

    #[test]
    fn a_key_still_holding_something_is_rescanned_no_sooner_than_asked() {
        let mut due = DueIndex::new(60 * BUCKET_MS);
        let mut map = HashMap::from([("busy", held(Some(0)))]);
        due.schedule_before("busy", 0, map.get_mut("busy").expect("held"));
        due.release_due(&mut map, BUCKET_MS, visit);
        assert_eq!(map["busy"].scheduled, 61 * BUCKET_MS);
        due.release_due(&mut map, 61 * BUCKET_MS, visit);
        assert_eq!(map["busy"].visits, 1, "rescanned before a rescan's time");
        due.release_due(&mut map, 62 * BUCKET_MS, visit);
        assert_eq!(map["busy"].visits, 2);
    }
}
