//! `ingest-gateway`: parses configuration, builds the state, serves until SIGTERM/ctrl-c, then
//! drains in-flight requests and flushes the Kafka producer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use clickstream_ingest_gateway::enrich::{EnrichConfig, Enricher};
use clickstream_ingest_gateway::kafka::{EventProducer, KafkaConfig};
use clickstream_ingest_gateway::ratelimit::{RateLimiter, RateLimiterConfig};
use clickstream_ingest_gateway::salt::Salts;
use clickstream_ingest_gateway::segment::Limits;
use clickstream_ingest_gateway::{AppState, metrics_router, router};
use schemas::tenants::Tenants;

/// Segment-compatible event ingestion into Kafka.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "CLICKSTREAM_INGEST_LISTEN",
        default_value = "127.0.0.1:18080"
    )]
    listen: SocketAddr,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "CLICKSTREAM_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    kafka_brokers: String,
    /// Topic that receives events.
    #[arg(long, env = "CLICKSTREAM_KAFKA_TOPIC", default_value = "events")]
    topic: String,
    /// Tenants and write keys (TOML).
    #[arg(
        long,
        env = "CLICKSTREAM_TENANTS_FILE",
        default_value = "deploy/tenants.toml"
    )]
    tenants: PathBuf,
    /// How long a request waits for Kafka's acknowledgement before answering 503.
    #[arg(
        long,
        env = "CLICKSTREAM_INGEST_MESSAGE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    message_timeout_ms: u64,
    /// Events buffered locally before requests are refused with 503.
    #[arg(
        long,
        env = "CLICKSTREAM_INGEST_QUEUE_MAX_MESSAGES",
        default_value_t = 100_000
    )]
    queue_max_messages: u32,
    /// How long the Kafka producer waits to fill a batch, ms (`linger.ms`).
    #[arg(long, env = "CLICKSTREAM_INGEST_LINGER_MS", default_value_t = 2)]
    linger_ms: u64,
    /// Take client IPs from X-Forwarded-For (only behind a proxy you trust).
    #[arg(long, env = "CLICKSTREAM_INGEST_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Address of `/metrics` (kept off the public, CORS-open port).
    #[arg(
        long,
        env = "CLICKSTREAM_INGEST_METRICS_LISTEN",
        default_value = "127.0.0.1:19480"
    )]
    metrics_listen: SocketAddr,
    /// Redis holding the tenants' rate-limit buckets, shared by every gateway; empty: each
    /// process enforces quotas on its own.
    #[arg(long, env = "CLICKSTREAM_REDIS_URL", default_value = "")]
    redis_url: String,
    /// How long a rate-limit decision waits for Redis before a local bucket decides.
    #[arg(long, env = "CLICKSTREAM_INGEST_REDIS_TIMEOUT_MS", default_value_t = 5)]
    redis_timeout_ms: u64,
    /// Prefix of the rate-limit keys in Redis.
    #[arg(
        long,
        env = "CLICKSTREAM_INGEST_RATELIMIT_PREFIX",
        default_value = "clickstream:ratelimit:"
    )]
    ratelimit_prefix: String,
    /// A uap-core `regexes.yaml` to parse user agents with, instead of the rules built in
    /// (uap-core 0.18.0).
    #[arg(long, env = "CLICKSTREAM_UA_REGEXES")]
    ua_regexes: Option<PathBuf>,
    /// Prefix of the Redis keys of the daily salts of Plausible visitor ids.
    #[arg(
        long,
        env = "CLICKSTREAM_INGEST_SALT_PREFIX",
        default_value = "clickstream:salt:"
    )]
    salt_prefix: String,
    /// MaxMind DB files for country, region and city, tried in order (comma-separated in the
    /// environment variable), e.g. an IPv4 and an IPv6 file, or a GeoLite2-City file. None:
    /// events carry no geography.
    #[arg(long, env = "CLICKSTREAM_GEOIP", value_delimiter = ',')]
    geoip: Vec<PathBuf>,
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
        kafka_brokers,
        topic,
        tenants,
        message_timeout_ms,
        queue_max_messages,
        linger_ms,
        trust_forwarded_for,
        metrics_listen,
        redis_url,
        redis_timeout_ms,
        ratelimit_prefix,
        ua_regexes,
        salt_prefix,
        geoip,
    } = Args::parse();

    let salts = Salts::new(&redis_url, &salt_prefix).context("configuring the visitor-id salts")?;
    let enricher = Enricher::load(&EnrichConfig { ua_regexes, geoip })
        .context("loading the enrichment rules and databases")?;
    if !enricher.has_geo() {
        tracing::warn!("no GeoIP database (--geoip): events will carry no country, region or city");
    }

    let tenants = Tenants::load(&tenants).context("loading tenants")?;
    let producer = EventProducer::new(&KafkaConfig {
        brokers: kafka_brokers.clone(),
        topic: topic.clone(),
        message_timeout_ms,
        queue_max_messages,
        linger_ms,
    })
    .context("creating the Kafka producer")?;
    let state = Arc::new(AppState {
        tenants,
        producer,
        limits: Limits::default(),
        trust_forwarded_for,
        retry_after_secs: 5,
        metrics: Default::default(),
        rate_limiter: RateLimiter::new(RateLimiterConfig {
            redis_url,
            redis_timeout: Duration::from_millis(redis_timeout_ms),
            key_prefix: ratelimit_prefix,
        })
        .context("configuring rate limits")?,
        enricher: Arc::new(enricher),
        salts,
    });

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
    tracing::info!(%listen, %metrics_listen, brokers = %kafka_brokers, %topic, "ingest gateway listening");
    axum::serve(
        listener,
        router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving")?;
    tracing::info!("draining the Kafka producer");
    state
        .producer
        .flush(Duration::from_secs(15))
        .context("flushing the Kafka producer")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; ctrl-c only");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
