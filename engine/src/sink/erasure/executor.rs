//! The executor: carries out each request the dataflow applied, in the order it applied them
//! per tenant, once every sink has written the epoch it applied it at.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::ControlMessage;
use schemas::erasure::{id_hash_sql, quote};

use super::super::rollups::{self, PersonRows};
use super::{DeletionRow, Duty, ErasureError, PERSON_TABLES, Request, Requests, TENANT_TABLES};
use crate::clickhouse::{CountRow, await_mutations, client};
use crate::config::{ClickHouseConfig, ErasureConfig, KafkaConfig};
use crate::metrics::Metrics;

/// What the executor needs to know besides the requests.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// Where the rows are.
    pub clickhouse: ClickHouseConfig,
    /// The salt, the poll and the mutations' timeout.
    pub erasure: ErasureConfig,
    /// Where the executor writes its rollup recounts (the control topic).
    pub kafka: KafkaConfig,
    /// The operators' session rules and retention: what the dataflow still holds, and so what
    /// the executor recounts now and what again later.
    pub sessions: operators::SessionSettings,
}

/// Carries out requests forever. `sinks_frontier` is the first epoch not yet written by every
/// sink (the checkpoint operator's input frontier).
pub async fn run(
    settings: ExecutorSettings,
    requests: Requests,
    sinks_frontier: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let executor = match Executor::new(settings, sinks_frontier) {
        Ok(executor) => executor,
        Err(error) => {
            tracing::error!(error = %crate::retry::Chain(&error), "cannot create the erasure executor's Kafka producer: erasures stay pending");
            return;
        }
    };
    // Requests completed by earlier runs are read again from the topic at every start: they
    // are neither pending nor completed anew.
    let mut completed: HashSet<String> = loop {
        match crate::clickhouse::completed_erasures(&executor.client).await {
            Ok(completed) => break completed,
            Err(error) => {
                tracing::warn!(error = %crate::retry::Chain(&error), "cannot read _deletions; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut interval =
        tokio::time::interval(Duration::from_millis(executor.settings.erasure.poll_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let mut pending: Vec<_> = requests
            .snapshot()
            .into_iter()
            .filter(|(request, _)| !completed.contains(&request.id))
            .collect();
        pending.sort_by(|(a, a_epoch), (b, b_epoch)| (a_epoch, &a.id).cmp(&(b_epoch, &b.id)));
        report_pending(&metrics, &pending);
        // Every recount leaves out the rows of every person whose erasure is not done, so
        // that one request's recount never counts another's person, whatever their order.
        let mut erasing: HashMap<String, Vec<String>> = HashMap::new();
        for (request, _) in &pending {
            if let Duty::Person(hashes) = &request.duty {
                erasing
                    .entry(request.tenant.clone())
                    .or_default()
                    .extend(hashes.iter().cloned());
            }
        }
        for (request, epoch) in pending {
            if !executor.may_start(&request, epoch) {
                continue;
            }
            let started = Instant::now();
            let erasing = erasing.get(&request.tenant).map_or(&[][..], Vec::as_slice);
            match executor.carry_out(&request, epoch, erasing).await {
                Ok(row) => {
                    completed.insert(request.id.clone());
                    metrics.erasures_completed.inc();
                    tracing::info!(request_id = %request.id, tenant = %row.tenant, kind = %row.kind, tables = ?row.removed_tables, rows = ?row.removed_rows, took_ms = started.elapsed().as_millis() as u64, "erasure completed");
                }
                Err(error) => {
                    metrics.erasure_failures.inc();
                    tracing::warn!(request_id = %request.id, error = %crate::retry::Chain(&error), "erasure not carried out; retrying");
                }
            }
        }
    }
}

/// Pending requests and the oldest one's age; a recount counts from when it is due.
fn report_pending(metrics: &Metrics, pending: &[(Request, u64)]) {
    let now = crate::now_ms() as i64;
    let open: Vec<i64> = pending
        .iter()
        .map(|(request, _)| request.requested_at_ms)
        .filter(|at| *at <= now)
        .collect();
    metrics.erasures_pending.set(open.len() as i64);
    metrics
        .erasure_oldest_pending_seconds
        .set(open.iter().min().map_or(0, |at| (now - at).max(0) / 1000));
}

struct Executor {
    settings: ExecutorSettings,
    client: Client,
    producer: FutureProducer,
    sinks_frontier: Arc<AtomicU64>,
}

impl Executor {
    fn new(
        settings: ExecutorSettings,
        sinks_frontier: Arc<AtomicU64>,
    ) -> Result<Executor, rdkafka::error::KafkaError> {
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &settings.kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(Executor {
            client: client(&settings.clickhouse).with_database(&settings.clickhouse.database),
            settings,
            producer,
            sinks_frontier,
        })
    }

    /// Whether `request`, applied at `epoch`, may be carried out now: every sink has written
    /// that epoch, and a recount is due.
    fn may_start(&self, request: &Request, epoch: u64) -> bool {
        let written = self.sinks_frontier.load(Ordering::Acquire) > epoch;
        let due = match request.duty {
            Duty::Rollups { due_ms, .. } => crate::now_ms() as i64 >= due_ms,
            Duty::Person(_) | Duty::Tenant => true,
        };
        written && due
    }

    /// Carries `request` out (unless an earlier run did and recorded it) and records the
    /// completion; returns the completion row. `erasing` holds the id hashes of every person
    /// of the tenant whose erasure is not done, left out of every recount.
    async fn carry_out(
        &self,
        request: &Request,
        epoch: u64,
        erasing: &[String],
    ) -> Result<DeletionRow, ErasureError> {
        let recorded = recorded(&self.client, &request.id).await?;
        if let Some(row) = recorded.as_ref().filter(|row| row.status == "completed") {
            return Ok(row.clone());
        }
        let removed = match &request.duty {
            Duty::Person(hashes) => self.erase_person(request, hashes, epoch, erasing).await?,
            Duty::Tenant => self.remove_tenant(&request.tenant).await?,
            Duty::Rollups { minutes, .. } => {
                self.recount_released(request, minutes, erasing).await?
            }
        };
        let mut row = recorded.unwrap_or_else(|| DeletionRow {
            request_id: request.id.clone(),
            tenant: request.tenant.clone(),
            kind: request.kind().to_owned(),
            id_hashes: match &request.duty {
                Duty::Person(hashes) => hashes.clone(),
                Duty::Tenant | Duty::Rollups { .. } => Vec::new(),
            },
            requester_key_id: String::new(),
            requested_at_ms: request.requested_at_ms,
            status: String::new(),
            completed_at_ms: 0,
            removed_tables: Vec::new(),
            removed_rows: Vec::new(),
            version: 0,
        });
        for (table, rows) in removed {
            row.removed_tables.push(table);
            row.removed_rows.push(rows);
        }
        let now = crate::now_ms();
        row.status = "completed".into();
        row.completed_at_ms = now as i64;
        row.version = now.max(row.version + 1);
        let mut insert = self.client.insert::<DeletionRow>("_deletions").await?;
        insert.write(&row).await?;
        insert.end().await?;
        Ok(row)
    }

    /// A person's erasure: the rollups of the older minutes they touched recounted without
    /// them (at `epoch`'s version), a second recount scheduled for the minutes the dataflow
    /// still holds, then their rows deleted. Returns the rows per table.
    async fn erase_person(
        &self,
        request: &Request,
        hashes: &[String],
        epoch: u64,
        erasing: &[String],
    ) -> Result<Vec<(String, u64)>, ErasureError> {
        let erasure = &self.settings.erasure;
        let engine = schemas::erasure::salt_check(&erasure.salt);
        if !request.salt_check.is_empty() && request.salt_check != engine {
            return Err(ErasureError::SaltMismatch {
                request: request.salt_check.clone(),
                engine,
            });
        }
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let database = &self.settings.clickhouse.database;
        let deletions = person_deletions(database, &erasure.salt, &request.tenant, hashes);
        let person = person_rows(&deletions);
        let now = crate::now_ms() as i64;
        let retention = &self.settings.sessions.retention;
        let before_ms = retention.surely_retained_from(now);
        let minutes =
            rollups::touched_minutes(&self.client, &request.tenant, person, before_ms).await?;
        let everyone_erased = self.erasing_rows(&request.tenant, erasing, hashes);
        let rewritten = rollups::recount(
            &self.client,
            &request.tenant,
            &minutes,
            Some(person_rows(&everyone_erased)),
            epoch,
        )
        .await?;
        let held = still_held(&minutes, now, &self.settings.sessions);
        if let Some(last) = held.last() {
            let due_ms = i64::from(*last) * 1000
                + 60_000
                + self.settings.sessions.window_keep_ms()
                + retention.margin_ms;
            self.schedule_recount(request, held, due_ms).await?;
        }
        let mut removed = vec![("agg_minute_metrics".to_owned(), rewritten)];
        let timeout = Duration::from_secs(erasure.mutation_timeout_secs);
        for (table, condition) in deletions {
            let rows = delete(&self.client, table, &request.tenant, &condition, timeout).await?;
            removed.push((table.to_owned(), rows));
        }
        Ok(removed)
    }

    /// Writes the `recount_rollups` record of `minutes` to the control topic.
    async fn schedule_recount(
        &self,
        request: &Request,
        minutes: Vec<u32>,
        due_ms: i64,
    ) -> Result<(), ErasureError> {
        let message = ControlMessage::RecountRollups {
            request_id: format!("{}:rollups", request.id),
            tenant: request.tenant.clone(),
            minutes,
            due_ms,
        };
        let payload = serde_json::to_vec(&message).map_err(ErasureError::Encode)?;
        self.producer
            .send(
                FutureRecord::to(&self.settings.kafka.control_topic)
                    .key(&request.tenant)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| ErasureError::Kafka(error))?;
        Ok(())
    }

    /// The second recount of an erasure, once the dataflow has let the minutes go: from
    /// everyone's stored rows (the person's are gone), at the version of the first epoch not
    /// yet written by every sink, above anything the dataflow wrote to those minutes.
    async fn recount_released(
        &self,
        request: &Request,
        minutes: &[u32],
        erasing: &[String],
    ) -> Result<Vec<(String, u64)>, ErasureError> {
        let version = self.sinks_frontier.load(Ordering::Acquire);
        let minutes =
            rollups::after_retention(&self.client, &request.tenant, minutes.to_vec()).await?;
        let erased = self.erasing_rows(&request.tenant, erasing, &[]);
        let others = (!erasing.is_empty()).then(|| person_rows(&erased));
        let rewritten =
            rollups::recount(&self.client, &request.tenant, &minutes, others, version).await?;
        Ok(vec![("agg_minute_metrics".to_owned(), rewritten)])
    }

    /// The conditions that find the rows of `hashes` and of every person of `erasing`.
    fn erasing_rows(
        &self,
        tenant: &str,
        erasing: &[String],
        hashes: &[String],
    ) -> Vec<(&'static str, String)> {
        let mut all: Vec<String> = erasing.iter().chain(hashes).cloned().collect();
        all.sort();
        all.dedup();
        let settings = &self.settings;
        person_deletions(
            &settings.clickhouse.database,
            &settings.erasure.salt,
            tenant,
            &all,
        )
    }

    /// A tenant's removal: every table's rows of the tenant deleted.
    async fn remove_tenant(&self, tenant: &str) -> Result<Vec<(String, u64)>, ErasureError> {
        let timeout = Duration::from_secs(self.settings.erasure.mutation_timeout_secs);
        let mut removed = Vec::new();
        for table in TENANT_TABLES {
            let rows = delete(&self.client, table, tenant, "", timeout).await?;
            removed.push(((*table).to_owned(), rows));
        }
        Ok(removed)
    }
}

/// The conditions over `events` and `sessions` among a person's deletions.
fn person_rows<'a>(deletions: &'a [(&'static str, String)]) -> PersonRows<'a> {
    let condition = |name: &str| {
        deletions
            .iter()
            .find(|(table, _)| *table == name)
            .map_or("0", |(_, condition)| condition.as_str())
    };
    PersonRows {
        events: condition("events"),
        sessions: condition("sessions"),
    }
}

/// Of `minutes` (Unix s), those whose window the dataflow may still hold at `now_ms`, and so
/// may write again, person included: younger than [`operators::SessionSettings::window_keep_ms`]
/// plus the minute itself and the margin for clocks.
fn still_held(minutes: &[u32], now_ms: i64, sessions: &operators::SessionSettings) -> Vec<u32> {
    let released_before =
        now_ms - 60_000 - sessions.window_keep_ms() - sessions.retention.margin_ms;
    minutes
        .iter()
        .copied()
        .filter(|minute| i64::from(*minute) * 1000 >= released_before)
        .collect()
}

/// Each person table with the condition that finds the person's rows in it.
fn person_deletions(
    database: &str,
    salt: &str,
    tenant: &str,
    hashes: &[String],
) -> Vec<(&'static str, String)> {
    let salt = quote(salt);
    let list = hashes
        .iter()
        .map(|hash| quote(hash))
        .collect::<Vec<_>>()
        .join(", ");
    let any_of = |columns: &[&str]| {
        columns
            .iter()
            .map(|column| format!("{} IN ({list})", id_hash_sql(&salt, column)))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    PERSON_TABLES
        .iter()
        .map(|(table, columns)| {
            let mut condition = any_of(columns);
            if *table == "ingestion_warnings" {
                condition = format!(
                    "{condition} OR message_id IN (SELECT message_id FROM {database}.events \
                     WHERE tenant = {} AND ({}))",
                    quote(tenant),
                    any_of(PERSON_TABLES[1].1)
                );
            }
            (*table, condition)
        })
        .collect()
}

/// Deletes the rows of `tenant` in `table` matching `condition` (all of the tenant's when
/// empty), awaits the mutation, and returns how many rows it removed.
async fn delete(
    client: &Client,
    table: &'static str,
    tenant: &str,
    condition: &str,
    timeout: Duration,
) -> Result<u64, ErasureError> {
    let filter = if condition.is_empty() {
        format!("tenant = {}", quote(tenant))
    } else {
        format!("tenant = {} AND ({condition})", quote(tenant))
    };
    let CountRow { count } = client
        .query(&format!(
            "SELECT count() AS count FROM {table} WHERE {filter}"
        ))
        .fetch_one()
        .await?;
    if count == 0 {
        return Ok(0);
    }
    client
        .query(&format!("ALTER TABLE {table} DELETE WHERE {filter}"))
        .execute()
        .await?;
    tokio::time::timeout(timeout, await_mutations(client, table))
        .await
        .map_err(|_| ErasureError::MutationTimeout { table, timeout })??;
    Ok(count)
}

/// The request's latest `_deletions` row, if the query gateway or an earlier run wrote one.
async fn recorded(client: &Client, request_id: &str) -> Result<Option<DeletionRow>, ErasureError> {
    Ok(client
        .query(
            "SELECT ?fields FROM _deletions WHERE request_id = ? \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(request_id)
        .fetch_optional::<DeletionRow>()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_the_window_may_still_hold_are_recounted_again() {
        let sessions = operators::SessionSettings::default();
        // 60 s + 24 h + (30 min + 72 h + 10 min) + 10 min, plus the minute and the margin.
        let held_for_ms = sessions.window_keep_ms() + 60_000 + 10 * 60_000;
        assert_eq!(held_for_ms, (96 * 60 + 52 + 10) * 60_000);
        let now_ms: i64 = 1_800_000_000_000;
        let minute = |age_ms: i64| ((now_ms - age_ms) / 60_000 * 60) as u32;
        let minutes = [
            minute(held_for_ms + 120_000),
            minute(held_for_ms - 120_000),
            minute(80 * 3_600_000),
        ];
        assert_eq!(still_held(&minutes, now_ms, &sessions), minutes[1..]);
    }
}
