//! The engine's memory under a steady stream: resident memory sampled at a fixed interval
//! while the gateway receives generated traffic at a fixed rate. It must stay flat: state is
//! bounded by the horizons (dedup 24 h, sessions, lateness), not by the stream's length.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickstream_benches::generator::{Generator, GeneratorConfig, segment_json};
use clickstream_benches::load::{LoadPlan, run_open_loop};
use serde_json::json;

use crate::report::Report;
use crate::stack::{Stack, rss_bytes};
use crate::{Options, progress};

const TENANTS: &str = "[[tenants]]\nid = 'bench'\nwrite_keys = ['wk_bench']\n";
const EVENTS_PER_REQUEST: usize = 10;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `MemTotal` of `/proc/meminfo`, bytes.
fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the memory part into `report`.
pub async fn run(stack: &mut Stack, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let stamp = chrono::Utc::now().timestamp();
    let (_, engine, ingest) = stack
        .pipeline("memory", TENANTS, 18480, options.workers)
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss = rss_bytes(engine)?;

    // Simulated time keeps pace with the clock: sessions start at the rate that, with about
    // six events each, makes the offered events per second.
    let now = chrono::Utc::now().timestamp_millis();
    let config = GeneratorConfig {
        seed: stamp as u64,
        tenants: vec!["bench".into()],
        sessions_per_sec: options.memory_rate / 6.0,
        ..GeneratorConfig::default()
    };
    let generator = Arc::new(Mutex::new(
        Generator::new(config, now).map_err(|error| anyhow::anyhow!("generator: {error:?}"))?,
    ));
    // A request the gateway cannot answer within 10 s counts as failed: the run ends on time.
    let http = reqwest::Client::builder()
        .timeout(crate::REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default();
    let url = format!("{ingest}/v1/batch");
    // Every visitor and event offered: within the run (shorter than the 100 minutes of session
    // retention), all of them are active state.
    let offered = Arc::new(Mutex::new((HashSet::<String>::new(), 0u64)));
    let offered_in = offered.clone();
    let duration = Duration::from_secs(options.memory_minutes * 60);
    let plan = LoadPlan {
        requests_per_sec: options.memory_rate / EVENTS_PER_REQUEST as f64,
        duration,
        connections: 32,
    };
    let bar = progress(
        options.memory_minutes * 60,
        "memory: steady stream (seconds)",
    );
    let sending = run_open_loop(
        plan,
        move |_, _| {
            let (http, url, generator) = (http.clone(), url.clone(), generator.clone());
            let offered = offered_in.clone();
            async move {
                let sent_at = chrono::Utc::now().timestamp_millis();
                let arrivals = generator.lock().ok()?.generate(EVENTS_PER_REQUEST);
                if let Ok(mut offered) = offered.lock() {
                    for arrival in &arrivals {
                        offered.0.insert(arrival.event.visitor_id().to_owned());
                    }
                    offered.1 += arrivals.len() as u64;
                }
                let batch: Vec<_> = arrivals
                    .iter()
                    .map(|arrival| segment_json(&arrival.event, sent_at))
                    .collect();
                let response = http
                    .post(&url)
                    .basic_auth("wk_bench", Some(""))
                    .json(&json!({"batch": batch}))
                    .send()
                    .await
                    .ok()?;
                Some(response.status().as_u16())
            }
        },
        None,
    );
    let sample_every = Duration::from_secs(options.memory_sample_secs);
    // The run stops early rather than take the machine down: past a third of its memory the
    // trend is clear.
    let limit = total_memory_bytes().unwrap_or(u64::MAX) / 3;
    let sampling = async {
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < duration {
            tokio::time::sleep(sample_every.min(duration.saturating_sub(started.elapsed()))).await;
            bar.set_position(started.elapsed().as_secs());
            // A dead engine has no RSS: the run fails rather than look flat.
            let Ok(rss) = rss_bytes(engine) else {
                return Err(anyhow::anyhow!(
                    "the engine exited during the memory run (see its log)"
                ));
            };
            println!(
                "memory: engine RSS {} MiB after {} s",
                rss >> 20,
                started.elapsed().as_secs()
            );
            samples.push((started.elapsed().as_secs(), rss));
            if rss > limit {
                return Ok((samples, true));
            }
        }
        Ok((samples, false))
    };
    let sender = tokio::spawn(sending);
    let sampled = sampling.await;
    // Dropping the load stops its dispatcher (it sends nothing once no one listens).
    sender.abort();
    let (samples, stopped_early) = sampled?;
    if stopped_early {
        report.add(
            "memory",
            "STOPPED EARLY: engine RSS passed a third of the machine's memory",
            mib(limit),
            "MiB",
        );
    }
    bar.finish_and_clear();
    report.add(
        "memory",
        "engine RSS idle, before the stream",
        mib(idle_rss),
        "MiB",
    );
    for (secs, rss) in &samples {
        report.add(
            "memory",
            &format!(
                "engine RSS after {secs} s at {} events/s",
                options.memory_rate
            ),
            mib(*rss),
            "MiB",
        );
    }
    // Flat: the last sample against the one at a third of the run (after the warm-up, when
    // sessions and the active window have filled).
    if let (Some(warm), Some(last)) = (samples.get(samples.len() / 3), samples.last()) {
        let figure = report.add(
            "memory",
            "engine RSS growth from a third of the run to its end",
            mib(last.1) - mib(warm.1),
            "MiB",
        );
        figure.anchor = Some((
            "RSS at a third of the run".into(),
            last.1 as f64 / warm.1.max(1) as f64,
        ));
        figure.target = Some("flat (within 10 %)".into());
        figure.met = Some(last.1 as f64 <= warm.1 as f64 * 1.1);
    }
    let (visitors, events) = offered
        .lock()
        .map(|offered| (offered.0.len() as u64, offered.1))
        .unwrap_or_default();
    if let Some(last) = samples.last() {
        let growth = last.1.saturating_sub(idle_rss) as f64;
        let budget = (300 * visitors + 64 * events) as f64;
        let figure = report.add(
            "memory",
            &format!("engine RSS growth per active visitor ({visitors} visitors, {events} events, all within the retention)"),
            growth / visitors.max(1) as f64,
            "bytes",
        );
        figure.anchor = Some((
            "budget 300 B per visitor + 64 B per retained event".into(),
            growth / budget.max(1.0),
        ));
        figure.target = Some("within the budget".into());
        figure.met = Some(growth <= budget);
    }
    stack.stop("ingest-gateway");
    stack.stop("engine");
    Ok(())
}
