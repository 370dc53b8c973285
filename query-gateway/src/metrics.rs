//! Every metric of the query gateway, served on its own `/metrics` address.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::ask::answer::Answer;

/// Labels of Ask's question counter: bounded (three providers, four outcomes).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AskLabels {
    /// `offline`, `anthropic` or `openai`.
    pub provider: &'static str,
    /// `answered`, `cannot_answer`, `refused` or `failed`.
    pub outcome: &'static str,
}

/// Labels of the token counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// `input` or `output`.
    pub direction: &'static str,
}

/// The gateway's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ask_questions: Family<AskLabels, Counter>,
    ask_tokens: Family<TokenLabels, Counter>,
    ask_duration: Histogram,
    ask_rejected: Family<RejectLabels, Counter>,
    log_stalled_partitions: Gauge,
    ask_translation_cache: Family<CacheLabels, Counter>,
}

/// Labels of the translation cache's lookups.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Labels of the counter of questions refused before any work.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `rate_limited` or `bad_question`.
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let ask_questions = Family::<AskLabels, Counter>::default();
        let ask_tokens = Family::<TokenLabels, Counter>::default();
        let ask_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let ask_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "clickstream_query_ask_rejected",
            "Questions refused before any work, by reason",
            ask_rejected.clone(),
        );
        registry.register(
            "clickstream_query_ask_questions",
            "Questions answered by Ask, by provider and outcome",
            ask_questions.clone(),
        );
        registry.register(
            "clickstream_query_ask_model_tokens",
            "Model tokens spent by Ask, by direction",
            ask_tokens.clone(),
        );
        registry.register_with_unit(
            "clickstream_query_ask_duration",
            "Time to answer a question, model calls and ClickHouse included",
            Unit::Seconds,
            ask_duration.clone(),
        );
        let ask_translation_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "clickstream_query_ask_translation_cache",
            "Ask's translation cache lookups (hit: the typed query came from Redis, no model call and no translation), by result; hit rate = hit / (hit + miss)",
            ask_translation_cache.clone(),
        );
        let log_stalled_partitions = Gauge::default();
        registry.register(
            "clickstream_query_log_stalled_partitions",
            "Partitions the engine stopped reading because their log is not the one its checkpoints describe (_log_stalls; -1: unknown)",
            log_stalled_partitions.clone(),
        );
        // Present from the start at zero, so that a rate over them is defined.
        for provider in ["offline", "anthropic", "openai"] {
            for outcome in ["answered", "cannot_answer", "refused", "failed"] {
                let _zero = ask_questions.get_or_create(&AskLabels { provider, outcome });
            }
        }
        for direction in ["input", "output"] {
            let _zero = ask_tokens.get_or_create(&TokenLabels { direction });
        }
        for reason in ["rate_limited", "bad_question"] {
            let _zero = ask_rejected.get_or_create(&RejectLabels { reason });
        }
        Metrics {
            registry,
            ask_questions,
            ask_tokens,
            ask_duration,
            ask_rejected,
            log_stalled_partitions,
            ask_translation_cache,
        }
    }
}

impl Metrics {
    /// Counts one answered question.
    pub fn observe_ask(
        &self,
        answer: &Answer,
        took: Duration,
        input_tokens: u32,
        output_tokens: u32,
    ) {
        self.ask_questions
            .get_or_create(&AskLabels {
                provider: answer.provider,
                outcome: answer.outcome.as_str(),
            })
            .inc();
        for (direction, tokens) in [("input", input_tokens), ("output", output_tokens)] {
            self.ask_tokens
                .get_or_create(&TokenLabels { direction })
                .inc_by(u64::from(tokens));
        }
        self.ask_duration.observe(took.as_secs_f64());
    }

    /// Counts a translation cache lookup.
    pub fn observe_translation_cache(&self, hit: bool) {
        self.ask_translation_cache
            .get_or_create(&CacheLabels {
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// The cache's hits and misses so far.
    pub fn translation_cache_counts(&self) -> (u64, u64) {
        let count = |result| {
            self.ask_translation_cache
                .get_or_create(&CacheLabels { result })
                .get()
        };
        (count("hit"), count("miss"))
    }

    /// Counts a question refused before any work.
    pub fn observe_ask_rejected(&self, reason: &'static str) {
        self.ask_rejected
            .get_or_create(&RejectLabels { reason })
            .inc();
    }

    /// Sets the number of partitions the engine is stalled on.
    pub fn set_log_stalls(&self, partitions: usize) {
        self.log_stalled_partitions.set(partitions as i64);
    }

    /// ClickHouse could not say whether the engine is stalled.
    pub fn set_log_stalls_unknown(&self) {
        self.log_stalled_partitions.set(-1);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
