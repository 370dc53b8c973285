//! `engine`: parses arguments, prepares Kafka and ClickHouse, starts the metrics endpoint and
//! the timely workers, and stops them on SIGTERM/ctrl-c after the last epochs are written.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clickstream_engine::cli::{self, Command};
use clickstream_engine::clickhouse::{SinkError, ensure_schema, schema_ready};
use clickstream_engine::config::EngineConfig;
use clickstream_engine::dataflow::{
    EngineContext, StartState, WorkerError, accept_new_log, load_start_state, run_worker,
    wait_for_every_worker,
};
use clickstream_engine::metrics::Metrics;
use clickstream_engine::retry::{Backoff, Chain};
use clickstream_engine::sink::erasure::Requests;
use clickstream_engine::sink::live::LiveFeed;
use clickstream_engine::source::kafka::ensure_topics;

/// Records allocated on one worker thread are freed on another; glibc malloc serialises that,
/// mimalloc does not (measured with `bench-operators`: 2 workers went from slower than 1 to
/// 2.15x faster). It is built without transparent huge pages (`no_thp`): with them, pages it
/// returned and took back were zeroed 2 MiB at a time, a quarter of the engine's samples in
/// `bench pipeline` (`clear_page_erms` under `do_huge_pmd_anonymous_page`). How long it keeps
/// freed pages is set in `main` (see [`clickstream_engine::allocator`]).
#[cfg(not(feature = "live-heap"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The diagnostic build's allocator: mimalloc, with its live bytes counted (see the
/// `live-heap` feature).
#[cfg(feature = "live-heap")]
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

fn main() -> anyhow::Result<()> {
    clickstream_engine::allocator::tune();
    #[cfg(feature = "live-heap")]
    clickstream_engine::allocator::count_live_bytes_with(|| ALLOCATOR.allocated());
    let run = match cli::parse(std::env::args().skip(1))? {
        Command::Help(text) => {
            println!("{text}");
            return Ok(());
        }
        Command::Version => {
            println!("engine {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Run(run) => *run,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut config = EngineConfig::load(run.config.as_deref()).context("loading configuration")?;
    if let Some(secs) = run.log_loss_timeout_secs {
        config.kafka.log_loss_timeout_secs = secs;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("engine-io")
        .build()
        .context("starting the I/O runtime")?;
    let metrics_listen = run.metrics_listen.unwrap_or_else(|| {
        let base = config.metrics.listen;
        SocketAddr::new(
            base.ip(),
            base.port().saturating_add(run.process_index as u16),
        )
    });
    let metrics = Arc::new(Metrics::default());
    let live = LiveFeed::start(
        &config.live.redis_url,
        runtime.handle(),
        metrics.live_updates_dropped.clone(),
    );
    let context = EngineContext {
        config,
        runtime: runtime.handle().clone(),
        shutdown: Arc::new(AtomicBool::new(false)),
        metrics,
        live,
        erasure_requests: Requests::default(),
        sinks_frontier: Arc::new(AtomicU64::new(0)),
        removed_tenants: Default::default(),
        workers_per_process: run.workers_per_process,
    };
    runtime.block_on(start_services(&context, run.process_index, metrics_listen))?;
    tracing::info!(
        process = run.process_index,
        processes = run.processes,
        workers_per_process = run.workers_per_process,
        %metrics_listen,
        topic = %context.config.kafka.topic,
        database = %context.config.clickhouse.database,
        "engine starting"
    );
    if let Some(tenant) = &run.remove_tenant {
        return remove_tenant(&context, tenant);
    }
    if run.accept_new_log {
        let accepted = accept_new_log(&context).context("accepting the new log")?;
        if accepted.is_empty() {
            println!("the log is the one the checkpoints describe: nothing to accept");
        }
        for mismatch in accepted {
            println!("accepted: {mismatch}; it starts afresh from the new log");
        }
        return Ok(());
    }
    let result = run_cluster(context, run);
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Prepares Kafka and ClickHouse (retrying while they are unavailable), then starts what runs
/// beside the dataflow on the I/O runtime: the metrics endpoint, on process 0 the retention
/// and erasure executors, the libc heap trimmer, and the signal handler that asks the workers
/// to finish their open epochs.
async fn start_services(
    context: &EngineContext,
    process_index: usize,
    metrics_listen: SocketAddr,
) -> anyhow::Result<()> {
    let EngineContext {
        config,
        shutdown,
        metrics,
        ..
    } = context;
    prepare_with_retry(config, process_index, shutdown).await?;
    let listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .with_context(|| format!("binding the metrics endpoint {metrics_listen}"))?;
    let router = metrics.clone().router();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    if process_index == 0 {
        tokio::spawn(clickstream_engine::sink::retention::run(
            config.clickhouse.clone(),
            config.retention.clone(),
            metrics.clone(),
        ));
        tokio::spawn(clickstream_engine::sink::erasure::run(
            clickstream_engine::sink::erasure::executor::ExecutorSettings {
                clickhouse: config.clickhouse.clone(),
                erasure: config.erasure.clone(),
                kafka: config.kafka.clone(),
                sessions: config.analytics.to_settings(config.epoch_ms).sessions,
            },
            context.erasure_requests.clone(),
            context.sinks_frontier.clone(),
            metrics.clone(),
        ));
    }
    tokio::spawn(clickstream_engine::allocator::trim_libc_heap_periodically());
    let flag = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing the open epochs");
        flag.store(true, Ordering::Relaxed);
    });
    Ok(())
}

/// `engine --remove-tenant`: removes `tenant` through the running engine, waits until it is
/// done and prints what was removed.
fn remove_tenant(context: &EngineContext, tenant: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let row = context
        .runtime
        .block_on(clickstream_engine::sink::erasure::remove_tenant(
            &context.config,
            tenant,
        ))
        .context("removing the tenant")?;
    println!(
        "tenant {tenant} removed in {:.1} s (request {}):",
        started.elapsed().as_secs_f64(),
        row.request_id
    );
    for (table, rows) in row.removed_tables.iter().zip(&row.removed_rows) {
        println!("  {table}: {rows} rows");
    }
    Ok(())
}

/// Runs this process's workers of the timely cluster until they finish; fails with every
/// worker's error. The process exits (status 2) if the cluster has not formed within
/// `connect_timeout_secs`.
fn run_cluster(context: EngineContext, run: cli::RunArgs) -> anyhow::Result<()> {
    // timely connects the processes inside `execute`, before any worker runs, and waits for
    // every peer without a deadline. The start state is read only once the cluster has
    // formed: read before, a ClickHouse outage kept a process from listening past its peers'
    // deadline (clickhouse_outage test, 2026-12-07), and the cluster exited instead of waiting.
    let start = StartOnce::default();
    let process_index = run.process_index;
    let connected = Arc::new(AtomicBool::new(false));
    let connect_timeout = Duration::from_secs(context.config.connect_timeout_secs);
    let watched = connected.clone();
    std::thread::spawn(move || {
        std::thread::sleep(connect_timeout);
        if !watched.load(Ordering::Relaxed) {
            tracing::error!(
                ?connect_timeout,
                "the cluster did not form (a peer is missing); exiting"
            );
            std::process::exit(2);
        }
    });
    let guards = timely::execute(run.timely, move |worker| {
        connected.store(true, Ordering::Relaxed);
        let start = start
            .read(&context, process_index)
            .map_err(|error| format!("reading the last checkpoint: {}", Chain(&error)))?;
        // Nothing is written until every process has read the state it starts from.
        wait_for_every_worker(worker);
        run_worker(worker, &context, &start).map_err(|error| Chain(&error).to_string())
    })
    .map_err(|error| anyhow!("starting timely: {error}"))?;
    let mut failures = Vec::new();
    for result in guards.join() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) | Err(error) => failures.push(error),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("workers failed: {}", failures.join("; ")))
    }
}

