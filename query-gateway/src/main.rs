//! `query-gateway`: parses configuration, builds the state, serves until SIGTERM/ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use clickstream_query_gateway::ask::provider::{Provider, ProviderConfig, ProviderKind};
use clickstream_query_gateway::ask::run::{RunLimits, Runner};
use clickstream_query_gateway::ask::{AskLimits, AskService};
use clickstream_query_gateway::erasure::ErasureService;
use clickstream_query_gateway::live::LiveHub;
use clickstream_query_gateway::metrics::Metrics;
use clickstream_query_gateway::{AppState, metrics_router, router};
use schemas::tenants::Tenants;

/// The dashboard's REST API over ClickHouse.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "CLICKSTREAM_QUERY_LISTEN",
        default_value = "127.0.0.1:18081"
    )]
    listen: SocketAddr,
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "CLICKSTREAM_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    clickhouse_url: String,
    /// The pipeline's database.
    #[arg(
        long,
        env = "CLICKSTREAM_CLICKHOUSE_DATABASE",
        default_value = "clickstream"
    )]
    database: String,
    /// Tenants and read keys (TOML).
    #[arg(
        long,
        env = "CLICKSTREAM_TENANTS_FILE",
        default_value = "deploy/tenants.toml"
    )]
    tenants: PathBuf,
    /// Redis carrying the engine's live counters and holding Ask's translation cache; empty:
    /// `/live` streams nothing and translations are not cached.
    #[arg(long, env = "CLICKSTREAM_REDIS_URL", default_value = "")]
    redis_url: String,
    /// Seconds one `/live` stream lasts before the browser reconnects (resuming by
    /// Last-Event-ID).
    #[arg(long, env = "CLICKSTREAM_LIVE_STREAM_SECS", default_value_t = 300)]
    live_stream_secs: u64,
    /// Address of `/metrics` (kept off the public port).
    #[arg(
        long,
        env = "CLICKSTREAM_QUERY_METRICS_LISTEN",
        default_value = "127.0.0.1:19481"
    )]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    ask: AskArgs,
    #[command(flatten)]
    erasure: ErasureArgs,
}

/// Erasure: where its requests go. Without a salt, erasure answers 503.
#[derive(Debug, clap::Args)]
struct ErasureArgs {
    /// Kafka brokers of the control topic.
    #[arg(
        long = "kafka-brokers",
        env = "CLICKSTREAM_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    /// The engine's control topic.
    #[arg(
        long = "control-topic",
        env = "CLICKSTREAM_CONTROL_TOPIC",
        default_value = "control"
    )]
    control_topic: String,
    /// The deployment's secret salt of id hashes (the engine's `erasure.salt`); empty: erasure
    /// is not configured.
    #[arg(
        long = "erasure-salt",
        env = "CLICKSTREAM_ERASURE_SALT",
        default_value = ""
    )]
    salt: String,
}

/// Ask: which model answers questions; none configured: the offline translator.
#[derive(Debug, clap::Args)]
struct AskArgs {
    /// Wire format of the model server; unset: the offline translator answers.
    #[arg(long = "ask-provider", env = "CLICKSTREAM_ASK_PROVIDER")]
    provider: Option<ProviderKind>,
    /// Base URL: `https://api.anthropic.com` (Anthropic) or an OpenAI-compatible server's
    /// URL up to `/chat/completions`, e.g. `http://127.0.0.1:8080/v1`.
    #[arg(long = "ask-base-url", env = "CLICKSTREAM_ASK_BASE_URL")]
    base_url: Option<String>,
    /// Model name.
    #[arg(long = "ask-model", env = "CLICKSTREAM_ASK_MODEL", default_value = "")]
    model: String,
    /// API key (Anthropic's `x-api-key`, or the Bearer token); local servers may need none.
    #[arg(
        long = "ask-api-key",
        env = "CLICKSTREAM_ASK_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Seconds to wait for the model.
    #[arg(
        long = "ask-timeout-secs",
        env = "CLICKSTREAM_ASK_TIMEOUT_SECS",
        default_value_t = 30
    )]
    timeout_secs: u64,
    /// Questions per minute per tenant.
    #[arg(
        long = "ask-questions-per-minute",
        env = "CLICKSTREAM_ASK_QUESTIONS_PER_MINUTE",
        default_value_t = 20
    )]
    questions_per_minute: u32,
    /// Model calls per tenant per UTC day; beyond, the offline translator answers.
    #[arg(
        long = "ask-model-calls-per-day",
        env = "CLICKSTREAM_ASK_MODEL_CALLS_PER_DAY",
        default_value_t = 500
    )]
    model_calls_per_day: u32,
    /// Ask statements running at once in ClickHouse, over all tenants (each may use 1 GiB).
    #[arg(
        long = "ask-max-concurrent",
        env = "CLICKSTREAM_ASK_MAX_CONCURRENT",
        default_value_t = 4
    )]
    max_concurrent: usize,
    /// `max_execution_time` of an Ask statement, seconds.
    #[arg(
        long = "ask-max-execution-secs",
        env = "CLICKSTREAM_ASK_MAX_EXECUTION_SECS",
        default_value_t = 10
    )]
    max_execution_secs: u32,
}

