//! `dedup`: one event per `(tenant, messageId)` within a horizon.
//!
//! Clients retry, and a retry resends the same `messageId`. A retry has the same Kafka key as
//! the original (`tenant:anonymousId`), so both sit in one partition and the original has the
//! lower offset. The operator keeps the occurrence with the lowest `(partition, offset)`, which
//! makes its output a function of the log, not of how records were split into epochs: a replay
//! after a crash keeps exactly the same events.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

use hashbrown::HashTable;
use rustc_hash::FxHashMap;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::Decoded;
use crate::expiry::Expiry;
use crate::gauges::StateGauge;
use crate::model::Position;
use crate::stash::{Stash, route};

/// Settings of [`Dedup`].
#[derive(Debug, Clone, Copy)]
pub struct DedupSettings {
    /// How long a message id is remembered, measured on the operator's clock (the newest
    /// `received_at` it has seen). Default 72 h, the lateness horizon: a retry received that
    /// long after its original still changes state if it is not recognised.
    pub horizon_ms: i64,
}

impl Default for DedupSettings {
    fn default() -> Self {
        DedupSettings {
            horizon_ms: 72 * 3_600_000,
        }
    }
}

/// Removes repeated `(tenant, messageId)`s.
pub trait Dedup<'s, T: Timestamp> {
    /// Keeps the first occurrence (lowest partition and offset) of each message id; `gauge`
    /// counts the ids remembered on the worker.
    fn dedup(self, settings: DedupSettings, gauge: StateGauge) -> StreamVec<'s, T, Decoded>;
}

impl<'s, T: Timestamp + TotalOrder> Dedup<'s, T> for StreamVec<'s, T, Decoded> {
    fn dedup(self, settings: DedupSettings, gauge: StateGauge) -> StreamVec<'s, T, Decoded> {
        let exchange = Exchange::new(|decoded: &Decoded| {
            route(&(&decoded.event.tenant, &decoded.event.message_id))
        });
        self.unary_frontier(exchange, "Dedup", move |_capability, _info| {
            let mut stash = Stash::default();
            let mut seen = SeenIds::new(settings);
            move |(input, frontier), output| {
                input.for_each(|capability, data| stash.push_all(&capability, data));
                for (capability, chunks) in stash.complete(&[frontier]) {
                    let mut winners = seen.first_occurrences(&chunks).into_iter().peekable();
                    let mut session = output.session(&capability);
                    for (c, chunk) in chunks.into_iter().enumerate() {
                        for (i, decoded) in chunk.into_iter().enumerate() {
                            if winners.next_if_eq(&(c, i)).is_some() {
                                session.give(decoded);
                            }
                        }
                    }
                    seen.settle_when_due();
                    seen.sweep_when_due();
                    gauge.set(seen.len());
                }
            }
        })
    }
}

/// The message ids one worker has let through, each until the horizon after it was received.
///
/// Ids are held as an 80-bit fingerprint of (tenant, message id) instead of the strings, which
/// saves two allocations per event: 80 bits of one 128-bit SipHash-1-3 under a random key (a
/// keyed pseudo-random function, so a client cannot make its ids collide with others'; one
/// pass where two 64-bit hashes took twice the rounds). A new id is taken for one already
/// seen only if all 80 bits match one of the n live ids: n / 2^80 per event, about one event
/// in 10^18 with a million live ids on a worker. The key is per process, which is enough: a
/// message id is routed to one worker, and the state is rebuilt on restart.
///
/// New ids go to a hash table, which [`SeenIds::settle_when_due`] empties into a sorted
/// [`Settled`] vector once it holds a sixteenth of that vector's ids: a hash table alone is
/// between 7/16 and 7/8 full, 15 to 30 bytes an id, where the two together hold 14 to 16 (the
/// table keeps its size once drained, so the share it settles at is paid for good). Each
/// settle copies the settled ids once: at a sixteenth, each id is copied about sixteen times
/// over the horizon, a memory move of 12 bytes each time.
struct SeenIds {
    /// The fingerprints' SipHash key, random per process.
    key: [u8; 16],
    /// The ids remembered since the last settle, by [`Seen::hash`], already a uniform hash:
    /// the table does not hash again.
    recent: HashTable<Seen>,
    settled: Settled,
    /// [`SETTLE_AT_LEAST`], smaller in tests.
    settle_at_least: usize,
    stamps: Stamps,
    expiry: Expiry,
}

