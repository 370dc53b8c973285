//! The engine's memory under a steady stream: resident memory sampled at a fixed interval
//! while generated traffic goes to the broker at a fixed rate. It must stay flat: state is
//! bounded by the horizons (dedup 24 h, a visitor's events 72 h 40 min, minute windows 97 h),
//! not by the stream's length.
//!
//! Those horizons are longer than any run a benchmark can afford, so simulated time runs
//! `--memory-speedup` times faster than the clock (600 by default: 30 minutes are up to 300 hours
//! of traffic): every horizon passes within the first half of the run, and the RSS after it shows whether
//! state is released. The events go straight to Kafka, with the receive times the generator
//! gives them, as the gateway would have stamped them; the gateway's own stamping would tie
//! the stream to the wall clock.
//!
//! Flat is what a stream whose active visitors are stationary should give: visitors keep
//! coming (a third of the sessions are new visitors) and leave, and returning ones come from
//! the visitors of the last `--memory-return-window-hours` (12). Returns from every visitor
//! ever made (`0`) make the visitors active within the horizons grow for the whole run, and
//! the state kept for them with it; the report gives the stream's own count of them beside
//! the RSS either way. What the engine keeps for good (the links of known users, Segment's
//! identity) grows with any stream that brings new users, and must stay small against the
//! rest.
//!
//! The part ends with a crash and a restart on the run's log (see [`crate::restart`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickstream_benches::load::{LoadPlan, run_open_loop};
use loadgen::generator::{Arrival, Generator, GeneratorConfig};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::report::Report;
use crate::restart;
use crate::stack::{EngineGauges, PARTITIONS, Stack, engine_gauges, rss_bytes};
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

/// A generator that hands out exactly the events asked for, each once simulated time has
/// reached its arrival. It generates whole sessions, so a request asking for ten got thirteen
/// on average, and the stream ran a quarter faster than `--memory-rate` (and simulated time
/// with it); and a session's events arrive over minutes, its late ones (0.2 %) 73 to 96 hours
/// later, which a batch sent at once delivered early: a receive time 80 hours ahead moved
/// every operator's clock with it and released state (the message ids held were a few
/// thousand where 72 hours of them are hundreds of thousands).
struct Paced {
    generator: Generator,
    /// By (arrival time, order generated).
    queued: BTreeMap<(i64, u64), Arrival>,
    generated: u64,
}

impl Paced {
    fn new(generator: Generator) -> Paced {
        Paced {
            generator,
            queued: BTreeMap::new(),
            generated: 0,
        }
    }

    /// The `count` earliest arrivals at or before the generator's clock: no event generated
    /// later arrives before it.
    fn next(&mut self, count: usize) -> Vec<Arrival> {
        loop {
            let arrived = self.generator.clock_ms();
            let ready = self
                .queued
                .range(..=(arrived, u64::MAX))
                .take(count)
                .count();
            if ready >= count {
                break;
            }
            for arrival in self.generator.generate(count) {
                self.queued
                    .insert((arrival.arrival_ms, self.generated), arrival);
                self.generated += 1;
            }
        }
        (0..count)
            .filter_map(|_| self.queued.pop_first().map(|(_, arrival)| arrival))
            .collect()
    }
}

/// The sessions per simulated second at which `shape`'s generator makes `events_per_sec`
/// events per simulated second, from a sample of its own output: its events per session
/// (pages, identifies, aliases, ...) are measured, not assumed. Assumed (six), simulated time
/// ran 496x instead of 400x at 2,476 events/s and passed the present in the run's last fifth,
/// where every visitor stays active and the active-visitors state grew without bound.
fn sessions_per_sec(shape: &GeneratorConfig, events_per_sec: f64) -> anyhow::Result<f64> {
    const SAMPLE: usize = 200_000;
    let probe = GeneratorConfig {
        sessions_per_sec: 1.0,
        ..shape.clone()
    };
    let sample = Generator::new(probe, 0)
        .map_err(|error| anyhow::anyhow!("generator: {error:?}"))?
        .generate(SAMPLE);
    let span_secs = sample
        .iter()
        .map(|arrival| arrival.event.timestamp_ms)
        .max()
        .unwrap_or(0) as f64
        / 1000.0;
    let events_per_session_per_sec = sample.len() as f64 / span_secs.max(1.0);
    Ok(events_per_sec / events_per_session_per_sec)
}

