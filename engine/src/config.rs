//! The pipeline configuration: a TOML file, overridden by `CLICKSTREAM_ENGINE_*` variables.
//!
//! ```toml
//! epoch_ms = 500
//! [kafka]
//! brokers = "127.0.0.1:19092"
//! topic = "events"
//! [clickhouse]
//! url = "http://127.0.0.1:18123"
//! database = "clickstream"
//! ```

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything the engine can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Length of one timely epoch. Outputs are written and checkpointed once per epoch, so
    /// this is the floor of end-to-end latency and the unit of ClickHouse insert batching.
    pub epoch_ms: u64,
    /// How long a process waits for every peer of its cluster to connect. A peer that died
    /// while the cluster formed would otherwise leave the others waiting forever; after this
    /// the process exits, so whatever supervises it can restart the whole cluster.
    pub connect_timeout_secs: u64,
    /// Kafka source.
    pub kafka: KafkaConfig,
    /// ClickHouse sink.
    pub clickhouse: ClickHouseConfig,
    /// Sessions, identity and state retention.
    pub analytics: AnalyticsConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
    /// Live counters.
    pub live: LiveConfig,
    /// Retention and storage tiers.
    pub retention: RetentionConfig,
    /// Erasure of persons and removal of tenants.
    pub erasure: ErasureConfig,
}

/// Erasure (`DELETE /api/persons/{id}` of the query gateway, `engine remove-tenant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErasureConfig {
    /// The deployment's secret salt of id hashes: the query gateway's `--erasure-salt`. Ids
    /// reach the control topic and `_deletions` only as hashes with it. Empty: erasure
    /// records on the control topic stop the engine, since it could not match them.
    pub salt: String,
    /// How often the executor looks for requests whose epoch every sink has written.
    pub poll_ms: u64,
    /// How long one deletion mutation is awaited before the request is retried.
    pub mutation_timeout_secs: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        ErasureConfig {
            salt: String::new(),
            poll_ms: 1_000,
            mutation_timeout_secs: 3_600,
        }
    }
}

/// Where live counters are published.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Redis to publish per-epoch counters to, e.g. `redis://127.0.0.1:6379`; empty: none.
    pub redis_url: String,
}

/// Sessions, identity and state retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Inactivity that ends a session.
    pub session_gap_secs: u64,
    /// Per-tenant session gaps, e.g. `{ acme = 900 }`.
    pub tenant_session_gap_secs: std::collections::HashMap<String, u64>,
    /// Longest session; the next event starts a new one.
    pub max_session_secs: u64,
    /// Events arriving later than this after they happened are stored (flagged late) but not
    /// applied to sessions, persons or aggregates; state is released this long after it closed.
    /// Default 72 hours (PostHog's lookback).
    pub lateness_secs: u64,
    /// Extra retention for workers whose clocks lag others'.
    pub retention_margin_secs: u64,
    /// How long a message id is remembered for deduplication.
    pub dedup_horizon_secs: u64,
    /// Tenants for which `identify` may merge two known users.
    pub allow_identify_merge: Vec<String>,
    /// Ids that never link anything ("undefined", "null", "0", ...), matched after trimming,
    /// ignoring case; empty and all-whitespace ids always are. The default is
    /// `operators::DEFAULT_PLACEHOLDER_IDS`; setting it replaces that list.
    pub placeholder_ids: Vec<String>,
    /// Which sessions are bounces: `one_page_view_only` (one page view and no other activity
    /// event, Plausible's and GA4's rule) or `one_page_view` (one page view, whatever else).
    pub bounce_rule: schemas::BounceRule,
    /// Per-tenant bounce rules, e.g. `{ acme = "one_page_view" }`.
    pub tenant_bounce_rule: std::collections::HashMap<String, schemas::BounceRule>,
    /// Window of the live "active visitors" counter.
    pub active_window_secs: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            session_gap_secs: 30 * 60,
            tenant_session_gap_secs: Default::default(),
            max_session_secs: 24 * 3600,
            lateness_secs: 72 * 3600,
            retention_margin_secs: 600,
            dedup_horizon_secs: 72 * 3600,
            allow_identify_merge: Vec::new(),
            placeholder_ids: operators::DEFAULT_PLACEHOLDER_IDS
                .iter()
                .map(|id| (*id).to_owned())
                .collect(),
            bounce_rule: schemas::BounceRule::default(),
            tenant_bounce_rule: Default::default(),
            active_window_secs: 300,
        }
    }
}

