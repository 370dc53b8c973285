//! `bench`: the benchmark harness. Starts what it needs (the servers through `deploy/lib.sh`,
//! the release binaries), measures, and ends with a Markdown table, a JSON file and an SVG
//! chart of latency against offered load in `target/bench/`.
//!
//! `bench all` runs every part; `bench ingest|pipeline|latency|memory|deletion|fuzz` one of
//! them.

mod deletion;
mod ingest;
mod latency;
mod memory;
mod pipeline;
mod report;
mod restart;
mod stack;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use report::Report;
use stack::Stack;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The benchmark harness.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    part: Part,
    #[command(flatten)]
    options: Options,
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Part {
    /// Every part below, in order.
    All,
    /// The ingest gateway at fixed offered loads, single events and batches, and a quiet
    /// tenant beside a noisy one.
    Ingest,
    /// Kafka -> engine -> ClickHouse on a preloaded log, against a plain consumer.
    Pipeline,
    /// Gateway receipt -> queryable in ClickHouse and in the query API, at 1,000 and 10,000
    /// events/s.
    Latency,
    /// The engine's resident memory over a steady stream, then a crash and the time its
    /// restart takes to be current again.
    Memory,
    /// Erasures through the query gateway under a steady stream: time to completion.
    Deletion,
    /// The ingest gateway's fuzz test with a million cases (release mode).
    Fuzz,
}

/// Sizes of the runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds per offered load (ingest, latency).
    #[arg(long, default_value_t = 10, global = true)]
    pub secs: u64,
    /// Events preloaded for the pipeline part.
    #[arg(long, default_value_t = 500_000, global = true)]
    pub events: usize,
    /// Engine workers (`engine -w`).
    #[arg(long, default_value_t = 2, global = true)]
    pub workers: usize,
    /// Cores of this machine, for the per-core figures.
    #[arg(long, default_value_t = default_cores(), global = true)]
    pub cores: usize,
    /// Minutes of the steady memory run.
    #[arg(long, default_value_t = 30, global = true)]
    pub memory_minutes: u64,
    /// Events per second of the steady memory run.
    #[arg(long, default_value_t = 2_000.0, global = true)]
    pub memory_rate: f64,
    /// How much faster than the clock simulated time runs in the memory run: the horizons
    /// (24 h of message ids, 97 h of minute windows) must pass within its first half. The
    /// generator's events per simulated second grow as its visitors become known users, so
    /// simulated time slows over a run (at 400x it reached 84 h at half of 30 minutes).
    #[arg(long, default_value_t = 600.0, global = true)]
    pub memory_speedup: f64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 60, global = true)]
    pub memory_sample_secs: u64,
    /// Simulated hours over which the memory run's returning visitors come back: a returning
    /// session belongs to one of the visitors of the sessions started in the last this many
    /// hours, so the visitors active within the engine's horizons stop growing once the window
    /// and the horizons have passed (before half the run) while new visitors keep coming.
    /// 0: from every visitor the run ever made, equally likely; the visitors active within
    /// the horizons then grow for the whole run (1.27x between 8 and 16 hours of a 4-hour
    /// stretch in the generator's test), and so does what the engine rightly keeps for them.
    #[arg(long, default_value_t = 12.0, global = true)]
    pub memory_return_window_hours: f64,
    /// Seconds into the memory run at which the engine is stopped (`SIGSTOP`) for
    /// `--memory-pause-secs`, then continued: it reads what it missed at once, a burst of
    /// input at a known time, so that what a burst leaves with the engine's allocator can be
    /// compared between builds. None: only the bursts the machine makes.
    #[arg(long, global = true)]
    pub memory_pause_at_secs: Option<u64>,
    /// How long the memory run's engine is stopped (see `--memory-pause-at-secs`), s.
    #[arg(long, default_value_t = 20, global = true)]
    pub memory_pause_secs: u64,
    /// Erasures of the deletion part.
    #[arg(long, default_value_t = 5, global = true)]
    pub deletions: usize,
    /// Events per second offered during the deletion part.
    #[arg(long, default_value_t = 2_000.0, global = true)]
    pub deletion_rate: f64,
    /// Fuzz cases.
    #[arg(long, default_value_t = 1_000_000, global = true)]
    pub fuzz_cases: u64,
    /// Where the results go.
    #[arg(long, default_value = "target/bench", global = true)]
    pub out: PathBuf,
}

fn default_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How long a benchmark request may take before it counts as failed: a hung request must
/// not hang the run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A progress bar for `total` steps.
pub fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg:48} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

/// Creates `topic` with `partitions` (a fresh topic per run: the broker keeps older ones).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { part, options } = Args::parse();
    let root = repository_root();
    let out = if options.out.is_absolute() {
        options.out.clone()
    } else {
        root.join(&options.out)
    };
    let mut report = Report::default();
    if part == Part::Fuzz {
        return fuzz(&root, &options);
    }
    let mut stack = Stack::up(&root, &out.join("run")).context("starting the stack")?;
    let parts: &[Part] = match part {
        Part::All => &[
            Part::Ingest,
            Part::Pipeline,
            Part::Latency,
            Part::Deletion,
            Part::Memory,
        ],
        _ => std::slice::from_ref(&part),
    };
    for part in parts {
        stack
            .drop_leftover_databases()
            .await
            .context("dropping the databases of earlier runs")?;
        let run = async {
            match part {
                Part::Ingest => ingest::run(&mut stack, &options, &mut report).await,
                Part::Pipeline => pipeline::run(&mut stack, &options, &mut report).await,
                Part::Latency => latency::run(&mut stack, &options, &mut report).await,
                Part::Memory => memory::run(&mut stack, &options, &mut report).await,
                Part::Deletion => deletion::run(&mut stack, &options, &mut report).await,
                Part::All | Part::Fuzz => Ok(()),
            }
        };
        // Ctrl-C ends the run with the stack's processes (dropping the stack kills them).
        let (result, interrupted) = tokio::select! {
            result = run => (result, false),
            _ = tokio::signal::ctrl_c() => (Err(anyhow::anyhow!("interrupted")), true),
        };
        // A part that failed half-way leaves nothing running into the next.
        stack.stop_all();
        if let Err(error) = result {
            eprintln!("{part:?} failed: {error:#}");
            let name = format!("{part:?}").to_lowercase();
            report.add(&name, &format!("FAILED: {error:#}"), 0.0, "");
        }
        report.write(&out)?;
        if interrupted {
            anyhow::bail!("interrupted");
        }
    }
    println!("{}", report.markdown());
    println!("results: {}", out.join("results.md").display());
    Ok(())
}

/// The million-case fuzz run: the test of `ingest-gateway/tests/fuzz.rs` with its case count.
fn fuzz(root: &std::path::Path, options: &Options) -> anyhow::Result<()> {
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg("source deploy/lib.sh && servers_up >&2 && cargo test --release -p clickstream-ingest-gateway --test fuzz -- --nocapture")
        .env("CLICKSTREAM_FUZZ_CASES", options.fuzz_cases.to_string())
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "the fuzz run failed");
    Ok(())
}
