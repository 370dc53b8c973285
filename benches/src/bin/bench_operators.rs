//! `bench-operators`: the engine's operators from memory, at 1 and 2 workers, against the
//! single-threaded reference of the same logic (the COST baseline). Both start from wire
//! bytes, as the engine does: decoding is part of the cost. At 1 worker it also reports the
//! heap bytes the operators' state holds at the end of the run, per active visitor and per
//! retained event (a counting allocator around mimalloc).
//!
//! ```sh
//! cargo run --release -p clickstream-benches --bin bench-operators -- --events 1000000
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use loadgen::generator::{Generator, GeneratorConfig};
use operators::decode::decode_record;
use operators::reference::analyze;
use operators::{
    AnalyticsSettings, Decode, Decoded, IdentityClaim, StateGauges, Unlink, analytics, insertions,
    route,
};
use schemas::SourceRecord;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::vec::{Input, ToStream};
use timely::dataflow::{InputHandleVec, ProbeHandle};

/// The engine's allocator (records allocated on one worker are freed on another, which glibc
/// malloc handles poorly), counting live bytes.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// The system allocator, counting live bytes, for heap profilers that hook `malloc` (see
/// `--leave-state`).
#[cfg(feature = "system-allocator")]
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

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
    /// GeoIP files to enrich the generated events with, as the ingest gateway's `--geoip`
    /// (`deploy/lib.sh`'s `ensure_geoip` sets the variable to the set-up's files).
    #[arg(long, env = "CLICKSTREAM_GEOIP", value_delimiter = ',')]
    geoip: Vec<std::path::PathBuf>,
    /// Also report, for the 1-worker run, the time each operator was scheduled (timely's
    /// own `Schedule` log events): where a worker's time goes, operator by operator.
    #[arg(long)]
    operator_times: bool,
    /// End the process as soon as the 1-worker run's state is measured, with the state still
    /// allocated, so that a heap profiler reports it, by allocation site, as leaked. The
    /// README's breakdown by structure: a build with the `system-allocator` feature (heaptrack
    /// hooks `malloc`, which mimalloc bypasses), `heaptrack bench-operators --workers 1
    /// --leave-state`, then `heaptrack_print --flamegraph-cost-type leaked -F <file>` for the
    /// stacks by bytes left.
    #[arg(long)]
    leave_state: bool,
}

const PARTITIONS: u64 = 12;

