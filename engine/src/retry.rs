//! The engine's one retry policy, and what happens when retrying cannot help.
//!
//! Every wait for a server (ClickHouse at start, each sink's write, the checkpoint) goes
//! through [`Backoff`]: exponential with full jitter, so that the workers of a cluster that
//! all lost ClickHouse at once do not come back in lockstep. An error that waiting cannot fix
//! (a type mismatch, an unknown column) is not retried: the engine stops with [`stop`], which
//! is as safe as a SIGKILL (nothing uncommitted is lost, it is replayed on the next start).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder, Retryable};

/// The exit status of an engine stopped by a permanent error, distinct from a crash (101)
/// so that a supervisor can tell "restart me" from "a human must act".
pub const EXIT_PERMANENT: i32 = 3;

/// The exit status of an engine that found a log other than the one its checkpoints
/// describe (see [`crate::source::log_check`]): restarting cannot help, a recovery must run.
pub const EXIT_LOG_MISMATCH: i32 = 4;

/// Displays an error with its whole chain of sources: `outer: cause: root cause`.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Exponential backoff with jitter between `min` and `max`, without a limit on attempts: the
/// caller decides when to give up (on a permanent error, on shutdown, at a deadline).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First wait.
    pub min: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// From 100 ms up to `max`.
    pub fn up_to(max: Duration) -> Backoff {
        Backoff {
            min: Duration::from_millis(100),
            max: max.max(Duration::from_millis(100)),
        }
    }

    fn builder(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
    }

    /// Runs `attempt` on this thread until it succeeds or `retry_when` says an error is not
    /// worth another attempt (that error is returned). `notify` sees every retried error and
    /// the wait before the next attempt.
    pub fn blocking<T, E>(
        self,
        attempt: impl FnMut() -> Result<T, E>,
        retry_when: impl FnMut(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E> {
        attempt
            .retry(self.builder())
            .sleep(std::thread::sleep)
            .when(retry_when)
            .notify(notify)
            .call()
    }

    /// As [`Backoff::blocking`], for an async `attempt` on the tokio runtime.
    pub async fn run<T, E, Fut>(
        self,
        attempt: impl FnMut() -> Fut,
        retry_when: impl FnMut(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        attempt
            .retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(retry_when)
            .notify(notify)
            .await
    }
}

/// Stops the process because `what` failed in a way no retry can fix, after logging the
/// whole error chain. Exiting (rather than unwinding one worker) is deliberate: the other
/// workers would wait for its progress forever, and an exit is as safe as a SIGKILL.
pub fn stop(what: &str, error: &(dyn Error + 'static)) -> ! {
    let chain = Chain(error);
    tracing::error!(what, error = %chain, "permanent error: the engine stops (exit status {EXIT_PERMANENT}); fix the cause and start it again");
    eprintln!("engine: {what}: permanent error: {chain}");
    std::process::exit(EXIT_PERMANENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_every_cause() {
        let error = Outer(std::io::Error::other("root"));
        assert_eq!(Chain(&error).to_string(), "outer: root");
    }

    #[test]
    fn transient_errors_are_retried_and_a_permanent_one_is_returned() {
        let backoff = Backoff {
            min: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut attempts = 0;
        let mut notified = 0;
        let result: Result<(), &str> = backoff.blocking(
            || {
                attempts += 1;
                Err(if attempts < 3 {
                    "transient"
                } else {
                    "permanent"
                })
            },
            |error| *error == "transient",
            |_, _| notified += 1,
        );
        assert_eq!(result, Err("permanent"));
        assert_eq!((attempts, notified), (3, 2));
    }
}
