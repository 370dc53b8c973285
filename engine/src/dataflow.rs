//! What each timely worker runs: the Kafka source, the operators, one sink per output table,
//! and the checkpoint that follows them all.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use operators::{
    Analytics, ControlRecord, DeadLetter, Decode, Decoded, Erase, Erasures, IdentityClaim,
    NotAnEvent, StateGauges, analytics, insertions,
};
use schemas::erasure::ErasureLog;
use schemas::{ControlMessage, IngestWarning};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::vec::ToStream;
use timely::dataflow::operators::{Concatenate, Inspect, OkErr};
use timely::dataflow::{InputHandleVec, ProbeHandle, Stream, StreamVec};
use timely::worker::Worker;

use crate::clickhouse::io::IoRuntime;
use crate::clickhouse::{ClickHouseWriter, SinkError};
use crate::config::EngineConfig;
use crate::metrics::Metrics;
use crate::recovery::{LowWater, Recovery};
use crate::retry::{Backoff, Chain, stop};
use crate::sink::checkpoint::{CheckpointSettings, NewTenants, checkpoint, progress};
use crate::sink::erasure::{RemovedTenants, Requests};
use crate::sink::live::LiveFeed;
use crate::sink::tables::aggregates::AggregatesSink;
use crate::sink::tables::dead_letters::DeadLettersSink;
use crate::sink::tables::events::{EventUpdate, EventsSink, LateEventsSink};
use crate::sink::tables::identities::{ClaimsSink, IdentitiesSink};
use crate::sink::tables::live_counters::LiveCountersSink;
use crate::sink::tables::sessions::SessionsSink;
use crate::sink::tables::visitor_hours::VisitorHoursSink;
use crate::sink::tables::warnings::{GatewayWarningsSink, WarningsSink};
use crate::sink::tables::{Live, Table, Writers, attach};
use crate::source::control::{
    ControlSettings, StartErasures, control_consumer, control_source, read_erasures,
};
use crate::source::kafka::{PartitionReader, Planner, SourceSettings, kafka_source};
use crate::source::log_check::{LogGuard, Mismatch};
use crate::source::positions::PositionsByEpoch;

/// Shared by every worker of a process.
#[derive(Debug, Clone)]
pub struct EngineContext {
    /// Configuration.
    pub config: EngineConfig,
    /// Runtime for the async clients.
    pub runtime: tokio::runtime::Handle,
    /// Set on SIGTERM/ctrl-c.
    pub shutdown: Arc<AtomicBool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The process's live-counter publisher.
    pub live: LiveFeed,
    /// Erasure requests the dataflow applied, for the executor (filled on process 0).
    pub erasure_requests: Requests,
    /// The first epoch some sink has not written on every worker: the executor's barrier.
    pub sinks_frontier: Arc<AtomicU64>,
    /// Tenants removed (`engine --remove-tenant`), as this process has read: their live
    /// counters and progress rows are no longer written.
    pub removed_tenants: RemovedTenants,
    /// Workers per process (`-w`): which workers write the tables (see [`Writers`]).
    pub workers_per_process: usize,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Kafka consumer could not be created.
    #[error("cannot create the Kafka consumer")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Shut down before start-up reads finished.
    #[error("shut down while starting")]
    Interrupted,
    /// The control topic holds erasures and `erasure.salt` is not set.
    #[error(
        "the control topic holds erasures, and erasure.salt (the query gateway's --erasure-salt) is not set: the engine cannot match them"
    )]
    NoSalt,
}

/// What the last run left, read once per process before the cluster connects: no worker of
/// this run can have written anything yet, so every process sees the same previous run.
#[derive(Debug, Default)]
pub struct StartState {
    /// Checkpoint, low waters and epoch plans (the control topic's too).
    pub recovery: Recovery,
    /// Identity claims below the low water (loaded by process 0 only, whose worker 0 feeds
    /// them in).
    pub claims: Vec<IdentityClaim>,
    /// Every erasure on the control topic when the process started: replayed events of an
    /// erased person never enter the dataflow.
    pub erasures: ErasureLog,
}

