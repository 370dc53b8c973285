//! `assign_persons`: attributes each event to its person, and re-attributes retained events
//! when the person of their id changes.
//!
//! Differential's `join` would do the same, but would keep every event forever. This operator
//! keeps a visitor's events only while a change could still matter to what they derive
//! (sessions, per-minute uniques): events older than the session gap plus the lateness
//! horizon (and a margin) are released silently, those of a visitor who keeps coming back
//! included. A later identity change then re-attributes only what is still retained; closed
//! history is not rewritten.
//!
//! The id → person map itself is kept (it is small), so new events of an old visitor are
//! attributed correctly. An event belongs to the person of its `userId` when it has one, else
//! to that of its `anonymousId` (Segment's model).
//!
//! An erasure withdraws what the operator retains of the person: each retained event carrying
//! an erased id is retracted under its person and released, so sessions, rollups and visitor
//! hours downstream are corrected by the same machinery that corrects a merge. (New events of
//! the person never get here: `erase` drops them first.)

use rustc_hash::FxHashMap;
use thin_vec::ThinVec;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use schemas::erasure::ErasureLog;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Map;

use crate::erasure::{ControlRecord, Erasures};
use crate::expiry::{Due, DueIndex, Expiry};
use crate::gauges::StateGauges;
use crate::growth::GrowByAQuarter as _;
use crate::model::{Node, Person, SharedActivity};
use crate::stash::{Stash, route};

/// When state may be released.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Inactivity that ends a session (the largest of any tenant's).
    pub session_gap_ms: i64,
    /// Events arriving later than this after they happened are not applied to state. Default
    /// 72 hours, PostHog's lookback: a mobile app offline for a weekend still counts.
    pub lateness_ms: i64,
    /// Extra time for workers whose clocks (newest `received_at` seen) lag others'.
    pub margin_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            session_gap_ms: 30 * 60_000,
            lateness_ms: 72 * 3_600_000,
            margin_ms: 10 * 60_000,
        }
    }
}

impl Retention {
    /// How long after its last event a key's state is kept.
    pub fn keep_ms(&self) -> i64 {
        self.session_gap_ms + self.lateness_ms + self.margin_ms
    }

    /// From when (Unix ms, event time) an erasure read at `now_ms` is sure to find a person's
    /// events still retained, so that the dataflow itself withdraws them: every worker keeps
    /// what happened after its clock (newest `received_at`) minus [`Retention::keep_ms`],
    /// and no clock is more than `margin_ms` ahead of `now_ms` (gateways' clocks agree with
    /// the engine's within the margin). What happened before may have been released.
    pub fn surely_retained_from(&self, now_ms: i64) -> i64 {
        now_ms + self.margin_ms - self.keep_ms()
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Update {
    Event(SharedActivity),
    Person(Node, Person, isize),
    Erasure(ControlRecord),
}

/// The second input: changes of the map, exchanged by node, and control records, each kept on
/// the worker that holds its copy (`worker`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum MapInput<T> {
    Person(Node, Person, T, isize),
    Erasure(ControlRecord, u64),
}

#[derive(Debug)]
struct Visitor {
    /// In arrival order; one pointer in the visitors' map (see [`ThinVec`]).
    events: ThinVec<SharedActivity>,
    last_time_ms: i64,
    /// When the visitor is due in [`Persons::due`] (`i64::MAX` when it is not).
    scheduled_ms: i64,
}

impl Due for Visitor {
    fn scheduled_ms(&mut self) -> &mut i64 {
        &mut self.scheduled_ms
    }
}

impl Default for Visitor {
    fn default() -> Self {
        Visitor {
            events: ThinVec::new(),
            last_time_ms: i64::MIN,
            scheduled_ms: i64::MAX,
        }
    }
}

/// One update of the output collection: an event under its person.
type Attributed<T> = ((Person, SharedActivity), T, isize);

/// What one worker of the operator keeps: the id -> person map and the retained events, by
/// the node they are attributed through.
#[derive(Debug)]
struct Persons {
    /// The person of each linked id that is not its own person: a person's canonical id
    /// (its least user id) maps to itself, as an id in no link does, and is not held (half
    /// the entries of a visitor who identified once, kept for good).
    person_of: FxHashMap<Node, Person>,
    visitors: FxHashMap<Node, Visitor>,
    /// Visitors by the time of their earliest event, when a sweep may release it.
    due: DueIndex<Node>,
    /// Events in `visitors`.
    retained: usize,
    /// Events are kept [`Retention::keep_ms`] behind the clock of the events assigned.
    expiry: Expiry,
}

impl Persons {
    fn new(retention: Retention) -> Persons {
        Persons {
            person_of: FxHashMap::default(),
            visitors: FxHashMap::default(),
            due: DueIndex::new(retention.keep_ms() / 16),
            retained: 0,
            expiry: Expiry::new(retention.keep_ms()),
        }
    }

