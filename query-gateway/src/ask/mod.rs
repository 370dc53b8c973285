//! Ask: a question in plain English becomes SQL over the tenant's views, runs under the
//! guard's limits, and comes back as an answer a marketer can read.
//!
//! Who writes the SQL: the configured model ([`provider`]), retried once with the error when
//! its SQL fails to parse, is refused, or fails in ClickHouse; or, with no model configured
//! (or its daily budget spent, or the model unreachable), the offline [`translator`]. Either
//! way the SQL passes [`guard::check`], which alone decides what may run.

pub mod answer;
pub mod dates;
pub mod guard;
pub mod prompt;
pub mod provider;
pub mod run;
pub mod translator;
pub mod typed;
pub mod views;
pub mod vocabulary;
pub mod words;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use chrono_tz::Tz;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use schemas::tenants::Tenant;
use serde_json::json;

use crate::metrics::Metrics;
use answer::Answer;
use provider::{Message, Provider, ProviderError};
use run::{RunError, Runner, Table};
use translator::Translation;
use vocabulary::Vocabulary;

/// Longest question accepted, characters.
pub const MAX_QUESTION_CHARS: usize = 500;

/// How often a tenant may ask, and how many model calls a day it may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskLimits {
    /// Questions per minute per tenant (a token bucket of this size).
    pub questions_per_minute: NonZeroU32,
    /// Model calls per tenant per UTC day; past it, the offline translator answers.
    pub model_calls_per_day: u32,
}

impl Default for AskLimits {
    fn default() -> Self {
        AskLimits {
            questions_per_minute: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            model_calls_per_day: 500,
        }
    }
}

/// Why a question got no answer at all (as opposed to an answer saying it cannot answer).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Empty or too long.
    #[error("{0}")]
    BadQuestion(String),
    /// The tenant asked too often.
    #[error("too many questions; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next question is accepted.
        retry_after_secs: u64,
    },
    /// ClickHouse is unreachable.
    #[error("the analytics store is unavailable")]
    Unavailable(#[source] RunError),
    /// The query model's statements failed (logged where they failed).
    #[error("the analytics store is unavailable")]
    Store,
}

/// Everything Ask needs, shared by all requests.
#[derive(Debug)]
pub struct AskService {
    runner: Runner,
    provider: Option<Provider>,
    server_version: schemas::version::ServerVersion,
    limits: AskLimits,
    per_minute: DefaultKeyedRateLimiter<String>,
    model_calls: Mutex<HashMap<String, (NaiveDate, u32)>>,
    vocabularies: Mutex<HashMap<String, (Instant, Arc<Vocabulary>)>>,
    metrics: Arc<Metrics>,
}

/// How long a tenant's names are reused before they are read again.
const VOCABULARY_TTL: Duration = Duration::from_secs(60);

/// Who wrote a statement, for the answer and `ask_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Author {
    provider: &'static str,
    model: String,
}

/// One attempt's record: what was tried and what it cost.
#[derive(Debug, Default)]
struct Attempts {
    count: u8,
    input_tokens: u32,
    output_tokens: u32,
}

