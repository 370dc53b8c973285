//! `erase`: drops the events an erasure, a suppression or a tenant's removal covers, before any
//! operator keeps them (see [`schemas::erasure`] for the rule).
//!
//! The control records must reach every worker (the caller broadcasts them), and an event is let through only once
//! the control stream's frontier has passed its time: every erasure at an epoch up to the
//! event's is applied first. So once the engine's sinks have written an erasure's epoch, no
//! later epoch writes a row of the person, and the rows written before can be deleted without
//! a later write bringing one back. The log the engine read whole at start is the initial
//! state, so a replay never lets an erased event in.

use schemas::ControlMessage;
use schemas::erasure::ErasureLog;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

use differential_dataflow::{AsCollection, VecCollection};
use rustc_hash::FxHashMap;

use crate::Decoded;
use crate::gauges::StateGauge;
use crate::stash::Stash;

/// A control record as the dataflow carries it between workers and processes: as its JSON
/// text, since the record's own form (tagged by a `type` field) is one bincode cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord(pub ControlMessage);

/// Whether `message` withdraws what an operator already holds: an erasure or a tenant's
/// removal. A lift, an unmerge, a remerge or a recount withdraws nothing, so it must not make
/// an operator rescan all it holds.
pub(crate) fn withdraws(message: &ControlMessage) -> bool {
    matches!(
        message,
        ControlMessage::Erase { .. } | ControlMessage::RemoveTenant { .. }
    )
}

impl serde::Serialize for ControlRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for ControlRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(ControlRecord)
            .map_err(serde::de::Error::custom)
    }
}

/// The erasures a dataflow applies: the control records on every worker (broadcast), and
/// the log read before it started (whose salt hashes the events' ids).
#[allow(missing_debug_implementations)] // streams are not Debug
pub struct Erasures<'s, T: Timestamp> {
    /// Erasures, lifts and removals.
    pub control: StreamVec<'s, T, ControlRecord>,
    /// What was read before the dataflow started.
    pub log: ErasureLog,
}

/// Drops erased and suppressed events.
pub trait Erase<'s, T: Timestamp> {
    /// Keeps the events no erasure covers; `control` is the control topic's erasures, lifts
    /// and removals, on every worker, `log` what was read before the dataflow started, and
    /// `dropped` is told how many events each time dropped.
    fn erase(
        self,
        control: StreamVec<'s, T, ControlRecord>,
        log: ErasureLog,
        dropped: impl FnMut(usize) + 'static,
    ) -> StreamVec<'s, T, Decoded>;
}

impl<'s, T: Timestamp + TotalOrder> Erase<'s, T> for StreamVec<'s, T, Decoded> {
    fn erase(
        self,
        control: StreamVec<'s, T, ControlRecord>,
        mut log: ErasureLog,
        mut dropped: impl FnMut(usize) + 'static,
    ) -> StreamVec<'s, T, Decoded> {
        self.binary_frontier(
            control,
            Pipeline,
            Pipeline,
            "Erase",
            move |_capability, _info| {
                // Events are buffered as the messages that brought them (no copy per event);
                // control records, rare, by time.
                let mut stash: Stash<T, Decoded> = Stash::default();
                let mut controls: BTreeMap<T, Vec<ControlRecord>> = BTreeMap::new();
                move |(events, events_frontier), (control, control_frontier), output| {
                    control.for_each(|capability, messages| {
                        if let Some(time) = capability.least() {
                            controls.entry(time.clone()).or_default().append(messages);
                        }
                    });
                    events.for_each(|capability, data| stash.push_all(&capability, data));
                    for (capability, chunks) in stash.complete(&[events_frontier, control_frontier])
                    {
                        // Every record up to this time has arrived (the control frontier passed
                        // it) and applies to its events: the sinks' barrier for an erasure is
                        // the end of its epoch.
                        while let Some(entry) = controls.first_entry() {
                            if entry.key() > capability.time() {
                                break;
                            }
                            for record in entry.remove() {
                                log.apply(&record.0);
                            }
                        }
                        let mut session = output.session(&capability);
                        if log.is_empty() {
                            for chunk in chunks {
                                session.give_iterator(chunk.into_iter());
                            }
                            continue;
                        }
                        let mut count = 0;
                        for decoded in chunks.into_iter().flatten() {
                            let event = &decoded.event;
                            let ids = [
                                event.anonymous_id.as_str(),
                                event.user_id.as_str(),
                                event.previous_id.as_str(),
                            ];
                            if log.drops(&event.tenant, event.received_at_ms, ids) {
                                count += 1;
                            } else {
                                session.give(decoded);
                            }
                        }
                        if count > 0 {
                            dropped(count);
                        }
                    }
                }
            },
        )
    }
}

