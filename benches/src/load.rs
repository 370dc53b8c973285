//! Open-loop load: requests are due at a fixed offered rate, whatever the server does, and
//! each request's latency is measured from the moment it was due, not from when it was
//! finally sent. A server that falls behind therefore shows its queueing in the latencies
//! instead of slowing the generator down (Gil Tene's "coordinated omission").

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::Semaphore;

/// What to offer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPlan {
    /// Requests per second offered.
    pub requests_per_sec: f64,
    /// How long to offer them.
    pub duration: Duration,
    /// Requests in flight at most (the client's connections); a request due while all are
    /// busy waits for one, and its wait counts in its latency.
    pub connections: usize,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The plan.
    pub plan: LoadPlan,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise, or not at all.
    pub failed: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// From the first request due to the last answer.
    pub elapsed: Duration,
    /// Latency of 2xx answers from the moment each was due, microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    /// Answered requests per second, over the whole run.
    pub fn achieved_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile of the 2xx answers, milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Offers `plan`: request `k` is due at `start + k / rate` and made by `request(k, due)`,
/// which answers the HTTP status (`None`: no answer); `due` is where latencies start.
pub async fn run_open_loop<F, Fut>(
    plan: LoadPlan,
    request: F,
    progress: Option<&ProgressBar>,
) -> LoadReport
where
    F: Fn(u64, Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<u16>> + Send + 'static,
{
    let request = Arc::new(request);
    let slots = Arc::new(Semaphore::new(plan.connections.max(1)));
    let total = (plan.requests_per_sec * plan.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / plan.requests_per_sec);
    let (results, mut answers) = tokio::sync::mpsc::unbounded_channel::<(Option<u16>, u64)>();
    let start = Instant::now();
    let dispatcher = {
        let (slots, request) = (slots.clone(), request.clone());
        tokio::spawn(async move {
            for k in 0..total {
                // Whoever waited for the answers has gone (a run stopped early): stop.
                if results.is_closed() {
                    return;
                }
                let due = start + interval.mul_f64(k as f64);
                tokio::time::sleep_until(due.into()).await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (request, results) = (request.clone(), results.clone());
                tokio::spawn(async move {
                    let status = request(k, due).await;
                    let latency = due.elapsed().as_micros() as u64;
                    drop(slot);
                    let _ = results.send((status, latency));
                });
            }
        })
    };
    let mut report = LoadReport {
        plan,
        sent: 0,
        ok: 0,
        failed: 0,
        rate_limited: 0,
        elapsed: Duration::ZERO,
        latency_us: latency_histogram(),
    };
    while report.sent < total {
        let Some((status, latency)) = answers.recv().await else {
            break;
        };
        report.sent += 1;
        match status {
            Some(code) if (200..300).contains(&code) => {
                report.ok += 1;
                let _ = report.latency_us.record(latency.max(1));
            }
            Some(429) => {
                report.rate_limited += 1;
                report.failed += 1;
            }
            _ => report.failed += 1,
        }
        if let Some(bar) = progress {
            bar.inc(1);
        }
    }
    report.elapsed = start.elapsed();
    let _ = dispatcher.await;
    report
}

/// 1 µs to 10 min at 3 significant digits.
#[allow(clippy::expect_used)] // constant bounds, valid by hdrhistogram's rules
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes 20 ms per request with one connection cannot keep up with 100
    /// requests/s: open-loop latencies grow with the queue instead of staying at 20 ms.
    #[tokio::test]
    async fn queueing_shows_in_the_latencies() {
        let plan = LoadPlan {
            requests_per_sec: 100.0,
            duration: Duration::from_millis(500),
            connections: 1,
        };
        let report = run_open_loop(
            plan,
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some(200)
            },
            None,
        )
        .await;
        assert_eq!((report.sent, report.ok), (50, 50));
        // The last request was due at 490 ms and answered after ~1,000 ms.
        assert!(report.latency_ms(1.0) > 400.0, "{}", report.latency_ms(1.0));
        assert!(report.latency_ms(0.0) < 40.0);
    }
}