/// Reads the [`StartState`], waiting for ClickHouse if it is down.
pub fn load_start_state(
    context: &EngineContext,
    process: usize,
) -> Result<StartState, WorkerError> {
    let EngineConfig {
        kafka, clickhouse, ..
    } = &context.config;
    let writer = ClickHouseWriter::new(clickhouse, &kafka.topic);
    // A restart's time to be current is a target: each step's time is logged.
    let mut step = Instant::now();
    let mut lap = || {
        std::mem::replace(&mut step, Instant::now())
            .elapsed()
            .as_millis()
    };
    let recovery = read_with_retry(context, "checkpoints", || writer.load_recovery())?;
    let checkpoints_ms = lap();
    log_guard(context, &writer).verify_at_start(kafka, &recovery);
    let log_check_ms = lap();
    let control_writer = ClickHouseWriter::new(clickhouse, &kafka.control_topic);
    let control_plan = read_with_retry(context, "control epoch plans", || {
        control_writer.load_single_partition_plan()
    })?;
    let claims = if process == 0 {
        read_with_retry(context, "identity claims", || writer.load_claims(&recovery))?
    } else {
        Vec::new()
    };
    let claims_ms = lap();
    let completed = read_with_retry(context, "completed erasures", || {
        writer.completed_erasures()
    })?;
    let StartErasures {
        log: erasures,
        erasures: requests,
        start_offset,
        end_offset,
    } = read_erasures(kafka, &context.config.erasure.salt, &completed)?;
    tracing::info!(
        checkpoints_ms,
        log_check_ms,
        claims_ms,
        erasures_ms = lap(),
        claims = claims.len(),
        "start state read"
    );
    if requests > 0 && context.config.erasure.salt.is_empty() {
        return Err(WorkerError::NoSalt);
    }
    Ok(StartState {
        recovery: recovery.with_control_plan(&control_plan, (start_offset, end_offset)),
        claims,
        erasures,
    })
}

/// `engine --accept-new-log`: see [`LogGuard::accept_new_log`].
pub fn accept_new_log(context: &EngineContext) -> Result<Vec<Mismatch>, WorkerError> {
    let EngineConfig {
        kafka, clickhouse, ..
    } = &context.config;
    let writer = ClickHouseWriter::new(clickhouse, &kafka.topic);
    let recovery = read_with_retry(context, "checkpoints", || writer.load_recovery())?;
    Ok(log_guard(context, &writer).accept_new_log(kafka, &recovery)?)
}

/// Writes with the engine's retry policy.
fn sink_runtime(context: &EngineContext) -> IoRuntime {
    IoRuntime {
        runtime: context.runtime.clone(),
        shutdown: context.shutdown.clone(),
        metrics: context.metrics.clone(),
        backoff: Backoff::up_to(Duration::from_millis(
            context.config.clickhouse.max_retry_backoff_ms,
        )),
    }
}

/// Records and times out stalls on a log that is not the one the checkpoints describe.
fn log_guard(context: &EngineContext, writer: &ClickHouseWriter) -> LogGuard {
    LogGuard {
        writer: writer.clone(),
        sink: sink_runtime(context),
        timeout: Duration::from_secs(context.config.kafka.log_loss_timeout_secs),
    }
}

/// Returns once every worker of the cluster has called it: a dataflow of one empty input per
/// worker, whose frontier passes 1 only when every worker has advanced its input. Each process
/// reads its start state (checkpoints, epoch plans) once the cluster has formed, each at its
/// own pace; a worker that built the pipeline before a slower process had read would write
/// epoch plans that process then read as an earlier run's (2026-12-07: its first live epoch
/// moved past the epochs it was about to read, and their events were not published live).
/// Every worker calls it between reading the start state and building the pipeline, in the
/// same order (timely matches dataflows by the order they are built in).
pub fn wait_for_every_worker(worker: &mut Worker) {
    let mut input = InputHandleVec::<u64, ()>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        scope.input_from(&mut input).probe_with(&probe);
    });
    input.advance_to(1);
    while probe.less_than(input.time()) {
        worker.step();
    }
}