impl AnalyticsConfig {
    /// The operators' settings, for epochs of `epoch_ms`.
    pub fn to_settings(&self, epoch_ms: u64) -> operators::AnalyticsSettings {
        let AnalyticsConfig {
            session_gap_secs,
            tenant_session_gap_secs,
            max_session_secs,
            lateness_secs,
            retention_margin_secs,
            dedup_horizon_secs,
            allow_identify_merge,
            placeholder_ids,
            bounce_rule,
            tenant_bounce_rule,
            active_window_secs,
        } = self;
        let ms = |secs: u64| secs.saturating_mul(1000) as i64;
        let tenant_gap_ms: std::collections::HashMap<String, i64> = tenant_session_gap_secs
            .iter()
            .map(|(tenant, secs)| (tenant.clone(), ms(*secs)))
            .collect();
        let largest_gap = tenant_gap_ms
            .values()
            .copied()
            .chain([ms(*session_gap_secs)])
            .max()
            .unwrap_or_default();
        operators::AnalyticsSettings {
            dedup: operators::DedupSettings {
                horizon_ms: ms(*dedup_horizon_secs),
            },
            sessions: operators::SessionSettings {
                gap_ms: ms(*session_gap_secs),
                tenant_gap_ms: std::sync::Arc::new(tenant_gap_ms),
                max_session_ms: ms(*max_session_secs),
                retention: operators::Retention {
                    session_gap_ms: largest_gap,
                    lateness_ms: ms(*lateness_secs),
                    margin_ms: ms(*retention_margin_secs),
                },
                bounce: *bounce_rule,
                tenant_bounce: std::sync::Arc::new(tenant_bounce_rule.clone()),
            },
            epoch_ms,
            active_window_ms: ms(*active_window_secs),
            identity: operators::IdentityPolicy {
                allow_identify_merge: std::sync::Arc::new(
                    allow_identify_merge.iter().cloned().collect(),
                ),
                placeholders: operators::PlaceholderIds::new(
                    placeholder_ids.iter().map(String::as_str),
                ),
            },
            ..operators::AnalyticsSettings::default()
        }
    }
}

/// Kafka source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The events topic.
    pub topic: String,
    /// The control topic (JSON control messages, e.g. unmerge); read whole at every start.
    pub control_topic: String,
    /// Partitions to create the topic with when it does not exist.
    pub partitions: i32,
    /// Replication factor used when creating the topic.
    pub replication_factor: i32,
    /// Most records one worker reads per activation; bounds how long it stays away from
    /// other operators.
    pub max_poll_records: usize,
    /// Most decoded records a worker holds for epochs not yet written. Beyond it the worker
    /// stops reading until the sink catches up, so a slow ClickHouse cannot exhaust memory.
    pub max_pending_records: usize,
    /// Most payload bytes (as read from the log) of those records: the same backpressure by
    /// size, so that large events cannot make the records' bound hold many times the usual
    /// memory. A record in flight holds much more than its payload once decoded (the RSS
    /// jumps of `bench memory` came to 3-5 KB per pending record, with payloads of about
    /// 330 bytes: an estimate, not a constant). Whichever bound is reached first
    /// applies, with the same exception for a replay's oldest epoch, and one poll
    /// (`max_poll_records`) may overshoot it.
    pub max_pending_bytes: usize,
    /// How many value bytes of records librdkafka fetches ahead of a worker and queues for
    /// it before it stops fetching (`queued.max.messages.kbytes`, this divided by 1024;
    /// librdkafka then stops at that many KiB times 1000, and caps one fetch,
    /// `fetch.max.bytes`, at the KiB times 1024, not below `message.max.bytes`). Each broker
    /// leading the worker's partitions may overshoot it by one fetch, and the fetch
    /// responses the queued records live in (keys, headers, framing) are not counted: this
    /// bounds librdkafka's heap only roughly. With librdkafka's defaults (64 MiB, 50 MB
    /// fetches) its heap held up to 147 MiB during a replay of `bench memory`; with 8 MiB,
    /// 58 MiB. Outside the pending bounds. From 1024 to 2,097,151 KiB.
    pub max_fetch_queue_bytes: usize,
    /// How often to look for partitions added to the topic.
    pub partition_refresh_secs: u64,
    /// How long the engine waits, stalled, when the log is not the one its checkpoints
    /// describe (shorter, regrown, or its needed records deleted), before it exits with
    /// [`crate::retry::EXIT_LOG_MISMATCH`]; the log may yet come back (a lagging replica).
    /// Also `--log-loss-timeout-secs`.
    pub log_loss_timeout_secs: u64,
}

