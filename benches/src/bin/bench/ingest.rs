//! The ingest gateway under open-loop load: single-event requests and batches of 100 at
//! fixed offered loads, and a quiet tenant's latency while a noisy one sends ten times its
//! quota.

use std::sync::Arc;
use std::time::Duration;

use clickstream_benches::load::{LoadPlan, LoadReport, run_open_loop};
use loadgen::generator::{Generator, GeneratorConfig, segment_json};
use serde_json::{Value, json};

use crate::report::{Curve, Report};
use crate::stack::Stack;
use crate::{Options, progress};

/// Prepared requests, sent in turn: the gateway does not deduplicate, so repeating them
/// measures it as well as fresh ones would.
struct Requests {
    http: reqwest::Client,
    base: String,
    write_key: String,
    bodies: Vec<(String, String)>,
}

impl Requests {
    fn new(base: &str, write_key: &str, events: &[Value], batch: usize) -> Arc<Requests> {
        let bodies = if batch == 1 {
            events
                .iter()
                .map(|event| {
                    let kind = event["type"].as_str().unwrap_or("track").to_owned();
                    (format!("/v1/{kind}"), event.to_string())
                })
                .collect()
        } else {
            events
                .chunks(batch)
                .map(|chunk| {
                    (
                        "/v1/batch".to_owned(),
                        json!({ "batch": chunk }).to_string(),
                    )
                })
                .collect()
        };
        Arc::new(Requests {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(crate::REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            base: base.to_owned(),
            write_key: write_key.to_owned(),
            bodies,
        })
    }

    async fn send(&self, k: u64) -> Option<u16> {
        let (route, body) = &self.bodies[k as usize % self.bodies.len()];
        let response = self
            .http
            .post(format!("{}{route}", self.base))
            .basic_auth(&self.write_key, Some(""))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }
}

fn events(count: usize, tenant: &str) -> Vec<Value> {
    let now = chrono::Utc::now().timestamp_millis();
    let config = GeneratorConfig {
        seed: 7,
        tenants: vec![tenant.to_owned()],
        ..GeneratorConfig::default()
    };
    match Generator::new(config, now) {
        Ok(mut generator) => generator
            .generate(count)
            .iter()
            .map(|arrival| segment_json(&arrival.event, now))
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn offer(requests: &Arc<Requests>, plan: LoadPlan, label: &str) -> LoadReport {
    let total = (plan.requests_per_sec * plan.duration.as_secs_f64()) as u64;
    let bar = progress(total, label);
    let requests = requests.clone();
    let report = run_open_loop(
        plan,
        move |k, _| {
            let requests = requests.clone();
            async move { requests.send(k).await }
        },
        Some(&bar),
    )
    .await;
    bar.finish_and_clear();
    report
}

const TENANTS: &str = "[[tenants]]\nid = 'bench'\nwrite_keys = ['wk_bench']\n\
    [[tenants]]\nid = 'noisy'\nwrite_keys = ['wk_noisy']\nrate_limit = { events_per_sec = 1000, burst = 1000 }\n\
    [[tenants]]\nid = 'quiet'\nwrite_keys = ['wk_quiet']\n";

/// Runs the ingest part into `report`.
pub async fn run(stack: &mut Stack, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let topic = format!("bench_ingest_{}", chrono::Utc::now().timestamp());
    crate::create_topic(&stack.brokers, &topic, crate::stack::PARTITIONS).await?;
    let tenants = stack.dir.join("tenants-ingest.toml");
    std::fs::write(&tenants, TENANTS)?;
    let base = stack.ingest_gateway(18180, &topic, &tenants).await?;
    let secs = Duration::from_secs(options.secs);
    let events = events(20_000, "bench");

    let singles = Requests::new(&base, "wk_bench", &events, 1);
    let levels = [500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0];
    let results = sweep(
        &singles,
        &levels,
        secs,
        256,
        "single-event requests",
        report,
    )
    .await;
    let per_core = best_kept_up(&results) / options.cores as f64;
    let figure = report.add(
        "ingest",
        "single-event requests/s per core (best level kept up)",
        per_core,
        "req/s",
    );
    figure.target = Some(">= 20,000".into());
    figure.met = Some(per_core >= 20_000.0);
    if let Some(at_10k) = results.iter().find(|r| r.plan.requests_per_sec == 10_000.0) {
        let p99 = at_10k.latency_ms(0.99);
        let figure = report.add(
            "ingest",
            "p99 at 10,000 single-event requests/s (half the target)",
            p99,
            "ms",
        );
        figure.target = Some("< 5 ms".into());
        figure.met = Some(p99 < 5.0);
    }

    let batches = Requests::new(&base, "wk_bench", &events, 100);
    let levels = [50.0, 200.0, 500.0, 1_000.0, 2_000.0];
    let results = sweep(&batches, &levels, secs, 64, "batches of 100", report).await;
    let best_events = best_kept_up(&results) * 100.0;
    let figure = report.add(
        "ingest",
        "events/s in batches of 100 (best level kept up)",
        best_events,
        "events/s",
    );
    figure.target = Some(">= 200,000".into());
    figure.met = Some(best_events >= 200_000.0);

    noisy_neighbour(&base, secs, report).await;
    stack.stop("ingest-gateway");
    Ok(())
}

/// Offers each level in turn; one row per level and a curve for the chart.
async fn sweep(
    requests: &Arc<Requests>,
    levels: &[f64],
    secs: Duration,
    connections: usize,
    kind: &str,
    report: &mut Report,
) -> Vec<LoadReport> {
    let mut curve = Curve {
        label: kind.to_owned(),
        points: Vec::new(),
    };
    let mut results = Vec::new();
    for &rate in levels {
        let plan = LoadPlan {
            requests_per_sec: rate,
            duration: secs,
            connections,
        };
        let result = offer(requests, plan, &format!("ingest: {kind}, {rate}/s")).await;
        let name = format!(
            "{kind} at {rate} req/s offered: achieved (p50 {:.2} ms, p99 {:.2} ms, {} failed)",
            result.latency_ms(0.5),
            result.latency_ms(0.99),
            result.failed
        );
        let achieved = result.achieved_per_sec();
        report.add("ingest", &name, achieved, "req/s").anchor =
            Some(("offered".into(), achieved / rate));
        curve
            .points
            .push((rate, result.latency_ms(0.5), result.latency_ms(0.99)));
        results.push(result);
    }
    report.curves.push(curve);
    results
}

/// The best achieved rate among the levels that kept up: at least 95 % of the offered load
/// answered, nothing failed.
fn best_kept_up(results: &[LoadReport]) -> f64 {
    results
        .iter()
        .filter(|r| r.failed == 0 && r.achieved_per_sec() >= 0.95 * r.plan.requests_per_sec)
        .map(LoadReport::achieved_per_sec)
        .fold(0.0, f64::max)
}

/// The quiet tenant's p99 alone, then while the noisy tenant offers ten times its quota.
async fn noisy_neighbour(base: &str, secs: Duration, report: &mut Report) {
    let quiet = Requests::new(base, "wk_quiet", &events(2_000, "quiet"), 1);
    let noisy = Requests::new(base, "wk_noisy", &events(20_000, "noisy"), 1);
    let quiet_plan = LoadPlan {
        requests_per_sec: 200.0,
        duration: secs,
        connections: 32,
    };
    let alone = offer(&quiet, quiet_plan, "ingest: quiet tenant alone").await;
    let noisy_plan = LoadPlan {
        requests_per_sec: 10_000.0,
        duration: secs,
        connections: 256,
    };
    let (with_noise, noise) = tokio::join!(
        offer(
            &quiet,
            quiet_plan,
            "ingest: quiet tenant beside a noisy one"
        ),
        offer(&noisy, noisy_plan, "ingest: noisy tenant at 10x its quota"),
    );
    let alone_p99 = alone.latency_ms(0.99);
    let figure = report.add(
        "ingest",
        &format!(
            "quiet tenant p99 while a noisy tenant offers 10x its quota ({} of its {} requests got 429)",
            noise.rate_limited, noise.sent
        ),
        with_noise.latency_ms(0.99),
        "ms",
    );
    figure.anchor = Some((
        "the quiet tenant's p99 alone".into(),
        with_noise.latency_ms(0.99) / alone_p99.max(0.001),
    ));
    figure.target = Some("quiet requests all accepted".into());
    figure.met = Some(with_noise.failed == 0);
}