/// One sample of the run.
struct Sample {
    /// Since the stream started.
    secs: u64,
    /// The engine's resident bytes.
    rss: u64,
    /// Simulated hours the stream had reached.
    hours: f64,
    /// `None`: the engine's metrics could not be read.
    gauges: Option<EngineGauges>,
    /// The stream's visitors with a session within a visitor's retention.
    active_visitors: Option<usize>,
}

/// Stops the engine (`SIGSTOP`) `at` seconds from now for `secs` seconds: the stream goes on
/// into the log, and the engine, continued, reads what it missed at once, a burst of input as
/// a stalled consumer (a pause of its host, the cores taken by the servers beside it) meets
/// one. The bursts the machine made by itself came at no fixed time, so what a burst leaves
/// with the allocator could not be compared between builds.
async fn pause_engine(engine: u32, at: u64, secs: u64) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(at)).await;
    signal(engine, "STOP")?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    signal(engine, "CONT")
}

/// Sends the signal named `name` (`kill -NAME`) to process `pid`.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed: {status}");
    Ok(())
}

/// Runs the memory part into `report`.
pub async fn run(stack: &mut Stack, options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let stamp = chrono::Utc::now().timestamp();
    let (topic, engine, _ingest) = stack
        .pipeline("memory", TENANTS, 18480, options.workers)
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss = rss_bytes(engine)?;

    let duration = Duration::from_secs(options.memory_minutes * 60);
    let speedup = options.memory_speedup.max(1.0);
    // Simulated time ends about now, so the engine sees nothing from the future.
    let simulated_ms = duration.as_millis() as f64 * speedup;
    let start = chrono::Utc::now().timestamp_millis() - simulated_ms as i64;
    let shape = GeneratorConfig {
        seed: stamp as u64,
        tenants: vec!["bench".into()],
        return_window_secs: (options.memory_return_window_hours > 0.0)
            .then_some(options.memory_return_window_hours * 3600.0),
        ..GeneratorConfig::default()
    };
    let config = GeneratorConfig {
        sessions_per_sec: sessions_per_sec(&shape, options.memory_rate / speedup)?,
        ..shape
    };
    let generator = Arc::new(Mutex::new(Paced::new(
        Generator::new(config, start).map_err(|error| anyhow::anyhow!("generator: {error:?}"))?,
    )));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    // Simulated time reached and events sent, for the report.
    let reached = Arc::new(AtomicI64::new(start));
    let sent = Arc::new(AtomicU64::new(0));
    let (reached_in, sent_in) = (reached.clone(), sent.clone());
    let stream = generator.clone();
    // The stream's own count of the visitors the engine rightly keeps state for: those with a
    // session within a visitor's retention (the last event plus gap, lateness and margin).
    let visitor_keep_ms = operators::AnalyticsSettings::default()
        .sessions
        .retention
        .keep_ms();
    let active_visitors = move || {
        let paced = stream.lock().ok()?;
        let now = paced.generator.clock_ms();
        Some(paced.generator.visitors_active_since(now - visitor_keep_ms))
    };
    let plan = LoadPlan {
        requests_per_sec: options.memory_rate / EVENTS_PER_REQUEST as f64,
        duration,
        connections: 32,
    };
    let bar = progress(
        options.memory_minutes * 60,
        "memory: steady stream (seconds)",
    );
    let load_topic = topic.clone();
    let sending = run_open_loop(
        plan,
        move |_, _| {
            let (producer, generator, topic) =
                (producer.clone(), generator.clone(), load_topic.clone());
            let (reached, sent) = (reached_in.clone(), sent_in.clone());
            async move {
                let arrivals = generator.lock().ok()?.next(EVENTS_PER_REQUEST);
                if let Some(newest) = arrivals.iter().map(|a| a.event.timestamp_ms).max() {
                    reached.fetch_max(newest, Ordering::Relaxed);
                }
                sent.fetch_add(arrivals.len() as u64, Ordering::Relaxed);
                let mut deliveries = Vec::with_capacity(arrivals.len());
                for arrival in &arrivals {
                    let (key, payload) = (
                        arrival.event.partition_key(),
                        schemas::wire::encode(&arrival.event),
                    );
                    let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                    deliveries.push(producer.send_result(record).ok()?);
                }
                for delivery in deliveries {
                    delivery.await.ok()?.ok()?;
                }
                Some(200)
            }
        },
        None,
    );
    let sample_every = Duration::from_secs(options.memory_sample_secs);
    // The run stops early rather than take the machine down: past a third of its memory the
    // trend is clear.
    let limit = total_memory_bytes().unwrap_or(u64::MAX) / 3;
    let metrics = stack.engine_metrics.clone();
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
            let hours = (reached.load(Ordering::Relaxed) - start) as f64 / 3_600_000.0;
            // What each piece of state holds, to tell which one grows when the RSS does, and
            // whether the engine keeps up.
            // A failed read is no figure: it is left out, never taken as zeros.
            let gauges = match &metrics {
                Some(url) => engine_gauges(url).await.ok(),
                None => None,
            };
            println!(
                "memory: engine RSS {} MiB after {} s ({hours:.1} simulated hours), gauges {gauges:?}",
                rss >> 20,
                started.elapsed().as_secs(),
            );
            samples.push(Sample {
                secs: started.elapsed().as_secs(),
                rss,
                hours,
                gauges,
                active_visitors: active_visitors(),
            });
            if rss > limit {
                return Ok((samples, true));
            }
        }
        Ok((samples, false))
    };
    let sender = tokio::spawn(sending);
    let pause = options
        .memory_pause_at_secs
        .map(|at| tokio::spawn(pause_engine(engine, at, options.memory_pause_secs)));
    let sampled = sampling.await;
    if let Some(pause) = pause {
        // A run that ended inside the pause must not leave the engine stopped; a pause that
        // failed says why rather than leave a run without its burst.
        let ended = pause.is_finished();
        pause.abort();
        signal(engine, "CONT")?;
        if ended {
            pause.await??;
        }
    }
    // The engine crashes while the stream still flows; the restart is measured below.
    stack.stop("engine");
    tokio::time::sleep(Duration::from_secs(restart::DOWN_SECS)).await;
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
    if let Some(at) = options.memory_pause_at_secs {
        report.add(
            "memory",
            &format!(
                "a burst: the engine stopped {} s from {at} s into the run, then read what it missed (events asked meanwhile)",
                options.memory_pause_secs
            ),
            options.memory_rate * options.memory_pause_secs as f64,
            "events",
        );
    }
    report.add(
        "memory",
        "engine RSS idle, before the stream",
        mib(idle_rss),
        "MiB",
    );
    let rate = sent.load(Ordering::Relaxed) as f64 / duration.as_secs_f64().max(1.0);
    // Past the present, every visitor is active: the figures would measure the bench.
    report.add(
        "memory",
        "simulated time at the end, ahead of the clock (want <= 0)",
        (reached.load(Ordering::Relaxed) - chrono::Utc::now().timestamp_millis()) as f64
            / 3_600_000.0,
        "h",
    );
    for Sample {
        secs, rss, hours, ..
    } in &samples
    {
        report.add(
            "memory",
            &format!(
                "engine RSS after {secs} s at {rate:.0} events/s ({hours:.0} simulated hours)"
            ),
            mib(*rss),
            "MiB",
        );
    }
    // Flat: the last sample against the one at half the run (by then more than the longest
    // horizon, the 97 h life of a minute window, has passed in simulated time).
    if let (Some(warm), Some(last)) = (samples.get(samples.len() / 2), samples.last()) {
        let figure = report.add(
            "memory",
            "engine RSS growth from half the run to its end",
            mib(last.rss) - mib(warm.rss),
            "MiB",
        );
        figure.anchor = Some((
            "RSS at half the run".into(),
            last.rss as f64 / warm.rss.max(1) as f64,
        ));
        figure.target = Some("flat (within 10 %)".into());
        figure.met = Some(last.rss as f64 <= warm.rss as f64 * 1.1);
        if let (Some(warm), Some(last)) = (warm.active_visitors, last.active_visitors) {
            let figure = report.add(
                "memory",
                &format!(
                    "the stream's visitors with a session in the last {:.1} h, at the end (anchor: at half the run)",
                    visitor_keep_ms as f64 / 3.6e6
                ),
                last as f64,
                "visitors",
            );
            figure.anchor = Some(("at half the run".into(), last as f64 / warm.max(1) as f64));
        }
        if let (Some(warm), Some(last)) = (&warm.gauges, &last.gauges) {
            report_gauges(report, warm, last);
        }
    }
    // The same from the first sample past the longest horizon: before it, windows still fill.
    let horizon_hours = operators::AnalyticsSettings::default().replay_horizon_ms() as f64 / 3.6e6;
    let past_horizon = samples.iter().find(|sample| sample.hours >= horizon_hours);
    if let (Some(warm), Some(last)) = (past_horizon, samples.last()) {
        let figure = report.add(
            "memory",
            &format!(
                "engine RSS growth from {} s ({:.0} simulated hours, past the {horizon_hours:.1} h horizon) to the end",
                warm.secs, warm.hours
            ),
            mib(last.rss) - mib(warm.rss),
            "MiB",
        );
        figure.anchor = Some(("RSS then".into(), last.rss as f64 / warm.rss.max(1) as f64));
    } else {
        report.add(
            "memory",
            &format!(
                "NO SAMPLE PAST THE {horizon_hours:.1} h HORIZON: raise --memory-speedup or --memory-minutes"
            ),
            0.0,
            "",
        );
    }
    stack.stop("ingest-gateway");
    restart::measure(stack, (&topic, &topic, PARTITIONS), options.workers, report).await
}

