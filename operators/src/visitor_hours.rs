//! `visitor_hours`: per tenant, hour, visitor and person, the activity events and page views.
//!
//! The dashboard's overview needs exact unique visitors and persons over any range. Distinct
//! counts do not add up across minutes, so the per-minute aggregates cannot answer them, and
//! counting them from `events` reads every event of the range. One row per visitor and hour
//! keeps the sets at a fraction of the events (a visitor's events within an hour collapse
//! into one row), so the query reads whole hours from here and only the partial hours at the
//! range's edges from `events`.
//!
//! The person is part of the key: an identity merge moves a visitor's events to another
//! person, which retracts the old row and inserts the new one. A window (tenant and hour) is
//! released once nothing can change it any more, by the same rule as the minute windows.

use arcstr::ArcStr;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::gauges::StateGauge;
use crate::model::{Enriched, VisitorHour, saturating_count};
use crate::rows::Rows;
use crate::sessionize::SessionSettings;
use crate::stash::{Stash, route};
use crate::windows::Windows;

const HOUR_MS: i64 = 3_600_000;

/// The start of the hour of `time_ms`.
pub fn hour_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The rows of one tenant's hour: activity events and page views by (visitor, person), for
/// each pair with any. Each hour has its own table, sized to that hour and released whole
/// once nothing can change it (one table for every hour held took up to twice its rows' size
/// after each doubling). The counts are 32-bit (see [`saturating_count`]): a row takes 32
/// bytes of its table.
type HourRows = Rows<(ArcStr, ArcStr), (i32, i32)>;

/// Counts activity per visitor and hour.
pub trait VisitorHours<'s, T: Timestamp> {
    /// The rows; a changed row is a retraction of the old one and an insertion. `gauge`
    /// counts the rows held on the worker.
    fn visitor_hours(
        self,
        settings: &SessionSettings,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, VisitorHour, isize>;
}

