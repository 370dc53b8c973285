//! `bench-operators`: the engine's operators from memory, at 1 and 2 workers, against the
//! single-threaded reference of the same logic (the COST baseline).
//!
//! ```sh
//! cargo run --release -p clickstream-benches --bin bench-operators -- --events 1000000
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use clickstream_benches::generator::{Generator, GeneratorConfig};
use operators::reference::analyze;
use operators::{
    AnalyticsSettings, Decoded, IdentityClaim, StateGauges, Unlink, analytics, insertions, route,
};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::vec::{Input, ToStream};

/// The engine's allocator (records allocated on one worker are freed on another, which glibc
/// malloc handles poorly).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operator throughput benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Records per epoch.
    #[arg(long, default_value_t = 50_000)]
    epoch_records: usize,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const PARTITIONS: u64 = 12;

fn main() -> anyhow::Result<()> {
    let Args {
        events,
        epoch_records,
        workers,
        seed,
    } = Args::parse();
    let started = Instant::now();
    let config = GeneratorConfig {
        seed,
        tenants: vec!["acme".into(), "globex".into(), "initech".into()],
        sessions_per_sec: 20.0,
        ..GeneratorConfig::default()
    };
    let arrivals = Generator::new(config, 1_700_000_000_000)
        .context("generator")?
        .generate(events);
    let mut offsets = [0i64; PARTITIONS as usize];
    let log: Vec<Decoded> = arrivals
        .into_iter()
        .map(|arrival| {
            let partition = (route(&arrival.event.partition_key()) % PARTITIONS) as usize;
            offsets[partition] += 1;
            Decoded {
                partition: partition as i32,
                offset: offsets[partition] - 1,
                event: arrival.event,
            }
        })
        .collect();
    eprintln!(
        "generated {} events in {:.1?}",
        log.len(),
        started.elapsed()
    );
    let settings = AnalyticsSettings::default();

    let reference_started = Instant::now();
    let expected = analyze(&log, &[], &settings);
    let reference = reference_started.elapsed();
    let sessions = expected.sessions.len();
    drop(expected);

    let mut rows = vec![(
        "reference (1 thread, hash maps)".to_owned(),
        1usize,
        reference,
    )];
    for &count in &workers {
        let elapsed = run_dataflow(&log, count, epoch_records, settings.clone())?;
        rows.push((
            format!(
                "dataflow, {count} worker{}",
                if count == 1 { "" } else { "s" }
            ),
            count,
            elapsed,
        ));
    }

    println!(
        "\n{} events ({sessions} sessions), epochs of {epoch_records} records\n",
        log.len()
    );
    println!("| run | time | events/s | events/s per worker | time vs reference |");
    println!("|---|---:|---:|---:|---:|");
    for (name, count, elapsed) in rows {
        let rate = log.len() as f64 / elapsed.as_secs_f64();
        println!(
            "| {name} | {:.2} s | {:.0} | {:.0} | {:.2}x |",
            elapsed.as_secs_f64(),
            rate,
            rate / count as f64,
            elapsed.as_secs_f64() / reference.as_secs_f64()
        );
    }
    Ok(())
}

/// Runs the operators on `log` spread over `workers` by partition, as the engine does.
fn run_dataflow(
    log: &[Decoded],
    workers: usize,
    epoch_records: usize,
    settings: AnalyticsSettings,
) -> anyhow::Result<Duration> {
    let shares: Vec<Mutex<Option<Vec<Decoded>>>> = (0..workers)
        .map(|worker| {
            Mutex::new(Some(
                log.iter()
                    .filter(|d| d.partition as usize % workers == worker)
                    .cloned()
                    .collect(),
            ))
        })
        .collect();
    let shares = Arc::new(shares);
    let ready = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Mutex::new(None::<Instant>));
    let (shares_in, ready_in, started_in) = (shares.clone(), ready.clone(), started.clone());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let share = shares_in[worker.index()]
            .lock()
            .ok()
            .and_then(|mut share| share.take())
            .unwrap_or_default();
        let gauges = Arc::new(StateGauges::default());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, decoded) = scope.new_input::<Decoded>();
            let no_claims = insertions(Vec::<IdentityClaim>::new().to_stream(scope));
            let no_unlinks = insertions(Vec::<Unlink>::new().to_stream(scope));
            let out = analytics(
                decoded,
                no_claims,
                no_unlinks,
                settings.clone(),
                gauges.clone(),
            );
            let probe = out.events.inner.probe().0;
            out.sessions.inner.probe_with(&probe);
            out.aggregates.inner.probe_with(&probe);
            out.identities.inner.probe_with(&probe);
            (input, probe)
        });
        // Start the clock when every worker has its data in hand.
        ready_in.fetch_add(1, Ordering::SeqCst);
        while ready_in.load(Ordering::SeqCst) < worker.peers() {
            std::hint::spin_loop();
        }
        if worker.index() == 0
            && let Ok(mut started) = started_in.lock()
        {
            *started = Some(Instant::now());
        }
        let per_worker_epoch = (epoch_records / worker.peers()).max(1);
        for (index, chunk) in share.chunks(per_worker_epoch).enumerate() {
            input.advance_to(index as u64);
            for record in chunk {
                input.send(record.clone());
            }
            // Keep at most a couple of epochs in flight, as the engine's backpressure does.
            while probe.less_than(&(index as u64).saturating_sub(1)) {
                worker.step();
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .map_err(|error| anyhow::anyhow!("timely: {error}"))?;
    drop(guards);
    let started = started
        .lock()
        .ok()
        .and_then(|started| *started)
        .context("no start time")?;
    Ok(started.elapsed())
}