/// The fewest ids [`SeenIds::recent`] gathers before they settle, so that a small worker
/// does not rebuild its [`Settled`] index every few events.
const SETTLE_AT_LEAST: usize = 1 << 14;

/// Remembered ids sorted by [`Seen::hash`], found through a directory of the hashes' top bits
/// (about four ids a bucket): 12 bytes an id and one byte of directory, and a lookup reads
/// the directory and one short run of ids. Hashes are uniform, so buckets stay even.
#[derive(Debug, Default)]
struct Settled {
    ids: Vec<Seen>,
    /// `starts[b]` is the index of the first id whose hash's top [`Settled::bits`] bits are
    /// `b` or more; one more entry, `ids.len()`, ends the last bucket. Empty while `ids` is.
    starts: Vec<u32>,
    bits: u32,
}

impl Settled {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn bucket(&self, hash: u64) -> usize {
        // `bits` is below 64: the index is a u32 (fewer than 2^32 ids).
        hash.checked_shr(64 - self.bits).unwrap_or(0) as usize
    }

    fn contains(&self, fingerprint: Fingerprint) -> bool {
        let bucket = self.bucket(fingerprint.0);
        let (Some(&from), Some(&to)) = (self.starts.get(bucket), self.starts.get(bucket + 1))
        else {
            return false;
        };
        self.ids
            .get(from as usize..to as usize)
            .is_some_and(|run| run.iter().any(|seen| seen.fingerprint() == fingerprint))
    }

    /// Merges `new` ids (in any order) into the sorted ones, in place from the back: no
    /// buffer beside the settled ids, though growing the vector may copy them once.
    fn absorb(&mut self, mut new: Vec<Seen>) {
        new.sort_unstable_by_key(Seen::hash);
        let mut old = self.ids.len();
        self.ids.reserve_exact(new.len());
        self.ids.extend_from_slice(&new);
        let mut next = new.len();
        for at in (0..self.ids.len()).rev() {
            let Some(candidate) = next.checked_sub(1).map(|n| new[n]) else {
                break; // the old ids left are in place already
            };
            if old > 0 && self.ids[old - 1].hash() > candidate.hash() {
                self.ids[at] = self.ids[old - 1];
                old -= 1;
            } else {
                self.ids[at] = candidate;
                next -= 1;
            }
        }
        self.index();
    }

    /// Keeps the ids `live` accepts, in order.
    fn retain(&mut self, live: impl FnMut(&Seen) -> bool) {
        self.ids.retain(live);
        if self.ids.capacity() > self.ids.len() + self.ids.len() / 4 + 1024 {
            self.ids.shrink_to_fit();
        }
        self.index();
    }

    /// Rebuilds [`Settled::starts`] for the ids held.
    fn index(&mut self) {
        self.starts.clear();
        if self.ids.is_empty() {
            self.starts.shrink_to_fit();
            self.bits = 0;
            return;
        }
        self.bits = (self.ids.len() / 4).max(1).ilog2();
        let buckets = 1_usize << self.bits;
        self.starts.reserve_exact(buckets + 1);
        let mut at = 0;
        for bucket in 0..buckets {
            while at < self.ids.len() && self.bucket(self.ids[at].hash()) < bucket {
                at += 1;
            }
            self.starts.push(at as u32);
        }
        self.starts.push(self.ids.len() as u32);
        self.starts.shrink_to_fit();
    }
}

/// An 80-bit fingerprint of (tenant, message id): the table's hash and 16 more bits.
type Fingerprint = (u64, u16);

/// One remembered id in 12 bytes (13 with the table's control byte), where a 96-bit
/// fingerprint and a receipt second took 16: the dedup table is the one structure with an
/// entry per event of the horizon, and hashbrown's slots are the entry's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// The fingerprint's table hash in two halves, so that the entry needs 4-byte alignment
    /// only (a `u64` field would pad it to 16).
    hash: [u32; 2],
    /// The fingerprint's other 16 bits (low half) and the receipt [`Stamps`] stamp (high).
    rest: u32,
}

