//! Query latency: p50/p95 of every dashboard endpoint over HTTP, on ClickHouse tables holding
//! millions of generated events.
//!
//! The rows are generated inside ClickHouse (`INSERT ... SELECT FROM numbers(n)`), shaped like
//! a site's traffic: 365 days, a few tenants (one large), Zipf-like pages, visitors and
//! persons, sessions of several events. The query gateway is served in-process over a real
//! socket; every dashboard endpoint is called with the dashboard's own parameters, and the
//! query model's shapes (Stats API v2: totals, filtered totals, breakdowns, a daily series) over
//! 1, 30 and 365 days.
//!
//! Then Ask over a repeated-question mix with the translation cache in Redis: most questions
//! are a popular few (Zipf-distributed, some in other wordings), the rest one-offs; the cache's
//! hit rate and the latencies of hits and misses are reported.
//!
//! `cargo run --release -p clickstream-benches --bin bench-queries -- --events 10000000`
//! (needs `CLICKSTREAM_CLICKHOUSE_URL` and, for Ask, `CLICKSTREAM_REDIS_URL`, e.g. after
//! `deploy/up.sh` or `deploy/servers.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use query_gateway::{AppState, router};
use schemas::tenants::Tenants;

#[derive(Debug, Parser)]
struct Args {
    /// Events to generate.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Calls per endpoint.
    #[arg(long, default_value_t = 50)]
    calls: usize,
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "CLICKSTREAM_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    clickhouse_url: String,
    /// Database to (re)create.
    #[arg(long, default_value = "bench_queries")]
    database: String,
    /// Keep the database if it already has the events (skips generation).
    #[arg(long)]
    reuse: bool,
    /// After the queries, time one retention pass over a copy of the data with tenant `demo`
    /// keeping this many days (0: skip).
    #[arg(long, default_value_t = 270)]
    retention_days: u32,
    /// Questions asked in the Ask part (0: skip).
    #[arg(long, default_value_t = 1000)]
    ask_questions: usize,
    /// Redis for Ask's translation cache.
    #[arg(
        long,
        env = "CLICKSTREAM_REDIS_URL",
        default_value = "redis://127.0.0.1:16379"
    )]
    redis_url: String,
}

const DAYS: u64 = 365;
/// The end of the generated month (Unix seconds).
fn end_of_data() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now % 3600
}

async fn sql(http: &reqwest::Client, url: &str, statement: &str) -> anyhow::Result<String> {
    let response = http
        .post(url)
        .body(statement.to_owned())
        .send()
        .await
        .with_context(|| format!("ClickHouse at {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{statement}: {text}");
    }
    Ok(text)
}