impl AskArgs {
    /// Ask as configured, its dialect notes for the server's version.
    async fn service(
        &self,
        clickhouse_url: &str,
        database: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<AskService> {
        let runner = Runner::new(
            clickhouse_url,
            database,
            RunLimits {
                max_execution_secs: self.max_execution_secs,
                max_concurrent: self.max_concurrent,
                ..RunLimits::default()
            },
        );
        // An unreachable server at start is not fatal (each request reports it); the notes
        // then assume the oldest dialect.
        let server_version = runner.server_version().await.unwrap_or_else(|error| {
            tracing::warn!(error = %clickstream_query_gateway::ask::error_chain(&error), "ClickHouse version unknown");
            "unknown".to_owned()
        });
        let server_version = schemas::version::ServerVersion::parse_or_oldest(&server_version);
        let limits = AskLimits {
            questions_per_minute: std::num::NonZeroU32::new(self.questions_per_minute)
                .context("--ask-questions-per-minute must be at least 1")?,
            model_calls_per_day: self.model_calls_per_day,
        };
        Ok(AskService::new(
            runner,
            self.provider()?,
            server_version,
            limits,
            metrics,
        ))
    }

    fn provider(&self) -> anyhow::Result<Option<Provider>> {
        let Some(kind) = self.provider else {
            return Ok(None);
        };
        if self.model.is_empty() {
            anyhow::bail!("--ask-model (CLICKSTREAM_ASK_MODEL) is required with --ask-provider");
        }
        let base_url = match (&self.base_url, kind) {
            (Some(url), _) => url.clone(),
            (None, ProviderKind::Anthropic) => "https://api.anthropic.com".to_owned(),
            (None, ProviderKind::Openai) => "https://api.openai.com/v1".to_owned(),
        };
        Ok(Some(Provider::new(ProviderConfig {
            kind,
            base_url,
            model: self.model.clone(),
            api_key: self.api_key.clone().filter(|key| !key.is_empty()),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            max_tokens: 1024,
        })))
    }
}

/// Loads and checks the tenants file (time zones included).
fn load_tenants(path: &std::path::Path) -> anyhow::Result<Tenants> {
    let tenants = Tenants::load(path).context("loading tenants")?;
    for tenant in tenants.all() {
        tenant
            .time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|error| anyhow::anyhow!("tenant {}: time_zone: {error}", tenant.id))?;
    }
    Ok(tenants)
}

/// Reloads the tenants file on SIGHUP: keys added work and keys removed (a revoked share
/// link) stop working without a restart. A file that does not load keeps the old tenants.
fn reload_tenants_on_sighup(state: Arc<AppState>, path: std::path::PathBuf) {
    tokio::spawn(async move {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; the tenants file is read at start only");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match load_tenants(&path) {
                Ok(tenants) => {
                    let count = tenants.all().count();
                    state.tenants.replace(tenants);
                    tracing::info!(path = %path.display(), tenants = count, "tenants reloaded");
                }
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), path = %path.display(), "tenants file not reloaded; the previous tenants stay");
                }
            }
        }
    });
}

impl ErasureArgs {
    fn service(
        &self,
        clickhouse_url: &str,
        database: &str,
    ) -> anyhow::Result<Option<Arc<ErasureService>>> {
        if self.salt.is_empty() {
            tracing::warn!("--erasure-salt is not set: erasure and suppression answer 503");
            return Ok(None);
        }
        let writer = clickhouse::Client::default()
            .with_url(clickhouse_url)
            .with_database(database)
            .with_validation(false);
        let service = ErasureService::new(&self.brokers, &self.control_topic, &self.salt, writer)
            .context("setting up erasure")?;
        Ok(Some(Arc::new(service)))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Args {
        listen,
        clickhouse_url,
        database,
        tenants,
        redis_url,
        live_stream_secs,
        metrics_listen,
        ask,
        erasure,
    } = Args::parse();
    let tenants_path = tenants;
    let tenants = load_tenants(&tenants_path)?;
    let metrics = Arc::new(Metrics::default());
    let mut ask_service = ask
        .service(&clickhouse_url, &database, metrics.clone())
        .await?;
    let live = Arc::new(LiveHub::default());
    if !redis_url.is_empty() {
        // Translations are shared by every gateway process through the same Redis.
        ask_service = ask_service.with_translation_cache(&redis_url, "clickstream");
        live.follow_redis(redis_url);
    }
    let state = Arc::new(AppState {
        tenants: tenants.into(),
        clickhouse: clickhouse::Client::default()
            .with_url(&clickhouse_url)
            .with_database(&database)
            .with_validation(false)
            // Every query is read-only, whatever a bug might build (2: read-only, but the
            // client may still set per-query settings).
            .with_setting("readonly", "2"),
        live,
        live_stream_lifetime: std::time::Duration::from_secs(live_stream_secs),
        ask: Arc::new(ask_service),
        metrics,
        clock: Default::default(),
        erasure: erasure.service(&clickhouse_url, &database)?,
    });
    reload_tenants_on_sighup(state.clone(), tenants_path);
    let metrics_listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .with_context(|| format!("binding {metrics_listen}"))?;
    let metrics_app = metrics_router(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, %metrics_listen, %database, "query gateway listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            // SIGTERM (what deploy/down.sh and process managers send) or ctrl-c.
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await
        .context("serving")
}
