//! Test harness shared by the operators' oracle tests: runs a dataflow on a log at a given
//! worker count and epoch batching, spreading records over workers round-robin.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::{AsCollection, VecCollection};
use schemas::{Event, EventKind};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Inspect, Probe};

/// A page view of `anonymous_id` at `time_ms`, received when it happened.
pub fn event(tenant: &str, message_id: &str, anonymous_id: &str, time_ms: i64) -> Event {
    let mut event = Event::new(tenant, message_id, EventKind::Page, time_ms);
    event.anonymous_id = anonymous_id.into();
    event.page.path = "/".into();
    event
}

/// The activity of `event`, as the pipeline keeps it.
pub fn activity(event: &Event) -> crate::model::SharedActivity {
    crate::model::SharedActivity::new(crate::model::Activity::of(
        event,
        &mut crate::model::Interner::default(),
    ))
}

/// What a list of updates leaves: each item as many times as its net count (never below zero),
/// in order. Oracles count these from scratch.
pub fn final_items<D: Ord + Clone>(updates: &[(D, isize)]) -> Vec<D> {
    let mut counts: BTreeMap<D, isize> = BTreeMap::new();
    for (datum, diff) in updates {
        *counts.entry(datum.clone()).or_default() += diff;
    }
    counts
        .into_iter()
        .flat_map(|(datum, count)| std::iter::repeat_n(datum, count.max(0) as usize))
        .collect()
}

/// Test inputs that insert every item and then retract the marked ones, as corrections do.
pub fn insert_then_retract<D: Clone>(items: Vec<(D, bool)>) -> Vec<(D, isize)> {
    let mut updates: Vec<(D, isize)> = items.iter().map(|(item, _)| (item.clone(), 1)).collect();
    updates.extend(
        items
            .into_iter()
            .filter(|(_, retract)| *retract)
            .map(|(item, _)| (item, -1)),
    );
    updates
}

/// Test inputs as corrections arrive: item `i` inserted at epoch `i / epoch_len` and, when
/// it has a delay, retracted that many epochs later. Within an epoch the retractions come
/// first, so at one worker a retraction in the epoch of its insertion reaches the operator
/// before it (with more workers, in either order). The collection is the same at the epoch's
/// end; an operator must not care.
pub fn corrections<D: Clone>(
    items: Vec<(D, Option<u64>)>,
    epoch_len: usize,
) -> Vec<(D, u64, isize)> {
    let epoch_len = epoch_len.max(1);
    let mut updates = Vec::new();
    for (position, (item, retract_after)) in items.into_iter().enumerate() {
        let epoch = (position / epoch_len) as u64;
        if let Some(delay) = retract_after {
            updates.push((item.clone(), epoch + delay, -1));
        }
        updates.push((item, epoch, 1));
    }
    updates.sort_by_key(|(_, epoch, diff)| (*epoch, *diff));
    updates
}

/// The updates of `timed`, without their epochs: what oracles count from.
pub fn untimed<D: Clone>(timed: &[(D, u64, isize)]) -> Vec<(D, isize)> {
    timed
        .iter()
        .map(|(item, _, diff)| (item.clone(), *diff))
        .collect()
}

/// Runs `build` on a stream of `input`, record `i` at epoch `i / epoch_len`, and returns
/// everything it emits.
pub fn run_stream<D, O, F>(workers: usize, epoch_len: usize, input: Vec<D>, build: F) -> Vec<O>
where
    D: timely::ExchangeData + Clone + Sync,
    O: timely::ExchangeData + Clone,
    F: for<'s> Fn(StreamVec<'s, u64, D>) -> StreamVec<'s, u64, O> + Send + Sync + 'static,
{
    let timed = input
        .into_iter()
        .enumerate()
        .map(|(position, datum)| (datum, (position / epoch_len.max(1)) as u64))
        .collect();
    run_at(workers, timed, build)
}

/// Runs `build` on a collection of `input` updates and returns the final collection
/// (consolidated; zero-count records removed). Record `i` is at epoch `i / epoch_len`.
pub fn run_collection<D, O, F>(
    workers: usize,
    epoch_len: usize,
    input: Vec<(D, isize)>,
    build: F,
) -> BTreeMap<O, isize>
where
    D: timely::ExchangeData + Clone + Ord + Sync,
    O: timely::ExchangeData + Clone + Ord + std::fmt::Debug,
    F: for<'s> Fn(VecCollection<'s, u64, D, isize>) -> VecCollection<'s, u64, O, isize>
        + Send
        + Sync
        + 'static,
{
    let timed = input
        .into_iter()
        .enumerate()
        .map(|(position, (datum, diff))| (datum, (position / epoch_len.max(1)) as u64, diff))
        .collect();
    run_collection_timed(workers, timed, build)
}

/// As [`run_collection`], with each update's epoch given (non-decreasing). Also checks that
/// no record ever has a negative count at any time: a correction must retract what was
/// emitted, nothing else.
pub fn run_collection_timed<D, O, F>(
    workers: usize,
    timed: Vec<(D, u64, isize)>,
    build: F,
) -> BTreeMap<O, isize>
where
    D: timely::ExchangeData + Clone + Ord + Sync,
    O: timely::ExchangeData + Clone + Ord + std::fmt::Debug,
    F: for<'s> Fn(VecCollection<'s, u64, D, isize>) -> VecCollection<'s, u64, O, isize>
        + Send
        + Sync
        + 'static,
{
    let timed = timed
        .into_iter()
        .map(|update| (update.clone(), update.1))
        .collect();
    let updates = run_at(
        workers,
        timed,
        move |stream: StreamVec<'_, u64, (D, u64, isize)>| build(stream.as_collection()).inner,
    );
    let mut by_time: BTreeMap<u64, Vec<(O, isize)>> = BTreeMap::new();
    for (datum, time, diff) in updates {
        by_time.entry(time).or_default().push((datum, diff));
    }
    let mut state: BTreeMap<O, isize> = BTreeMap::new();
    for (time, changes) in by_time {
        for (datum, diff) in changes {
            *state.entry(datum).or_default() += diff;
        }
        state.retain(|_, count| *count != 0);
        if let Some((datum, count)) = state.iter().find(|(_, count)| **count < 0) {
            panic!("negative count {count} for {datum:?} at time {time}");
        }
    }
    state
}

/// Feeds each record at its (non-decreasing) epoch, spread over workers round-robin, and
/// returns everything `build` emits.
fn run_at<D, O, F>(workers: usize, timed: Vec<(D, u64)>, build: F) -> Vec<O>
where
    D: timely::ExchangeData + Clone + Sync,
    O: timely::ExchangeData + Clone,
    F: for<'s> Fn(StreamVec<'s, u64, D>) -> StreamVec<'s, u64, O> + Send + Sync + 'static,
{
    let output = Arc::new(Mutex::new(Vec::new()));
    let input = Arc::new(timed);
    let sink = output.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = sink.clone();
        let (mut handle, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (handle, stream) = scope.new_input::<D>();
            let probe = build(stream)
                .inspect(move |datum| sink.lock().expect("lock").push(datum.clone()))
                .probe()
                .0;
            (handle, probe)
        });
        let (index, peers) = (worker.index(), worker.peers());
        for (position, (datum, epoch)) in input.iter().enumerate() {
            handle.advance_to(*epoch);
            if position % peers == index {
                handle.send(datum.clone());
            }
        }
        handle.close();
        while !probe.done() {
            worker.step();
        }
    })
    .expect("dataflow");
    std::mem::take(&mut *output.lock().expect("lock"))
}
