//! The ingest gateway under open-loop load: single-event requests and batches of 100 at
//! fixed offered loads, and a quiet tenant's latency while a noisy one sends ten times its
//! quota.

use std::sync::Arc;
use std::time::Duration;

use clickstream_benches::generator::{Generator, GeneratorConfig, segment_json};
use clickstream_benches::load::{LoadPlan, LoadReport, run_open_loop};
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
        move |k| {
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
    crate::create_topic(&stack.brokers, &topic, 12).await?;
    let tenants = stack.dir.join("tenants-ingest.toml");
    std::fs::write(&tenants, TENANTS)?;
    let base = stack.ingest_gateway(18180, &topic, &tenants).await?;
    let secs = Duration::from_secs(options.secs);
    let events = events(20_000, "bench");

    let singles = Requests::new(&base, "wk_bench", &events, 1);
    let mut curve = Curve {
        label: "single events".into(),
        points: Vec::new(),
    };
    let mut at_10k = None;
    for rate in [500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0] {
        let plan = LoadPlan {
            requests_per_sec: rate,
            duration: secs,
            connections: 256,
        };
        let result = offer(
            &singles,
            plan,
            &format!("ingest: {rate} single-event requests/s"),
        )
        .await;
        record(report, "single-event requests", &result, 1);
        curve
            .points
            .push((rate, result.latency_ms(0.5), result.latency_ms(0.99)));
        if rate == 10_000.0 {
            at_10k = Some(result.latency_ms(0.99));
        }
    }
    let best = curve_best(report, "single-event requests");
    let per_core = best / options.cores as f64;
    let figure = report.add(
        "ingest",
        "single-event requests/s per core (best level, no errors)",
        per_core,
        "req/s",
    );
    figure.target = Some(">= 20,000".into());
    figure.met = Some(per_core >= 20_000.0);
    if let Some(p99) = at_10k {
        let figure = report.add(
            "ingest",
            "p99 at 10,000 single-event requests/s (half the target)",
            p99,
            "ms",
        );
        figure.target = Some("< 5 ms".into());
        figure.met = Some(p99 < 5.0);
    }
    report.curves.push(curve);

    let batches = Requests::new(&base, "wk_bench", &events, 100);
    let mut curve = Curve {
        label: "batches of 100".into(),
        points: Vec::new(),
    };
    for rate in [50.0, 200.0, 500.0, 1_000.0, 2_000.0] {
        let plan = LoadPlan {
            requests_per_sec: rate,
            duration: secs,
            connections: 64,
        };
        let result = offer(&batches, plan, &format!("ingest: {rate} batches/s")).await;
        record(report, "batches of 100", &result, 100);
        curve
            .points
            .push((rate, result.latency_ms(0.5), result.latency_ms(0.99)));
    }
    let best_events = curve_best(report, "batches of 100") * 100.0;
    let figure = report.add(
        "ingest",
        "events/s in batches of 100 (best level, no errors)",
        best_events,
        "events/s",
    );
    figure.target = Some(">= 200,000".into());
    figure.met = Some(best_events >= 200_000.0);
    report.curves.push(curve);

    noisy_neighbour(&base, secs, report).await;
    stack.stop("ingest-gateway");
    Ok(())
}

/// One row per offered load.
fn record(report: &mut Report, kind: &str, result: &LoadReport, events_per_request: u64) {
    let offered = result.plan.requests_per_sec;
    let name = format!(
        "{kind} at {offered} req/s offered: achieved req/s (p50 {:.2} ms, p99 {:.2} ms, {} failed)",
        result.latency_ms(0.5),
        result.latency_ms(0.99),
        result.failed
    );
    let achieved = result.achieved_per_sec();
    let figure = report.add("ingest", &name, achieved, "req/s");
    figure.anchor = Some(("offered".into(), achieved / offered));
    if events_per_request > 1 {
        report.add(
            "ingest",
            &format!("{kind} at {offered} req/s offered: events/s"),
            achieved * events_per_request as f64,
            "events/s",
        );
    }
}

/// The best achieved rate among the levels of `kind` that kept up (at least 95 % of the
/// offered load, nothing failed).
fn curve_best(report: &Report, kind: &str) -> f64 {
    report
        .figures
        .iter()
        .filter(|f| f.name.starts_with(kind) && f.unit == "req/s" && f.name.ends_with(" 0 failed)"))
        .filter(|f| f.anchor.as_ref().is_some_and(|(_, ratio)| *ratio >= 0.95))
        .map(|f| f.value)
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
