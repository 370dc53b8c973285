//! `query-gateway`: parses configuration, builds the state, serves until SIGTERM/ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use clickstream_query_gateway::live::LiveHub;
use clickstream_query_gateway::{AppState, router};
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
    /// Redis carrying the engine's live counters; empty: `/live` streams nothing.
    #[arg(long, env = "CLICKSTREAM_REDIS_URL", default_value = "")]
    redis_url: String,
    /// Seconds one `/live` stream lasts before the browser reconnects (resuming by
    /// Last-Event-ID).
    #[arg(long, env = "CLICKSTREAM_LIVE_STREAM_SECS", default_value_t = 300)]
    live_stream_secs: u64,
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
    } = Args::parse();
    let live = Arc::new(LiveHub::default());
    if !redis_url.is_empty() {
        live.follow_redis(redis_url);
    }
    let state = Arc::new(AppState {
        tenants: Tenants::load(&tenants).context("loading tenants")?,
        clickhouse: clickhouse::Client::default()
            .with_url(&clickhouse_url)
            .with_database(&database)
            .with_validation(false)
            // Every query is read-only, whatever a bug might build (2: read-only, but the
            // client may still set per-query settings).
            .with_setting("readonly", "2"),
        live,
        live_stream_lifetime: std::time::Duration::from_secs(live_stream_secs),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, %database, "query gateway listening");
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
