//! `dedup`: one event per `(tenant, messageId)` within a horizon.
//!
//! Clients retry, and a retry resends the same `messageId`. A retry has the same Kafka key as
//! the original (`tenant:anonymousId`), so both sit in one partition and the original has the
//! lower offset. The operator keeps the occurrence with the lowest `(partition, offset)`, which
//! makes its output a function of the log, not of how records were split into epochs: a replay
//! after a crash keeps exactly the same events.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

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
                    seen.sweep_when_due();
                    gauge.set(seen.ids.len());
                }
            }
        })
    }
}

/// The message ids one worker has let through, each until the horizon after it was received.
///
/// Ids are held as a 96-bit fingerprint of (tenant, message id) instead of the strings, which
/// saves two allocations per event; with independent random keys, a collision among a billion
/// live ids has a probability around 10^-11 (n^2 / 2^97). Keys are per process, which is
/// enough: a message id is routed to one worker, and the state is rebuilt on restart.
struct SeenIds {
    hashers: (RandomState, RandomState),
    /// By [`Seen::high`], already a uniform hash: the table does not hash again.
    ids: HashTable<Seen>,
    expiry: Expiry,
}

/// A 96-bit fingerprint of (tenant, message id): the table's hash and the rest.
type Fingerprint = (u64, u32);

/// One remembered id: 16 bytes, where a map from a 128-bit fingerprint to a millisecond time
/// took 32 (the dedup table is the one structure with an entry per event of the horizon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    high: u64,
    low: u32,
    /// When the occurrence let through was received: Unix seconds (u32 lasts until 2106).
    received_s: u32,
}

impl Seen {
    fn fingerprint(&self) -> Fingerprint {
        (self.high, self.low)
    }

    /// Whether the id must still be remembered at `cutoff_ms`: rounded up to the whole
    /// second, so an id is never forgotten before its horizon.
    fn live_at(&self, cutoff_ms: i64) -> bool {
        (i64::from(self.received_s) + 1) * 1000 > cutoff_ms
    }
}

impl SeenIds {
    fn new(settings: DedupSettings) -> SeenIds {
        SeenIds {
            hashers: (RandomState::new(), RandomState::new()),
            ids: HashTable::new(),
            expiry: Expiry::new(settings.horizon_ms),
        }
    }

    fn fingerprint(&self, tenant: &str, message_id: &str) -> Fingerprint {
        let high = self.hashers.0.hash_one((tenant, message_id));
        let low = self.hashers.1.hash_one((tenant, message_id)) as u32;
        (high, low)
    }

    fn contains(&self, fingerprint: Fingerprint) -> bool {
        self.ids
            .find(fingerprint.0, |seen| seen.fingerprint() == fingerprint)
            .is_some()
    }

    fn remember(&mut self, (high, low): Fingerprint, received_at_ms: i64) {
        let received_s = received_at_ms
            .div_euclid(1000)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let seen = Seen {
            high,
            low,
            received_s,
        };
        self.ids.insert_unique(high, seen, |seen| seen.high);
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
        if let Some(cutoff) = self.expiry.sweep_due(self.ids.len()) {
            self.ids.retain(|seen| seen.live_at(cutoff));
            if self.ids.capacity() > 4 * self.ids.len() + 1024 {
                self.ids.shrink_to_fit(|seen| seen.high);
            }
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
    fn ids_that_share_the_table_hash_are_told_apart_and_kept_to_their_horizon() {
        // The table is indexed by the fingerprint's high half: a collision there must not
        // make a new id look seen.
        let mut seen = SeenIds::new(DedupSettings::default());
        seen.remember((7, 1), 1_500);
        assert!(seen.contains((7, 1)));
        assert!(
            !seen.contains((7, 2)),
            "only the whole fingerprint identifies an id"
        );
        seen.remember((7, 2), 1_500);
        assert!(seen.contains((7, 2)) && seen.contains((7, 1)));
        // Seconds are rounded up: received at 1.5 s, the id lives while the cutoff is below 2 s.
        let first = *seen.ids.iter().next().expect("two ids");
        assert!(first.live_at(1_999));
        assert!(!first.live_at(2_000));
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