impl Seen {
    fn new((hash, extra): Fingerprint, stamp: u16) -> Seen {
        Seen {
            hash: [(hash >> 32) as u32, hash as u32],
            rest: u32::from(stamp) << 16 | u32::from(extra),
        }
    }

    fn hash(&self) -> u64 {
        u64::from(self.hash[0]) << 32 | u64::from(self.hash[1])
    }

    fn fingerprint(&self) -> Fingerprint {
        (self.hash(), self.rest as u16)
    }

    fn stamp(&self) -> u16 {
        (self.rest >> 16) as u16
    }
}

/// Receive times in 16 bits: the time in units of a 16,384th of the horizon (at least 1 ms),
/// modulo 2^16, so a stamp spans four horizons. A stamp is read back against the worker's
/// clock, which is never before it. Sweeps come with the records (see [`Expiry::sweep_due`]),
/// not with time: on a stream slow enough that more than four horizons pass between two
/// sweeps, an older stamp reads younger than it is and its id is kept longer, never shorter.
#[derive(Debug, Clone, Copy)]
struct Stamps {
    unit_ms: i64,
}

impl Stamps {
    fn new(horizon_ms: i64) -> Stamps {
        Stamps {
            unit_ms: (horizon_ms.max(1) as u64).div_ceil(1 << 14).max(1) as i64,
        }
    }

    fn stamp(&self, received_at_ms: i64) -> u16 {
        // Truncation is the modulo: two's complement keeps it right for times before 1970.
        received_at_ms.div_euclid(self.unit_ms) as u16
    }

    /// Whether an id stamped `stamp` must still be remembered at `cutoff_ms`, `clock_ms` being
    /// the newest receive time seen (never before the id's): its receipt is rounded up to the
    /// end of its unit, so an id is never forgotten before its horizon. In whole units,
    /// `(unit + 1) * unit_ms > cutoff` is `unit >= cutoff / unit_ms` (rounded down), which
    /// cannot overflow.
    fn live(&self, stamp: u16, clock_ms: i64, cutoff_ms: i64) -> bool {
        let now = clock_ms.div_euclid(self.unit_ms);
        let age = i64::from((now as u16).wrapping_sub(stamp));
        now.saturating_sub(age) >= cutoff_ms.div_euclid(self.unit_ms)
    }
}

/// 128 random bits, from the operating system's generator as the standard library's
/// `RandomState` seeds itself (each `RandomState::new` has keys of its own).
fn random_key() -> [u8; 16] {
    let half = || RandomState::new().build_hasher().finish().to_le_bytes();
    let (low, high) = (half(), half());
    let mut key = [0; 16];
    key[..8].copy_from_slice(&low);
    key[8..].copy_from_slice(&high);
    key
}

impl SeenIds {
    fn new(settings: DedupSettings) -> SeenIds {
        SeenIds {
            key: random_key(),
            recent: HashTable::new(),
            settled: Settled::default(),
            settle_at_least: SETTLE_AT_LEAST,
            stamps: Stamps::new(settings.horizon_ms),
            expiry: Expiry::new(settings.horizon_ms),
        }
    }

    fn fingerprint(&self, tenant: &str, message_id: &str) -> Fingerprint {
        let mut hasher = SipHasher13::new_with_key(&self.key);
        (tenant, message_id).hash(&mut hasher);
        let hash = hasher.finish128();
        (hash.h1, hash.h2 as u16)
    }

    /// Ids remembered.
    fn len(&self) -> usize {
        self.recent.len() + self.settled.len()
    }

    fn contains(&self, fingerprint: Fingerprint) -> bool {
        self.recent
            .find(fingerprint.0, |seen| seen.fingerprint() == fingerprint)
            .is_some()
            || self.settled.contains(fingerprint)
    }

    fn remember(&mut self, fingerprint: Fingerprint, received_at_ms: i64) {
        // A record is observed before it is remembered, so its receipt is never after the
        // clock; one that were would read back four horizons old, hence the bound.
        let received_at_ms = received_at_ms.min(self.expiry.clock());
        let seen = Seen::new(fingerprint, self.stamps.stamp(received_at_ms));
        self.recent.insert_unique(fingerprint.0, seen, Seen::hash);
    }

