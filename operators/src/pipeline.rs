//! The operators wired together, as the engine runs them and as the scenario tests check them.
//!
//! ```text
//! decoded ─► dedup ─┬─ late (received - time > lateness) ─────────────────────► late events
//!                   └─ events ─┬─ identity claims ─► stitch_identities ─► persons (id → person)
//!                              └──────────────► assign_persons ◄──────────┘
//!                                                    │
//!                                               sessionize ─► sessions, enriched events
//!                                                    │
//!                                            window_aggregate ─► per-minute aggregates
//!                                            visitor_hours ─► activity per visitor and hour
//! ```

use std::hash::Hash;
use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::OkErr;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::model::{
    AggRow, Enriched, IdentityClaim, Link, Node, Person, Position, Session, SharedEvent,
    VisitorHour,
};
use crate::{
    ActiveVisitors, AssignPersons, Decoded, Dedup, DedupSettings, IdentityPolicy, SessionSettings,
    Sessionize, StitchIdentities, VisitorHours, WindowAggregate,
};

/// Everything the pipeline is configured with.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Dedup horizon.
    pub dedup: DedupSettings,
    /// Session rules and state retention (its lateness also decides what is late).
    pub sessions: SessionSettings,
    /// Identity policy.
    pub identity: IdentityPolicy,
    /// Length of an epoch: epoch `e` is the wall-clock instant `e * epoch_ms`, the "now" of
    /// the live counters.
    pub epoch_ms: u64,
    /// Window of the active-visitors counter.
    pub active_window_ms: i64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            dedup: DedupSettings::default(),
            sessions: SessionSettings::default(),
            identity: IdentityPolicy::default(),
            epoch_ms: 1_000,
            active_window_ms: 5 * 60_000,
        }
    }
}

impl AnalyticsSettings {
    /// How far back (in read time) the records that open state may still depend on can lie:
    /// the dedup horizon, or the longest session plus the time its state is retained after
    /// its last event. A restart replays this much of the log to rebuild the state.
    pub fn replay_horizon_ms(&self) -> u64 {
        let sessions = self.sessions.max_session_ms + self.sessions.retention.keep_ms();
        self.dedup.horizon_ms.max(sessions).max(0) as u64
    }
}

/// Counts of live state entries, reported after each batch (for metrics and memory tests).
#[derive(Debug, Default)]
pub struct StateGauges {
    /// Remembered message ids.
    pub dedup_ids: std::sync::atomic::AtomicUsize,
    /// Events retained for re-attribution.
    pub attributed_events: std::sync::atomic::AtomicUsize,
    /// Events retained for re-sessionization.
    pub sessionized_events: std::sync::atomic::AtomicUsize,
    /// Open aggregate windows.
    pub windows: std::sync::atomic::AtomicUsize,
    /// Rows of open visitor-hour windows.
    pub visitor_hours: std::sync::atomic::AtomicUsize,
}

/// The pipeline's outputs.
#[allow(missing_debug_implementations)] // collections are not Debug
pub struct Analytics<'s, T: Timestamp> {
    /// On-time events with their session and person.
    pub events: VecCollection<'s, T, Enriched, isize>,
    /// Events later than the lateness horizon: stored, counted, never applied to state.
    pub late: StreamVec<'s, T, SharedEvent>,
    /// Sessions.
    pub sessions: VecCollection<'s, T, Session, isize>,
    /// The person of every linked id.
    pub identities: VecCollection<'s, T, (Node, Person), isize>,
    /// Identity claims made by the events, with the Kafka position of the event that made
    /// each (to be stored, and reloaded at the next start unless it will be replayed).
    pub claims: VecCollection<'s, T, (IdentityClaim, Position), isize>,
    /// Per-minute aggregates.
    pub aggregates: VecCollection<'s, T, AggRow, isize>,
    /// Activity per visitor and hour (exact unique visitors and persons over long ranges).
    pub visitor_hours: VecCollection<'s, T, VisitorHour, isize>,
    /// Per tenant, visitors active in the last `active_window_ms`, refreshed every epoch.
    pub active_visitors: VecCollection<'s, T, (String, i64), isize>,
}

