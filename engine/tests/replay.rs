//! A replay longer than the source's pending bound finishes. A restart replays every epoch
//! within the state horizon, and the source's capability stays at the oldest planned epoch
//! until every partition has delivered its part of it; records read from partitions that run
//! ahead count against the pending bound (`max_pending_records`, `max_pending_bytes`) all the
//! while. With a bound smaller than one epoch's records (here the bytes bound), the engine
//! must still read what the oldest epoch needs, finish the replay, and then read the records
//! that arrived while it was down, every table exact.
//!
//! Reading resumes wherever a position falls, often inside a record batch, so the broker must
//! serve such a fetch as Kafka does (tansu 0.6.0 did not: `deploy/tansu/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use common::reference::compare_with_reference;
use common::{Cluster, TestEnv, engine_config, produce, wait_until_checkpointed};
use loadgen::generator::{Generator, GeneratorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Events the first run checkpoints, all replayed by the second.
const REPLAYED: usize = 600;
/// Events produced at once while the first run reads.
const WAVE: usize = 8;
/// Events produced while the engine is down, read after the replay (about: the generator
/// completes sessions).
const NEW: usize = 100;

fn events(count: usize) -> Vec<schemas::Event> {
    Generator::new(
        GeneratorConfig {
            seed: 26,
            tenants: vec!["acme".into()],
            sessions_per_sec: 2.0,
            ..GeneratorConfig::default()
        },
        1_700_000_000_000,
    )
    .expect("generator")
    .generate(count)
    .into_iter()
    .map(|arrival| arrival.event)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_longer_than_the_pending_bound_finishes() {
    let env = TestEnv::new("replay").await;
    // Idempotent, so the log holds each event once and its end is known from the deliveries.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let all = events(REPLAYED + NEW);
    let config = engine_config(
        &env.dir,
        &env.brokers,
        &env.topic,
        &env.clickhouse.url,
        &env.database,
    );
    let mut first = Cluster::start(&env.dir, &config, 1);
    // Small waves a little more than an epoch (200 ms) apart: most epochs hold records of
    // some partitions only, so the replay's oldest epoch leaves others out.
    let mut log = Vec::new();
    for wave in all[..REPLAYED].chunks(WAVE) {
        log.extend(produce(&producer, &env.topic, wave).await);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    wait_until_checkpointed(&env.clickhouse, &env.database, log.len(), &mut first).await;
    first.terminate(0);
    first.wait_down(std::time::Duration::from_secs(30));

    // Ten records a poll and at most one byte pending: every epoch of the replay holds more.
    let bounded = env.dir.join("bounded.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "[kafka]\n",
        "[kafka]\nmax_poll_records = 10\nmax_pending_bytes = 1\n",
    );
    assert!(text.contains("max_pending_bytes = 1"), "{text}");
    std::fs::write(&bounded, text).expect("bounded config");
    let mut second = Cluster::start_shape(&env.dir, &bounded, 1, 2);
    log.extend(produce(&producer, &env.topic, &all[REPLAYED..]).await);
    let mut ends = std::collections::BTreeMap::new();
    for record in &log {
        let end = ends.entry(record.partition).or_insert(0);
        *end = (*end).max(record.offset + 1);
    }
    let log_end = ends.values().sum::<i64>() as usize;
    assert_eq!(log_end, all.len(), "the log holds each event once");
    wait_until_checkpointed(&env.clickhouse, &env.database, log_end, &mut second).await;

    let logs = second.logs();
    let finished = logs.matches("replay finished").count();
    assert_eq!(
        finished,
        common::PARTITIONS as usize,
        "every partition replays its plan; logs:\n{logs}"
    );
    assert!(
        logs.contains("reading only the partitions its oldest epoch needs"),
        "over the bound, the replay leaves the partitions its oldest epoch does not need; logs:\n{logs}"
    );
    let (differences, _) = compare_with_reference(&env.clickhouse, &env.database, &log).await;
    assert_eq!(differences, 0, "the replay and the new records are exact");
    drop(second);
    env.clickhouse
        .query(&format!("DROP DATABASE {}", env.database))
        .await;
    let _ = std::fs::remove_dir_all(&env.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_serves_a_fetch_that_starts_inside_a_batch() {
    let env = TestEnv::new("midbatch").await;
    // A long linger puts the hundred records in one batch.
    let payloads: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    produce_to_partition_0(&env, "500", &payloads).await;
    for start in [0, 37, 99] {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.brokers)
            .set("group.id", "midbatch")
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&env.topic, 0, Offset::Offset(start))
            .expect("offset");
        consumer.assign(&assignment).expect("assign");
        let mut offsets = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            match consumer.poll(std::time::Duration::from_millis(100)) {
                Some(Ok(message)) => offsets.push(message.offset()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(error)) => panic!("fetch from {start}: {error}"),
                None => {}
            }
        }
        assert_eq!(
            offsets,
            (start..100).collect::<Vec<i64>>(),
            "a fetch from offset {start} returns every record from there to the end"
        );
    }
    let _ = std::fs::remove_dir_all(&env.dir);
}

/// What librdkafka reads ahead of a worker stays within `kafka.max_fetch_queue_bytes` (and
/// one fetch): those records sit outside the pending bounds, in the C library's heap. The
/// consumer is the workers' own configuration, left unpolled while it fetches a log many
/// times the bound; librdkafka's default would queue all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_reads_ahead_no_more_than_the_fetch_queue_bound() {
    use clickstream_engine::config::KafkaConfig;
    use clickstream_engine::metrics::{Metrics, WorkerLabels};
    use clickstream_engine::source::kafka::{SourceContext, consumer_config};
    use std::sync::Arc;

    const BOUND: usize = 1 << 20;
    const RECORD: usize = 1_000;
    const RECORDS: usize = 16_000;
    let env = TestEnv::new("fetchq").await;
    produce_to_partition_0(&env, "20", &vec![vec![b'x'; RECORD]; RECORDS]).await;

    let kafka = KafkaConfig {
        brokers: env.brokers.clone(),
        topic: env.topic.clone(),
        max_fetch_queue_bytes: BOUND,
        ..KafkaConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let consumer: BaseConsumer<SourceContext> = consumer_config(&kafka)
        .set("statistics.interval.ms", "500")
        .create_with_context(SourceContext::new(metrics.clone(), 0))
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&env.topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&assignment).expect("assign");
    // Unpolled, librdkafka fills its queue in the background; each statistics snapshot is
    // taken then and delivered behind the records already queued.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let queued = || {
        metrics
            .fetch_queue_bytes
            .get_or_create(&WorkerLabels { worker: 0 })
            .get()
    };
    // Read for a while, keeping the largest queue any snapshot showed: those taken during
    // the sleep come out behind the records queued before them.
    let (mut read, mut largest) = (0, 0);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        if let Some(message) = consumer.poll(std::time::Duration::from_millis(100)) {
            read += usize::from(message.is_ok_and(|m| m.payload().is_some()));
        }
        largest = largest.max(queued() as usize);
    }
    // librdkafka stops at the KiB times 1000, and one fetch (at most `fetch.max.bytes`, set
    // to the bound in KiB times 1024, or 1 MiB a partition) may land past it.
    let ceiling = BOUND / 1024 * 1000 + (1 << 20) + RECORD;
    assert!(
        largest >= BOUND / 2,
        "no snapshot showed the queue filled: at most {largest} bytes ({read} records read)"
    );
    assert!(
        largest <= ceiling,
        "librdkafka queued {largest} bytes ahead against a bound of {BOUND} (log of {} bytes)",
        RECORD * RECORDS
    );
    let _ = std::fs::remove_dir_all(&env.dir);
}

/// Produces `payloads` (no key) to partition 0 of the test's topic with `linger.ms` =
/// `linger_ms`, and waits for every acknowledgement.
async fn produce_to_partition_0(env: &TestEnv, linger_ms: &str, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("linger.ms", linger_ms)
        .create()
        .expect("producer");
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|payload| {
            producer
                .send_result(
                    FutureRecord::<(), _>::to(&env.topic)
                        .partition(0)
                        .payload(payload),
                )
                .expect("enqueue")
        })
        .collect();
    for delivery in deliveries {
        delivery.await.expect("report").expect("acknowledged");
    }
}
