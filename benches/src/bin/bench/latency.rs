//! End-to-end latency: events offered to the gateway at a fixed rate (open loop, batches of
//! 10); every 20th request is a probe, a page view of a path of its own. The time from
//! sending a probe to (a) its row in ClickHouse's `events` and (b) its page view in the query
//! API (a Stats API v2 breakdown by page of the probes' paths) is that event's latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickstream_benches::load::{LoadPlan, latency_histogram, run_open_loop};
use hdrhistogram::Histogram;
use loadgen::generator::{Generator, GeneratorConfig, segment_json};
use serde_json::{Value, json};

use crate::report::Report;
use crate::stack::Stack;
use crate::{Options, progress};

const TENANTS: &str =
    "[[tenants]]\nid = 'bench'\nwrite_keys = ['wk_bench']\nread_keys = ['rk_bench']\n";
pub(crate) const EVENTS_PER_REQUEST: usize = 10;
const PROBE_EVERY: u64 = 20;
/// How often the watcher looks: each look is one query of `events` and one of the query API,
/// both load on the two cores it measures.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Probes sent and not yet seen: path -> when sent.
type Pending = Arc<Mutex<HashMap<String, Instant>>>;

fn probe(k: u64, stamp: i64) -> (String, String) {
    let path = format!("/probe/{stamp}/{k}");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let event = json!({
        "type": "page", "messageId": format!("probe-{stamp}-{k}"), "anonymousId": format!("probe-{stamp}-{k}"),
        "properties": {"path": path}, "timestamp": now, "sentAt": now,
    });
    (path, json!({ "batch": [event] }).to_string())
}

/// Requests of `EVENTS_PER_REQUEST` generated events each, for tenant `bench`.
pub(crate) fn batches(count: usize) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    let config = GeneratorConfig {
        seed: now as u64,
        tenants: vec!["bench".into()],
        late_share: 0.0,
        ..GeneratorConfig::default()
    };
    let Ok(mut generator) = Generator::new(config, now) else {
        return Vec::new();
    };
    let events: Vec<Value> = generator
        .generate(count)
        .iter()
        .map(|arrival| segment_json(&arrival.event, now))
        .collect();
    events
        .chunks(EVENTS_PER_REQUEST)
        .map(|chunk| json!({ "batch": chunk }).to_string())
        .collect()
}

/// Where the probes are seen: ClickHouse's `events` and the query API.
struct Watcher {
    http: reqwest::Client,
    clickhouse_url: String,
    database: String,
    query_url: String,
    /// The run's stamp, in every probe's path.
    stamp: i64,
    /// Seen in ClickHouse, not yet in the API: path -> when sent.
    in_clickhouse: HashMap<String, Instant>,
    clickhouse: Histogram<u64>,
    api: Histogram<u64>,
}