async fn generate(http: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let (url, db, n) = (&args.clickhouse_url, &args.database, args.events);
    if args.reuse {
        let count = sql(http, url, &format!("SELECT count() FROM {db}.events"))
            .await
            .unwrap_or_default();
        if count.trim().parse::<u64>().unwrap_or(0) >= n {
            println!("reusing {db}: {} events", count.trim());
            return Ok(());
        }
    }
    sql(http, url, &format!("DROP DATABASE IF EXISTS {db}")).await?;
    let version = sql(http, url, "SELECT version()").await?;
    let version = schemas::version::ServerVersion::parse(&version).context("server version")?;
    for statement in schemas::ddl::statements(db, version) {
        sql(http, url, &statement).await?;
    }
    let end = end_of_data();
    let span = DAYS * 86_400;
    let started = Instant::now();
    // 80% of the traffic is tenant "demo"; a visitor (of 2% of n) keeps its pages together in
    // sessions of about 5 events; every tenth visitor is a known user.
    let chunk = 2_000_000u64;
    let mut offset = 0;
    while offset < n {
        let rows = chunk.min(n - offset);
        sql(http, url, &format!(
            "INSERT INTO {db}.events (tenant, message_id, type, name, anonymous_id, user_id, event_time, event_time_ms, \
             received_at, received_at_ms, path, referrer, utm_source, session_id, person_id, late, version) \
             SELECT tenant, message_id, type, name, anonymous_id, user_id, toDateTime(t), t * 1000, toDateTime(t), t * 1000, \
                    path, referrer, utm_source, session_id, person_id, 0, 1 FROM ( \
               SELECT number + {offset} AS i, \
                      if(i % 10 < 8, 'demo', concat('tenant-', toString(i % 7))) AS tenant, \
                      concat('m-', toString(i)) AS message_id, \
                      intDiv(i, 5) AS session, \
                      intHash64(session) % {visitors} AS visitor, \
                      if(i % 5 = 4, 'track', 'page') AS type, \
                      if(type = 'track', arrayElement(['Signed Up', 'Clicked', 'Purchased'], i % 3 + 1), '') AS name, \
                      concat('anon-', toString(visitor)) AS anonymous_id, \
                      if(visitor % 10 = 0, concat('user-', toString(visitor)), '') AS user_id, \
                      {end} - {span} + intHash32(session) % {span} + (i % 5) * 40 AS t, \
                      concat('/page/', toString(toUInt32(sqrt(intHash32(i) % 40000)))) AS path, \
                      if(i % 5 = 0, arrayElement(['https://google.com/', 'https://news.ycombinator.com/', ''], session % 3 + 1), '') AS referrer, \
                      if(session % 4 = 0, arrayElement(['newsletter', 'ads', 'twitter'], session % 3 + 1), '') AS utm_source, \
                      concat('s-', toString(session)) AS session_id, \
                      if(user_id != '', user_id, anonymous_id) AS person_id \
               FROM numbers({rows}))",
            visitors = (n / 50).max(1)
        )).await?;
        offset += rows;
        println!(
            "  {offset} events inserted ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    sql(http, url, &format!(
        "INSERT INTO {db}.sessions (tenant, session_id, person_id, visitor_id, start_time, start_ms, end_ms, duration_ms, \
         events, page_views, is_bounce, entry_path, exit_path, entry_referrer, utm_source, deleted, version) \
         SELECT tenant, session_id, any(person_id), any(anonymous_id), min(event_time), min(event_time_ms), max(event_time_ms), \
                max(event_time_ms) - min(event_time_ms), toUInt32(count()), toUInt32(countIf({page_view})), \
                toUInt8(countIf({page_view}) = 1 AND count() = 1), argMin(path, event_time_ms), argMax(path, event_time_ms), \
                argMin(referrer, event_time_ms), any(utm_source), 0, 1 \
         FROM {db}.events GROUP BY tenant, session_id",
        page_view = schemas::definitions::page_view_sql(),
    )).await?;
    // The engine's visitor-hour rollup of the same events (what `visitor_hours` writes).
    sql(http, url, &format!(
        "INSERT INTO {db}.agg_hour_visitors (tenant, hour, visitor_id, person_id, events, page_views, version) \
         SELECT tenant, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour_start, \
                if(anonymous_id != '', anonymous_id, user_id) AS visitor, person_id, \
                toUInt32(count()), toUInt32(countIf({page_view})), 1 \
         FROM {db}.events WHERE late = 0 AND {activity} \
         GROUP BY tenant, hour_start, visitor, person_id",
        page_view = schemas::definitions::page_view_sql(),
        activity = schemas::definitions::activity_sql(),
    )).await?;
    for table in ["events", "sessions", "agg_hour_visitors"] {
        sql(http, url, &format!("OPTIMIZE TABLE {db}.{table} FINAL")).await?;
    }
    sql(http, url, &format!(
        "INSERT INTO {db}._progress (tenant, complete_until_ms, epoch, updated_at) VALUES ('demo', {}, 1, now())",
        end * 1000
    )).await?;
    println!(
        "generated {n} events in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The query model's shapes as Stats API v2 requests, over the last 1, 30 and 365 whole days:
/// `(name, path, body)`.
fn v2_shapes() -> Vec<(String, String, Option<serde_json::Value>)> {
    use serde_json::json;
    let shapes = [
        (
            "totals",
            json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
        ),
        (
            "totals, page filter",
            json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "filters": [["is", "event:page", ["/page/1"]]]}),
        ),
        (
            "totals, campaign filter",
            json!({"metrics": ["visitors", "pageviews", "bounce_rate"], "filters": [["is", "visit:utm_source", ["newsletter"]]]}),
        ),
        (
            "pages breakdown",
            json!({"metrics": ["visitors", "pageviews", "bounce_rate"], "dimensions": ["event:page"], "pagination": {"limit": 10}}),
        ),
        (
            "campaign breakdown",
            json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:utm_source"], "pagination": {"limit": 10}}),
        ),
        (
            "goal conversions",
            json!({"metrics": ["visitors", "conversion_rate"], "dimensions": ["event:goal"]}),
        ),
        (
            "daily series",
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["time:day"]}),
        ),
    ];
    let mut requests = Vec::new();
    for days in [1, 30, 365] {
        for (name, shape) in &shapes {
            let mut body = shape.clone();
            body["site_id"] = json!("demo");
            body["date_range"] = json!(format!("{days}d"));
            requests.push((
                format!("v2 {name} ({days} d)"),
                "/api/v2/query".to_owned(),
                Some(body),
            ));
        }
    }
    requests
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    generate(&http, &args).await?;
    let state = Arc::new(AppState::offline(
        Tenants::parse(
            "[[tenants]]\nid='demo'\nwrite_keys=['wk']\nread_keys=['rk']\ngoals=[{ event = 'Signed Up' }]\n",
        )?,
        &args.clickhouse_url,
        &args.database,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, router(state)).into_future());

    let to = end_of_data();
    let day = format!("from={}&to={to}", to - 86_400);
    let month = format!("from={}&to={to}", to - 30 * 86_400);
    let mut endpoints: Vec<(String, String, Option<serde_json::Value>)> = [
        ("overview (24 h)", format!("/api/overview?{day}")),
        ("overview (30 days)", format!("/api/overview?{month}")),
        (
            "timeseries hourly (24 h)",
            format!("/api/timeseries?{day}&interval=hour&metric=page_views"),
        ),
        (
            "timeseries visitors daily (30 days)",
            format!("/api/timeseries?{month}&interval=day&metric=visitors"),
        ),
        ("top pages (24 h)", format!("/api/top/pages?{day}&limit=8")),
        (
            "top referrers (24 h)",
            format!("/api/top/referrers?{day}&limit=8"),
        ),
        (
            "funnel 2 steps (24 h)",
            format!("/api/funnel?{day}&steps=page:/page/1,event:Signed%20Up"),
        ),
        (
            "retention (8 weeks)",
            format!("/api/retention?from={}&to={to}", to - 56 * 86_400),
        ),
        (
            "person sessions",
            format!("/api/persons/anon-7/sessions?{month}"),
        ),
        ("progress", "/api/progress".to_owned()),
    ]
    .into_iter()
    .map(|(name, path)| (name.to_owned(), path, None))
    .collect();
    endpoints.extend(v2_shapes());
    println!("\n| endpoint | p50 | p95 | calls |\n|---|---:|---:|---:|");
    for (name, path, body) in endpoints {
        let url = format!("http://{address}{path}");
        let mut times = Vec::with_capacity(args.calls);
        for call in 0..=args.calls {
            let started = Instant::now();
            let request = match &body {
                Some(body) => http.post(&url).json(body),
                None => http.get(&url),
            };
            let response = request.bearer_auth("rk").send().await?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                bail!("{path}: {status} {body}");
            }
            // The first call warms caches and is not counted.
            if call > 0 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {} |",
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.95).as_secs_f64() * 1000.0,
            times.len()
        );
    }
    if args.ask_questions > 0 {
        measure_ask(&http, &args).await?;
    }
    if args.retention_days > 0 {
        measure_retention(&http, &args).await?;
    }
    Ok(())
}