impl AskService {
    /// A service running statements through `runner`, asking `provider` when there is one.
    pub fn new(
        runner: Runner,
        provider: Option<Provider>,
        server_version: schemas::version::ServerVersion,
        limits: AskLimits,
        metrics: Arc<Metrics>,
    ) -> AskService {
        AskService {
            runner,
            provider,
            server_version,
            per_minute: RateLimiter::keyed(Quota::per_minute(limits.questions_per_minute)),
            limits,
            model_calls: Mutex::new(HashMap::new()),
            vocabularies: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Admits a question of `tenant` before any work is done for it: not empty, not too
    /// long, within the tenant's questions per minute.
    ///
    /// # Errors
    /// [`AskError::BadQuestion`] or [`AskError::RateLimited`].
    pub fn admit(&self, tenant: &Tenant, question: &str) -> Result<(), AskError> {
        let verdict = self.verdict(tenant, question.trim());
        if let Err(error) = &verdict {
            self.metrics.observe_ask_rejected(match error {
                AskError::RateLimited { .. } => "rate_limited",
                _ => "bad_question",
            });
        }
        verdict
    }

    fn verdict(&self, tenant: &Tenant, question: &str) -> Result<(), AskError> {
        if question.is_empty() {
            return Err(AskError::BadQuestion("question: must not be empty".into()));
        }
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(AskError::BadQuestion(format!(
                "question: at most {MAX_QUESTION_CHARS} characters"
            )));
        }
        if let Err(not_until) = self.per_minute.check_key(&tenant.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(AskError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        Ok(())
    }

    /// Answers an admitted `question` ([`AskService::admit`]) for `tenant`, whose data is
    /// complete up to `complete_until_ms`.
    ///
    /// # Errors
    /// [`AskError::Unavailable`] when ClickHouse is unreachable. Everything else is an
    /// [`Answer`] with its [`answer::Outcome`].
    pub async fn ask(
        &self,
        client: &clickhouse::Client,
        tenant: &Tenant,
        question: &str,
        complete_until_ms: Option<i64>,
        now: i64,
    ) -> Result<Answer, AskError> {
        let question = question.trim();
        let started = Instant::now();
        let tz: Tz = tenant.time_zone.parse().unwrap_or(Tz::UTC);
        let today = chrono::DateTime::from_timestamp(now, 0)
            .unwrap_or_default()
            .with_timezone(&tz)
            .date_naive();
        let offline = Offline { client, now, tz };
        let mut attempts = Attempts::default();
        let mut answer = match &self.provider {
            Some(provider) if self.spend_model_call(&tenant.id, false) => {
                match self
                    .ask_model(
                        provider,
                        tenant,
                        question,
                        today,
                        tz,
                        complete_until_ms,
                        &mut attempts,
                    )
                    .await
                {
                    Ok(answer) => answer,
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "model unavailable; the offline translator answers");
                        let mut answer = self.ask_offline(&offline, tenant, question).await?;
                        answer.add_note(format!(
                            "The model failed ({error}); answered by the offline translator instead."
                        ));
                        answer
                    }
                }
            }
            Some(_) => {
                let mut answer = self.ask_offline(&offline, tenant, question).await?;
                answer.add_note(format!(
                    "Today's budget of {} model calls is spent; answered by the offline translator.",
                    self.limits.model_calls_per_day
                ));
                answer
            }
            None => self.ask_offline(&offline, tenant, question).await?,
        };
        answer.set_complete_until(complete_until_ms);
        let latency = started.elapsed();
        self.metrics.observe_ask(
            &answer,
            latency,
            attempts.input_tokens,
            attempts.output_tokens,
        );
        self.log(tenant, &answer, latency, &attempts);
        Ok(answer)
    }

    /// Takes one model call from the tenant's daily budget; `false` when it is spent.
    fn spend_model_call(&self, tenant: &str, retry: bool) -> bool {
        let today = chrono::Utc::now().date_naive();
        let Ok(mut calls) = self.model_calls.lock() else {
            return false;
        };
        let (day, used) = calls.entry(tenant.to_owned()).or_insert((today, 0));
        if *day != today {
            (*day, *used) = (today, 0);
        }
        // A retry may go one past the budget: the question was accepted under it.
        if *used >= self.limits.model_calls_per_day && !retry {
            return false;
        }
        *used += 1;
        true
    }

    #[allow(clippy::too_many_arguments)]
    async fn ask_model(
        &self,
        provider: &Provider,
        tenant: &Tenant,
        question: &str,
        today: NaiveDate,
        tz: Tz,
        complete_until_ms: Option<i64>,
        attempts: &mut Attempts,
    ) -> Result<Answer, ProviderError> {
        let author = Author {
            provider: provider.config().kind.name(),
            model: provider.config().model.clone(),
        };
        let system = prompt::system_prompt(&prompt::PromptFacts {
            server_version: self.server_version,
            today: today.to_string(),
            time_zone: tz.name(),
            complete_until: complete_until_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        });
        let mut messages = vec![Message {
            role: "user",
            content: question.to_owned(),
        }];
        loop {
            attempts.count += 1;
            let completion = provider.complete(&system, &messages).await?;
            attempts.input_tokens += completion.input_tokens;
            attempts.output_tokens += completion.output_tokens;
            let sql = provider::extract_sql(&completion.text);
            if sql.contains("CANNOT_ANSWER") {
                return Ok(Answer::cannot_answer(
                    question,
                    "The model says the question cannot be answered from your analytics data.",
                    &author,
                ));
            }
            let outcome = self.run_checked(tenant, &sql).await;
            let retry_with = match &outcome {
                Ok(_) => None,
                Err(Failure::Refused(reason)) => {
                    Some(format!("The SQL guard refused it: {reason}"))
                }
                Err(Failure::Query { class, detail }) => {
                    // The server's text can quote row values: the model gets the class and,
                    // for an unknown name, the name (its own text), nothing else.
                    let name = run::unknown_name(detail)
                        .map(|name| format!(" ({name})"))
                        .unwrap_or_default();
                    Some(format!("ClickHouse failed: {}{name}", class.describe()))
                }
                Err(Failure::Unavailable(_)) => None,
            };
            match retry_with {
                Some(error) if attempts.count < 2 && self.spend_model_call(&tenant.id, true) => {
                    messages.push(Message {
                        role: "assistant",
                        content: completion.text,
                    });
                    messages.push(Message {
                        role: "user",
                        content: format!("{error}\nAnswer with one corrected SELECT statement."),
                    });
                }
                _ => return Ok(Answer::from_model(question, &sql, outcome, &author)),
            }
        }
    }

    async fn ask_offline(
        &self,
        offline: &Offline<'_>,
        tenant: &Tenant,
        question: &str,
    ) -> Result<Answer, AskError> {
        let vocabulary = self.vocabulary(offline, tenant).await?;
        let today = chrono::DateTime::from_timestamp(offline.now, 0)
            .unwrap_or_default()
            .with_timezone(&offline.tz)
            .date_naive();
        let context = translator::Context {
            today,
            tz: offline.tz,
            vocabulary: &vocabulary,
        };
        let translation: Translation = match translator::translate(question, context) {
            Ok(translation) => translation,
            Err(unanswerable) => {
                return Ok(Answer::cannot_answer(
                    question,
                    &unanswerable.reason,
                    &OFFLINE,
                ));
            }
        };
        let outcome = typed::execute(offline.client, tenant, &translation.query, offline.now).await;
        if let Err(typed::ExecuteError::Unavailable) = outcome {
            return Err(AskError::Store);
        }
        Ok(Answer::from_typed(
            question,
            translation,
            outcome,
            offline.tz,
            &OFFLINE,
        ))
    }

    /// The tenant's names, read through the query model at most once a minute.
    async fn vocabulary(
        &self,
        offline: &Offline<'_>,
        tenant: &Tenant,
    ) -> Result<Arc<Vocabulary>, AskError> {
        if let Ok(cache) = self.vocabularies.lock()
            && let Some((read, vocabulary)) = cache.get(&tenant.id)
            && read.elapsed() < VOCABULARY_TTL
        {
            return Ok(vocabulary.clone());
        }
        let vocabulary = Arc::new(
            Vocabulary::read(offline.client, tenant, offline.now)
                .await
                .map_err(|error| {
                    tracing::error!(error = %error_chain(&error), tenant = %tenant.id, "reading the tenant's names failed");
                    AskError::Store
                })?,
        );
        if let Ok(mut cache) = self.vocabularies.lock() {
            cache.insert(tenant.id.clone(), (Instant::now(), vocabulary.clone()));
        }
        Ok(vocabulary)
    }

    /// Guards `sql` for the tenant and runs what the guard rendered.
    async fn run_checked(&self, tenant: &Tenant, sql: &str) -> Result<Checked, Failure> {
        let checked = guard::check(sql, self.runner.database(), &tenant.id)
            .map_err(|refusal| Failure::Refused(refusal.0))?;
        match self.runner.run(&checked.executable).await {
            Ok(table) => Ok(Checked {
                sql: checked.shown,
                table,
            }),
            Err(RunError::Query { class, detail }) => {
                tracing::warn!(tenant = %tenant.id, ?class, %detail, sql = %checked.executable, "Ask statement failed in ClickHouse");
                Err(Failure::Query { class, detail })
            }
            Err(error) => Err(Failure::Unavailable(error)),
        }
    }

    fn log(&self, tenant: &Tenant, answer: &Answer, latency: Duration, attempts: &Attempts) {
        let now = chrono::Utc::now();
        let row = json!({
            "tenant": tenant.id,
            "asked_at": now.timestamp(),
            "asked_at_ms": now.timestamp_millis(),
            "question": answer.question,
            "sql": answer.sql.clone().unwrap_or_default(),
            "provider": answer.provider,
            "model": answer.model,
            "attempts": attempts.count,
            "latency_ms": u32::try_from(latency.as_millis()).unwrap_or(u32::MAX),
            "input_tokens": attempts.input_tokens,
            "output_tokens": attempts.output_tokens,
            "outcome": answer.outcome.as_str(),
            "detail": answer.detail_for_log(),
        });
        let runner = self.runner.clone();
        tokio::spawn(async move {
            if let Err(error) = runner.insert("ask_log", &row).await {
                tracing::error!(error = %error_chain(&error), "writing ask_log failed");
            }
        });
    }
}

/// What the offline path runs with: the query model's client, the request's "now" and the
/// tenant's zone.
struct Offline<'a> {
    client: &'a clickhouse::Client,
    now: i64,
    tz: Tz,
}

const OFFLINE: Author = Author {
    provider: "offline",
    model: String::new(),
};

/// A statement that ran: the SQL as shown, and its rows.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The guard's rendering over the views.
    pub sql: String,
    /// What it returned.
    pub table: Table,
}

/// Why a statement produced no rows.
#[derive(Debug)]
pub enum Failure {
    /// The guard refused it.
    Refused(String),
    /// ClickHouse refused it.
    Query {
        /// Class, for the answer.
        class: run::ErrorClass,
        /// Server text, for the log.
        detail: String,
    },
    /// ClickHouse is unreachable.
    Unavailable(RunError),
}

/// An error and its sources, `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub use answer::Outcome as AskOutcome;