fn main() -> anyhow::Result<()> {
    // The engine's allocator settings, so that the operators run here as they run there.
    engine::allocator::tune();
    let Args {
        events,
        epoch_records,
        workers,
        seed,
        geoip,
        operator_times,
        leave_state,
    } = Args::parse();
    let started = Instant::now();
    let config = GeneratorConfig {
        seed,
        tenants: vec!["acme".into(), "globex".into(), "initech".into()],
        sessions_per_sec: 20.0,
        ..GeneratorConfig::default()
    };
    let mut arrivals = Generator::new(config, 1_700_000_000_000)
        .context("generator")?
        .generate(events);
    let enricher = clickstream_benches::gateway_enricher(&geoip).context("enrichment")?;
    clickstream_benches::enrich_as_the_gateway(
        arrivals.iter_mut().map(|arrival| &mut arrival.event),
        &enricher,
    );
    drop(enricher);
    let mut offsets = [0i64; PARTITIONS as usize];
    let log: Vec<Decoded> = arrivals
        .into_iter()
        .map(|arrival| {
            let partition = (route(&arrival.event.partition_key()) % PARTITIONS) as usize;
            offsets[partition] += 1;
            Decoded {
                partition: partition as i32,
                offset: offsets[partition] - 1,
                event: arrival.event.into(),
            }
        })
        .collect();
    let wire: Vec<SourceRecord> = log
        .iter()
        .map(|decoded| SourceRecord {
            partition: decoded.partition,
            offset: decoded.offset,
            payload: schemas::wire::encode(&decoded.event),
        })
        .collect();
    let wire_bytes: usize = wire.iter().map(|record| record.payload.len()).sum();
    eprintln!(
        "generated {} events ({} bytes each on the wire on average) in {:.1?}",
        log.len(),
        wire_bytes / log.len().max(1),
        started.elapsed()
    );
    let settings = AnalyticsSettings::default();
    let active = active_visitors(&log, &settings);
    let epochs = stream_epochs(&log, epoch_records, settings.epoch_ms);
    drop(log);

    let reference_started = Instant::now();
    let decoded: Vec<Decoded> = wire
        .iter()
        .cloned()
        .filter_map(|record| decode_record(record).ok())
        .collect();
    let expected = analyze(&decoded, &[], &settings);
    let reference = reference_started.elapsed();
    let sessions = expected.sessions.len();
    drop((expected, decoded));

    let mut rows = vec![(
        "reference (1 thread, hash maps)".to_owned(),
        1usize,
        reference,
    )];
    let mut memory = None;
    for &count in &workers {
        let timed = operator_times && count == 1;
        let run = run_dataflow(
            &wire,
            count,
            &epochs,
            epoch_records,
            settings.clone(),
            timed,
            leave_state,
        )?;
        if count == 1 {
            memory = run.state;
        }
        if timed {
            print_operator_times(&run.operator_times, run.elapsed);
        }
        rows.push((
            format!(
                "dataflow, {count} worker{}",
                if count == 1 { "" } else { "s" }
            ),
            count,
            run.elapsed,
        ));
    }

    println!(
        "\n{} events ({sessions} sessions) from wire bytes, epochs of {epoch_records} records\n",
        wire.len()
    );
    println!("| run | time | events/s | events/s per worker | time vs reference |");
    println!("|---|---:|---:|---:|---:|");
    for (name, count, elapsed) in &rows {
        let rate = wire.len() as f64 / elapsed.as_secs_f64();
        println!(
            "| {name} | {:.2} s | {:.0} | {:.0} | {:.2}x |",
            elapsed.as_secs_f64(),
            rate,
            rate / *count as f64,
            elapsed.as_secs_f64() / reference.as_secs_f64()
        );
    }
    let time_at = |workers: usize| {
        rows.iter()
            .find(|(name, count, _)| *count == workers && name.starts_with("dataflow"))
            .map(|(_, _, elapsed)| elapsed.as_secs_f64())
    };
    if let (Some(one), Some(two)) = (time_at(1), time_at(2)) {
        println!("\n2 workers vs 1: {:.2}x the throughput", one / two);
    }
    if let Some(state) = memory {
        let budget = 300 * active + 64 * state.retained_events;
        println!(
            "\nstate at the end (1 worker): {} bytes for {active} active visitors (an event received in the last {} min) and {} retained events",
            state.bytes,
            settings.sessions.retention.keep_ms() / 60_000,
            state.retained_events
        );
        println!(
            "| bytes per active visitor | bytes per retained event | budget 300 B/visitor + 64 B/event | state vs budget |"
        );
        println!("|---:|---:|---:|---:|");
        println!(
            "| {:.0} | {:.0} | {budget} | {:.2}x |",
            state.bytes as f64 / active.max(1) as f64,
            state.bytes as f64 / state.retained_events.max(1) as f64,
            state.bytes as f64 / budget.max(1) as f64
        );
        let entries: Vec<String> = state
            .entries
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        println!(
            "\nstate entries at the end (1 worker): {}",
            entries.join(", ")
        );
    }
    Ok(())
}