/// Questions any site's owner asks again and again; a few in a second wording.
const POPULAR: [&str; 36] = [
    "How many visitors today?",
    "Unique visitors yesterday",
    "What's our bounce rate this week?",
    "Page views in the last 7 days",
    "Top 10 pages last month",
    "Top sources this month",
    "Visitors by country in the last 30 days",
    "Visitors per day in the last 14 days",
    "Page views per hour today",
    "Average visit duration last week",
    "Pages per visit this month",
    "How many visits in the last 30 days?",
    "Visitors by device this month",
    "Visitors by browser last week",
    "Compare visitors in the last 7 days with the previous period",
    "Bounce rate per day in the last 30 days",
    "Unique visitors this year",
    "Weekly visitors over the last 6 months",
    "Top 5 entry pages last week",
    "How many Signed Up events this month?",
    "Conversion rate of each goal this month",
    "Visitors by channel in the last 30 days",
    "Monthly page views this year",
    "Top 5 pages today",
    "Sessions yesterday",
    "Visitors by operating system this month",
    "how many visitors today",
    "what is our bounce rate this week",
    "visitors today?",
    "top pages last month",
    "How many people visited yesterday?",
    "Page views last week",
    "Visits per day this month",
    "Top 10 countries this month",
    "Events per day in the last 7 days",
    "Bounce rate this month compared with the previous period",
];

