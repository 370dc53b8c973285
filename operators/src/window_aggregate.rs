//! `window_aggregate`: per tenant and minute, the dashboard's numbers.
//!
//! Event metrics (events by name, page views by path, unique visitors, unique persons) are
//! keyed by the minute of the event; session metrics (sessions started, bounces, total
//! duration) by the minute the session started. Inputs are collections, so corrections flow
//! through: an identity merge moves an event from one person to another and the minute's
//! unique persons drop; a session merge retracts a start and the minute's sessions drop.
//!
//! Each window counts in hash maps, settled into sorted vectors ten minutes after the minute
//! ends (see `crate::settling`), and emits only the values that changed, as a retraction of
//! the old row and an insertion of the new. A window is released once nothing
//! can change it any more: a session starting in it may grow for `max_session`, and changes
//! arrive at most `gap + lateness` after that.

use arcstr::ArcStr;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::gauges::StateGauges;
use crate::model::{
    Activity, AggRow, Enriched, Metric, Session, empty_str, minute_of, saturating_count,
};
use crate::rows::Rows;
use crate::sessionize::SessionSettings;
use crate::settling::Settling;
use crate::stash::{Stash, route};
use crate::windows::{WindowState, Windows};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Update {
    Event(Enriched, isize),
    Session(Session, isize),
}

impl Update {
    fn window(&self) -> (&str, i64) {
        match self {
            Update::Event(enriched, _) => (
                enriched.event.tenant(),
                minute_of(enriched.event.timestamp_ms),
            ),
            Update::Session(session, _) => (&session.tenant, minute_of(session.start_ms)),
        }
    }
}

/// One tenant's minute. Rows are keyed by the events' own shared strings, so an event costs
/// one lookup per row it changes (a hash probe, or a bisection once the window has settled)
/// and allocates nothing.
#[derive(Debug, Default)]
struct Window {
    /// Additive metrics by (metric, dimension).
    sums: Rows<(Metric, ArcStr), i64>,
    /// Multiplicity of each id with an event in the minute, by [`Role`]: one entry for both
    /// roles, since an anonymous visitor is its own person (most visitors are), and 32-bit
    /// counts, so an id takes 16 bytes (once settled) where a map per role took 32.
    ids: Settling<ArcStr, [i32; 2]>,
    /// By role, the ids whose count in it is not zero.
    distinct: [i64; 2],
    /// By role, the distinct count before the batch being applied, once it changed it.
    before: [Option<Option<i64>>; 2],
}

impl WindowState for Window {
    fn entries(&self) -> usize {
        self.ids.len()
    }

    fn settle_when_due(&mut self) {
        self.ids.settle_dropping(|counts| *counts == [0, 0]);
        self.sums.settle_when_due();
    }
}

/// What an id is counted as in a [`Window`].
#[derive(Debug, Clone, Copy)]
enum Role {
    Visitor = 0,
    Person = 1,
}

impl Role {
    const BOTH: [Role; 2] = [Role::Visitor, Role::Person];

    fn metric(self) -> Metric {
        match self {
            Role::Visitor => Metric::UniqueVisitors,
            Role::Person => Metric::UniquePersons,
        }
    }
}

impl Window {
    fn add(&mut self, metric: Metric, dimension: &ArcStr, delta: i64) {
        if delta == 0 {
            return;
        }
        self.sums
            .update((metric, dimension.clone()), |value| *value += delta);
    }

    /// The row of a distinct count: its number of ids, no row when there are none.
    fn distinct(&self, role: Role) -> Option<i64> {
        let ids = self.distinct[role as usize];
        (ids != 0).then_some(ids)
    }

    fn count(&mut self, role: Role, id: &ArcStr, diff: isize) {
        let at = role as usize;
        if self.before[at].is_none() {
            self.before[at] = Some(self.distinct(role));
        }
        let diff = saturating_count(diff);
        let (was, now) = match self.ids.get_mut(id) {
            Some(counts) => {
                let was = counts[at];
                counts[at] = was.saturating_add(diff);
                let now = counts[at];
                if *counts == [0, 0] {
                    self.ids.remove_unless_settled(id);
                }
                (was, now)
            }
            None if diff != 0 => {
                let mut counts = [0; 2];
                counts[at] = diff;
                self.ids.insert_new(id.clone(), counts);
                (0, diff)
            }
            None => return,
        };
        self.distinct[at] += i64::from(now != 0) - i64::from(was != 0);
    }