impl<'s, T: Timestamp + TotalOrder> VisitorHours<'s, T> for VecCollection<'s, T, Enriched, isize> {
    fn visitor_hours(
        self,
        settings: &SessionSettings,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, VisitorHour, isize> {
        // By visitor too, not by hour alone: every event of a live stream falls in the
        // current hour, so routing by (tenant, hour) gave one worker all of a tenant's work
        // for an hour. Every update of a row has the row's route, so one worker holds each
        // row, and nothing downstream needs an hour on one worker (the sink routes rows by
        // their whole key).
        let by_visitor = Exchange::new(|(e, _, _): &(Enriched, T, isize)| {
            let event = &e.event;
            route(&(event.tenant(), hour_of(event.timestamp_ms), event.visitor()))
        });
        let keep_ms = settings.rollup_keep_ms(HOUR_MS);
        self.filter(|enriched| enriched.event.is_activity())
            .inner
            .unary_frontier(by_visitor, "VisitorHours", move |_capability, _info| {
                let mut stash: Stash<T, (Enriched, isize)> = Stash::default();
                let mut hours: Windows<HourRows> = Windows::new(HOUR_MS, keep_ms);
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (enriched, time, diff) in data.drain(..) {
                            stash.push(&capability, time, (enriched, diff));
                        }
                    });
                    for (capability, updates) in stash.complete(&[frontier]) {
                        for (enriched, diff) in updates.into_iter().flatten() {
                            let event = &enriched.event;
                            hours.observe(event.received_at_ms());
                            let key = (event.visitor().clone(), enriched.person_id.clone());
                            let diff = saturating_count(diff);
                            let page_diff = if event.is_page_view() { diff } else { 0 };
                            hours.update(event.tenant(), hour_of(event.timestamp_ms), |rows| {
                                rows.update(key, |(events, page_views)| {
                                    *events = events.saturating_add(diff);
                                    *page_views = page_views.saturating_add(page_diff);
                                })
                            });
                        }
                        let time = capability.time().clone();
                        let mut session = output.session(&capability);
                        hours.drain_changed(|tenant, hour_ms, rows| {
                            rows.drain_changes(|(visitor_id, person_id), old, new| {
                                let row = |(events, page_views): (i32, i32)| VisitorHour {
                                    tenant: tenant.to_owned(),
                                    hour_ms,
                                    visitor_id: visitor_id.to_string(),
                                    person_id: person_id.to_string(),
                                    events: events.into(),
                                    page_views: page_views.into(),
                                };
                                if let Some(old) = old {
                                    session.give((row(old), time.clone(), -1));
                                }
                                if let Some(new) = new {
                                    session.give((row(new), time.clone(), 1));
                                }
                            });
                        });
                        hours.release();
                        gauge.set(hours.entries());
                    }
                }
            })
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, SharedEvent};
    use crate::testing::{
        activity, corrections, event, final_items, run_collection, run_collection_timed, untimed,
    };
    use proptest::prelude::*;
    use schemas::EventKind;
    use std::collections::BTreeMap;

    /// An event and its person.
    type Input = (SharedEvent, String);

    /// The oracle: the final events, counted by the reference.
    fn oracle(input: &[(Input, isize)]) -> BTreeMap<VisitorHour, isize> {
        let present = final_items(input);
        crate::reference::visitor_hours(present.iter().map(|(e, p)| (&**e, p.as_str())))
            .into_iter()
            .map(|row| (row, 1))
            .collect()
    }

    /// Events over `hours` hours, received up to `max_delay_ms` late, each with whether and how
    /// many epochs later it is retracted ([`corrections`]).
    fn arb_items(
        hours: i64,
        max_delay_ms: i64,
        max_retraction_delay: u64,
    ) -> impl Strategy<Value = Vec<(Input, Option<u64>)>> {
        let kinds = prop_oneof![
            Just(EventKind::Page),
            Just(EventKind::Screen),
            Just(EventKind::Track),
            Just(EventKind::Alias),
            Just(EventKind::Identify),
            Just(EventKind::Group)
        ];
        let item = (
            0u8..2,
            0i64..hours * HOUR_MS,
            0i64..max_delay_ms,
            0u8..4,
            0u8..3,
            kinds,
        )
            .prop_map(|(t, at, delay, visitor, person, kind)| {
                let mut e = event(&format!("t{t}"), "m", &format!("a{visitor}"), at);
                e.received_at_ms = at + delay;
                e.kind = kind;
                e.is_bot = at % 5 == 0;
                e.non_interactive = at % 7 == 0;
                e.message_id = format!("m{t}{at}{visitor}{person}");
                let event: SharedEvent = std::sync::Arc::new(e);
                (event, format!("u{person}"))
            });
        let retraction = proptest::option::of(0..=max_retraction_delay);
        proptest::collection::vec((item, retraction), 0..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Out of order, up to an hour late, retracted up to two epochs later or in the
        /// epoch of the insertion before it.
        #[test]
        fn matches_counting_from_scratch(
            items in arb_items(3, HOUR_MS, 2),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..12,
        ) {
            let input = corrections(items, epoch_len);
            let expected = oracle(&untimed(&input));
            let settings = SessionSettings::default();
            prop_assert_eq!(
                run_collection_timed(workers, input, move |c| enriched(c).visitor_hours(&settings, StateGauge::default())),
                expected
            );
        }

        /// With a keep of about an hour and a half over twelve hours of events fed in the order
        /// they were received, hours are released as the clock passes them. No update
        /// reaches a released hour (events are at most 30 minutes late, the keep is the hour
        /// and 32 minutes), so the rows must still be those counted from scratch: a release
        /// never drops an hour that is still changing. The gauge, which shows that hours do
        /// go, must hold the rows of the hours not yet released; it is read from a run at one
        /// worker, since the workers of a run share one gauge.
        #[test]
        fn releases_hours_the_clock_has_passed(
            items in arb_items(12, 30 * 60_000, 0),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..12,
        ) {
            let settings = SessionSettings {
                gap_ms: 60_000,
                max_session_ms: 60_000,
                retention: crate::Retention {
                    session_gap_ms: 60_000,
                    lateness_ms: 30 * 60_000,
                    margin_ms: 0,
                },
                ..SessionSettings::default()
            };
            // Kept after its start: the hour, the longest session, the gap and the lateness.
            let keep_ms = HOUR_MS + 60_000 + 60_000 + 30 * 60_000;
            let mut items = items;
            items.sort_by_key(|((event, _), _)| event.received_at_ms);
            let input = corrections(items, epoch_len);
            let expected = oracle(&untimed(&input));
            let run = |workers: usize, gauge: StateGauge| {
                let settings = settings.clone();
                run_collection_timed(workers, input.clone(), move |c| {
                    enriched(c).visitor_hours(&settings, gauge.clone())
                })
            };
            prop_assert_eq!(run(workers, StateGauge::default()), expected.clone());

            let gauge = StateGauge::default();
            prop_assert_eq!(run(1, gauge.clone()), expected.clone());
            let clock = input
                .iter()
                .filter(|((event, _), _, _)| crate::reference::is_activity(event))
                .map(|((event, _), _, _)| event.received_at_ms)
                .max();
            let held = clock.map_or(0, |clock| {
                expected.keys().filter(|row| row.hour_ms >= clock - keep_ms).count()
            });
            prop_assert_eq!(gauge.get(), held);
        }
    }

    fn enriched(
        input: VecCollection<'_, u64, Input, isize>,
    ) -> VecCollection<'_, u64, Enriched, isize> {
        input.map(|(event, person_id)| Enriched {
            event: activity(&event),
            session_id: MessageId::from("s"),
            person_id: person_id.into(),
        })
    }

    /// A person change within the hour moves the row; nothing is left under the old person.
    #[test]
    fn a_merge_moves_the_row() {
        let page = |person: &str| {
            let mut e = event("t", "m1", "a1", 10);
            e.kind = EventKind::Page;
            Enriched {
                event: activity(&e),
                session_id: MessageId::from("s"),
                person_id: person.into(),
            }
        };
        let input = vec![(page("a1"), 1), (page("a1"), -1), (page("u1"), 1)];
        let settings = SessionSettings::default();
        let output = run_collection(1, 1, input, move |c| {
            c.visitor_hours(&settings, StateGauge::default())
        });
        let rows: Vec<_> = output
            .keys()
            .map(|r| (r.person_id.as_str(), r.events, r.page_views))
            .collect();
        assert_eq!(rows, [("u1", 1, 1)]);
    }
}