/// Ask over a repeated-question mix, through the translation cache in Redis: 80 % of the
/// questions from the popular list (Zipf, s = 1), 20 % one-offs ("top N pages in the last D
/// days" with random N and D).
async fn measure_ask(http: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use rand_distr::Distribution;
    let namespace = format!(
        "bench-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    );
    let metrics = Arc::new(query_gateway::metrics::Metrics::default());
    let ask = query_gateway::ask::AskService::new(
        query_gateway::ask::run::Runner::new(
            &args.clickhouse_url,
            &args.database,
            Default::default(),
        ),
        None,
        schemas::version::ServerVersion::OLDEST,
        query_gateway::ask::AskLimits {
            questions_per_minute: std::num::NonZeroU32::new(1_000_000).context("limit")?,
            model_calls_per_day: 0,
        },
        metrics.clone(),
    )
    .with_translation_cache(&args.redis_url, &namespace);
    let mut state = AppState::offline(
        Tenants::parse(
            "[[tenants]]\nid='demo'\nwrite_keys=['wk']\nread_keys=['rk']\ngoals=[{ event = 'Signed Up' }]\n",
        )?,
        &args.clickhouse_url,
        &args.database,
    );
    state.ask = Arc::new(ask);
    state.metrics = metrics.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, router(Arc::new(state))).into_future());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let zipf = rand_distr::Zipf::new(POPULAR.len() as f64, 1.0).context("zipf")?;
    let (mut hit_times, mut miss_times, mut answered) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.ask_questions {
        let question = if rng.random_bool(0.8) {
            POPULAR[(zipf.sample(&mut rng) as usize)
                .saturating_sub(1)
                .min(POPULAR.len() - 1)]
            .to_owned()
        } else {
            format!(
                "Top {} pages in the last {} days",
                rng.random_range(3..30),
                rng.random_range(2..90)
            )
        };
        let (hits_before, _) = metrics.translation_cache_counts();
        let started = Instant::now();
        let response = http
            .post(format!("http://{address}/api/ask"))
            .bearer_auth("rk")
            .json(&serde_json::json!({ "question": question }))
            .send()
            .await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("{question}: {status} {answer}");
        }
        let took = started.elapsed();
        answered += usize::from(answer["outcome"] == "answered");
        if metrics.translation_cache_counts().0 > hits_before {
            hit_times.push(took);
        } else {
            miss_times.push(took);
        }
    }
    let (hits, misses) = metrics.translation_cache_counts();
    hit_times.sort();
    miss_times.sort();
    println!(
        "\nAsk, {} questions (80 % from {} popular ones, Zipf s = 1; 20 % one-offs), offline translator, translation cache in Redis:\n\n| figure | value |\n|---|---:|\n| answered | {answered} |\n| cache hits / misses | {hits} / {misses} |\n| hit rate | {:.1} % |\n| p50 / p95 with a hit | {:.1} / {:.1} ms |\n| p50 / p95 with a miss | {:.1} / {:.1} ms |",
        args.ask_questions,
        POPULAR.len(),
        100.0 * hits as f64 / (hits + misses).max(1) as f64,
        percentile(&hit_times, 0.5).as_secs_f64() * 1000.0,
        percentile(&hit_times, 0.95).as_secs_f64() * 1000.0,
        percentile(&miss_times, 0.5).as_secs_f64() * 1000.0,
        percentile(&miss_times, 0.95).as_secs_f64() * 1000.0,
    );
    Ok(())
}

/// One retention pass (`engine::sink::retention::pass`) over a copy of the per-person
/// tables, tenant `demo` keeping `--retention-days`: on 18.16, one awaited mutation per table.
async fn measure_retention(http: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let (url, source) = (&args.clickhouse_url, &args.database);
    let copy = format!("{source}_retention");
    sql(http, url, &format!("DROP DATABASE IF EXISTS {copy}")).await?;
    let version =
        schemas::version::ServerVersion::parse(&sql(http, url, "SELECT version()").await?)
            .context("server version")?;
    for statement in schemas::ddl::statements(&copy, version) {
        sql(http, url, &statement).await?;
    }
    for (table, _) in schemas::retention::RETAINED {
        sql(
            http,
            url,
            &format!("INSERT INTO {copy}.{table} SELECT * FROM {source}.{table}"),
        )
        .await?;
    }
    let config = engine::config::ClickHouseConfig {
        url: url.clone(),
        database: copy.clone(),
        ..Default::default()
    };
    let tenants = Tenants::parse(&format!(
        "[[tenants]]\nid='demo'\nwrite_keys=['wk']\nretention_days={}\n",
        args.retention_days
    ))?;
    let plan = schemas::retention::Plan::new(&tenants, &[]);
    let started = Instant::now();
    let done = engine::sink::retention::pass(&config, &plan, chrono::Utc::now().timestamp_millis())
        .await?;
    println!(
        "\nretention pass on ClickHouse {version}, tenant demo keeping {} days: {:.1} s\n\n| table | rows deleted | mutation |\n|---|---:|---:|",
        args.retention_days,
        started.elapsed().as_secs_f64()
    );
    for row in done {
        println!(
            "| {} | {} | {:.1} s |",
            row.table_name,
            row.rows,
            row.duration_ms as f64 / 1000.0
        );
    }
    sql(http, url, &format!("DROP DATABASE {copy}")).await?;
    Ok(())
}
