//! The engine against a broker that goes away: librdkafka's mock cluster (a real Kafka-protocol
//! broker inside the test, which can take its broker down) feeds a 2-process engine cluster;
//! the broker is down for a while in the middle of the traffic. The engine must keep running,
//! resume when the broker is back, and end with every table equal to the reference's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::time::Duration;

use common::reference::compare_with_reference;
use common::{
    ClickHouse, Cluster, PARTITIONS, engine_config, produce, required_env, wait_until_checkpointed,
};
use loadgen::generator::{Generator, GeneratorConfig};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};

const EVENTS: usize = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_rides_out_a_broker_outage() {
    let mock: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("mock cluster");
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let (topic, database) = (format!("outage_{suffix}"), format!("kafka_outage_{suffix}"));
    mock.create_topic(&topic, PARTITIONS, 1).expect("topic");
    mock.create_topic(&format!("{topic}_control"), 1, 1)
        .expect("control topic");
    let clickhouse = ClickHouse {
        url: required_env("CLICKSTREAM_CLICKHOUSE_URL"),
        http: reqwest::Client::new(),
    };
    let dir = std::env::temp_dir().join(format!("clickstream-kafka-outage-{suffix}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let brokers = mock.bootstrap_servers();
    let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    let mut cluster = Cluster::start(&dir, &config, 2);

    let events: Vec<schemas::Event> = Generator::new(
        GeneratorConfig {
            seed: 11,
            tenants: vec!["acme".into()],
            sessions_per_sec: 0.5,
            ..GeneratorConfig::default()
        },
        1_700_000_000_000,
    )
    .expect("generator")
    .generate(EVENTS)
    .into_iter()
    .map(|arrival| arrival.event)
    .collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let (first, second) = events.split_at(EVENTS / 2);
    let mut log = produce(&producer, &topic, first).await;
    wait_until_checkpointed(&clickhouse, &database, log.len(), &mut cluster).await;

    mock.broker_down(1).expect("broker down");
    println!("broker down with {} records checkpointed", log.len());
    // The second half is sent while the broker is away (the producer holds it meanwhile).
    let sending = {
        let (producer, topic, second) = (producer.clone(), topic.clone(), second.to_vec());
        tokio::spawn(async move { produce(&producer, &topic, &second).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.assert_running();
    mock.broker_up(1).expect("broker up");
    println!("broker up again");

    log.extend(sending.await.expect("second half delivered"));
    wait_until_checkpointed(&clickhouse, &database, log.len(), &mut cluster).await;
    let (differences, _) = compare_with_reference(&clickhouse, &database, &log).await;
    cluster.assert_running();
    assert_eq!(
        differences, 0,
        "ClickHouse differs from the reference after the outage"
    );

    drop(cluster);
    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&dir);
}
