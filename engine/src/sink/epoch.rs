//! The epoch sink: the one way the dataflow writes to ClickHouse.
//!
//! Each sink buffers its input by epoch, holding a capability per buffered epoch, and writes
//! an epoch once its input frontier has passed it (no worker can still send data for it).
//! Only after ClickHouse acknowledged the write does it drop the capability, so a downstream
//! frontier that has passed epoch `e` proves that every sink on every worker has written `e`:
//! that is what the checkpoint operator waits for.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::{Stream, StreamVec};
use timely::scheduling::SyncActivator;

use crate::retry::stop;

/// The writes of one table's completed epochs, run on the I/O runtime while the worker goes
/// on: the tables of an epoch are written concurrently, not one after another.
pub type Write = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A sink's write in progress, with the capabilities of the epochs it writes.
struct InFlight {
    task: tokio::task::JoinHandle<()>,
    ended: Arc<AtomicBool>,
    held: Vec<Capability<u64>>,
}

impl InFlight {
    /// Whether the write is done, so that its epochs may be released. A write whose task
    /// panicked wrote nothing certain: the process stops rather than release its epochs.
    fn finished(&mut self, runtime: &tokio::runtime::Handle) -> bool {
        if !self.ended.load(Ordering::Acquire) {
            return false;
        }
        // The write's future is over (its guard dropped): the task ends at once.
        if let Err(error) = runtime.block_on(&mut self.task) {
            stop("an epoch's write", &error);
        }
        true
    }
}

/// Marks a write's end and wakes its operator when dropped: at the end of the write, and also
/// when it panics (unwinding drops it), so the operator always learns of the end. Asking the
/// task handle instead would race: the task is marked finished only after its future has
/// returned, so an operator woken from inside the future could find it unfinished and never
/// be woken again.
struct EndOfWrite {
    ended: Arc<AtomicBool>,
    activator: Arc<SyncActivator>,
}

impl Drop for EndOfWrite {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
        // Fails only when the worker is gone, and then nobody waits.
        let _ = self.activator.activate();
    }
}

/// Attaches a sink to `stream`. `time_of` gives a record's own time when it has one (the
/// updates of a collection), else the message's time is used. `write` receives every record
/// of the completed epochs, oldest epoch last, and returns the future that makes them
/// durable; it runs on `runtime`.
///
/// A sink has at most one write in flight, so it writes its batches in order (a correction
/// may name a row of its previous batch); epochs that complete meanwhile are written together
/// by the next one. Each epoch's capability is held until the write that holds its records is
/// acknowledged, and the task wakes the operator when it ends. Records of epochs up to
/// `replayed_through` are dropped: an earlier run wrote them, and a restart replays those
/// epochs only to rebuild state.
pub fn epoch_sink<'s, D, P, W>(
    stream: StreamVec<'s, u64, D>,
    pact: P,
    name: &str,
    time_of: fn(&D) -> Option<u64>,
    replayed_through: u64,
    runtime: tokio::runtime::Handle,
    mut write: W,
) -> Stream<'s, u64, Vec<()>>
where
    D: Clone + 'static,
    P: ParallelizationContract<u64, Vec<D>>,
    W: FnMut(u64, Vec<D>) -> Write + 'static,
{
    let worker = stream.scope().worker();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        pact,
        name,
        move |_capability, info| {
            let activator = Arc::new(worker.sync_activator_for(info.address.to_vec()));
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
            let mut in_flight: Option<InFlight> = None;
            move |(input, frontier), _output| {
                input.for_each(|capability, data| {
                    let Some(&least) = capability.least() else {
                        return;
                    };
                    for datum in data.drain(..) {
                        let time = time_of(&datum).unwrap_or(least);
                        if time <= replayed_through {
                            continue;
                        }
                        stash
                            .entry(time)
                            .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                            .1
                            .push(datum);
                    }
                });
                if let Some(mut flight) = in_flight.take() {
                    if !flight.finished(&runtime) {
                        in_flight = Some(flight);
                        return;
                    }
                    // The write is acknowledged: its epochs' capabilities drop here.
                    drop(flight.held);
                }
                let mut batch = Vec::new();
                let mut held = Vec::new();
                let mut newest = None;
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    newest = Some(*entry.key());
                    let (capability, data) = entry.remove();
                    batch.extend(data);
                    held.push(capability);
                }
                if let Some(epoch) = newest {
                    let written = write(epoch, batch);
                    let ended = Arc::new(AtomicBool::new(false));
                    let end = EndOfWrite {
                        ended: Arc::clone(&ended),
                        activator: Arc::clone(&activator),
                    };
                    let task = runtime.spawn(async move {
                        let _end = end;
                        written.await;
                    });
                    in_flight = Some(InFlight { task, ended, held });
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::operators::vec::Input;

    /// The writes a test sink made: `(epoch, records)`.
    type Written = Arc<Mutex<Vec<(u64, Vec<u64>)>>>;

    /// The exactly-once contract of the asynchronous sink: an epoch's frontier passes only
    /// after the write holding it is over, a sink never has two writes at once, and epochs
    /// that complete during a write go together in the next one.
    #[test]
    fn an_epoch_is_released_after_its_write_and_writes_never_overlap() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let handle = runtime.handle().clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let written: Written = Arc::default();
        let flying = Arc::new(AtomicUsize::new(0));
        let (gate_in, written_in, flying_in) = (gate.clone(), written.clone(), flying.clone());
        let written_so_far = written.clone();
        timely::execute_directly(move |worker| {
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<u64>();
                let done = epoch_sink(
                    stream,
                    Pipeline,
                    "Test",
                    |_| None,
                    0,
                    handle,
                    move |epoch, batch| {
                        let (gate, written, flying) =
                            (gate_in.clone(), written_in.clone(), flying_in.clone());
                        Box::pin(async move {
                            assert_eq!(
                                flying.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two writes at once"
                            );
                            gate.acquire().await.expect("gate").forget();
                            written.lock().expect("log").push((epoch, batch));
                            flying.fetch_sub(1, Ordering::SeqCst);
                        })
                    },
                );
                (input, done.probe().0)
            });
            macro_rules! step_until {
                ($what:expr, $done:expr) => {{
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !$done {
                        assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
                        worker.step_or_park(Some(Duration::from_millis(5)));
                    }
                }};
            }
            input.advance_to(1);
            input.send(10);
            input.advance_to(2);
            step_until!(
                "the first write to start",
                flying.load(Ordering::SeqCst) == 1
            );
            input.send(20);
            input.advance_to(3);
            input.send(30);
            input.advance_to(4);
            for _ in 0..200 {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            assert!(
                probe.less_equal(&1),
                "epoch 1 released before its write ended"
            );
            assert!(written_so_far.lock().expect("log").is_empty());
            gate.add_permits(1);
            step_until!("the first write to end", !probe.less_equal(&1));
            assert!(probe.less_equal(&2), "epochs 2 and 3 are not written yet");
            step_until!(
                "the second write to start",
                flying.load(Ordering::SeqCst) == 1
            );
            gate.add_permits(1);
            step_until!("the second write to end", !probe.less_equal(&3));
            input.close();
            step_until!("the end", probe.done());
        });
        assert_eq!(
            *written.lock().expect("log"),
            vec![(1, vec![10]), (3, vec![20, 30])]
        );
    }
}
