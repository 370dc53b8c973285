//! `active_visitors`: per tenant, the visitors with an event in the last few minutes, refreshed
//! every epoch.
//!
//! "Now" is processing time, so the count decays while a site is idle: the operator maps each
//! epoch to a wall-clock instant with the function it is given (the engine's epochs are
//! wall-clock based) and recomputes whenever its input frontier advances, with or without new
//! events. State is one timestamp per visitor seen within the window.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::gauges::StateGauge;
use crate::model::SharedEvent;
use crate::stash::route;

/// Counts active visitors.
pub trait ActiveVisitors<'s, T: Timestamp> {
    /// `(tenant, visitors with an activity event in (now - window, now])`, where now is
    /// `now_of(epoch)`; a changed count is a retraction and an insertion. `gauge` counts the
    /// visitors held on the worker.
    fn active_visitors(
        self,
        window_ms: i64,
        now_of: impl Fn(&T) -> i64 + 'static,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, (String, i64), isize>;
}

impl<'s, T: Timestamp + TotalOrder> ActiveVisitors<'s, T> for StreamVec<'s, T, SharedEvent> {
    fn active_visitors(
        self,
        window_ms: i64,
        now_of: impl Fn(&T) -> i64 + 'static,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, (String, i64), isize> {
        let by_tenant = Exchange::new(|event: &SharedEvent| route(&event.tenant));
        self.unary_frontier(by_tenant, "ActiveVisitors", move |capability, _info| {
            let mut held = Some(capability);
            let mut pending: BTreeMap<T, Vec<SharedEvent>> = BTreeMap::new();
            let mut visitors = ActiveCounts::default();
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    if let Some(time) = capability.least() {
                        pending.entry(time.clone()).or_default().append(data);
                    }
                });
                let Some(cap) = held.as_mut() else { return };
                // The refresh time: the frontier, or, once the input is exhausted, the last
                // time with data.
                let refresh = match frontier.frontier().first() {
                    Some(time) => time.clone(),
                    None => match pending.keys().next_back() {
                        Some(last) => last.clone(),
                        None => {
                            held = None;
                            return;
                        }
                    },
                };
                if refresh == *cap.time() && !frontier.is_empty() {
                    return;
                }
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    for event in entry.remove() {
                        visitors.note(&event);
                    }
                }
                let now = now_of(&refresh);
                let at = cap.delayed(&refresh);
                let mut session = output.session(&at);
                visitors.refresh(now, window_ms, |count, diff| {
                    session.give((count, refresh.clone(), diff))
                });
                gauge.set(visitors.held());
                drop(session);
                if frontier.is_empty() {
                    held = None;
                } else {
                    cap.downgrade(&refresh);
                }
            }
        })
        .as_collection()
    }
}

/// What one worker keeps: per tenant, each visitor's newest activity (event time, Unix ms)
/// within the window, and the count last emitted.
#[derive(Debug, Default)]
struct ActiveCounts {
    last_seen: FxHashMap<String, FxHashMap<String, i64>>,
    emitted: FxHashMap<String, i64>,
}

impl ActiveCounts {
    /// Notes an event (only activity counts). Looked up by `&str` first: an owned key is
    /// made only for a tenant or visitor not seen in the window.
    fn note(&mut self, event: &SharedEvent) {
        if !event.is_activity() {
            return;
        }
        if !self.last_seen.contains_key(&event.tenant) {
            self.last_seen
                .insert(event.tenant.clone(), FxHashMap::default());
        }
        let Some(seen) = self.last_seen.get_mut(&event.tenant) else {
            return;
        };
        match seen.get_mut(event.visitor_id()) {
            Some(newest) => *newest = (*newest).max(event.timestamp_ms),
            None => {
                seen.insert(event.visitor_id().to_owned(), event.timestamp_ms);
            }
        }
    }

    /// Forgets the visitors out of the window ending `now`, and emits each tenant's count
    /// that changed as a retraction and an insertion.
    fn refresh(&mut self, now: i64, window_ms: i64, mut emit: impl FnMut((String, i64), isize)) {
        for (tenant, seen) in &mut self.last_seen {
            seen.retain(|_, time| *time > now - window_ms);
            let count = seen.values().filter(|time| **time <= now).count() as i64;
            let before = self.emitted.get(tenant).copied().unwrap_or(0);
            if count != before {
                if before != 0 {
                    emit((tenant.clone(), before), -1);
                }
                if count != 0 {
                    emit((tenant.clone(), count), 1);
                }
                self.emitted.insert(tenant.clone(), count);
            }
        }
        self.last_seen.retain(|_, seen| !seen.is_empty());
    }

    /// Visitors held.
    fn held(&self) -> usize {
        self.last_seen.values().map(|seen| seen.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{event, run_collection_timed};
    use proptest::prelude::*;
    use schemas::EventKind;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use timely::dataflow::operators::vec::Map;

    const WINDOW: i64 = 5 * 60_000;

    /// The epoch's "now": epochs of one minute.
    fn now_of(epoch: &u64) -> i64 {
        *epoch as i64 * 60_000
    }

    fn count(
        input: VecCollection<'_, u64, SharedEvent, isize>,
    ) -> VecCollection<'_, u64, (String, i64), isize> {
        input
            .inner
            .flat_map(|(event, _, _)| Some(event))
            .active_visitors(WINDOW, now_of, StateGauge::default())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_counting_at_the_last_epoch(
            items in proptest::collection::vec((0u8..2, 0u8..8, 0i64..20, 0usize..5), 1..60),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
        ) {
            // Event times near their epoch (epoch_len 1: one record per epoch, one minute each).
            let mut input: Vec<(SharedEvent, u64, isize)> = items
                .iter()
                .enumerate()
                .map(|(i, (tenant, visitor, back, kind))| {
                    let time = i as i64 * 60_000 - back * 30_000;
                    let mut e = event(&format!("t{tenant}"), &format!("m{i}"), &format!("a{visitor}"), time);
                    e.kind = [EventKind::Page, EventKind::Track, EventKind::Identify, EventKind::Screen, EventKind::Group][*kind];
                    (Arc::new(e), i as u64, 1)
                })
                .collect();
            // The input of a test ends, the engine's never does: make the last epoch reach
            // every tenant's worker, so each takes its final refresh at that epoch.
            let last_epoch = input.len() as u64;
            let last_now = now_of(&last_epoch);
            for tenant in ["t0", "t1"] {
                input.push((Arc::new(event(tenant, &format!("tick-{tenant}"), "ticker", last_now)), last_epoch, 1));
            }
            let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (event, _, _) in &input {
                // Activity only: an identify (a login, a CRM sync) makes nobody active.
                let active = matches!(event.kind, EventKind::Page | EventKind::Screen | EventKind::Track);
                if active && event.timestamp_ms > last_now - WINDOW && event.timestamp_ms <= last_now {
                    expected.entry(event.tenant.clone()).or_default().insert(event.anonymous_id.clone());
                }
            }
            let expected: BTreeMap<(String, i64), isize> =
                expected.into_iter().map(|(tenant, visitors)| ((tenant, visitors.len() as i64), 1)).collect();
            prop_assert_eq!(run_collection_timed(workers, input, count), expected);
        }
    }
}