    fn report(&self, gauges: &StateGauges) {
        gauges.attributed_events.set(self.retained);
        gauges.attributed_ids.set(self.visitors.len());
        gauges.attributed_persons.set(self.person_of.len());
        gauges.attribution_timers.set(self.due.len());
    }

    /// The person of `node` (an id in no link is its own person).
    fn person(&self, node: &Node) -> Person {
        self.person_of
            .get(node)
            .cloned()
            .unwrap_or_else(|| node.clone())
    }

    /// Retracts and releases the retained events the erasures in `log` cover. Events the
    /// retention rule released already (older than `cutoff`, which downstream operators may
    /// have let go) are released without a retraction, as a merge leaves them.
    fn withdraw<T: Clone>(
        &mut self,
        log: &ErasureLog,
        cutoff: i64,
        time: &T,
        mut emit: impl FnMut(Attributed<T>),
    ) {
        let Persons {
            person_of,
            visitors,
            retained,
            ..
        } = self;
        visitors.retain(|node, visitor| {
            let before = visitor.events.len();
            let live = visitor.last_time_ms >= cutoff;
            visitor.events.retain(|event| {
                let ids = [
                    &**event.anonymous_id(),
                    event.user_id(),
                    event.previous_id(),
                ];
                if !log.drops(event.tenant(), event.received_at_ms(), ids) {
                    return true;
                }
                if live && event.timestamp_ms >= cutoff {
                    let person = person_of.get(node).cloned().unwrap_or_else(|| node.clone());
                    emit(((person, event.clone()), time.clone(), -1));
                }
                false
            });
            *retained -= before - visitor.events.len();
            !visitor.events.is_empty()
        });
    }

    /// Applies a time's changes of the map; returns the person each changed node had before.
    /// Differential does not promise consolidated updates (a time may carry +x and -x), so
    /// they are netted first, and retractions of old persons go before insertions of new ones.
    fn apply_map(&mut self, changes: Vec<(Node, Person, isize)>) -> FxHashMap<Node, Person> {
        let mut net: FxHashMap<(Node, Person), isize> = FxHashMap::default();
        for (node, person, diff) in changes {
            *net.entry((node, person)).or_default() += diff;
        }
        let mut changes: Vec<_> = net.into_iter().filter(|(_, diff)| *diff != 0).collect();
        changes.sort_by_key(|(_, diff)| *diff > 0);
        let mut before: FxHashMap<Node, Person> = FxHashMap::default();
        for ((node, person), diff) in changes {
            let current = self.person(&node);
            before.entry(node.clone()).or_insert(current);
            if diff > 0 && person != node {
                self.person_of.insert(node, person);
            } else if diff > 0 {
                // Its own person, as an id in no link is: nothing to hold.
                self.person_of.remove(&node);
            } else if self.person_of.get(&node) == Some(&person) {
                self.person_of.remove(&node);
            }
        }
        before
    }

    /// Re-attributes what was emitted before under a changed person: what the retention rule
    /// retains at `cutoff`, decided here rather than by when a sweep last ran, so that a late
    /// identity claim corrects the same events whenever the sweeps happen (a replay sweeps
    /// elsewhere).
    fn reattribute<T: Clone>(
        &self,
        before: FxHashMap<Node, Person>,
        cutoff: i64,
        time: &T,
        mut emit: impl FnMut(Attributed<T>),
    ) {
        for (node, old) in before {
            let new = self.person(&node);
            if old == new {
                continue;
            }
            for event in self
                .visitors
                .get(&node)
                .filter(|v| v.last_time_ms >= cutoff)
                .map(|v| v.events.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|e| e.timestamp_ms >= cutoff)
            {
                emit(((old.clone(), event.clone()), time.clone(), -1));
                emit(((new.clone(), event.clone()), time.clone(), 1));
            }
        }
    }

    /// Attributes new events under the current map and retains them.
    fn assign<T: Clone>(
        &mut self,
        events: Vec<SharedActivity>,
        cutoff: i64,
        time: &T,
        mut emit: impl FnMut(Attributed<T>),
    ) {
        for event in events {
            self.expiry.observe(event.received_at_ms());
            let node = Node::attribution_of(&event);
            emit(((self.person(&node), event.clone()), time.clone(), 1));
            let visitor = self.visitors.entry(node.clone()).or_default();
            if visitor.last_time_ms < cutoff {
                // Released by the rule, whether or not a sweep has run yet.
                self.retained -= visitor.events.len();
                visitor.events.clear();
            }
            visitor.last_time_ms = visitor.last_time_ms.max(event.timestamp_ms);
            self.due.schedule_before(node, event.timestamp_ms, visitor);
            visitor.events.make_room_for_one();
            visitor.events.push(event);
            self.retained += 1;
        }
    }

