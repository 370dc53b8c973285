//! `loadgen`: sends generated clickstream to an ingest gateway at a steady rate, with event
//! times close to now, the way a fleet of browsers would. Used by the demo stack and the
//! gateway benchmarks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use clickstream_loadgen::generator::{Generator, GeneratorConfig, segment_json};
use serde_json::json;

/// Sends realistic traffic to an ingest gateway.
#[derive(Debug, Parser)]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    gateway: String,
    /// Write key (its tenant receives the traffic).
    #[arg(long, default_value = "demo_write_key")]
    write_key: String,
    /// Events per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Most events per request (every 100 ms, what has arrived is sent in such batches).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Stop after this many seconds (0 = run until killed).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Generator seed; defaults to the clock, so a restarted generator never reuses the
    /// messageIds (the dedup key) of an earlier run.
    #[arg(long)]
    seed: Option<u64>,
    /// Instead of sending traffic: write this many days of history (up to three hours ago)
    /// for `--tenant` straight into ClickHouse's `events` and `sessions`
    /// (`clickstream_loadgen::history`), then exit. The engine would count events that old
    /// as late, so history cannot go through the gateway.
    #[arg(long, default_value_t = 0)]
    seed_history_days: u32,
    /// With `--seed-history-days`: the tenant.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// With `--seed-history-days`: ClickHouse's HTTP URL.
    #[arg(
        long,
        env = "CLICKSTREAM_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    clickhouse_url: String,
    /// With `--seed-history-days`: the pipeline's database.
    #[arg(long, default_value = "clickstream")]
    database: String,
}

/// Writes `days` of history for `tenant` (UTC days, up to three hours ago) into ClickHouse.
async fn seed_history(args: &Args) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let first_day = (now - chrono::Duration::days(i64::from(args.seed_history_days))).date_naive();
    let history = clickstream_loadgen::history::History {
        tenant: args.tenant.clone(),
        domain: format!("{}.example", args.tenant),
        zone: chrono_tz::UTC,
        first_day,
        until_secs: now.timestamp() - 3 * 3600,
        seed: 20_261_204,
        visits_per_day: 40..80,
        id_prefix: format!("history-{}", args.tenant),
        visitor_prefix: "history-anon".into(),
        user_prefix: "history-user".into(),
    };
    let (events, sessions) = history.rows();
    let http = reqwest::Client::new();
    for (table, rows) in [("events", events), ("sessions", sessions)] {
        let count = rows.len();
        for chunk in rows.chunks(20_000) {
            let body: Vec<String> = chunk.iter().map(serde_json::Value::to_string).collect();
            let statement = format!(
                "INSERT INTO {}.{table} FORMAT JSONEachRow\n{}",
                args.database,
                body.join("\n")
            );
            let response = http
                .post(&args.clickhouse_url)
                .body(statement)
                .send()
                .await
                .with_context(|| format!("ClickHouse at {}", args.clickhouse_url))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "writing {table}: {status} {text}");
        }
        tracing::info!(table, rows = count, tenant = %args.tenant, days = args.seed_history_days, "history written");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.seed_history_days > 0 {
        return seed_history(&args).await;
    }
    let Args {
        gateway,
        write_key,
        rate,
        batch,
        duration_secs,
        seed,
        ..
    } = args;
    anyhow::ensure!(
        rate > 0.0 && batch > 0,
        "--rate and --batch must be positive"
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    let now_ms = || chrono::Utc::now().timestamp_millis();
    // Simulate traffic that is just happening: sessions start now and arrive in real time.
    let seed = seed.unwrap_or_else(|| now_ms() as u64);
    tracing::info!(seed, rate, "generating");
    let config = GeneratorConfig {
        seed,
        sessions_per_sec: rate / 6.0,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(config, now_ms()).context("generator")?;
    // Events whose arrival time has not come yet, earliest first.
    let mut upcoming: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut parked = std::collections::HashMap::new();
    let mut sequence = 0u64;
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await;
        if duration_secs > 0 && started.elapsed() >= Duration::from_secs(duration_secs) {
            break;
        }
        let now = now_ms();
        // Keep a minute of simulated future generated, so sessions interleave as in reality.
        while upcoming
            .peek()
            .is_none_or(|Reverse((_, _))| parked.len() < (rate * 60.0) as usize)
        {
            for arrival in generator.generate(1_000) {
                sequence += 1;
                upcoming.push(Reverse((arrival.arrival_ms, sequence)));
                parked.insert(sequence, arrival.event);
            }
        }
        // Everything due goes out now, in batches of `--batch` sent side by side (one
        // sequential request per tick would cap the rate at ten batches a second).
        let mut due = Vec::new();
        while let Some(Reverse((arrival_ms, id))) = upcoming.peek().copied() {
            if arrival_ms > now {
                break;
            }
            upcoming.pop();
            if let Some(event) = parked.remove(&id) {
                due.push(segment_json(&event, now));
            }
        }
        if due.is_empty() {
            continue;
        }
        let count = due.len() as u64;
        let requests = due.chunks(batch).map(|events| {
            let request = http
                .post(format!("{gateway}/v1/batch"))
                .basic_auth(&write_key, Some(""))
                .json(&json!({"batch": events}));
            let size = events.len() as u64;
            async move { (size, request.send().await) }
        });
        for (size, response) in futures_util::future::join_all(requests).await {
            match response {
                Ok(response) if response.status().is_success() => sent += size,
                Ok(response) => {
                    failed += size;
                    tracing::warn!(status = %response.status(), body = %response.text().await.unwrap_or_default(), "batch refused");
                }
                Err(error) => {
                    failed += size;
                    tracing::warn!(%error, "gateway unreachable");
                }
            }
        }
        if (sent + failed) % 1_000 < count {
            tracing::info!(sent, failed, "progress");
        }
    }
    tracing::info!(sent, failed, "done");
    Ok(())
}
