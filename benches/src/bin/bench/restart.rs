//! How long a crashed engine takes to be current again after a long stream (the end of the
//! memory part): the engine is killed (SIGKILL) while the stream still flows, the stream goes
//! on without it for [`DOWN_SECS`], and the clock runs from its restart until checkpoints
//! cover every record the log then held. A restart rebuilds its state by replaying every epoch
//! within the state horizon from each partition's low water (there are no state snapshots),
//! so the figure is the replay's: the records between the low waters and the log's end.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::pipeline::checkpointed;
use crate::report::Report;
use crate::stack::Stack;

/// Seconds the stream flows while the engine is down.
pub const DOWN_SECS: u64 = 10;

/// The longest a restart may take before the run gives up on it.
const GIVE_UP: Duration = Duration::from_secs(1800);

/// Σ of the log's end offsets over the topic's `partitions`, once two readings a second apart
/// agree (the stream has stopped and the broker has settled). These are high watermarks,
/// which tansu reports a little behind the log's end while records arrive; read after the
/// stream has stopped they are taken as the end (at worst the clock stops a batch early).
fn log_end(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let read = || -> anyhow::Result<i64> {
        let mut sum = 0;
        for partition in 0..partitions {
            sum += consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))?
                .1;
        }
        Ok(sum)
    };
    let mut last = read()?;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("the log's end kept moving for a minute after the stream stopped")
}

/// Σ of the newest checkpoint's low water per partition: where a restart starts replaying.
async fn low_waters(
    http: &reqwest::Client,
    url: &str,
    database: &str,
    topic: &str,
) -> anyhow::Result<i64> {
    let sql = format!(
        "SELECT sum(low) FROM (SELECT partition, argMax(low_water, next_offset) AS low FROM {database}._checkpoints WHERE topic = '{topic}' GROUP BY partition)"
    );
    let text = http.post(url).body(sql).send().await?.text().await?;
    Ok(text.trim().parse()?)
}

/// Restarts the (killed) engine reading `topic` into `database` (the memory part's, of
/// `partitions` partitions) once the stream has stopped, and reports how long it takes until
/// checkpoints cover the log's end: the replay of the state horizon, then the records the
/// engine had not checkpointed when it was killed.
pub async fn measure(
    stack: &mut Stack,
    (topic, database, partitions): (&str, &str, i32),
    workers: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (brokers, log) = (stack.brokers.clone(), topic.to_owned());
    let end = tokio::task::spawn_blocking(move || log_end(&brokers, &log, partitions)).await??;
    let http = reqwest::Client::new();
    let low = low_waters(&http, &stack.clickhouse_url, database, topic).await?;
    let before = checkpointed(&http, &stack.clickhouse_url, database, topic)
        .await
        .context("no checkpoint of the killed engine to restart from")?;
    let started = Instant::now();
    let engine = stack.engine(topic, database, workers)?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = checkpointed(&http, &stack.clickhouse_url, database, topic).await;
        if done.is_some_and(|done| done >= end) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < GIVE_UP,
            "the restarted engine was not current after {} s (see {})",
            GIVE_UP.as_secs(),
            stack.dir.display()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    report.add(
        "restart",
        &format!(
            "engine -w {workers} killed ({DOWN_SECS} s of stream after it), restarted: time until every record is checkpointed"
        ),
        secs,
        "s",
    );
    report.add(
        "restart",
        "records replayed (log end minus the low waters)",
        (end - low) as f64,
        "records",
    );
    report.add(
        "restart",
        "records not checkpointed when the engine was killed or sent after it (log end minus the checkpoints)",
        (end - before) as f64,
        "records",
    );
    report.add(
        "restart",
        "replay and catch-up rate",
        (end - low) as f64 / secs.max(0.001),
        "records/s",
    );
    report_rebuilt_state(stack, engine, report).await?;
    stack.stop("engine");
    Ok(())
}

/// What the restarted engine holds once current: its resident memory and the identity state
/// it rebuilt (the stored claims come back from ClickHouse at start and are held for good),
/// to compare with the last samples of the run before the kill.
async fn report_rebuilt_state(
    stack: &Stack,
    engine: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.add(
        "restart",
        "engine RSS once current again",
        crate::stack::rss_bytes(engine)? as f64 / (1024.0 * 1024.0),
        "MiB",
    );
    let url = stack
        .engine_metrics
        .as_deref()
        .context("the restarted engine has no metrics address")?;
    let gauges = crate::stack::engine_gauges(url).await?;
    for kind in ["stored_claims", "earliest_claims", "linked_ids"] {
        report.add(
            "restart",
            &format!("state entries once current again, {kind}"),
            gauges.state.get(kind).copied().unwrap_or_default(),
            "entries",
        );
    }
    Ok(())
}