    fn apply(&mut self, update: &Update) {
        match update {
            Update::Event(enriched, diff) => {
                self.apply_event(&enriched.event, &enriched.person_id, *diff)
            }
            Update::Session(session, diff) => self.apply_session(session, *diff),
        }
    }

    fn apply_event(&mut self, event: &Activity, person_id: &ArcStr, diff: isize) {
        if !event.interaction() {
            // Only interactions add to rollups (schemas::definitions).
            return;
        }
        let delta = diff as i64;
        self.add(Metric::Events, &event.shared_label(), delta);
        if event.is_page_view() {
            self.add(Metric::PageViews, &event.shared_location(), delta);
        }
        if event.is_activity() {
            self.count(Role::Visitor, event.visitor(), diff);
            self.count(Role::Person, person_id, diff);
        }
    }

    fn apply_session(&mut self, session: &Session, diff: isize) {
        let delta = diff as i64;
        let none = empty_str();
        self.add(Metric::SessionsStarted, &none, delta);
        if session.bounce {
            self.add(Metric::Bounces, &none, delta);
        }
        self.add(
            Metric::SessionDurationMs,
            &none,
            delta * session.duration_ms(),
        );
    }

    /// The batch's changes as collection updates: the old row out, the new row in.
    fn changes(&mut self, tenant: &str, minute_ms: i64, mut emit: impl FnMut(AggRow, isize)) {
        let mut emit_change = |metric: Metric, dimension: &str, old: Option<i64>, new| {
            if old == new {
                return;
            }
            let row = |value: i64| AggRow {
                tenant: tenant.to_owned(),
                minute_ms,
                metric,
                dimension: dimension.to_owned(),
                value,
            };
            if let Some(old) = old {
                emit(row(old), -1);
            }
            if let Some(new) = new {
                emit(row(new), 1);
            }
        };
        self.sums.drain_changes(|(metric, dimension), old, new| {
            emit_change(metric, &dimension, old, new)
        });
        for role in Role::BOTH {
            if let Some(old) = self.before[role as usize].take() {
                emit_change(role.metric(), "", old, self.distinct(role));
            }
        }
    }
}

/// One tenant's minute counted from scratch, by the same rules as the dataflow's windows:
/// its rows for `events` that happened in the minute, each with its person's id and how many
/// times it occurs, and the `sessions` that started in it. Items outside the minute are the
/// caller's mistake and are counted as if inside. The erasure executor recomputes from the
/// stored rows what the dataflow has released (`engine/src/sink/rollups.rs`).
pub fn minute_rollups<'a>(
    tenant: &str,
    minute_ms: i64,
    events: impl IntoIterator<Item = (&'a Activity, &'a ArcStr, usize)>,
    sessions: impl IntoIterator<Item = &'a Session>,
) -> Vec<AggRow> {
    let mut window = Window::default();
    for (event, person_id, copies) in events {
        window.apply_event(event, person_id, copies as isize);
    }
    for session in sessions {
        window.apply_session(session, 1);
    }
    let mut rows = Vec::new();
    window.changes(tenant, minute_ms, |row, _| rows.push(row));
    rows.sort();
    rows
}

/// Aggregates enriched events and sessions per tenant and minute.
pub trait WindowAggregate<'s, T: Timestamp> {
    /// The aggregate rows; a changed value is a retraction of the old row and an insertion.
    /// It reports the open (tenant, minute) windows on the worker and the ids their distinct
    /// counts hold into `gauges`.
    fn window_aggregate(
        self,
        sessions: VecCollection<'s, T, Session, isize>,
        settings: SessionSettings,
        gauges: StateGauges,
    ) -> VecCollection<'s, T, AggRow, isize>;
}