    /// Applies one batch: erasures first, under the map as it was when the events were
    /// emitted (a merge of the same time then finds nothing of theirs); then the map's changes,
    /// re-attributing the events they move; then the new events.
    fn apply<T: Clone>(
        &mut self,
        updates: impl IntoIterator<Item = Update>,
        log: &mut ErasureLog,
        time: &T,
        mut emit: impl FnMut(Attributed<T>),
    ) {
        let (mut changes, mut new_events) = (Vec::new(), Vec::new());
        let mut erased = false;
        for update in updates {
            match update {
                Update::Person(node, person, diff) => changes.push((node, person, diff)),
                Update::Event(event) => new_events.push(event),
                Update::Erasure(ControlRecord(message)) => {
                    log.apply(&message);
                    erased |= crate::erasure::withdraws(&message);
                }
            }
        }
        let cutoff = self.expiry.cutoff();
        if erased {
            self.withdraw(log, cutoff, time, &mut emit);
        }
        let before = self.apply_map(changes);
        self.reattribute(before, cutoff, time, &mut emit);
        self.assign(new_events, cutoff, time, &mut emit);
        self.sweep(cutoff);
    }

    /// Releases, from the visitors due, the events older than `keep_ms` before the clock (a
    /// visitor who keeps coming back keeps only those a change may still re-attribute), and
    /// the visitors left without any.
    fn sweep(&mut self, cutoff: i64) {
        let retained = &mut self.retained;
        self.due
            .release_due(&mut self.visitors, cutoff, |_, visitor| {
                let before = visitor.events.len();
                visitor.events.retain(|e| e.timestamp_ms >= cutoff);
                *retained -= before - visitor.events.len();
                visitor.events.iter().map(|e| e.timestamp_ms).min()
            });
    }
}

/// Attributes events to persons.
pub trait AssignPersons<'s, T: Timestamp> {
    /// Pairs each event with its person: the person of its `userId` when it has one, else of
    /// its `anonymousId` (an id in no link is its own person), withdrawing what `erasures`
    /// cover (the control records on every worker; the log holds the salt). It reports the
    /// events, ids, persons and timers it holds on the worker into `gauges`.
    fn assign_persons(
        self,
        persons: VecCollection<'s, T, (Node, Person), isize>,
        erasures: Erasures<'s, T>,
        retention: Retention,
        gauges: StateGauges,
    ) -> VecCollection<'s, T, (Person, SharedActivity), isize>;
}

