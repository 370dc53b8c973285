//! What each timely worker runs: the Kafka source, the operators, one sink per output table,
//! and the checkpoint that follows them all.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use operators::{
    AggRow, Decode, Decoded, Enriched, IdWarning, IdentityClaim, Node, Person, Position, Session,
    SharedEvent, StateGauges, VisitorHour, analytics, insertions, route,
};
use schemas::live::LiveUpdate;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::ToStream;
use timely::dataflow::operators::{Concatenate, Inspect, OkErr};
use timely::worker::Worker;

use crate::config::EngineConfig;
use crate::metrics::{Metrics, RefusalLabels};
use crate::recovery::{LowWater, Recovery};
use crate::sink::checkpoint::{
    CheckpointSettings, NewTenants, PositionsByEpoch, checkpoint, progress,
};
use crate::sink::clickhouse::rows::{
    AggMinuteRow, ClaimRow, DeadLetterRow, EventRow, IdentityRow, LiveCounterRow, SessionRow,
    VisitorHourRow, WarningRow, datetime,
};
use crate::sink::clickhouse::{ClickHouseWriter, SinkError};
use crate::sink::epoch::{SinkRuntime, epoch_sink, upserts};
use crate::sink::live::LivePublisher;
use crate::source::control::{control_consumer, control_source};
use crate::source::kafka::{PartitionReader, Planner, SourceSettings, kafka_source};

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
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Kafka consumer could not be created.
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Shut down before start-up reads finished.
    #[error("shut down while starting")]
    Interrupted,
}

fn time_of_update<D>(update: &(D, u64, isize)) -> Option<u64> {
    Some(update.1)
}

fn no_time<D>(_: &D) -> Option<u64> {
    None
}