/// Builds this worker's part of the dataflow and runs it until shutdown.
pub fn run_worker(
    worker: &mut Worker,
    context: &EngineContext,
    start: &StartState,
) -> Result<(), WorkerError> {
    let EngineConfig {
        epoch_ms,
        connect_timeout_secs: _,
        kafka,
        clickhouse,
        analytics: analytics_config,
        metrics: _,
        live: _,
        retention: _,
        erasure: _,
    } = &context.config;
    let (index, peers) = (worker.index(), worker.peers());
    let writer = ClickHouseWriter::new(clickhouse, &kafka.topic);
    let recovery = &start.recovery;
    // The identity map is rebuilt from the stored claims that will not be replayed; one worker
    // feeds them in.
    let stored_claims = if index == 0 {
        start.claims.clone()
    } else {
        Vec::new()
    };
    let replayed_through = recovery.checkpointed_epoch;
    // Replayed and redone epochs are history: live counters are published for new ones only.
    let first_live_epoch = recovery.last_planned_epoch + 1;
    tracing::info!(
        worker = index,
        peers,
        checkpointed_epoch = replayed_through,
        last_planned_epoch = recovery.last_planned_epoch,
        claims = stored_claims.len(),
        "worker starting"
    );

    let reader = PartitionReader::new(kafka, index, peers, recovery, context.metrics.clone())?;
    let control = if index == 0 {
        Some(control_consumer(kafka)?)
    } else {
        None
    };
    let source_settings = SourceSettings {
        epoch_ms: *epoch_ms,
        max_poll_records: kafka.max_poll_records,
        max_pending_records: kafka.max_pending_records,
        max_pending_bytes: kafka.max_pending_bytes,
        first_live_epoch,
    };
    let sink = sink_runtime(context);
    let settings = analytics_config.to_settings(*epoch_ms);
    let checkpoint_settings = CheckpointSettings {
        replayed_through,
        low_water: LowWater::new(recovery, settings.replay_horizon_ms().div_ceil(*epoch_ms)),
    };
    let positions = PositionsByEpoch::default();
    let new_tenants = NewTenants::default();
    let gauges = StateGauges::default();

    let table = Table {
        writer: writer.clone(),
        runtime: sink.clone(),
    };
    let live = Live {
        feed: context.live.clone(),
        first_epoch: first_live_epoch,
        epoch_ms: *epoch_ms,
    };

    worker.dataflow::<u64, _, _>(|scope| {
        let records = kafka_source(
            scope,
            reader,
            source_settings,
            Planner {
                writer: writer.clone(),
                sink: sink.clone(),
                guard: log_guard(context, &writer),
            },
            positions.clone(),
            context.shutdown.clone(),
            context.metrics.clone(),
        );
        let (unlinks, erasures) = control_source(
            scope,
            control,
            ControlSettings {
                first_live_epoch,
                epoch_ms: *epoch_ms,
                plan: recovery.control_plan.clone(),
                planner: ClickHouseWriter::new(clickhouse, &kafka.control_topic),
                sink: sink.clone(),
            },
            context.shutdown.clone(),
            context.metrics.clone(),
            context.erasure_requests.clone(),
        );
        let (decoded, not_events) = records.decode();
        let (gateway_warnings, dead_letters) = not_events.ok_err(NotAnEvent::split);
        let erased = context.metrics.events_erased.clone();
        let removed = context.removed_tenants.clone();
        for tenant in start.erasures.removed_tenants() {
            removed.insert(tenant);
        }
        let erasures = erasures.broadcast().inspect(move |message| {
            if let ControlRecord(ControlMessage::RemoveTenant { tenant, .. }) = message {
                removed.insert(tenant.as_str());
            }
        });
        let decoded = decoded.erase(erasures.clone(), start.erasures.clone(), move |count| {
            erased.inc_by(count as u64);
        });
        let mut note_tenant = record_new_tenants(new_tenants.clone());
        let decoded = decoded.inspect(move |decoded: &Decoded| note_tenant(decoded));
        let stored = insertions(stored_claims.to_stream(scope));
        let erasures = Erasures {
            control: erasures,
            log: start.erasures.clone(),
        };
        let out = analytics(decoded, stored, unlinks, erasures, settings, gauges.clone());

        let sinks = Sinks {
            table: table.clone(),
            live: live.clone(),
            removed: context.removed_tenants.clone(),
            writers: Writers {
                peers,
                per_process: context.workers_per_process,
            },
            replayed_through,
        };
        let done = sinks.attach(out, gateway_warnings, dead_letters);
        let reports = checkpoint(
            scope.concatenate(done),
            positions.clone(),
            new_tenants.clone(),
            checkpoint_settings,
            writer.clone(),
            sink.clone(),
            context.sinks_frontier.clone(),
        );
        progress(
            reports,
            replayed_through,
            writer.clone(),
            sink.clone(),
            context.removed_tenants.clone(),
        );
    });

    let park = Duration::from_millis((*epoch_ms / 4).clamp(1, 50));
    while worker.step_or_park(Some(park)) {
        context.metrics.record_state(index, &gauges);
    }
    tracing::info!(worker = index, "worker finished");
    Ok(())
}