/// Visitors with an on-time event received within the retention period before the newest
/// on-time receipt: those whose state the operators must still hold (events later than the
/// lateness horizon never reach the state, nor move its clock).
fn active_visitors(log: &[Decoded], settings: &AnalyticsSettings) -> usize {
    let lateness_ms = settings.sessions.retention.lateness_ms;
    let on_time = || {
        log.iter()
            .filter(move |d| d.event.received_at_ms - d.event.timestamp_ms <= lateness_ms)
    };
    let newest = on_time().map(|d| d.event.received_at_ms).max().unwrap_or(0);
    let since = newest - settings.sessions.retention.keep_ms();
    on_time()
        .filter(|d| d.event.received_at_ms >= since)
        .map(|d| (&d.event.tenant, d.event.visitor_id()))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// The epoch of each run of `epoch_records` records of `log`: the wall-clock epoch (of
/// `epoch_ms`) of the run's last receipt, as the engine's epochs are the wall-clock instants
/// it reads records at. The live counters' "now" is the epoch (see
/// [`AnalyticsSettings::epoch_ms`]), so the active visitors hold the visitors of the last
/// minutes of the stream, as in the engine, not every visitor since 1970. Strictly
/// increasing, even where the stream's receipts are not (the runs are sent one epoch at a
/// time, each waiting for the one before it): runs shorter than an epoch move the epochs
/// ahead of the stream's clock, which the defaults (50,000 records, some minutes of stream
/// each) do not.
fn stream_epochs(log: &[Decoded], epoch_records: usize, epoch_ms: u64) -> Vec<u64> {
    let mut epochs: Vec<u64> = Vec::new();
    for run in log.chunks(epoch_records.max(1)) {
        let newest = run
            .iter()
            .map(|d| d.event.received_at_ms)
            .max()
            .unwrap_or(0);
        let epoch = u64::try_from(newest).unwrap_or(0) / epoch_ms.max(1);
        let after_last = epochs.last().map_or(0, |last| last + 1);
        epochs.push(epoch.max(after_last));
    }
    epochs
}

/// Sends `share`, one worker's records in the stream's order, `per_epoch` at a time, the
/// `n`th batch at `epochs[n]` (each one epoch later past their end), keeping at most a couple
/// of epochs in flight as the engine's backpressure does; returns the epoch after the last.
/// At 1 worker a batch is exactly a run of [`stream_epochs`]; with more, a worker's share of
/// a run is its partitions' records of about the same stretch of the stream (as even as the
/// partitions' split).
fn send_epochs(
    worker: &mut timely::worker::Worker,
    (input, probe): (&mut InputHandleVec<u64, SourceRecord>, &ProbeHandle<u64>),
    mut share: Vec<SourceRecord>,
    per_epoch: usize,
    epochs: &[u64],
) -> u64 {
    let mut previous = None;
    let mut epoch = 0;
    for run in 0.. {
        if share.is_empty() {
            break;
        }
        epoch = epochs.get(run).copied().unwrap_or(epoch + 1);
        let rest = share.split_off(per_epoch.min(share.len()));
        input.advance_to(epoch);
        for record in std::mem::replace(&mut share, rest) {
            input.send(record);
        }
        if let Some(previous) = previous {
            while probe.less_than(&previous) {
                worker.step();
            }
        }
        previous = Some(epoch);
    }
    epoch + 1
}

/// Heap held by the operators at the end of a 1-worker run.
#[derive(Debug, Clone, Copy)]
struct State {
    bytes: usize,
    retained_events: usize,
    /// Every state gauge's entries at the end, as `/metrics` names them.
    entries: [(&'static str, usize); 16],
}

#[derive(Debug)]
struct Run {
    elapsed: Duration,
    state: Option<State>,
    /// Scheduled time per operator, by name and timely id (ids in order of construction).
    operator_times: BTreeMap<String, Duration>,
}

type OperatorTimes = Arc<Mutex<BTreeMap<String, Duration>>>;

/// Sums, per operator (name and id), the time between each of timely's `Schedule` start and
/// stop log events of this worker.
fn time_operators(worker: &mut timely::worker::Worker, times: OperatorTimes) {
    use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut started: HashMap<usize, Duration> = HashMap::new();
    if let Some(mut register) = worker.log_register() {
        register.insert::<TimelyEventBuilder, _>("timely", move |_time, batch| {
            let Some(batch) = batch else { return };
            let Ok(mut times) = times.lock() else { return };
            for (at, event) in batch.drain(..) {
                match event {
                    TimelyEvent::Operates(op) => {
                        names.insert(op.id, format!("{} (#{})", op.name, op.id));
                    }
                    TimelyEvent::Schedule(s) => match s.start_stop {
                        StartStop::Start => {
                            started.insert(s.id, at);
                        }
                        StartStop::Stop => {
                            if let (Some(start), Some(name)) =
                                (started.remove(&s.id), names.get(&s.id))
                            {
                                *times.entry(name.clone()).or_default() += at.saturating_sub(start);
                            }
                        }
                    },
                    _ => {}
                }
            }
        });
    }
}

fn print_operator_times(times: &BTreeMap<String, Duration>, elapsed: Duration) {
    let mut rows: Vec<_> = times.iter().filter(|(_, time)| !time.is_zero()).collect();
    rows.sort_by(|a, b| b.1.cmp(a.1));
    println!(
        "\noperator time, 1 worker (timely's schedule log; {:.2} s in all)\n",
        elapsed.as_secs_f64()
    );
    println!("| operator | time | share of the run |");
    println!("|---|---:|---:|");
    for (name, time) in rows
        .into_iter()
        .filter(|(name, _)| !name.starts_with("Dataflow"))
    {
        println!(
            "| {name} | {:.3} s | {:.1} % |",
            time.as_secs_f64(),
            100.0 * time.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
}

/// Runs the operators on `log` spread over `workers` by partition, as the engine does, the
/// `n`th `epoch_records` records (each worker sending its share) at `epochs[n]`.
fn run_dataflow(
    log: &[SourceRecord],
    workers: usize,
    epochs: &[u64],
    epoch_records: usize,
    settings: AnalyticsSettings,
    timed: bool,
    leave_state: bool,
) -> anyhow::Result<Run> {
    // Everything allocated from here on and still live at the end is the operators' state:
    // the input shares are consumed as they are sent.
    let baseline = ALLOCATOR.allocated();
    let shares: Vec<Mutex<Option<Vec<SourceRecord>>>> = (0..workers)
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
    let state = Arc::new(Mutex::new(None::<State>));
    let operator_times = OperatorTimes::default();
    let (shares_in, ready_in, started_in, state_in, times_in) = (
        shares.clone(),
        ready.clone(),
        started.clone(),
        state.clone(),
        operator_times.clone(),
    );
    let epochs_in: Arc<[u64]> = Arc::from(epochs);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let share = shares_in[worker.index()]
            .lock()
            .ok()
            .and_then(|mut share| share.take())
            .unwrap_or_default();
        if timed {
            time_operators(worker, times_in.clone());
        }
        let gauges = StateGauges::default();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, records) = scope.new_input::<SourceRecord>();
            let (decoded, _not_events) = records.decode();
            let no_claims = insertions(Vec::<IdentityClaim>::new().to_stream(scope));
            let no_unlinks = insertions(Vec::<Unlink>::new().to_stream(scope));
            let no_erasures = operators::Erasures {
                control: timely::dataflow::operators::generic::operator::empty(scope),
                log: Default::default(),
            };
            let out = analytics(
                decoded,
                no_claims,
                no_unlinks,
                no_erasures,
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
        let epoch = send_epochs(
            worker,
            (&mut input, &probe),
            share,
            per_worker_epoch,
            &epochs_in,
        );
        // Every epoch processed, the input still open: the state is all there (closing the
        // input would let timely drop the finished operators, and their state with them).
        input.advance_to(epoch);
        while probe.less_than(&epoch) {
            worker.step();
        }
        if worker.peers() == 1
            && let Ok(mut state) = state_in.lock()
        {
            *state = Some(State {
                bytes: ALLOCATOR.allocated().saturating_sub(baseline),
                retained_events: gauges.sessionized_events.get(),
                entries: gauges.all().map(|(name, gauge)| (name, gauge.get())),
            });
        }
        if leave_state && worker.peers() == 1 {
            eprintln!(
                "leaving the state allocated: {} bytes",
                ALLOCATOR.allocated().saturating_sub(baseline)
            );
            std::process::exit(0);
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
    let elapsed = started.elapsed();
    let state = state.lock().ok().and_then(|state| *state);
    let operator_times = operator_times
        .lock()
        .map(|times| times.clone())
        .unwrap_or_default();
    Ok(Run {
        elapsed,
        state,
        operator_times,
    })
}