/// What the last run left, read once per process before the cluster connects: no worker of
/// this run can have written anything yet, so every process sees the same previous run.
#[derive(Debug, Default)]
pub struct StartState {
    /// Checkpoint, low waters and epoch plans.
    pub recovery: Recovery,
    /// Identity claims below the low water (loaded by process 0 only, whose worker 0 feeds
    /// them in).
    pub claims: Vec<IdentityClaim>,
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
    let recovery = read_with_retry(context, "checkpoints", || writer.load_recovery())?;
    let claims = if process == 0 {
        read_with_retry(context, "identity claims", || writer.load_claims(&recovery))?
    } else {
        Vec::new()
    };
    Ok(StartState { recovery, claims })
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
        live,
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
        first_live_epoch,
    };
    let sink = SinkRuntime {
        runtime: context.runtime.clone(),
        shutdown: context.shutdown.clone(),
        metrics: context.metrics.clone(),
        max_backoff: Duration::from_millis(clickhouse.max_retry_backoff_ms),
    };
    let settings = analytics_config.to_settings(*epoch_ms);
    let checkpoint_settings = CheckpointSettings {
        replayed_through,
        low_water: LowWater::new(recovery, settings.replay_horizon_ms().div_ceil(*epoch_ms)),
    };
    let positions = PositionsByEpoch::default();
    let new_tenants = NewTenants::default();
    let gauges = Arc::new(StateGauges::default());

    worker.dataflow::<u64, _, _>(|scope| {
        let records = kafka_source(
            scope,
            reader,
            source_settings,
            Planner {
                writer: writer.clone(),
                sink: sink.clone(),
            },
            positions.clone(),
            context.shutdown.clone(),
            context.metrics.clone(),
        );
        let (decoded, dead_letters) = records.decode().ok_err(|outcome| outcome);
        let decoded = decoded.inspect({
            let new_tenants = new_tenants.clone();
            let mut seen: HashSet<String> = HashSet::new();
            move |decoded: &Decoded| {
                if !seen.contains(&decoded.event.tenant) {
                    seen.insert(decoded.event.tenant.clone());
                    new_tenants
                        .borrow_mut()
                        .insert(decoded.event.tenant.clone());
                }
            }
        });
        let stored = insertions(stored_claims.to_stream(scope));
        let unlinks = control_source(
            scope,
            control,
            *epoch_ms,
            context.shutdown.clone(),
            context.metrics.clone(),
        );
        let out = analytics(decoded, stored, unlinks, settings, gauges.clone());

        let mut done = Vec::new();

        let (w, s) = (writer.clone(), sink.clone());
        let mut events_publisher = LivePublisher::new(&live.redis_url);
        let epoch_length = *epoch_ms;
        done.push(epoch_sink(
            out.events.inner,
            Exchange::new(|(e, _, _): &(Enriched, u64, isize)| route(&e.event.message_id)),
            "EventsSink",
            time_of_update,
            replayed_through,
            move |epoch, updates| {
                let rows: Vec<EventRow> = upserts(updates, |e: &Enriched| {
                    (e.event.tenant.clone(), e.event.message_id.clone())
                })
                .into_iter()
                // An event never disappears: a lone retraction only means it moved, and the
                // move's insertion carries its new row.
                .filter(|(_, removed)| !removed)
                .map(|(e, _)| EventRow::new(&e.event, &e.session_id, &e.person_id, false, epoch))
                .collect();
                s.write_with_retry("events", || w.insert("events", &rows));
                s.metrics.events_written.inc_by(rows.len() as u64);
                if epoch >= first_live_epoch {
                    let mut per_tenant: BTreeMap<&str, u64> = BTreeMap::new();
                    for row in &rows {
                        *per_tenant.entry(row.tenant.as_str()).or_default() += 1;
                    }
                    let at_ms = epoch.saturating_mul(epoch_length) as i64;
                    let updates: Vec<(String, LiveUpdate)> = per_tenant
                        .into_iter()
                        .map(|(tenant, events)| {
                            let update = LiveUpdate {
                                epoch,
                                at_ms,
                                active_visitors: None,
                                events: Some(events),
                            };
                            (tenant.to_owned(), update)
                        })
                        .collect();
                    events_publisher.publish(&updates);
                }
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.late,
            Exchange::new(|e: &SharedEvent| route(&e.message_id)),
            "LateEventsSink",
            no_time,
            replayed_through,
            move |epoch, events| {
                let rows: Vec<EventRow> = events
                    .iter()
                    .map(|e| EventRow::new(e, "", "", true, epoch))
                    .collect();
                s.write_with_retry("late events", || w.insert("events", &rows));
                s.metrics.late_events.inc_by(rows.len() as u64);
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.warnings,
            Exchange::new(|w: &IdWarning| route(&w.message_id)),
            "WarningsSink",
            no_time,
            replayed_through,
            move |_epoch, warnings| {
                let rows: Vec<WarningRow> =
                    warnings.iter().map(WarningRow::placeholder_id).collect();
                s.write_with_retry("ingestion warnings", || {
                    w.insert("ingestion_warnings", &rows)
                });
                for field in operators::IdField::ALL {
                    let count = warnings.iter().filter(|w| w.field == field).count();
                    if count > 0 {
                        let labels = RefusalLabels {
                            reason: "placeholder_id",
                            field: field.as_str(),
                        };
                        s.metrics
                            .claims_refused
                            .get_or_create(&labels)
                            .inc_by(count as u64);
                    }
                }
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.sessions.inner,
            Exchange::new(|(session, _, _): &(Session, u64, isize)| route(&session.session_id)),
            "SessionsSink",
            time_of_update,
            replayed_through,
            move |epoch, updates| {
                let rows: Vec<SessionRow> = upserts(updates, |s: &Session| {
                    (s.tenant.clone(), s.session_id.clone())
                })
                .into_iter()
                .map(|(session, removed)| SessionRow::new(&session, removed, epoch))
                .collect();
                s.write_with_retry("sessions", || w.insert("sessions", &rows));
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.identities.inner,
            Exchange::new(|((node, _), _, _): &((Node, Person), u64, isize)| route(node)),
            "IdentitiesSink",
            time_of_update,
            replayed_through,
            move |epoch, updates| {
                let rows: Vec<IdentityRow> =
                    upserts(updates, |(node, _): &(Node, Person)| node.clone())
                        .into_iter()
                        .map(|((node, person), removed)| {
                            IdentityRow::new(&node, &person, removed, epoch)
                        })
                        .collect();
                s.write_with_retry("identities", || w.insert("identities", &rows));
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.claims.inner,
            Exchange::new(
                |((claim, _), _, _): &((IdentityClaim, Position), u64, isize)| route(claim),
            ),
            "ClaimsSink",
            time_of_update,
            replayed_through,
            move |_epoch, updates| {
                let rows: Vec<ClaimRow> = updates
                    .iter()
                    .filter(|(_, _, r)| *r > 0)
                    .map(|((claim, position), _, _)| ClaimRow::new(claim, *position))
                    .collect();
                s.write_with_retry("identity claims", || w.insert("identity_claims", &rows));
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.aggregates.inner,
            Exchange::new(|(row, _, _): &(AggRow, u64, isize)| {
                route(&(&row.tenant, row.minute_ms, row.metric, &row.dimension))
            }),
            "AggregatesSink",
            time_of_update,
            replayed_through,
            move |epoch, updates| {
                let rows: Vec<AggMinuteRow> = upserts(updates, |a: &AggRow| {
                    (a.tenant.clone(), a.minute_ms, a.metric, a.dimension.clone())
                })
                .into_iter()
                .map(|(row, removed)| AggMinuteRow::new(&row, removed, epoch))
                .collect();
                s.write_with_retry("aggregates", || w.insert("agg_minute_metrics", &rows));
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        done.push(epoch_sink(
            out.visitor_hours.inner,
            Exchange::new(|(row, _, _): &(VisitorHour, u64, isize)| {
                route(&(&row.tenant, row.hour_ms, &row.visitor_id, &row.person_id))
            }),
            "VisitorHoursSink",
            time_of_update,
            replayed_through,
            move |epoch, updates| {
                let rows: Vec<VisitorHourRow> = upserts(updates, |v: &VisitorHour| {
                    (
                        v.tenant.clone(),
                        v.hour_ms,
                        v.visitor_id.clone(),
                        v.person_id.clone(),
                    )
                })
                .into_iter()
                .map(|(row, removed)| VisitorHourRow::new(&row, removed, epoch))
                .collect();
                s.write_with_retry("visitor hours", || w.insert("agg_hour_visitors", &rows));
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        let mut counters_publisher = LivePublisher::new(&live.redis_url);
        done.push(epoch_sink(
            out.active_visitors.inner,
            Exchange::new(|((tenant, _), _, _): &((String, i64), u64, isize)| route(tenant)),
            "LiveCountersSink",
            time_of_update,
            replayed_through,
            move |epoch, updates| {
                let updated_at = datetime(epoch.saturating_mul(epoch_length) as i64);
                let rows: Vec<LiveCounterRow> =
                    upserts(updates, |(tenant, _): &(String, i64)| tenant.clone())
                        .into_iter()
                        .map(|((tenant, count), removed)| LiveCounterRow {
                            tenant,
                            counter: "active_visitors_5m".into(),
                            value: if removed { 0 } else { count },
                            updated_at,
                            version: epoch,
                        })
                        .collect();
                s.write_with_retry("live counters", || w.insert("live_counters", &rows));
                if epoch >= first_live_epoch {
                    let at_ms = epoch.saturating_mul(epoch_length) as i64;
                    let updates: Vec<(String, LiveUpdate)> = rows
                        .iter()
                        .map(|row| {
                            let update = LiveUpdate {
                                epoch,
                                at_ms,
                                active_visitors: Some(row.value),
                                events: None,
                            };
                            (row.tenant.clone(), update)
                        })
                        .collect();
                    counters_publisher.publish(&updates);
                }
            },
        ));

        let (w, s) = (writer.clone(), sink.clone());
        let topic = kafka.topic.clone();
        done.push(epoch_sink(
            dead_letters,
            Pipeline,
            "DeadLettersSink",
            no_time,
            replayed_through,
            move |_epoch, dead| {
                let now_ms = crate::now_ms() as i64;
                let rows: Vec<DeadLetterRow> = dead
                    .into_iter()
                    .map(|d| DeadLetterRow::new(&topic, d, now_ms))
                    .collect();
                s.write_with_retry("dead letters", || w.insert("_dead_letters", &rows));
                s.metrics.dead_letters.inc_by(rows.len() as u64);
            },
        ));

        let reports = checkpoint(
            scope.concatenate(done),
            positions.clone(),
            new_tenants.clone(),
            checkpoint_settings,
            writer.clone(),
            sink.clone(),
        );
        progress(reports, replayed_through, writer.clone(), sink.clone());
    });

    let park = Duration::from_millis((*epoch_ms / 4).clamp(1, 50));
    while worker.step_or_park(Some(park)) {
        context.metrics.record_state(index, &gauges);
    }
    tracing::info!(worker = index, "worker finished");
    Ok(())
}

fn read_with_retry<T, F, Fut>(
    context: &EngineContext,
    what: &str,
    mut read: F,
) -> Result<T, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match context.runtime.block_on(read()) {
            Ok(value) => return Ok(value),
            Err(error) => {
                if context.shutdown.load(Ordering::Relaxed) {
                    return Err(WorkerError::Interrupted);
                }
                tracing::warn!(%error, what, "cannot read from ClickHouse; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