/// Where the pipeline's outputs are written: one table sink per output.
struct Sinks {
    table: Table,
    live: Live,
    removed: RemovedTenants,
    writers: Writers,
    replayed_through: u64,
}

impl Sinks {
    /// Attaches a sink to every output of the pipeline (and to the records that are not
    /// events); each gives the epochs it has written, for the checkpoint.
    fn attach<'s>(
        self,
        out: Analytics<'s, u64>,
        gateway_warnings: StreamVec<'s, u64, IngestWarning>,
        dead_letters: StreamVec<'s, u64, DeadLetter>,
    ) -> Vec<Stream<'s, u64, Vec<()>>> {
        let Sinks {
            table,
            live,
            removed,
            writers,
            replayed_through,
        } = self;
        let t = || table.clone();
        // Each table's slot among a process's workers: the heaviest (events, sessions, the
        // rollups) on different workers.
        let mut slots = 0..;
        let mut slot = || (writers, slots.next().unwrap_or_default());
        vec![
            attach(
                insertions(out.arrived)
                    .map(EventUpdate::Arrived)
                    .concat(out.events.map(EventUpdate::Attributed))
                    .inner,
                EventsSink {
                    table: t(),
                    live: live.clone(),
                },
                slot(),
                replayed_through,
            ),
            attach(
                out.sessions.inner,
                SessionsSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                out.aggregates.inner,
                AggregatesSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                out.visitor_hours.inner,
                VisitorHoursSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                out.identities.inner,
                IdentitiesSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                out.claims.inner,
                ClaimsSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                out.active_visitors
                    .filter(move |(tenant, _)| !removed.contains(tenant))
                    .inner,
                LiveCountersSink { table: t(), live },
                slot(),
                replayed_through,
            ),
            attach(
                out.late,
                LateEventsSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                out.warnings,
                WarningsSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                gateway_warnings,
                GatewayWarningsSink { table: t() },
                slot(),
                replayed_through,
            ),
            attach(
                dead_letters,
                DeadLettersSink { table: t() },
                slot(),
                replayed_through,
            ),
        ]
    }
}

/// Notes each tenant the first time this worker sees it, for the checkpoint's progress rows.
fn record_new_tenants(new_tenants: NewTenants) -> impl FnMut(&Decoded) + 'static {
    let mut seen: HashSet<String> = HashSet::new();
    move |decoded: &Decoded| {
        if !seen.contains(&decoded.event.tenant) {
            seen.insert(decoded.event.tenant.clone());
            new_tenants
                .borrow_mut()
                .insert(decoded.event.tenant.clone());
        }
    }
}

/// Reads what the last run left, waiting for ClickHouse while it is unreachable; gives up on
/// shutdown and stops the process on a permanent error.
fn read_with_retry<T, F, Fut>(
    context: &EngineContext,
    what: &str,
    mut read: F,
) -> Result<T, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let backoff = Backoff::up_to(Duration::from_secs(5));
    let result = backoff.blocking(
        || context.runtime.block_on(read()),
        |error: &SinkError| !error.is_permanent() && !context.shutdown.load(Ordering::Relaxed),
        |error, wait| {
            tracing::warn!(error = %Chain(error), what, retry_in_ms = wait.as_millis() as u64, "cannot read from ClickHouse; retrying")
        },
    );
    match result {
        Ok(value) => Ok(value),
        Err(error) if error.is_permanent() => stop(what, &error),
        Err(_) => Err(WorkerError::Interrupted),
    }
}