/// The process's start state, read by whichever of its workers asks first and shared with
/// the others.
#[derive(Default)]
struct StartOnce(Mutex<Option<Arc<StartState>>>);

impl StartOnce {
    /// The start state, read from ClickHouse on the first call (retrying while it is
    /// unavailable); a failed read is tried again by the next worker.
    fn read(
        &self,
        context: &EngineContext,
        process: usize,
    ) -> Result<Arc<StartState>, WorkerError> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(start) = held.as_ref() {
            return Ok(Arc::clone(start));
        }
        let start = Arc::new(load_start_state(context, process)?);
        *held = Some(Arc::clone(&start));
        Ok(start)
    }
}

/// Topic and tables must exist before workers start; both servers may still be starting, so
/// wait for them rather than crash-looping. Only process 0 runs the DDL (see
/// [`schema_ready`]); the others wait for its tables.
async fn prepare_with_retry(
    config: &EngineConfig,
    process: usize,
    shutdown: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let attempt = || async {
        if process == 0 {
            ensure_schema(&config.clickhouse)
                .await
                .context("preparing ClickHouse")?;
        } else if !schema_ready(&config.clickhouse)
            .await
            .context("checking the ClickHouse schema")?
        {
            anyhow::bail!("waiting for process 0 to create the ClickHouse schema");
        }
        ensure_topics(&config.kafka)
            .await
            .context("preparing the Kafka topics")?;
        anyhow::Ok(())
    };
    Backoff::up_to(Duration::from_secs(5))
        .run(
            attempt,
            |error: &anyhow::Error| {
                let permanent = error
                    .downcast_ref::<SinkError>()
                    .is_some_and(SinkError::is_permanent);
                !permanent
                    && !shutdown.load(Ordering::Relaxed)
                    && std::time::Instant::now() < deadline
            },
            |error, wait| {
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "servers not ready; retrying"
                )
            },
        )
        .await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; ctrl-c only");
            let _ = ctrl_c.await;
        }
    }
}