/// ClickHouse sink settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface URL.
    pub url: String,
    /// Database holding every table (created if missing).
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Longest wait between retries of a failed insert.
    pub max_retry_backoff_ms: u64,
    /// The storage policy tables are created on, e.g. `tiered` (hot SSD, warm HDD, cold
    /// object storage: `deploy/clickhouse/storage.xml`). Servers with TTL only; a table keeps
    /// the policy it was created with.
    pub storage_policy: Option<String>,
    /// When rows move to slower volumes of the policy, e.g. `[{ volume = "warm",
    /// after_days = 7 }]` (`TTL … TO VOLUME`).
    pub tiers: Vec<schemas::retention::Tier>,
}

/// Retention per tenant: how long each tenant's per-person rows are kept comes from the
/// tenants file (`retention_days`), the file the gateways read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// The tenants file; none: every row is kept (tiers still apply).
    pub tenants_file: Option<std::path::PathBuf>,
    /// Seconds between passes: the file is read again and, on servers without TTL, expired
    /// rows are deleted with mutations (so a row outlives its retention by up to this).
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            tenants_file: None,
            interval_secs: 3_600,
        }
    }
}

/// Metrics endpoint settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of process 0's `/metrics`; process `p` listens on port + `p`.
    pub listen: SocketAddr,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            epoch_ms: 500,
            connect_timeout_secs: 60,
            kafka: KafkaConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            analytics: AnalyticsConfig::default(),
            metrics: MetricsConfig::default(),
            live: LiveConfig::default(),
            retention: RetentionConfig::default(),
            erasure: ErasureConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:19092".into(),
            topic: "events".into(),
            control_topic: "control".into(),
            partitions: 12,
            replication_factor: 1,
            max_poll_records: 10_000,
            max_pending_records: 500_000,
            max_pending_bytes: 64 * 1024 * 1024,
            max_fetch_queue_bytes: 8 * 1024 * 1024,
            partition_refresh_secs: 10,
            log_loss_timeout_secs: 300,
        }
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:18123".into(),
            database: "clickstream".into(),
            user: "default".into(),
            password: String::new(),
            max_retry_backoff_ms: 10_000,
            storage_policy: None,
            tiers: Vec::new(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 19464)),
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file, unknown key, wrong type.
    #[error("invalid configuration")]
    Load(#[from] Box<figment::Error>),
    /// A value out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl EngineConfig {
    /// Defaults, then the file (if any), then `CLICKSTREAM_ENGINE_*` variables
    /// (`__` separates sections: `CLICKSTREAM_ENGINE_CLICKHOUSE__URL`).
    pub fn load(file: Option<&Path>) -> Result<EngineConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(EngineConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: EngineConfig = figment
            .merge(Env::prefixed("CLICKSTREAM_ENGINE_").split("__"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let EngineConfig {
            epoch_ms,
            connect_timeout_secs: _,
            kafka,
            clickhouse,
            analytics,
            metrics: _,
            live: _,
            retention,
            erasure,
        } = self;
        if erasure.poll_ms == 0 || erasure.mutation_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "erasure.poll_ms and mutation_timeout_secs must be positive".into(),
            ));
        }
        if retention.interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "retention.interval_secs must be positive".into(),
            ));
        }
        if clickhouse.storage_policy.is_none() && !clickhouse.tiers.is_empty() {
            return Err(ConfigError::Invalid(
                "clickhouse.tiers needs clickhouse.storage_policy (the policy holding their volumes)".into(),
            ));
        }
        let mut names = clickhouse
            .storage_policy
            .iter()
            .chain(clickhouse.tiers.iter().map(|tier| &tier.volume));
        if let Some(name) = names.find(|name| !schemas::ddl::is_valid_identifier(name)) {
            return Err(ConfigError::Invalid(format!(
                "storage policy or volume {name:?} must be letters, digits and underscores"
            )));
        }
        if analytics.session_gap_secs == 0 || analytics.max_session_secs == 0 {
            return Err(ConfigError::Invalid(
                "analytics.session_gap_secs and max_session_secs must be positive".into(),
            ));
        }
        if *epoch_ms == 0 {
            return Err(ConfigError::Invalid("epoch_ms must be positive".into()));
        }
        // librdkafka's `queued.max.messages.kbytes` runs from 1 to INT_MAX / 1024 KiB.
        let fetch_queue = 1024..=(i32::MAX as usize / 1024) * 1024;
        if !fetch_queue.contains(&kafka.max_fetch_queue_bytes) {
            return Err(ConfigError::Invalid(format!(
                "kafka.max_fetch_queue_bytes must be from {} to {} (librdkafka counts KiB)",
                fetch_queue.start(),
                fetch_queue.end()
            )));
        }
        if kafka.partitions <= 0
            || kafka.max_poll_records == 0
            || kafka.max_pending_records == 0
            || kafka.max_pending_bytes == 0
        {
            return Err(ConfigError::Invalid(
                "kafka.partitions, max_poll_records, max_pending_records and max_pending_bytes \
                 must be positive"
                    .into(),
            ));
        }
        if !schemas::ddl::is_valid_identifier(&clickhouse.database) {
            return Err(ConfigError::Invalid(format!(
                "clickhouse.database {:?} must be letters, digits and underscores",
                clickhouse.database
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "engine.toml",
                "epoch_ms = 250\n[kafka]\ntopic = \"clicks\"\n",
            )?;
            jail.set_env("CLICKSTREAM_ENGINE_CLICKHOUSE__DATABASE", "analytics");
            let config = EngineConfig::load(Some(Path::new("engine.toml"))).expect("loads");
            assert_eq!(config.epoch_ms, 250);
            assert_eq!(config.kafka.topic, "clicks");
            assert_eq!(config.kafka.partitions, 12, "defaults fill the rest");
            assert_eq!(config.clickhouse.database, "analytics");
            Ok(())
        });
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[kafka]\nbroker = \"x\"\n")?;
            assert!(EngineConfig::load(Some(Path::new("typo.toml"))).is_err());
            jail.create_file("zero.toml", "epoch_ms = 0\n")?;
            assert!(EngineConfig::load(Some(Path::new("zero.toml"))).is_err());
            jail.create_file("fetchq.toml", "[kafka]\nmax_fetch_queue_bytes = 1000\n")?;
            assert!(EngineConfig::load(Some(Path::new("fetchq.toml"))).is_err());
            jail.create_file(
                "fetchq2.toml",
                "[kafka]\nmax_fetch_queue_bytes = 4294967296\n",
            )?;
            assert!(EngineConfig::load(Some(Path::new("fetchq2.toml"))).is_err());
            jail.create_file("db.toml", "[clickhouse]\ndatabase = \"x;y\"\n")?;
            assert!(EngineConfig::load(Some(Path::new("db.toml"))).is_err());
            assert!(EngineConfig::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn identity_and_bounce_rules_reach_the_operators() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rules.toml",
                "[analytics]\nplaceholder_ids = [\"unknown\"]\nbounce_rule = \"one_page_view\"\n\
                 tenant_bounce_rule = { acme = \"one_page_view_only\" }\n",
            )?;
            let config = EngineConfig::load(Some(Path::new("rules.toml"))).expect("loads");
            let settings = config.analytics.to_settings(500);
            assert!(settings.identity.placeholders.contains("Unknown"));
            assert!(
                !settings.identity.placeholders.contains("undefined"),
                "replaced"
            );
            assert_eq!(
                settings.sessions.bounce_for("other"),
                schemas::BounceRule::OnePageView
            );
            assert_eq!(
                settings.sessions.bounce_for("acme"),
                schemas::BounceRule::OnePageViewOnly
            );
            let defaults = EngineConfig::default().analytics.to_settings(500);
            assert!(defaults.identity.placeholders.contains("undefined"));
            jail.create_file("bad.toml", "[analytics]\nbounce_rule = \"sometimes\"\n")?;
            assert!(EngineConfig::load(Some(Path::new("bad.toml"))).is_err());
            Ok(())
        });
    }
}