/// A record [`EraseRecords`] may have to retract, and the form it keeps it in until then:
/// what it keeps is kept for good (the identity claims every earlier run stored), so it is
/// kept compactly rather than as the record.
pub trait Retractable: Sized {
    /// What is kept of an emitted record.
    type Held: std::hash::Hash + Eq;
    /// What the records held share (a claim's tenant, say), made once per worker.
    type Shared: Default;
    /// The record as kept.
    fn hold(&self, shared: &mut Self::Shared) -> Self::Held;
    /// The record `held` keeps, as it was emitted.
    fn release(held: &Self::Held) -> Self;
    /// Whether `log` ever erased an id the held record names.
    fn erased(held: &Self::Held, log: &ErasureLog) -> bool;
}

/// Withdraws records of erased ids from a collection whose records carry no receipt time
/// (identity claims): a record is kept unless one of its ids was ever erased
/// ([`ErasureLog::ever_erased`]); when an erasure arrives, what was emitted of its ids is
/// retracted. Each worker retracts what it emitted (records stay where they are).
pub trait EraseRecords<'s, T: Timestamp, D> {
    /// `control` as for [`Erase::erase`]; `gauge` counts the distinct records held on the
    /// worker to retract.
    fn erase_records(
        self,
        control: StreamVec<'s, T, ControlRecord>,
        log: ErasureLog,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, D, isize>;
}