    /// Moves the recent ids into the settled ones once they are a sixteenth of them.
    fn settle_when_due(&mut self) {
        if self.recent.len() >= self.settle_threshold() {
            self.settle();
        }
    }

    fn settle_threshold(&self) -> usize {
        (self.settled.len() / 16).max(self.settle_at_least)
    }

    fn settle(&mut self) {
        let new: Vec<Seen> = self.recent.drain().collect();
        self.settled.absorb(new);
        self.recent.shrink_to(self.settle_threshold(), Seen::hash);
    }

    /// The places `(chunk, index)`, in order, of the batch's first occurrence of each id not
    /// seen before, which are remembered from now on. The first is the lowest position
    /// (partition, offset), not the first to arrive: the choice is then independent of how
    /// records were split into messages, without sorting whole events.
    fn first_occurrences(&mut self, chunks: &[Vec<Decoded>]) -> Vec<(usize, usize)> {
        let mut kept: FxHashMap<Fingerprint, (Position, i64, (usize, usize))> =
            FxHashMap::default();
        for (c, chunk) in chunks.iter().enumerate() {
            for (i, decoded) in chunk.iter().enumerate() {
                let event = &decoded.event;
                self.expiry.observe(event.received_at_ms);
                let key = self.fingerprint(&event.tenant, &event.message_id);
                if self.contains(key) {
                    continue;
                }
                let candidate = (
                    (decoded.partition, decoded.offset),
                    event.received_at_ms,
                    (c, i),
                );
                kept.entry(key)
                    .and_modify(|best| {
                        if candidate.0 < best.0 {
                            *best = candidate;
                        }
                    })
                    .or_insert(candidate);
            }
        }
        let mut winners: Vec<(usize, usize)> = Vec::with_capacity(kept.len());
        for (key, (_, received_at_ms, place)) in kept {
            self.remember(key, received_at_ms);
            winners.push(place);
        }
        winners.sort_unstable();
        winners
    }