/// The engine's position and each piece of its state at the end of the run, against half the
/// run (`warm`).
fn report_gauges(report: &mut Report, warm: &EngineGauges, last: &EngineGauges) {
    report.add(
        "memory",
        "engine consumer lag at the end of the run",
        last.consumer_lag,
        "records",
    );
    report.add(
        "memory",
        "engine records read but not checkpointed at the end of the run",
        last.pending_records,
        "records",
    );
    report.add(
        "memory",
        "bytes librdkafka fetched ahead of the engine at the end of the run",
        mib(last.fetch_queue_bytes as u64),
        "MiB",
    );
    for (heap, at_end) in &last.heap {
        let at_half = warm.heap.get(heap).copied().unwrap_or(0.0);
        let figure = report.add(
            "memory",
            &format!("heap, {heap}: at the end (anchor: at half the run)"),
            mib(*at_end as u64),
            "MiB",
        );
        figure.anchor = Some(("at half the run".into(), at_end / at_half.max(1.0)));
    }
    for (kind, at_end) in &last.state {
        let at_half = warm.state.get(kind).copied().unwrap_or(0.0);
        let figure = report.add(
            "memory",
            &format!("state entries, {kind}: at the end (anchor: at half the run)"),
            *at_end,
            "entries",
        );
        figure.anchor = Some(("at half the run".into(), at_end / at_half.max(1.0)));
    }
}
