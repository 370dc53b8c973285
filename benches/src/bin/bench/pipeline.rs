//! The pipeline's sustained rate: the broker preloaded with N generated events, then (a) a
//! plain consumer reads the topic (the broker's own rate, the anchor) and (b) the engine
//! reads it into ClickHouse, timed by its checkpoints.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use loadgen::generator::{Generator, GeneratorConfig};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::report::Report;
use crate::stack::Stack;
use crate::{Options, progress};

/// Produces `count` generated events; returns each partition's end offset.
async fn preload(
    brokers: &str,
    topic: &str,
    geoip: &str,
    count: usize,
) -> anyhow::Result<HashMap<i32, i64>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut generator = Generator::new(GeneratorConfig::default(), now - 3_600_000)
        .map_err(|error| anyhow::anyhow!("generator: {error:?}"))?;
    // The records are what the gateway would have written: enriched.
    let geoip: Vec<std::path::PathBuf> = geoip.split(',').map(Into::into).collect();
    let enricher = clickstream_benches::gateway_enricher(&geoip).context("enrichment")?;
    let bar = progress(count as u64, "pipeline: preloading the broker");
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut left = count;
    while left > 0 {
        let mut chunk = generator.generate(left.min(50_000));
        left -= chunk.len().min(left);
        clickstream_benches::enrich_as_the_gateway(
            chunk.iter_mut().map(|arrival| &mut arrival.event),
            &enricher,
        );
        let mut deliveries = Vec::with_capacity(chunk.len());
        for arrival in &chunk {
            let (key, payload) = (
                arrival.event.partition_key(),
                schemas::wire::encode(&arrival.event),
            );
            deliveries.push(
                producer
                    .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
                    .map_err(|(error, _)| error)?,
            );
        }
        for delivery in deliveries {
            let delivered = delivery
                .await
                .context("delivery report")?
                .map_err(|(error, _)| error)?;
            let end = ends.entry(delivered.partition).or_default();
            *end = (*end).max(delivered.offset + 1);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(ends)
}

/// (a): a consumer that only reads, the broker's own rate; records per second.
fn consume_all(brokers: &str, topic: &str, ends: &HashMap<i32, i64>) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "clickstream-bench")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in ends.keys() {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let total: i64 = ends.values().sum();
    let bar = progress(total as u64, "pipeline: plain consumer");
    let started = Instant::now();
    let mut read = 0i64;
    while read < total {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => {
                read += 1;
                if read % 10_000 == 0 {
                    bar.inc(10_000);
                }
            }
            Some(Err(error)) => anyhow::bail!("consuming: {error}"),
            None if started.elapsed() > Duration::from_secs(600) => {
                anyhow::bail!("consumer stalled at {read}")
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Σ checkpointed next offsets of `topic` in `database`, or `None` before the first.
pub async fn checkpointed(
    http: &reqwest::Client,
    url: &str,
    database: &str,
    topic: &str,
) -> Option<i64> {
    let sql = format!(
        "SELECT sum(next) FROM (SELECT partition, max(next_offset) AS next FROM {database}._checkpoints WHERE topic = '{topic}' GROUP BY partition)"
    );
    let text = http
        .post(url)
        .body(sql)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.trim().parse::<i64>().ok().filter(|sum| *sum > 0)
}

/// Runs the pipeline part into `report`.
pub async fn run(stack: &mut Stack, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let stamp = chrono::Utc::now().timestamp();
    let topic = format!("bench_pipeline_{stamp}");
    let database = format!("bench_pipeline_{stamp}");
    crate::create_topic(&stack.brokers, &topic, crate::stack::PARTITIONS).await?;
    let ends = preload(&stack.brokers, &topic, &stack.geoip, options.events).await?;
    let total: i64 = ends.values().sum();
    let broker_rate = consume_all(&stack.brokers, &topic, &ends)?;
    report.add(
        "pipeline",
        &format!("broker: plain consumer over {total} records"),
        broker_rate,
        "records/s",
    );

    let started = Instant::now();
    stack.engine(&topic, &database, options.workers)?;
    let http = reqwest::Client::new();
    let bar = progress(total as u64, "pipeline: engine -> ClickHouse");
    let mut first: Option<(Instant, i64)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(done) = checkpointed(&http, &stack.clickhouse_url, &database, &topic).await else {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "the engine wrote no checkpoint in 300 s (see {})",
                stack.dir.display()
            );
            continue;
        };
        bar.set_position(done as u64);
        let (t1, done_1) = *first.get_or_insert((Instant::now(), done));
        if done >= total {
            bar.finish_and_clear();
            let whole = total as f64 / started.elapsed().as_secs_f64();
            let sustained = (total - done_1) as f64 / t1.elapsed().as_secs_f64().max(0.001);
            // The target is judged on the whole run: the engine may read (and buffer up to
            // `max_pending_records`) before its first checkpoint shows, so the rate after
            // that checkpoint is an upper bound.
            let figure = report.add(
                "pipeline",
                &format!(
                    "engine -w {}: Kafka -> ClickHouse, start-up included",
                    options.workers
                ),
                whole,
                "events/s",
            );
            figure.anchor = Some(("broker's plain consumer".into(), whole / broker_rate));
            figure.target = Some(">= 0.8x the broker".into());
            figure.met = Some(whole >= 0.8 * broker_rate);
            report.add(
                "pipeline",
                &format!(
                    "engine -w {}: after its first checkpoint (upper bound)",
                    options.workers
                ),
                sustained,
                "events/s",
            );
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the engine did not finish in 30 min"
        );
    }
    stack.stop("engine");
    let _ = http
        .post(&stack.clickhouse_url)
        .body(format!("DROP DATABASE IF EXISTS {database}"))
        .send()
        .await;
    Ok(())
}
