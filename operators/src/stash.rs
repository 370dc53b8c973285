//! The common skeleton of the keyed operators: buffer updates by time, and hand each time to the
//! operator's logic, in time order, once no input can still produce updates at it. Processing
//! in time order is what lets an operator diff its new state against what it emitted before.

use std::collections::BTreeMap;

use differential_dataflow::Hashable;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::order::TotalOrder;
use timely::progress::Timestamp;
use timely::progress::frontier::MutableAntichain;

/// Records are kept in chunks of at most this many: appending never moves what is already
/// buffered (an epoch can hold a million records of a few hundred bytes each, and doubling
/// one vector copied each of them about twice and faulted in fresh pages every epoch).
const CHUNK: usize = 4096;

/// The records of one completed time, in arrival order, in chunks.
pub(crate) type Chunks<D> = Vec<Vec<D>>;

/// Updates waiting for their time to complete, each time with the capability to emit at it.
#[derive(Debug)]
pub(crate) struct Stash<T: Timestamp, D> {
    times: BTreeMap<T, (Capability<T>, Chunks<D>)>,
}

impl<T: Timestamp + TotalOrder, D> Default for Stash<T, D> {
    fn default() -> Self {
        Stash {
            times: BTreeMap::new(),
        }
    }
}

fn append<D>(chunks: &mut Chunks<D>, datum: D) {
    match chunks.last_mut() {
        Some(chunk) if chunk.len() < chunk.capacity() => chunk.push(datum),
        _ => {
            let mut chunk = Vec::with_capacity(CHUNK);
            chunk.push(datum);
            chunks.push(chunk);
        }
    }
}

impl<T: Timestamp + TotalOrder, D> Stash<T, D> {
    /// Buffers `datum` at `time`, which must not precede the message's capability.
    pub(crate) fn push(&mut self, capability: &InputCapability<T>, time: T, datum: D) {
        // Fast path: updates of a message nearly always share the newest time.
        if let Some(mut newest) = self.times.last_entry()
            && *newest.key() == time
        {
            append(&mut newest.get_mut().1, datum);
            return;
        }
        let chunks = &mut self
            .times
            .entry(time)
            .or_insert_with_key(|time| (capability.delayed(time, 0), Vec::new()))
            .1;
        append(chunks, datum);
    }

    /// Buffers a whole message at its capability's time, taking its buffer as a chunk.
    pub(crate) fn push_all(&mut self, capability: &InputCapability<T>, data: &mut Vec<D>) {
        let Some(time) = capability.least().cloned() else {
            return;
        };
        if data.is_empty() {
            return;
        }
        self.times
            .entry(time)
            .or_insert_with_key(|time| (capability.delayed(time, 0), Vec::new()))
            .1
            .push(std::mem::take(data));
    }

    /// Removes and returns, in time order, every time that no input frontier can still reach.
    pub(crate) fn complete(
        &mut self,
        frontiers: &[&MutableAntichain<T>],
    ) -> Vec<(Capability<T>, Chunks<D>)> {
        let mut done = Vec::new();
        while let Some(entry) = self.times.first_entry() {
            if frontiers
                .iter()
                .any(|frontier| frontier.less_equal(entry.key()))
            {
                break;
            }
            done.push(entry.remove());
        }
        done
    }
}

/// The hash that routes a key to its worker: differential's [`Hashable`] (foldhash with a
/// fixed seed), the same on every process of a cluster (it decides which worker owns a key),
/// so it is not the randomly seeded std hasher. It is not a persistent format: a new build
/// may route keys elsewhere, which a restart handles as it handles a rescale.
pub fn route<K: std::hash::Hash + ?Sized>(key: &K) -> u64 {
    Hashable::hashed(&key)
}