    /// Forgets the ids let through more than the horizon before the clock, when a sweep is
    /// due.
    fn sweep_when_due(&mut self) {
        if let Some(cutoff) = self.expiry.sweep_due(self.len()) {
            let (stamps, clock) = (self.stamps, self.expiry.clock());
            let live = |seen: &Seen| stamps.live(seen.stamp(), clock, cutoff);
            self.recent.retain(|seen| live(seen));
            self.settled.retain(live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{event, run_stream};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The oracle: per (tenant, message id), the record with the lowest (partition, offset).
    fn oracle(records: &[Decoded]) -> Vec<(i32, i64)> {
        let mut first: BTreeMap<(String, String), (i32, i64)> = BTreeMap::new();
        for record in records {
            let key = (record.event.tenant.clone(), record.event.message_id.clone());
            let position = (record.partition, record.offset);
            first
                .entry(key)
                .and_modify(|p| *p = (*p).min(position))
                .or_insert(position);
        }
        let mut kept: Vec<_> = first.into_values().collect();
        kept.sort();
        kept
    }

    fn arb_log() -> impl Strategy<Value = Vec<Decoded>> {
        // Message ids from a small space so that duplicates are common; a retry lands in the
        // same partition as its original, later.
        proptest::collection::vec((0u32..40, 0u8..2, 0i64..10_000), 0..150).prop_map(|items| {
            let mut offsets = [0i64; 3];
            items
                .into_iter()
                .map(|(id, tenant, time)| {
                    let partition = (id % 3) as i32;
                    let offset = offsets[partition as usize];
                    offsets[partition as usize] += 1;
                    let mut e = event(&format!("t{tenant}"), &format!("m{id}"), "a", time);
                    e.received_at_ms = time;
                    Decoded {
                        partition,
                        offset,
                        event: e.into(),
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn keeps_the_first_occurrence_at_any_worker_count_and_batching(
            log in arb_log(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..20,
        ) {
            let expected = oracle(&log);
            let output = run_stream(workers, epoch_len, log, |stream| stream.dedup(DedupSettings::default(), StateGauge::default()));
            let mut kept: Vec<_> = output.iter().map(|d| (d.partition, d.offset)).collect();
            kept.sort();
            prop_assert_eq!(kept, expected);
        }
    }

    #[test]
    fn ids_that_share_the_table_hash_are_told_apart() {
        // The table is indexed by the fingerprint's hash: a collision there must not make a
        // new id look seen.
        let mut seen = SeenIds::new(DedupSettings::default());
        seen.remember((7, 1), 1_500);
        assert!(seen.contains((7, 1)));
        assert!(
            !seen.contains((7, 2)),
            "only the whole fingerprint identifies an id"
        );
        seen.remember((7, 2), 1_500);
        assert!(seen.contains((7, 2)) && seen.contains((7, 1)));
        let high = (0xdead_beef_u64 << 32) | 0x1234_5678;
        seen.remember((high, u16::MAX), 1_500);
        assert!(seen.contains((high, u16::MAX)) && !seen.contains((high, 0)));
    }

    /// Fingerprints that share table hashes, directory buckets or whole hashes with each
    /// other, besides unrelated ones.
    fn arb_fingerprint() -> impl Strategy<Value = Fingerprint> {
        prop_oneof![
            any::<(u64, u16)>(),
            (0u64..4, any::<u16>()).prop_map(|(top, extra)| (top << 62 | 5, extra)),
            (0u64..4, 0u16..3).prop_map(|(low, extra)| (u64::MAX - low, extra)),
            (0u64..3, 0u16..2),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn an_id_is_found_whether_it_is_recent_or_settled(
            steps in proptest::collection::vec((arb_fingerprint(), 0u8..8), 0..300),
            probes in proptest::collection::vec(arb_fingerprint(), 0..50),
        ) {
            let mut seen = SeenIds::new(DedupSettings::default());
            let mut remembered = std::collections::BTreeSet::new();
            for (fingerprint, action) in steps {
                if remembered.insert(fingerprint) {
                    seen.remember(fingerprint, 1_000);
                }
                if action == 0 {
                    seen.settle();
                }
                if action == 1 {
                    // What a sweep that forgets nothing does to the settled ids.
                    seen.settled.retain(|_| true);
                }
                prop_assert_eq!(seen.len(), remembered.len());
            }
            for fingerprint in remembered.iter().chain(&probes) {
                prop_assert_eq!(
                    seen.contains(*fingerprint),
                    remembered.contains(fingerprint),
                    "{:?}", fingerprint
                );
            }
        }
    }

    #[test]
    fn settled_ids_catch_retries_across_sweeps_and_are_forgotten_past_the_horizon() {
        // 48 simulated hours of new ids at a 1 h horizon, each retried 30 min later (dozens
        // of batches, settles and sweeps after its original) and again 3 h later (past the
        // horizon and a sweep's slack), settling at 64 ids so that most lookups and sweeps
        // meet settled ids.
        let (horizon_ms, step_ms, ids) = (3_600_000, 8_640, 20_000_i64);
        let mut seen = SeenIds::new(DedupSettings { horizon_ms });
        seen.settle_at_least = 64;
        let mut log: Vec<(i64, Decoded)> = Vec::new();
        for i in 0..ids {
            let original = event("t", &format!("m{i}"), "a", i * step_ms);
            for (copy, late_ms) in [0, 1_800_000, 3 * horizon_ms].into_iter().enumerate() {
                let mut event = original.clone();
                event.received_at_ms += late_ms;
                let offset = 3 * i + copy as i64;
                log.push((
                    event.received_at_ms,
                    Decoded {
                        partition: 0,
                        offset,
                        event: event.into(),
                    },
                ));
            }
        }
        log.sort_by_key(|(received_at_ms, decoded)| (*received_at_ms, decoded.offset));
        let mut kept_copies = [0; 3];
        let (mut peak, mut peak_settled) = (0, 0);
        let records: Vec<Decoded> = log.into_iter().map(|(_, decoded)| decoded).collect();
        for chunk in records.chunks(100) {
            let chunk = chunk.to_vec();
            for (_, i) in seen.first_occurrences(std::slice::from_ref(&chunk)) {
                kept_copies[(chunk[i].offset % 3) as usize] += 1;
            }
            seen.settle_when_due();
            seen.sweep_when_due();
            peak = peak.max(seen.len());
            peak_settled = peak_settled.max(seen.settled.len());
        }
        let [originals, retries, late] = kept_copies;
        assert_eq!(originals, ids, "every original kept");
        assert_eq!(retries, 0, "a retry within the horizon is dropped");
        assert!(
            late > ids * 9 / 10,
            "forgotten past the horizon: {late} kept"
        );
        assert!(
            peak_settled > 300,
            "the settled ids were exercised: {peak_settled}"
        );
        // One hour of ids is ~417; sweeps are amortised, so allow the sweep slack on top.
        assert!(peak < 2_500, "live ids must stay bounded, peaked at {peak}");
    }

    #[test]
    fn an_entry_keeps_its_whole_fingerprint_and_stamp() {
        let high = (0xdead_beef_u64 << 32) | 0x1234_5678;
        for (extra, stamp) in [
            (u16::MAX, u16::MAX),
            (0, u16::MAX),
            (u16::MAX, 0),
            (0x1234, 0xabcd),
        ] {
            let seen = Seen::new((high, extra), stamp);
            assert_eq!((seen.fingerprint(), seen.stamp()), ((high, extra), stamp));
            assert_eq!(seen.hash(), high);
        }
        assert_eq!(std::mem::size_of::<Seen>(), 12);
    }

    #[test]
    fn an_id_is_kept_to_its_horizon_and_forgotten_one_unit_after() {
        for horizon in [1, 999, 3_600_000, 72 * 3_600_000, 400 * 24 * 3_600_000] {
            let stamps = Stamps::new(horizon);
            let unit = stamps.unit_ms;
            assert!(
                unit >= 1 && unit * (1 << 14) >= horizon,
                "{horizon}: unit {unit}"
            );
            for received in [
                -5 * horizon - 7,
                -1,
                0,
                1_500,
                1_700_000_000_123,
                i64::MAX / 4,
            ] {
                let stamp = stamps.stamp(received);
                // Read back at every distance up to two horizons ahead of the receipt.
                for late in [
                    0,
                    1,
                    horizon / 2,
                    horizon - unit / 2,
                    horizon - 1,
                    horizon,
                    horizon + unit,
                    2 * horizon,
                ] {
                    let clock = received + late;
                    let cutoff = clock - horizon;
                    let live = stamps.live(stamp, clock, cutoff);
                    if received > cutoff {
                        assert!(live, "{horizon}/{received}/{late}: forgotten early");
                    }
                    if received + unit <= cutoff {
                        assert!(!live, "{horizon}/{received}/{late}: kept past its unit");
                    }
                }
            }
        }
    }

    #[test]
    fn forgets_ids_past_the_horizon_and_stays_bounded() {
        // A steady stream of new ids for 48 simulated hours; each id repeated once 10 s later.
        let log: Vec<Decoded> = (0..20_000i64)
            .flat_map(|i| {
                let time = i * 8_640; // 48 h over 20,000 ids
                let original = event("t", &format!("m{i}"), "a", time);
                let mut retry = original.clone();
                retry.received_at_ms = time + 10_000;
                [(0, 2 * i, original), (0, 2 * i + 1, retry)]
            })
            .map(|(partition, offset, event)| Decoded {
                partition,
                offset,
                event: event.into(),
            })
            .collect();
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak_seen = peak.clone();
        let settings = DedupSettings {
            horizon_ms: 3_600_000,
        };
        let output = run_stream(1, 100, log, move |stream| {
            let peak = peak_seen.clone();
            let gauge = StateGauge::default();
            // Read after each batch the operator emits: the gauge holds its count by then.
            timely::dataflow::operators::Inspect::inspect(
                stream.dedup(settings, gauge.clone()),
                move |_| {
                    peak.fetch_max(gauge.get(), std::sync::atomic::Ordering::Relaxed);
                },
            )
        });
        assert_eq!(
            output.len(),
            20_000,
            "every retry within the horizon is dropped"
        );
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        // One hour of ids is ~417; sweeps are amortised, so allow the sweep slack on top.
        assert!(
            peak < 2_500,
            "live dedup entries must stay bounded, peaked at {peak}"
        );
    }
}
