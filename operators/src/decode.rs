//! `decode`: wire bytes to events, with the gateway's warnings and undecodable records kept as
//! data.
//!
//! A corrupt or future-version record must neither stop the dataflow nor vanish: it travels on
//! as a [`DeadLetter`] with its position, so the sink can store it and still account for its
//! offset when it checkpoints. A gateway's warning (a refused event, an ignored field) is not
//! an event: it goes to its own sink, past every operator.

use schemas::{IngestWarning, Record, SourceRecord};

use crate::model::SharedEvent;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::OkErr;
use timely::progress::Timestamp;

/// A decoded event and where it was read. The event is shared from here on: it is large (about
/// 850 bytes inline, plus its strings), and every operator hop would otherwise copy it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Decoded {
    /// Source partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The event.
    pub event: SharedEvent,
}

/// A record that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Source partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The decoding error, for humans.
    pub error: String,
    /// The raw bytes, so the record can be replayed once the cause is fixed.
    pub payload: Vec<u8>,
}

/// A record that is not an event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NotAnEvent {
    /// A gateway's warning, for `ingestion_warnings` (boxed: rare, and larger than the rest).
    Warning(Box<IngestWarning>),
    /// A record that could not be decoded.
    Dead(DeadLetter),
}

impl NotAnEvent {
    /// The warning, or the dead letter.
    pub fn split(self) -> Result<IngestWarning, DeadLetter> {
        match self {
            NotAnEvent::Warning(warning) => Ok(*warning),
            NotAnEvent::Dead(dead) => Err(dead),
        }
    }
}

/// Decodes a stream of source records.
pub trait Decode<'s, T: Timestamp> {
    /// Decodes each record: the events, and the warnings and failures, in one pass (the
    /// events are large: each extra pass over them is a copy of every one).
    fn decode(self) -> (StreamVec<'s, T, Decoded>, StreamVec<'s, T, NotAnEvent>);
}

impl<'s, T: Timestamp> Decode<'s, T> for StreamVec<'s, T, SourceRecord> {
    fn decode(self) -> (StreamVec<'s, T, Decoded>, StreamVec<'s, T, NotAnEvent>) {
        self.ok_err(decode_record)
    }
}

/// The per-record logic, also usable outside a dataflow.
pub fn decode_record(record: SourceRecord) -> Result<Decoded, NotAnEvent> {
    let SourceRecord {
        partition,
        offset,
        payload,
    } = record;
    match schemas::wire::decode(&payload) {
        Ok(Record::Event(event)) => Ok(Decoded {
            partition,
            offset,
            event: SharedEvent::new(event),
        }),
        Ok(Record::Warning(warning)) => Err(NotAnEvent::Warning(Box::new(warning))),
        Err(error) => Err(NotAnEvent::Dead(DeadLetter {
            partition,
            offset,
            error: error.to_string(),
            payload,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use schemas::{Event, EventKind};
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::vec::Input;
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::operators::{Concat, Inspect, Probe};

    fn event(id: u32) -> Event {
        let mut event = Event::new(
            "t",
            &format!("m{id}"),
            EventKind::Track,
            i64::from(id) * 1000,
        );
        event.name = "e".into();
        event.anonymous_id = format!("a{}", id % 7);
        event.received_at_ms = 0;
        event
    }

    /// The oracle: what each record must become, computed without a dataflow.
    fn expected(records: &[(SourceRecord, Option<Event>)]) -> Vec<(i32, i64, Option<Event>)> {
        let mut out: Vec<_> = records
            .iter()
            .map(|(record, event)| (record.partition, record.offset, event.clone()))
            .collect();
        out.sort_by_key(|(partition, offset, _)| (*partition, *offset));
        out
    }

    fn arb_records() -> impl Strategy<Value = Vec<(SourceRecord, Option<Event>)>> {
        proptest::collection::vec(
            (
                0u32..1000,
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            0..200,
        )
        .prop_map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(position, (id, valid, garbage))| {
                    let partition = (position % 3) as i32;
                    let offset = position as i64;
                    if valid {
                        let event = event(id);
                        let payload = schemas::wire::encode(&event);
                        (
                            SourceRecord {
                                partition,
                                offset,
                                payload,
                            },
                            Some(event),
                        )
                    } else {
                        // Garbage, sometimes with a valid version byte in front (version 1,
                        // events only: garbage decoding as a warning would have no position).
                        let mut payload = garbage;
                        if id % 2 == 0 {
                            payload.insert(0, 1);
                        }
                        let decodes = match schemas::wire::decode(&payload) {
                            Ok(Record::Event(event)) => Some(event),
                            _ => None,
                        };
                        (
                            SourceRecord {
                                partition,
                                offset,
                                payload,
                            },
                            decodes,
                        )
                    }
                })
                .collect()
        })
    }

    fn run(
        workers: usize,
        records: Vec<(SourceRecord, Option<Event>)>,
    ) -> Vec<(i32, i64, Option<Event>)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let records = Arc::new(records);
        let seen_by_workers = seen.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let seen = seen_by_workers.clone();
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<SourceRecord>();
                let (events, not_events) = stream.decode();
                let probe = events
                    .map(Ok)
                    .concat(not_events.map(Err))
                    .inspect(move |outcome| {
                        let seen_record = match outcome {
                            Ok(decoded) => (
                                decoded.partition,
                                decoded.offset,
                                Some(Event::clone(&decoded.event)),
                            ),
                            Err(NotAnEvent::Dead(dead)) => {
                                assert!(!dead.error.is_empty());
                                (dead.partition, dead.offset, None)
                            }
                            Err(NotAnEvent::Warning(warning)) => {
                                panic!("garbage read as a warning: {warning:?}")
                            }
                        };
                        seen.lock().unwrap().push(seen_record);
                    })
                    .probe()
                    .0;
                (input, probe)
            });
            // Records are spread over workers and epochs, reversed within each epoch.
            for (epoch, chunk) in records.chunks(10).enumerate() {
                input.advance_to(epoch as u64);
                for (position, (record, _)) in chunk.iter().enumerate().rev() {
                    if (epoch * 10 + position) % worker.peers() == worker.index() {
                        input.send(record.clone());
                    }
                }
            }
            input.close();
            while !probe.done() {
                worker.step();
            }
        })
        .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_by_key(|(partition, offset, _)| (*partition, *offset));
        seen
    }

    #[test]
    fn a_gateway_warning_is_not_an_event() {
        let warning = IngestWarning {
            tenant: "t".into(),
            kind: schemas::WarningKind::RefusedEvent,
            message_id: "m".into(),
            field: "event".into(),
            value: "null".into(),
            detail: "is required".into(),
            received_at_ms: 1,
        };
        let record = SourceRecord {
            partition: 0,
            offset: 9,
            payload: schemas::wire::encode_warning(&warning),
        };
        assert_eq!(
            decode_record(record).map_err(NotAnEvent::split),
            Err(Ok(warning))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_the_oracle_at_any_worker_count(records in arb_records(), workers in 1usize..=4) {
            let oracle = expected(&records);
            prop_assert_eq!(run(workers, records), oracle);
        }
    }
}