/// Whether an event arrived later after it happened than state may be changed for.
pub fn is_late(event: &schemas::Event, lateness_ms: i64) -> bool {
    event.received_at_ms.saturating_sub(event.timestamp_ms) > lateness_ms
}

/// Turns a stream of records into a collection of insertions at their times.
pub fn insertions<'s, T: Timestamp + TotalOrder, D: Clone + 'static>(
    stream: StreamVec<'s, T, D>,
) -> VecCollection<'s, T, D, isize> {
    stream
        .unary(Pipeline, "Insertions", |_capability, _info| {
            move |input, output| {
                input.for_each(|capability, data| {
                    let Some(time) = capability.least().cloned() else {
                        return;
                    };
                    output
                        .session(&capability)
                        .give_iterator(data.drain(..).map(|datum| (datum, time.clone(), 1isize)));
                });
            }
        })
        .as_collection()
}

/// Builds the pipeline on decoded records. `stored_claims` are the claims of earlier runs
/// (the identity map is rebuilt from them); `unlinks` are identity links removed by an
/// operator (unmerge control messages).
pub fn analytics<'s, T>(
    decoded: StreamVec<'s, T, Decoded>,
    stored_claims: VecCollection<'s, T, IdentityClaim, isize>,
    unlinks: VecCollection<'s, T, Link, isize>,
    settings: AnalyticsSettings,
    gauges: Arc<StateGauges>,
) -> Analytics<'s, T>
where
    T: Timestamp + Lattice + TotalOrder + Hash + Copy + Into<u64>,
{
    use std::sync::atomic::Ordering::Relaxed;
    let lateness_ms = settings.sessions.retention.lateness_ms;
    let gauge = gauges.clone();
    // Dedup first: a late retry of an on-time event must not be stored a second time.
    let (positioned, late) = decoded
        .dedup_observed(settings.dedup, move |n| gauge.dedup_ids.store(n, Relaxed))
        .ok_err(move |decoded: Decoded| {
            let event = Arc::new(decoded.event);
            if is_late(&event, lateness_ms) {
                Err(event)
            } else {
                Ok((event, (decoded.partition, decoded.offset)))
            }
        });
    let claims = insertions(positioned.clone().flat_map(|(event, position)| {
        IdentityClaim::of_event(&event).map(|claim| (claim, position))
    }));
    let events = positioned.map(|(event, _)| event);
    let epoch_ms = settings.epoch_ms;
    let active_visitors =
        events
            .clone()
            .active_visitors(settings.active_window_ms, move |epoch: &T| {
                let epoch: u64 = (*epoch).into();
                epoch.saturating_mul(epoch_ms) as i64
            });
    let identities = claims
        .clone()
        .map(|(claim, _)| claim)
        .concat(stored_claims)
        .stitch_identities(unlinks, settings.identity.clone());
    let retention = settings.sessions.retention;
    let gauge = gauges.clone();
    let attributed = events.assign_persons_observed(identities.clone(), retention, move |n| {
        gauge.attributed_events.store(n, Relaxed)
    });
    let gauge = gauges.clone();
    let (sessions, enriched) = attributed
        .sessionize_observed(settings.sessions.clone(), move |n| {
            gauge.sessionized_events.store(n, Relaxed)
        });
    let gauge = gauges.clone();
    let visitor_hours = enriched
        .clone()
        .visitor_hours_observed(&settings.sessions, move |n| {
            gauge.visitor_hours.store(n, Relaxed)
        });
    let aggregates =
        enriched
            .clone()
            .window_aggregate_observed(sessions.clone(), settings.sessions, move |n| {
                gauges.windows.store(n, Relaxed)
            });
    Analytics {
        events: enriched,
        late,
        sessions,
        identities,
        claims,
        aggregates,
        visitor_hours,
        active_visitors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{Results, analyze};
    use crate::testing::{event, run_collection};
    use proptest::prelude::*;
    use schemas::{Event, EventKind};
    use std::collections::BTreeSet;

    const MINUTE: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MINUTE;

    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    enum Input {
        Record(Decoded),
        Unlink(Link),
    }

    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    enum Out {
        Event(Enriched),
        Late(String),
        Session(Session),
        Identity(Node, Person),
        Aggregate(AggRow),
        VisitorHour(VisitorHour),
    }

    fn run(
        workers: usize,
        epoch_len: usize,
        input: Vec<(Input, isize)>,
        settings: AnalyticsSettings,
    ) -> Results {
        let state = run_collection(
            workers,
            epoch_len,
            input,
            move |input: VecCollection<'_, u64, Input, isize>| {
                let decoded = input
                    .clone()
                    .inner
                    .flat_map(|(input, _, diff)| match input {
                        Input::Record(record) if diff > 0 => Some(record),
                        _ => None,
                    });
                let unlinks = input.clone().flat_map(|input| match input {
                    Input::Unlink(link) => Some(link),
                    Input::Record(_) => None,
                });
                let no_stored_claims = input.flat_map(|_| None);
                let out = analytics(
                    decoded,
                    no_stored_claims,
                    unlinks,
                    settings.clone(),
                    Arc::default(),
                );
                out.events
                    .map(Out::Event)
                    .concat(insertions(out.late).map(|event| Out::Late(event.message_id.clone())))
                    .concat(out.sessions.map(Out::Session))
                    .concat(
                        out.identities
                            .map(|(node, person)| Out::Identity(node, person)),
                    )
                    .concat(out.aggregates.map(Out::Aggregate))
                    .concat(out.visitor_hours.map(Out::VisitorHour))
            },
        );
        let mut results = Results::default();
        for (out, count) in state {
            assert_eq!(count, 1, "{out:?} has multiplicity {count}");
            match out {
                Out::Event(e) => {
                    results.events.insert(e);
                }
                Out::Late(id) => {
                    results.late.insert(id);
                }
                Out::Session(s) => {
                    results.sessions.insert(s);
                }
                Out::Identity(n, p) => {
                    results.identities.insert((n, p));
                }
                Out::Aggregate(a) => {
                    results.aggregates.insert(a);
                }
                Out::VisitorHour(v) => {
                    results.visitor_hours.insert(v);
                }
            }
        }
        results
    }

    /// A log builder: records get consecutive offsets in their visitor's partition.
    #[derive(Default)]
    struct Log {
        records: Vec<(Input, isize)>,
        offsets: [i64; 3],
    }

    impl Log {
        fn push(&mut self, event: Event) -> &mut Self {
            let partition = (crate::stash::route(&event.partition_key()) % 3) as i32;
            let offset = self.offsets[partition as usize];
            self.offsets[partition as usize] += 1;
            self.records.push((
                Input::Record(Decoded {
                    partition,
                    offset,
                    event,
                }),
                1,
            ));
            self
        }

        fn unlink(&mut self, anonymous: &str, user: &str, diff: isize) -> &mut Self {
            self.records
                .push((Input::Unlink(Link::between("t", anonymous, user)), diff));
            self
        }
    }

    fn page(id: &str, anonymous: &str, time: i64) -> Event {
        event("t", id, anonymous, time)
    }

    fn identify(id: &str, anonymous: &str, user: &str, time: i64) -> Event {
        let mut e = event("t", id, anonymous, time);
        e.kind = EventKind::Identify;
        e.user_id = user.into();
        e
    }

    fn alias(id: &str, previous: &str, user: &str, time: i64) -> Event {
        let mut e = event("t", id, "", time);
        e.kind = EventKind::Alias;
        e.previous_id = previous.into();
        e.user_id = user.into();
        e
    }

    fn persons_of_sessions(results: &Results, visitor: &str) -> BTreeSet<String> {
        results
            .sessions
            .iter()
            .filter(|s| s.visitor_id == visitor)
            .map(|s| s.person_id.clone())
            .collect()
    }

    fn aggregate(results: &Results, minute_ms: i64, metric: Metric) -> Option<i64> {
        results
            .aggregates
            .iter()
            .find(|a| a.minute_ms == minute_ms && a.metric == metric)
            .map(|a| a.value)
    }

    /// Runs a scenario at 1 and 3 workers, checks both against the reference, returns it.
    fn scenario(log: &Log) -> Results {
        let settings = AnalyticsSettings::default();
        let decoded: Vec<Decoded> = log
            .records
            .iter()
            .filter_map(|(i, _)| match i {
                Input::Record(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        let unlinks: Vec<Link> = {
            let mut counts: BTreeMap<Link, isize> = BTreeMap::new();
            for (input, diff) in &log.records {
                if let Input::Unlink(link) = input {
                    *counts.entry(link.clone()).or_default() += diff;
                }
            }
            counts
                .into_iter()
                .filter(|(_, c)| *c > 0)
                .map(|(l, _)| l)
                .collect()
        };
        let expected = analyze(&decoded, &unlinks, &settings);
        for workers in [1, 3] {
            assert_eq!(
                run(workers, 1, log.records.clone(), settings.clone()),
                expected,
                "{workers} workers"
            );
        }
        expected
    }

    use crate::model::Metric;
    use std::collections::BTreeMap;

    #[test]
    fn anonymous_browsing_then_login_reattributes_past_sessions() {
        let mut log = Log::default();
        log.push(page("p1", "a1", 0))
            .push(page("p2", "a1", 5 * MINUTE))
            .push(page("p3", "a1", DAY));
        let before = scenario(&log);
        assert_eq!(
            persons_of_sessions(&before, "a1"),
            BTreeSet::from(["a1".to_owned()])
        );
        log.push(identify("i1", "a1", "alice", DAY + 10 * MINUTE));
        let after = scenario(&log);
        assert_eq!(after.sessions.len(), 2);
        assert_eq!(
            persons_of_sessions(&after, "a1"),
            BTreeSet::from(["alice".to_owned()])
        );
        assert!(after.events.iter().all(|e| e.person_id == "alice"));
        assert_eq!(aggregate(&after, 0, Metric::UniquePersons), Some(1));
    }

    #[test]
    fn two_devices_merged_by_alias_then_unmerged() {
        let mut log = Log::default();
        log.push(page("p1", "phone", 0))
            .push(identify("i1", "phone", "carol", MINUTE))
            .push(page("l1", "laptop", 2 * MINUTE))
            .push(page("l2", "laptop", 3 * MINUTE));
        log.push(alias("x1", "laptop", "carol", 4 * MINUTE));
        let merged = scenario(&log);
        assert_eq!(
            persons_of_sessions(&merged, "laptop"),
            BTreeSet::new(),
            "laptop's events joined carol's session"
        );
        assert_eq!(merged.sessions.len(), 1);
        assert_eq!(
            merged.sessions.iter().next().map(|s| s.events),
            Some(4),
            "p1, i1, l1, l2 (the alias is not activity)"
        );
        assert_eq!(
            aggregate(&merged, 2 * MINUTE, Metric::UniquePersons),
            Some(1)
        );
        log.unlink("laptop", "carol", 1);
        let split = scenario(&log);
        assert_eq!(
            persons_of_sessions(&split, "laptop"),
            BTreeSet::from(["laptop".to_owned()])
        );
        assert_eq!(split.sessions.len(), 2);
    }

    #[test]
    fn identify_between_two_known_users_is_refused() {
        let mut log = Log::default();
        let mut bob_event = page("b1", "", 0);
        bob_event.user_id = "bob".into();
        log.push(page("p1", "shared", 0))
            .push(identify("i1", "shared", "alice", MINUTE))
            .push(identify("i2", "shared", "bob", 2 * MINUTE))
            .push(bob_event);
        let results = scenario(&log);
        assert_eq!(
            persons_of_sessions(&results, "shared"),
            BTreeSet::from(["alice".to_owned()])
        );
        assert_eq!(
            persons_of_sessions(&results, "bob"),
            BTreeSet::from(["bob".to_owned()])
        );
    }

    #[test]
    fn a_late_event_bridges_two_sessions_and_one_past_the_horizon_is_only_stored() {
        let mut log = Log::default();
        log.push(page("p1", "a", 0))
            .push(page("p2", "a", 45 * MINUTE));
        let mut bridge = page("p3", "a", 25 * MINUTE);
        bridge.received_at_ms = 46 * MINUTE;
        log.push(bridge);
        let mut too_late = page("p4", "a", 30 * MINUTE);
        too_late.received_at_ms = 30 * MINUTE + 61 * MINUTE;
        log.push(too_late);
        let results = scenario(&log);
        assert_eq!(results.sessions.len(), 1);
        assert_eq!(results.sessions.iter().next().map(|s| s.events), Some(3));
        assert_eq!(results.late, BTreeSet::from(["p4".to_owned()]));
        assert!(results.events.iter().all(|e| e.event.message_id != "p4"));
    }

    /// A random log: a few visitors of two tenants over two hours, identifies and aliases,
    /// client retries (same message id, later offset), delays including some past the
    /// lateness horizon, and unmerges.
    fn arb_log() -> impl Strategy<Value = Vec<(Input, isize)>> {
        let kind = prop_oneof![
            10 => Just(EventKind::Page),
            4 => Just(EventKind::Track),
            2 => Just(EventKind::Identify),
            1 => Just(EventKind::Alias),
            1 => Just(EventKind::Group),
        ];
        let record = (
            0u8..2,
            0u8..6,
            0u8..3,
            kind,
            0i64..120,
            prop_oneof![8 => 0i64..5, 1 => 61i64..180],
            any::<bool>(),
        );
        (
            proptest::collection::vec(record, 0..120),
            proptest::collection::vec((0u8..6, 0u8..3), 0..3),
        )
            .prop_map(|(records, unlinks)| {
                let mut events = Vec::new();
                for (index, (tenant, visitor, user, kind, minute, delay_minutes, retry)) in
                    records.into_iter().enumerate()
                {
                    let mut e = event(
                        &format!("t{tenant}"),
                        &format!("m{index}"),
                        &format!("a{visitor}"),
                        minute * MINUTE + index as i64,
                    );
                    e.kind = kind;
                    e.page.path = format!("/p{}", index % 4);
                    e.name = "Clicked".into();
                    match kind {
                        EventKind::Identify => e.user_id = format!("u{user}"),
                        EventKind::Alias => {
                            e.previous_id = e.anonymous_id.clone();
                            e.user_id = format!("u{user}");
                        }
                        _ => {}
                    }
                    e.received_at_ms = e.timestamp_ms + delay_minutes * MINUTE;
                    if retry {
                        let mut again = e.clone();
                        again.received_at_ms += 30_000;
                        events.push(again);
                    }
                    events.push(e);
                }
                events.sort_by_key(|e| e.received_at_ms);
                let mut log = Log::default();
                for e in events {
                    log.push(e);
                }
                for (visitor, user) in unlinks {
                    log.records.push((
                        Input::Unlink(Link::between(
                            "t0",
                            &format!("a{visitor}"),
                            &format!("u{user}"),
                        )),
                        1,
                    ));
                }
                log.records
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_the_reference_on_random_logs(
            log in arb_log(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..16,
            allow_merge in any::<bool>(),
        ) {
            let mut settings = AnalyticsSettings::default();
            if allow_merge {
                settings.identity.allow_identify_merge = Arc::new(BTreeSet::from(["t1".to_owned()]));
            }
            let decoded: Vec<Decoded> = log.iter().filter_map(|(i, _)| match i { Input::Record(d) => Some(d.clone()), _ => None }).collect();
            let unlinks: Vec<Link> = log.iter().filter_map(|(i, _)| match i { Input::Unlink(l) => Some(l.clone()), _ => None }).collect();
            let expected = analyze(&decoded, &unlinks, &settings);
            prop_assert_eq!(run(workers, epoch_len, log, settings), expected);
        }
    }
}

#[cfg(test)]
mod memory {
    use super::*;
    use crate::testing::event;
    use std::sync::atomic::Ordering::Relaxed;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::operators::vec::{Input, ToStream};

    /// A new visitor every 5 simulated seconds for 12 hours, each with 3 page views over two
    /// minutes. State must follow the retention rules, not the total: released visitors,
    /// sessions, windows and message ids leave the live counts.
    #[test]
    fn state_stays_bounded_under_a_steady_stream_of_new_visitors() {
        const HOURS: i64 = 12;
        let visitors = HOURS * 3600 / 5;
        let mut settings = AnalyticsSettings::default();
        settings.dedup.horizon_ms = 3_600_000;
        settings.sessions.max_session_ms = 3_600_000;
        let peaks = timely::execute_directly(move |worker| {
            let gauges = Arc::new(StateGauges::default());
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, decoded) = scope.new_input::<Decoded>();
                let none = insertions(Vec::<IdentityClaim>::new().to_stream(scope));
                let no_unlinks = insertions(Vec::<Link>::new().to_stream(scope));
                let out = analytics(decoded, none, no_unlinks, settings.clone(), gauges.clone());
                let probe = out.aggregates.inner.probe().0;
                (input, probe)
            });
            let mut peaks = [0usize; 5];
            let mut offset = 0;
            for visitor in 0..visitors {
                let start = visitor * 5_000;
                for view in 0..3 {
                    let time = start + view * 60_000;
                    let mut e = event(
                        "t",
                        &format!("m{visitor}-{view}"),
                        &format!("a{visitor}"),
                        time,
                    );
                    e.received_at_ms = time + 1_000;
                    input.send(Decoded {
                        partition: 0,
                        offset,
                        event: e,
                    });
                    offset += 1;
                }
                if visitor % 100 == 99 {
                    let epoch = (visitor / 100 + 1) as u64;
                    input.advance_to(epoch);
                    while probe.less_than(&epoch) {
                        worker.step();
                    }
                    for (peak, gauge) in peaks.iter_mut().zip([
                        &gauges.dedup_ids,
                        &gauges.attributed_events,
                        &gauges.sessionized_events,
                        &gauges.windows,
                        &gauges.visitor_hours,
                    ]) {
                        *peak = (*peak).max(gauge.load(Relaxed));
                    }
                }
            }
            peaks
        });
        let total_events = (visitors * 3) as usize;
        let [dedup_ids, attributed, sessionized, windows, visitor_hours] = peaks;
        println!(
            "events {total_events}: peak dedup ids {dedup_ids}, attributed {attributed}, sessionized {sessionized}, windows {windows}, visitor hours {visitor_hours}"
        );
        // One hour of ids is 2,160; retention of visitors is 100-110 minutes (~4,000 events);
        // windows live 1 minute + max session + 110 minutes (~171). Sweeps add slack.
        assert!(
            dedup_ids < 5_000,
            "dedup ids peaked at {dedup_ids} of {total_events}"
        );
        assert!(
            attributed < 8_000,
            "retained attributed events peaked at {attributed} of {total_events}"
        );
        assert!(
            sessionized < 8_000,
            "retained sessionized events peaked at {sessionized} of {total_events}"
        );
        // Visitor-hour rows live 1 hour + max session + 110 minutes (~4.8 h of 720 visitors).
        assert!(
            visitor_hours < 4_500,
            "visitor-hour rows peaked at {visitor_hours} of {}",
            visitors
        );
        assert!(
            windows < 250,
            "open windows peaked at {windows} of {}",
            HOURS * 60
        );
    }
}