impl<'s, T, D> EraseRecords<'s, T, D> for VecCollection<'s, T, D, isize>
where
    T: Timestamp + TotalOrder,
    D: timely::ExchangeData + Retractable,
{
    fn erase_records(
        self,
        control: StreamVec<'s, T, ControlRecord>,
        mut log: ErasureLog,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, D, isize> {
        self.inner
            .binary_frontier(
                control,
                Pipeline,
                Pipeline,
                "EraseRecords",
                move |_capability, _info| {
                    let mut stash: Stash<T, Change<D>> = Stash::default();
                    let mut emitted = Emitted::<D>::default();
                    move |(updates, updates_frontier), (control, control_frontier), output| {
                        control.for_each(|capability, messages| {
                            let Some(time) = capability.least().cloned() else {
                                return;
                            };
                            for message in messages.drain(..) {
                                stash.push(&capability, time.clone(), Change::Control(message));
                            }
                        });
                        updates.for_each(|capability, data| {
                            for (datum, time, diff) in data.drain(..) {
                                stash.push(&capability, time, Change::Update(datum, diff));
                            }
                        });
                        for (capability, chunks) in
                            stash.complete(&[updates_frontier, control_frontier])
                        {
                            let time = capability.time().clone();
                            let mut session = output.session(&capability);
                            let mut emit = |datum, diff| session.give((datum, time.clone(), diff));
                            let mut erased = false;
                            let mut held = Vec::new();
                            for change in chunks.into_iter().flatten() {
                                match change {
                                    Change::Control(ControlRecord(message)) => {
                                        log.apply(&message);
                                        erased |= withdraws(&message);
                                    }
                                    Change::Update(datum, diff) => held.push((datum, diff)),
                                }
                            }
                            if erased {
                                emitted.withdraw(&log, &mut emit);
                            }
                            for (datum, diff) in held {
                                emitted.offer(datum, diff, &log, &mut emit);
                            }
                        }
                        gauge.set(emitted.counts.len());
                    }
                },
            )
            .as_collection()
    }
}

/// What [`EraseRecords`] emitted, held, with the count of each.
struct Emitted<D: Retractable> {
    counts: FxHashMap<D::Held, isize>,
    shared: D::Shared,
}

impl<D: Retractable> Default for Emitted<D> {
    fn default() -> Self {
        Emitted {
            counts: FxHashMap::default(),
            shared: D::Shared::default(),
        }
    }
}

impl<D: Retractable> Emitted<D> {
    /// Emits `datum` unless `log` ever erased one of its ids, and holds it.
    fn offer(&mut self, datum: D, diff: isize, log: &ErasureLog, mut emit: impl FnMut(D, isize)) {
        let held = datum.hold(&mut self.shared);
        if D::erased(&held, log) {
            return;
        }
        match self.counts.entry(held) {
            Entry::Occupied(mut held) => {
                *held.get_mut() += diff;
                if *held.get() == 0 {
                    held.remove();
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(diff);
            }
        }
        emit(datum, diff);
    }

    /// Retracts and forgets what `log` ever erased an id of.
    fn withdraw(&mut self, log: &ErasureLog, mut emit: impl FnMut(D, isize)) {
        self.counts.retain(|held, count| {
            if D::erased(held, log) {
                emit(D::release(held), -*count);
                false
            } else {
                true
            }
        });
    }
}

/// What [`EraseRecords`] buffers until its time is complete.
enum Change<D> {
    Control(ControlRecord),
    Update(D, isize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{event, run_stream};
    use proptest::prelude::*;
    use schemas::erasure::id_hash;
    use timely::dataflow::operators::OkErr;
    use timely::dataflow::operators::vec::Broadcast;
    use timely::dataflow::operators::vec::Map;

    const SALT: &str = "test salt";
    const IDS: [&str; 4] = ["a0", "a1", "u0", "u1"];

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    enum Input {
        Event(Decoded),
        Control(ControlRecord),
    }

    /// One generated step: an event (anonymous id, user id, receipt time), or an erasure or a
    /// lift of an id at a time, or a tenant's removal.
    #[derive(Debug, Clone)]
    enum Step {
        Event(usize, Option<usize>, i64),
        Erase(usize, i64),
        Lift(usize, i64),
        Remove(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..2usize, proptest::option::of(2..4usize), 0..1_000i64)
                .prop_map(|(a, u, r)| Step::Event(a, u, r)),
            2 => (0..4usize, 0..1_000i64).prop_map(|(id, at)| Step::Erase(id, at)),
            1 => (0..4usize, 0..1_000i64).prop_map(|(id, at)| Step::Lift(id, at)),
            1 => (0..1_000i64).prop_map(Step::Remove),
        ]
    }

    fn control(step: &Step, tenant: &str) -> Option<ControlMessage> {
        let hashes = |id: usize| vec![id_hash(SALT, tenant, IDS[id])];
        match *step {
            Step::Erase(id, at) => Some(ControlMessage::Erase {
                request_id: format!("r{at}"),
                tenant: tenant.into(),
                id_hashes: hashes(id),
                requested_at_ms: at,
                salt_check: String::new(),
            }),
            Step::Lift(id, at) => Some(ControlMessage::LiftSuppression {
                tenant: tenant.into(),
                id_hashes: hashes(id),
                lifted_at_ms: at,
            }),
            Step::Remove(at) => Some(ControlMessage::RemoveTenant {
                request_id: format!("t{at}"),
                tenant: tenant.into(),
                requested_at_ms: at,
            }),
            Step::Event(..) => None,
        }
    }

    /// The rule, written from the module documentation of `schemas::erasure` on plain ids:
    /// whether an event is kept given the control steps it is decided against.
    fn kept(anonymous: usize, user: Option<usize>, received: i64, controls: &[&Step]) -> bool {
        let removed = controls
            .iter()
            .any(|step| matches!(step, Step::Remove(at) if received <= *at));
        let covers = |id: usize| {
            let erased_later = controls
                .iter()
                .any(|step| matches!(step, Step::Erase(e, at) if *e == id && *at >= received));
            // The last action on the id strictly before the receipt; a lift at the same
            // instant as an erasure counts as the later one.
            let last = controls
                .iter()
                .filter_map(|step| match step {
                    Step::Erase(e, at) if *e == id && *at < received => Some((*at, false)),
                    Step::Lift(l, at) if *l == id && *at < received => Some((*at, true)),
                    _ => None,
                })
                .max();
            let last = last.map(|(at, is_lift)| (at, !is_lift));
            erased_later || last.is_some_and(|(_, erase)| erase)
        };
        !(removed || covers(anonymous) || user.is_some_and(covers))
    }

    #[test]
    fn control_records_cross_processes_as_timely_serializes_them() {
        let record = ControlRecord(ControlMessage::Erase {
            request_id: "r".into(),
            tenant: "t".into(),
            id_hashes: vec![id_hash(SALT, "t", "a0")],
            requested_at_ms: 5,
            salt_check: schemas::erasure::salt_check(SALT),
        });
        let bytes = bincode1::serialize(&record).expect("serializes");
        let back: ControlRecord = bincode1::deserialize(&bytes).expect("deserializes");
        assert_eq!(back, record);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn events_are_kept_or_dropped_as_the_rule_says(
            initial in proptest::collection::vec(step(), 0..4),
            steps in proptest::collection::vec(step(), 0..60),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..6,
        ) {
            let tenant = "t";
            let mut log = ErasureLog::new(SALT);
            for step in &initial {
                if let Some(message) = control(step, tenant) {
                    log.apply(&message);
                }
            }
            // Records of other tenants are never touched by this tenant's erasures.
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (position, step) in steps.iter().enumerate() {
                match *step {
                    Step::Event(anonymous, user, received) => {
                        for tenant in ["t", "other"] {
                            let id = format!("{tenant}-m{position}");
                            let mut e = event(tenant, &id, IDS[anonymous], received);
                            e.received_at_ms = received;
                            e.user_id = user.map(|u| IDS[u].to_owned()).unwrap_or_default();
                            // Decided against every control step up to its epoch.
                            let epoch = position / epoch_len;
                            let controls: Vec<&Step> = initial
                                .iter()
                                .chain(
                                    steps
                                        .iter()
                                        .take((epoch + 1) * epoch_len)
                                        .filter(|s| !matches!(s, Step::Event(..))),
                                )
                                .collect();
                            if tenant == "other" || kept(anonymous, user, received, &controls) {
                                expected.push(id);
                            }
                            input.push(Input::Event(Decoded { partition: 0, offset: position as i64, event: e.into() }));
                        }
                    }
                    _ => {
                        input.push(Input::Control(ControlRecord(control(step, tenant).expect("a control step"))));
                        // Keeps positions aligned with `steps` (two inputs per event).
                        input.push(Input::Control(ControlRecord(ControlMessage::LiftSuppression {
                            tenant: "nobody".into(),
                            id_hashes: vec![],
                            lifted_at_ms: 0,
                        })));
                    }
                }
            }
            let mut kept_ids: Vec<String> = run_stream(workers, epoch_len * 2, input, move |input| {
                let (events, controls) = input.ok_err(|input| match input {
                    Input::Event(decoded) => Ok(decoded),
                    Input::Control(message) => Err(message),
                });
                events
                    .erase(controls.broadcast(), log.clone(), |_| {})
                    .map(|decoded| decoded.event.message_id.clone())
            });
            kept_ids.sort();
            expected.sort();
            prop_assert_eq!(kept_ids, expected);
        }
    }
}
