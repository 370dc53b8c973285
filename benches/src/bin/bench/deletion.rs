//! Erasure under load: the pipeline takes generated traffic at a steady rate (open loop,
//! batches of 10) while persons are erased one after another through the query gateway with
//! an admin key; each request's time from the `DELETE` to its completion (the engine has
//! dropped the person from the dataflow and every table is clean) is one figure. The target
//! is 10 minutes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clickstream_benches::load::{LoadPlan, run_open_loop};
use serde_json::Value;

use crate::latency::{EVENTS_PER_REQUEST, batches};
use crate::report::Report;
use crate::stack::Stack;
use crate::{Options, progress};

const TENANTS: &str = "[[tenants]]\nid = 'bench'\nwrite_keys = ['wk_bench']\nread_keys = ['rk_bench']\nadmin_keys = ['ak_bench']\n";
/// Traffic before the first erasure, so that the engine holds state and the tables rows.
const WARM_UP: Duration = Duration::from_secs(30);
/// The deadline a request is measured against.
const DEADLINE: Duration = Duration::from_secs(600);

/// Runs the part: `options.deletions` erasures under `options.deletion_rate` events/s.
pub async fn run(stack: &mut Stack, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let (database, ingest, query) = stack
        .pipeline_with_queries("deletion", TENANTS, (18580, 18680), options.workers)
        .await?;
    let requests_per_sec = options.deletion_rate / EVENTS_PER_REQUEST as f64;
    // Long enough for the warm-up and every erasure at its deadline; cut when they are done.
    let duration = WARM_UP + DEADLINE * options.deletions as u32;
    let bodies = std::sync::Arc::new(batches(
        (requests_per_sec * 120.0) as usize * EVENTS_PER_REQUEST,
    ));
    let http = reqwest::Client::builder()
        .timeout(crate::REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default();
    let url = format!("{ingest}/v1/batch");
    let sender = http.clone();
    let load = tokio::spawn(run_open_loop(
        LoadPlan {
            requests_per_sec,
            duration,
            connections: 64,
        },
        move |k, _| {
            let (http, url, bodies) = (sender.clone(), url.clone(), bodies.clone());
            async move {
                let count = bodies.len().max(1);
                let body = bodies.get(k as usize % count).cloned().unwrap_or_default();
                // Past the generated traffic, the same again under new message ids (not
                // duplicates for the engine's dedup).
                let round = k as usize / count;
                let body = if round == 0 {
                    body
                } else {
                    body.replace("\"messageId\":\"", &format!("\"messageId\":\"r{round}-"))
                };
                let response = http
                    .post(&url)
                    .basic_auth("wk_bench", Some(""))
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                Some(response.status().as_u16())
            }
        },
        None,
    ));
    tokio::time::sleep(WARM_UP).await;
    let bar = progress(options.deletions as u64, "deletion: erasures under load");
    let mut times = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..options.deletions {
        let person = some_person(&http, &stack.clickhouse_url, &database).await?;
        let (took, removed) = erase(&http, &query, &person).await?;
        times.push(took);
        rows.push(removed);
        bar.inc(1);
    }
    bar.finish_and_clear();
    load.abort();
    let label = format!(
        "{} events/s offered, {} workers",
        options.deletion_rate, options.workers
    );
    times.sort();
    let median = times[times.len() / 2];
    let slowest = times.last().copied().unwrap_or_default();
    report.add(
        "deletion",
        &format!(
            "erasure: DELETE -> completed, median of {}, {label}",
            times.len()
        ),
        median.as_secs_f64(),
        "s",
    );
    let figure = report.add(
        "deletion",
        &format!(
            "erasure: DELETE -> completed, slowest of {}, {label}",
            times.len()
        ),
        slowest.as_secs_f64(),
        "s",
    );
    figure.target = Some("< 600 s".into());
    figure.met = Some(slowest < DEADLINE);
    report.add(
        "deletion",
        &format!("rows removed per erasure, mean ({label})"),
        rows.iter().sum::<u64>() as f64 / rows.len().max(1) as f64,
        "rows",
    );
    stack.stop("query-gateway");
    stack.stop("ingest-gateway");
    stack.stop("engine");
    Ok(())
}

/// A person of the tenant with stored events: an identified one when there is one.
async fn some_person(
    http: &reqwest::Client,
    clickhouse: &str,
    database: &str,
) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT person_id FROM {database}.events WHERE tenant = 'bench' AND person_id != '' \
         ORDER BY user_id = '', cityHash64(person_id, now()) LIMIT 1"
    );
    let person = http
        .post(clickhouse)
        .body(sql)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let person = person.trim().to_owned();
    if person.is_empty() {
        bail!("no person stored after the warm-up");
    }
    Ok(person)
}

/// Erases `person`; returns the time to completion and the rows removed.
async fn erase(
    http: &reqwest::Client,
    query: &str,
    person: &str,
) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let accepted: Value = http
        .delete(format!("{query}/api/persons/{person}"))
        .bearer_auth("ak_bench")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let request = accepted["request_id"]
        .as_str()
        .context("no request id in the answer")?
        .to_owned();
    while started.elapsed() < DEADLINE * 2 {
        let status: Value = http
            .get(format!("{query}/api/deletions/{request}"))
            .bearer_auth("ak_bench")
            .send()
            .await?
            .json()
            .await?;
        if status["status"] == "completed" {
            let removed = status["rows_removed"]
                .as_object()
                .map_or(0, |tables| tables.values().filter_map(Value::as_u64).sum());
            return Ok((started.elapsed(), removed));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("erasure {request} not completed within {:?}", DEADLINE * 2)
}