impl Watcher {
    /// The probes of `paths` that have a row in `events`.
    async fn seen_in_clickhouse(&self, paths: &[String]) -> Vec<String> {
        let list: Vec<String> = paths.iter().map(|p| format!("'{p}'")).collect();
        let sql = format!(
            "SELECT DISTINCT path FROM {}.events WHERE path IN ({})",
            self.database,
            list.join(",")
        );
        match self.http.post(&self.clickhouse_url).body(sql).send().await {
            Ok(response) => response
                .text()
                .await
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The probes whose page view the query API counts: one Stats API v2 breakdown by page
    /// of this run's probe paths over the last hour, so that a look asks about every waiting
    /// probe at once and the API figure has no queue of the watcher's own in it.
    async fn seen_in_api(&self) -> Vec<String> {
        let stamp = self.stamp;
        let now = chrono::Utc::now();
        let iso = |time: chrono::DateTime<chrono::Utc>| {
            time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let request = json!({
            "site_id": "bench",
            "metrics": ["pageviews"],
            "date_range": [iso(now - chrono::Duration::hours(1)), iso(now + chrono::Duration::minutes(1))],
            "dimensions": ["event:page"],
            "filters": [["contains", "event:page", [format!("/probe/{stamp}/")]]],
            "pagination": {"limit": 10_000},
        });
        let Ok(response) = self
            .http
            .post(format!("{}/api/v2/query", self.query_url))
            .bearer_auth("rk_bench")
            .json(&request)
            .send()
            .await
        else {
            return Vec::new();
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // A refused request would look like probes never arriving: say so.
            eprintln!("latency: the query API answered {status}: {body}");
        }
        body["results"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|row| row["metrics"][0].as_u64().is_some_and(|views| views > 0))
                    .filter_map(|row| row["dimensions"][0].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls until every probe was seen in both places, or 60 s after the last was sent.
    async fn watch(&mut self, pending: Pending, done_sending: Arc<AtomicBool>) {
        let mut finished_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let waiting: Vec<String> = pending
                .lock()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            if !waiting.is_empty() {
                let found = self.seen_in_clickhouse(&waiting).await;
                let now = Instant::now();
                if let Ok(mut pending) = pending.lock() {
                    for path in found {
                        if let Some(sent) = pending.remove(&path) {
                            let _ = self
                                .clickhouse
                                .record((now - sent).as_micros().max(1) as u64);
                            self.in_clickhouse.insert(path, sent);
                        }
                    }
                }
            }
            if !self.in_clickhouse.is_empty() {
                let seen = self.seen_in_api().await;
                let now = Instant::now();
                for path in seen {
                    if let Some(sent) = self.in_clickhouse.remove(&path) {
                        let _ = self.api.record((now - sent).as_micros().max(1) as u64);
                    }
                }
            }
            if done_sending.load(Ordering::Relaxed) {
                let all_seen = waiting.is_empty() && self.in_clickhouse.is_empty();
                let since = *finished_at.get_or_insert_with(Instant::now);
                if all_seen || since.elapsed() > Duration::from_secs(60) {
                    return;
                }
            }
        }
    }
}

/// Runs the latency part at each offered load into `report`.
pub async fn run(stack: &mut Stack, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let stamp = chrono::Utc::now().timestamp();
    let (database, ingest, query) = stack
        .pipeline_with_queries("latency", TENANTS, (18280, 18380), options.workers)
        .await?;
    for events_per_sec in [1_000.0, 10_000.0] {
        measure(
            stack,
            options,
            report,
            (&ingest, &query, &database),
            events_per_sec,
            stamp,
        )
        .await?;
    }
    stack.stop("query-gateway");
    stack.stop("ingest-gateway");
    stack.stop("engine");
    Ok(())
}

async fn measure(
    stack: &Stack,
    options: &Options,
    report: &mut Report,
    (ingest, query, database): (&str, &str, &str),
    events_per_sec: f64,
    stamp: i64,
) -> anyhow::Result<()> {
    let requests_per_sec = events_per_sec / EVENTS_PER_REQUEST as f64;
    let total = (requests_per_sec * options.secs as f64) as usize;
    let bodies = Arc::new(batches(total * EVENTS_PER_REQUEST));
    let pending: Pending = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(crate::REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default();
    let plan = LoadPlan {
        requests_per_sec,
        duration: Duration::from_secs(options.secs),
        connections: 64,
    };
    // The gateway's metrics listen on the port after its own.
    let ingest_metrics = ingest
        .rsplit_once(':')
        .and_then(|(host, port)| Some(format!("{host}:{}/metrics", port.parse::<u16>().ok()? + 1)))
        .unwrap_or_default();
    let produced_before = produce_totals(&http, &ingest_metrics).await;
    let bar = progress(total as u64, &format!("latency: {events_per_sec} events/s"));
    let url = format!("{ingest}/v1/batch");
    // When the gateway answered 200: the part of the latency that is the gateway and the
    // broker's, before the engine can read the probe.
    let acknowledged = Arc::new(Mutex::new(latency_histogram()));
    let probes = (http.clone(), pending.clone(), acknowledged.clone());
    let probe_base = events_per_sec as u64 * 1_000_000;
    let sending = run_open_loop(
        plan,
        move |k, due| {
            let ((http, pending, acknowledged), url, bodies) =
                (probes.clone(), url.clone(), bodies.clone());
            async move {
                let (path, body) = if k % PROBE_EVERY == 0 {
                    let (path, body) = probe(probe_base + k, stamp);
                    (Some(path), body)
                } else {
                    (None, bodies.get(k as usize).cloned().unwrap_or_default())
                };
                // From when the probe was due: time queued for a connection counts.
                let sent = due;
                let response = http
                    .post(&url)
                    .basic_auth("wk_bench", Some(""))
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                let status = response.status().as_u16();
                if let (Some(path), 200) = (path, status)
                    && let Ok(mut pending) = pending.lock()
                {
                    pending.insert(path, sent);
                    if let Ok(mut acknowledged) = acknowledged.lock() {
                        let _ = acknowledged.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                }
                Some(status)
            }
        },
        Some(&bar),
    );
    let mut watcher = Watcher {
        http,
        clickhouse_url: stack.clickhouse_url.clone(),
        database: database.to_owned(),
        query_url: query.to_owned(),
        stamp,
        in_clickhouse: HashMap::new(),
        clickhouse: latency_histogram(),
        api: latency_histogram(),
    };
    let flag = done.clone();
    let (load, ()) = tokio::join!(
        async move {
            let load = sending.await;
            flag.store(true, Ordering::Relaxed);
            load
        },
        watcher.watch(pending, done)
    );
    bar.finish_and_clear();
    let label = format!(
        "{events_per_sec} events/s offered ({} requests ok, {} failed)",
        load.ok, load.failed
    );
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let probes = total as u64 / PROBE_EVERY;
    let acknowledged = acknowledged
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| latency_histogram());
    if let (Some((sum_before, count_before)), Some((sum, count))) = (
        produced_before,
        produce_totals(&watcher.http, &ingest_metrics).await,
    ) && count > count_before
    {
        report.add(
            "latency",
            &format!("gateway: Kafka acknowledgement per request, mean, {label}"),
            (sum - sum_before) / (count - count_before) * 1000.0,
            "ms",
        );
    }
    for q in [0.5, 0.99] {
        report.add(
            "latency",
            &format!(
                "gateway -> acknowledged (200), p{}, {label}",
                (q * 100.0) as u32
            ),
            ms(&acknowledged, q),
            "ms",
        );
    }
    for (place, histogram) in [
        ("queryable in ClickHouse", &watcher.clickhouse),
        ("visible in the query API", &watcher.api),
    ] {
        report.add(
            "latency",
            &format!("gateway -> {place}, p50, {label}"),
            ms(histogram, 0.5),
            "ms",
        );
        let figure = report.add(
            "latency",
            &format!("gateway -> {place}, p99, {label}"),
            ms(histogram, 0.99),
            "ms",
        );
        if events_per_sec >= 10_000.0 && place.contains("ClickHouse") {
            figure.target = Some("< 1,000 ms".into());
            figure.met = Some(ms(histogram, 0.99) < 1_000.0 && histogram.len() == probes);
        }
        report.add(
            "latency",
            &format!("probes {place} of {probes} sent, {label}"),
            histogram.len() as f64,
            "probes",
        );
    }
    Ok(())
}

/// The ingest gateway's `clickstream_ingest_produce_duration_seconds` sum and count: the time
/// its requests waited for Kafka's acknowledgement.
async fn produce_totals(http: &reqwest::Client, url: &str) -> Option<(f64, f64)> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("clickstream_ingest_produce_duration_seconds_sum")?,
        value("clickstream_ingest_produce_duration_seconds_count")?,
    ))
}