impl<'s, T: Timestamp + TotalOrder> WindowAggregate<'s, T>
    for VecCollection<'s, T, Enriched, isize>
{
    fn window_aggregate(
        self,
        sessions: VecCollection<'s, T, Session, isize>,
        settings: SessionSettings,
        gauges: StateGauges,
    ) -> VecCollection<'s, T, AggRow, isize> {
        let events = Exchange::new(|(e, _, _): &(Enriched, T, isize)| {
            route(&(e.event.tenant(), minute_of(e.event.timestamp_ms)))
        });
        let starts = Exchange::new(|(s, _, _): &(Session, T, isize)| {
            route(&(&s.tenant, minute_of(s.start_ms)))
        });
        let keep_ms = settings.window_keep_ms();
        self.inner
            .binary_frontier(
                sessions.inner,
                events,
                starts,
                "WindowAggregate",
                move |_capability, _info| {
                    let mut stash: Stash<T, Update> = Stash::default();
                    let mut windows: Windows<Window> = Windows::new(60_000, keep_ms);
                    move |(events, events_frontier), (sessions, sessions_frontier), output| {
                        events.for_each(|capability, data| {
                            for (enriched, time, diff) in data.drain(..) {
                                stash.push(&capability, time, Update::Event(enriched, diff));
                            }
                        });
                        sessions.for_each(|capability, data| {
                            for (session, time, diff) in data.drain(..) {
                                stash.push(&capability, time, Update::Session(session, diff));
                            }
                        });
                        for (capability, updates) in
                            stash.complete(&[events_frontier, sessions_frontier])
                        {
                            for update in updates.into_iter().flatten() {
                                if let Update::Event(enriched, _) = &update {
                                    windows.observe(enriched.event.received_at_ms());
                                }
                                let (tenant, minute_ms) = update.window();
                                windows.update(tenant, minute_ms, |window| window.apply(&update));
                            }
                            let time = capability.time().clone();
                            let mut session = output.session(&capability);
                            windows.drain_changed(|tenant, minute_ms, window| {
                                window.changes(tenant, minute_ms, |row, diff| {
                                    session.give((row, time.clone(), diff))
                                })
                            });
                            windows.release();
                            gauges.windows.set(windows.open());
                            gauges.window_ids.set(windows.entries());
                        }
                    }
                },
            )
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, SharedEvent};
    use crate::testing::{
        activity, corrections, event, final_items, run_collection_timed, untimed,
    };
    use proptest::prelude::*;
    use schemas::EventKind;
    use std::collections::BTreeMap;

    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    enum Input {
        /// An event and its person.
        Event(SharedEvent, String),
        Session(Session),
    }

    fn aggregate(
        input: VecCollection<'_, u64, Input, isize>,
    ) -> VecCollection<'_, u64, AggRow, isize> {
        let events = input.clone().flat_map(|i| match i {
            Input::Event(event, person_id) => Some(Enriched {
                event: activity(&event),
                session_id: MessageId::from("s"),
                person_id: person_id.into(),
            }),
            Input::Session(_) => None,
        });
        let sessions = input.flat_map(|i| match i {
            Input::Session(s) => Some(s),
            Input::Event(..) => None,
        });
        events.window_aggregate(sessions, SessionSettings::default(), StateGauges::default())
    }

    /// The oracle: the final inputs, counted by the reference.
    fn oracle(input: &[(Input, isize)]) -> BTreeMap<AggRow, isize> {
        let present = final_items(input);
        let events = present.iter().filter_map(|i| match i {
            Input::Event(event, person_id) => Some((&**event, person_id.as_str())),
            Input::Session(_) => None,
        });
        let sessions = present.iter().filter_map(|i| match i {
            Input::Session(s) => Some(s),
            Input::Event(..) => None,
        });
        crate::reference::aggregates(events, sessions)
            .into_iter()
            .map(|row| (row, 1))
            .collect()
    }

    /// Events and sessions over five minutes and a twentieth, each with whether and how many
    /// epochs later it is retracted ([`corrections`]). An event of the twentieth minute moves
    /// the clock past the first five's settling (`SETTLE_MARGIN_MS`): the events after it
    /// change settled windows.
    fn arb_input() -> impl Strategy<Value = Vec<(Input, Option<u64>)>> {
        let kinds = prop_oneof![
            Just(EventKind::Page),
            Just(EventKind::Screen),
            Just(EventKind::Track),
            Just(EventKind::Alias),
            Just(EventKind::Identify),
            Just(EventKind::Group)
        ];
        let item = prop_oneof![
            (
                0u8..2,
                prop_oneof![9 => 0i64..5, 1 => Just(20)],
                0u8..4,
                0u8..3,
                kinds,
                0u8..3
            )
                .prop_map(|(t, minute, visitor, person, kind, path)| {
                    let mut e = event(
                        &format!("t{t}"),
                        "m",
                        &format!("a{visitor}"),
                        minute * 60_000 + 7,
                    );
                    e.kind = kind;
                    e.name = "Clicked".into();
                    e.is_bot = visitor == 3 && path == 0;
                    e.non_interactive = visitor == 2 && path == 1;
                    e.page.path = format!("/p{path}");
                    e.message_id = format!("m{t}{minute}{visitor}{person}{path}");
                    let event: SharedEvent = std::sync::Arc::new(e);
                    Input::Event(event, format!("u{person}"))
                }),
            (0u8..2, 0i64..5, 0i64..600_000, 1u32..4).prop_map(
                |(t, minute, duration, page_views)| {
                    let start = minute * 60_000 + 11;
                    Input::Session(Session {
                        tenant: format!("t{t}").into(),
                        session_id: format!("s{t}{minute}{duration}{page_views}").into(),
                        person_id: "u".into(),
                        visitor_id: "a".into(),
                        start_ms: start,
                        end_ms: start + duration,
                        events: page_views,
                        page_views,
                        bounce: page_views == 1 && duration % 2 == 0,
                        entry_path: "".into(),
                        exit_path: "".into(),
                        landing: Default::default(),
                    })
                }
            ),
        ];
        let retraction = proptest::option::of(0..=2u64);
        proptest::collection::vec((item, retraction), 0..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_counting_from_scratch(
            input in arb_input(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..12,
        ) {
            let input = corrections(input, epoch_len);
            let expected = oracle(&untimed(&input));
            prop_assert_eq!(run_collection_timed(workers, input, aggregate), expected);
        }

        /// What the erasure executor recomputes for a released minute equals counting the
        /// minute's rows from scratch (an empty minute has no rows).
        #[test]
        fn a_minute_recomputed_from_its_rows_matches_counting_from_scratch(
            input in arb_input(),
            tenant in 0u8..2,
            minute in 0i64..5,
        ) {
            let (tenant, minute_ms) = (format!("t{tenant}"), minute * 60_000);
            let input = untimed(&corrections(input, 1));
            let present = final_items(&input);
            let in_minute = |(t, at): (&str, i64)| t == tenant && at.div_euclid(60_000) == minute;
            // Repeated rows as one with a count, as the executor reads them.
            let mut copies: BTreeMap<(&SharedEvent, &String), usize> = BTreeMap::new();
            for item in &present {
                if let Input::Event(event, person) = item
                    && in_minute((&event.tenant, event.timestamp_ms))
                {
                    *copies.entry((event, person)).or_default() += 1;
                }
            }
            let events: Vec<_> = copies
                .into_iter()
                .map(|((event, person), n)| (activity(event), ArcStr::from(person.as_str()), n))
                .collect();
            let sessions: Vec<&Session> = present
                .iter()
                .filter_map(|i| match i {
                    Input::Session(s) if in_minute((&s.tenant, s.start_ms)) => Some(s),
                    _ => None,
                })
                .collect();
            let expected: Vec<AggRow> = oracle(&input)
                .into_keys()
                .filter(|row| row.tenant == tenant && row.minute_ms == minute_ms)
                .collect();
            let recomputed = minute_rollups(
                &tenant,
                minute_ms,
                events.iter().map(|(event, person, n)| (&**event, person, *n)),
                sessions,
            );
            prop_assert_eq!(recomputed, expected);
        }
    }
}