impl<'s, T: Timestamp + TotalOrder> AssignPersons<'s, T> for StreamVec<'s, T, SharedActivity> {
    fn assign_persons(
        self,
        persons: VecCollection<'s, T, (Node, Person), isize>,
        erasures: Erasures<'s, T>,
        retention: Retention,
        gauges: StateGauges,
    ) -> VecCollection<'s, T, (Person, SharedActivity), isize> {
        let Erasures { control, mut log } = erasures;
        let local = self.scope().index() as u64;
        let by_event =
            Exchange::new(|event: &SharedActivity| route(&Node::attribution_parts(event)));
        let by_node = Exchange::new(|input: &MapInput<T>| match input {
            MapInput::Person(node, ..) => route(node),
            MapInput::Erasure(_, worker) => *worker,
        });
        let map = persons
            .inner
            .map(|((node, person), time, diff)| MapInput::Person(node, person, time, diff))
            .concat(control.map(move |message| MapInput::Erasure(message, local)));
        self.binary_frontier(
            map,
            by_event,
            by_node,
            "AssignPersons",
            move |_capability, _info| {
                let mut stash: Stash<T, Update> = Stash::default();
                let mut state = Persons::new(retention);
                move |(events, events_frontier), (mapping, mapping_frontier), output| {
                    events.for_each(|capability, data| {
                        let Some(time) = capability.least().cloned() else {
                            return;
                        };
                        for event in data.drain(..) {
                            stash.push(&capability, time.clone(), Update::Event(event));
                        }
                    });
                    mapping.for_each(|capability, data| {
                        let Some(now) = capability.least().cloned() else {
                            return;
                        };
                        for input in data.drain(..) {
                            match input {
                                MapInput::Person(node, person, time, diff) => stash.push(
                                    &capability,
                                    time,
                                    Update::Person(node, person, diff),
                                ),
                                MapInput::Erasure(message, _) => {
                                    stash.push(&capability, now.clone(), Update::Erasure(message))
                                }
                            }
                        }
                    });
                    for (capability, updates) in
                        stash.complete(&[events_frontier, mapping_frontier])
                    {
                        let time = capability.time().clone();
                        let mut session = output.session(&capability);
                        state.apply(updates.into_iter().flatten(), &mut log, &time, |update| {
                            session.give(update)
                        });
                        state.report(&gauges);
                    }
                }
            },
        )
        .as_collection()
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::model::IdKind;
    use crate::testing::{activity, event, run_collection};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use timely::dataflow::operators::vec::Map;

    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    enum Input {
        Event(SharedActivity),
        Map(Node, Person),
    }

    fn node(id: u8) -> Node {
        Node::new(
            &arcstr::ArcStr::from("t"),
            IdKind::Anonymous,
            format!("a{id}").into(),
        )
    }

    fn person(id: u8) -> Person {
        Node::new(
            &arcstr::ArcStr::from("t"),
            IdKind::User,
            format!("u{id}").into(),
        )
    }

    /// Turns "node n now belongs to person p" steps into consistent map updates, and returns
    /// the expected final attribution of every event.
    fn scenario(
        steps: Vec<(bool, u8, u8)>,
    ) -> (
        Vec<(Input, isize)>,
        BTreeMap<(Person, SharedActivity), isize>,
    ) {
        let mut current: BTreeMap<Node, Person> = BTreeMap::new();
        let mut updates = Vec::new();
        let mut events = Vec::new();
        for (index, (is_event, n, p)) in steps.into_iter().enumerate() {
            // The map also names user ids: mapped to themselves (a person's own id, as the
            // identity map emits it) or to another user (a merge).
            let node = if !is_event && n % 4 == 3 {
                person(n % 3)
            } else {
                node(n % 6)
            };
            if is_event {
                let mut event = event("t", &format!("m{index}"), &node.id, index as i64 * 1000);
                // Some events carry a user id too: they belong to that user's person.
                let owner = if p % 4 == 0 {
                    event.user_id = format!("u{}", p % 3);
                    person(p % 3)
                } else {
                    node.clone()
                };
                let event = activity(&event);
                updates.push((Input::Event(event.clone()), 1));
                events.push((owner, event));
            } else if let Some(old) = current.insert(node.clone(), person(p % 3)) {
                updates.push((Input::Map(node.clone(), old), -1));
                if p % 2 == 0 {
                    // A transient person, as differential may emit within one time.
                    updates.push((Input::Map(node.clone(), person(9)), 1));
                    updates.push((Input::Map(node.clone(), person(9)), -1));
                }
                updates.push((Input::Map(node, person(p % 3)), 1));
            } else {
                updates.push((Input::Map(node, person(p % 3)), 1));
            }
        }
        let expected = events
            .into_iter()
            .map(|(owner, event)| {
                let person = current.get(&owner).cloned().unwrap_or(owner);
                ((person, event), 1)
            })
            .collect();
        (updates, expected)
    }

    fn assign(
        input: VecCollection<'_, u64, Input, isize>,
    ) -> VecCollection<'_, u64, (Person, SharedActivity), isize> {
        let events = input.clone().inner.flat_map(|(input, _, _)| match input {
            Input::Event(event) => Some(event),
            Input::Map(..) => None,
        });
        let map = input.flat_map(|input| match input {
            Input::Map(node, person) => Some((node, person)),
            Input::Event(_) => None,
        });
        let erasures = Erasures {
            control: timely::dataflow::operators::generic::operator::empty(events.scope()),
            log: Default::default(),
        };
        events.assign_persons(map, erasures, Retention::default(), StateGauges::default())
    }

    /// A user merged into another and then back on its own (an unmerge): the map says it
    /// is its own person again (which the operator holds as no entry), and its events are.
    #[test]
    fn a_user_merged_and_then_its_own_person_again_gets_its_events_back() {
        // u1 -> u2; an event of u1; u1 -> u1.
        let (input, expected) = scenario(vec![(false, 7, 2), (true, 0, 4), (false, 7, 1)]);
        let owners: Vec<&str> = expected.keys().map(|(person, _)| &*person.id).collect();
        assert_eq!(owners, ["u1"]);
        for workers in [1, 2] {
            assert_eq!(run_collection(workers, 1, input.clone(), assign), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn attribution_follows_the_map_retroactively(
            steps in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>()), 0..60),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..8,
        ) {
            let (input, expected) = scenario(steps);
            prop_assert_eq!(run_collection(workers, epoch_len, input, assign), expected);
        }
    }
}
