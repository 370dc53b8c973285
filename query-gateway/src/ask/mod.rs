//! Ask: a question in plain English becomes SQL over the tenant's views, runs under the
//! guard's limits, and comes back as an answer a marketer can read.
//!
//! Who writes the SQL: the configured model ([`provider`]), retried once with the error when
//! its SQL fails to parse, is refused, or fails in ClickHouse; or, with no model configured
//! (or its daily budget spent, or the model unreachable), the offline [`translator`]. Either
//! way the SQL passes [`guard::check`], which alone decides what may run.

pub mod answer;
pub mod cache;
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
use answer::{Answer, Outcome};
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
    cache: Option<cache::TranslationCache>,
}

/// How long a tenant's names are reused before they are read again.
const VOCABULARY_TTL: Duration = Duration::from_secs(300);

/// Who wrote a statement, for the answer and `ask_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Author {
    provider: &'static str,
    model: String,
}

impl Author {
    /// `offline`, or `<provider>:<model>` (the translation cache keeps them apart).
    fn label(&self) -> String {
        if self.model.is_empty() {
            self.provider.to_owned()
        } else {
            format!("{}:{}", self.provider, self.model)
        }
    }
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
            cache: None,
        }
    }

    /// Keeps translations in the Redis at `redis_url`, under `namespace`, shared by the
    /// gateway's processes.
    pub fn with_translation_cache(mut self, redis_url: &str, namespace: &str) -> AskService {
        self.cache = Some(cache::TranslationCache::new(redis_url, namespace));
        self
    }

    /// Forgets the cached translations that mention one of `ids` (an erased person's);
    /// returns how many.
    pub async fn forget(&self, tenant: &str, ids: &[String]) -> u64 {
        match &self.cache {
            Some(cache) => cache.forget(tenant, ids).await,
            None => 0,
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

    /// Answers an admitted `question` ([`AskService::admit`]) for `tenant` at `now` (Unix
    /// seconds), whose data is complete up to `complete_until_ms`.
    ///
    /// # Errors
    /// [`AskError::Unavailable`] or [`AskError::Store`] when ClickHouse is unreachable.
    /// Everything else is an [`Answer`] with its [`answer::Outcome`].
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
        let doors = Doors { client, now, tz };
        let mut attempts = Attempts::default();
        let author = self.author();
        let key = cache::CacheKey {
            tenant: &tenant.id,
            translator: &author.label(),
            local_date: doors.today().to_string(),
            question,
        };
        let cached = match &self.cache {
            Some(cache) => cache.get(&key).await,
            None => None,
        };
        if self.cache.is_some() {
            self.metrics.observe_translation_cache(cached.is_some());
        }
        let mut answer = match cached {
            Some(cached) => {
                let translation = Translation {
                    query: cached.query,
                    notes: cached.notes,
                };
                let mut answer = self
                    .answer_typed(&doors, tenant, question, translation, &author)
                    .await?;
                answer.add_note("Translation from the cache; the numbers are computed now.".into());
                answer
            }
            None => {
                let answer = self
                    .translate_and_answer(
                        &doors,
                        tenant,
                        question,
                        complete_until_ms,
                        &mut attempts,
                    )
                    .await?;
                if let (Some(cache), Some(query), Outcome::Answered) =
                    (&self.cache, &answer.query, answer.outcome)
                    && answer.sql.is_none()
                    && answer.provider == author.provider
                {
                    let cached = cache::Cached {
                        query: query.clone(),
                        notes: answer.translation_notes.clone(),
                    };
                    cache.put(&key, &cached).await;
                }
                answer
            }
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

    /// Who translates when the model budget allows: the configured model, else the offline
    /// translator.
    fn author(&self) -> Author {
        match &self.provider {
            Some(provider) => Author {
                provider: provider.config().kind.name(),
                model: provider.config().model.clone(),
            },
            None => OFFLINE,
        }
    }

    /// The model (within its budget), else the offline translator.
    async fn translate_and_answer(
        &self,
        doors: &Doors<'_>,
        tenant: &Tenant,
        question: &str,
        complete_until_ms: Option<i64>,
        attempts: &mut Attempts,
    ) -> Result<Answer, AskError> {
        let Some(provider) = &self.provider else {
            return self.ask_offline(doors, tenant, question).await;
        };
        if !self.spend_model_call(&tenant.id, false) {
            let mut answer = self.ask_offline(doors, tenant, question).await?;
            answer.add_note(format!(
                "Today's budget of {} model calls is spent; answered by the offline translator.",
                self.limits.model_calls_per_day
            ));
            return Ok(answer);
        }
        match self
            .ask_model(
                provider,
                doors,
                tenant,
                question,
                complete_until_ms,
                attempts,
            )
            .await
        {
            Ok(answer) => Ok(answer),
            Err(ModelFailure::Store) => Err(AskError::Store),
            Err(ModelFailure::Provider(error)) => {
                tracing::warn!(error = %error_chain(&error), "model unavailable; the offline translator answers");
                let mut answer = self.ask_offline(doors, tenant, question).await?;
                answer.add_note(format!(
                    "The model failed ({error}); answered by the offline translator instead."
                ));
                Ok(answer)
            }
        }
    }

    /// Runs a typed query through its door and words the answer.
    async fn answer_typed(
        &self,
        doors: &Doors<'_>,
        tenant: &Tenant,
        question: &str,
        translation: Translation,
        author: &Author,
    ) -> Result<Answer, AskError> {
        let outcome = typed::execute(doors.client, tenant, &translation.query, doors.now).await;
        if let Err(typed::ExecuteError::Unavailable) = outcome {
            return Err(AskError::Store);
        }
        Ok(Answer::from_typed(
            question,
            translation,
            outcome,
            doors.tz,
            author,
        ))
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

    /// The model's answer: a typed query of the model first (its names checked against the
    /// tenant's), guarded SQL for what the model cannot express, retried once with the error.
    async fn ask_model(
        &self,
        provider: &Provider,
        doors: &Doors<'_>,
        tenant: &Tenant,
        question: &str,
        complete_until_ms: Option<i64>,
        attempts: &mut Attempts,
    ) -> Result<Answer, ModelFailure> {
        let author = self.author();
        let vocabulary = self
            .vocabulary(doors, tenant)
            .await
            .map_err(|_| ModelFailure::Store)?;
        let system = prompt::system_prompt(&prompt::PromptFacts {
            server_version: self.server_version,
            today: doors.today().to_string(),
            time_zone: doors.tz.name(),
            complete_until: complete_until_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            names: prompt::names(&vocabulary),
        });
        let mut messages = vec![Message {
            role: "user",
            content: question.to_owned(),
        }];
        loop {
            attempts.count += 1;
            let completion = provider
                .complete(&system, &messages)
                .await
                .map_err(ModelFailure::Provider)?;
            attempts.input_tokens += completion.input_tokens;
            attempts.output_tokens += completion.output_tokens;
            let (answer, retry_with) = if let Some(typed) =
                provider::extract_typed(&completion.text)
            {
                self.model_typed(doors, tenant, question, typed, &vocabulary, &author)
                    .await?
            } else {
                let sql = provider::extract_sql(&completion.text);
                if sql.contains("CANNOT_ANSWER") {
                    return Ok(Answer::cannot_answer(
                        question,
                        "The model says the question cannot be answered from your analytics data.",
                        &author,
                    ));
                }
                self.model_sql(tenant, question, &sql, &author).await
            };
            match retry_with {
                Some(error) if attempts.count < 2 && self.spend_model_call(&tenant.id, true) => {
                    messages.push(Message {
                        role: "assistant",
                        content: completion.text,
                    });
                    messages.push(Message {
                        role: "user",
                        content: format!("{error}\nAnswer again: one corrected typed query, or one SELECT statement."),
                    });
                }
                _ => return Ok(answer),
            }
        }
    }

    /// The model's typed query: its names must be the tenant's; then it runs through its door.
    /// Returns the answer and, for a query the model could correct, what to tell it.
    async fn model_typed(
        &self,
        doors: &Doors<'_>,
        tenant: &Tenant,
        question: &str,
        typed: typed::TypedQuery,
        vocabulary: &Vocabulary,
        author: &Author,
    ) -> Result<(Answer, Option<String>), ModelFailure> {
        let unknown = vocabulary.unknown_names(&typed);
        if !unknown.is_empty() {
            let reason = format!(
                "The model used names this site does not have: {}.",
                unknown.join(", ")
            );
            let mut answer = Answer::cannot_answer(question, &reason, author);
            answer.query = Some(typed);
            return Ok((answer, Some(reason)));
        }
        let outcome = typed::execute(doors.client, tenant, &typed, doors.now).await;
        let retry_with = match &outcome {
            Err(typed::ExecuteError::Invalid(message)) => Some(format!(
                "The query model refused the typed query: {message}"
            )),
            Err(typed::ExecuteError::Unavailable) => return Err(ModelFailure::Store),
            _ => None,
        };
        let translation = Translation {
            query: typed,
            notes: Vec::new(),
        };
        Ok((
            Answer::from_typed(question, translation, outcome, doors.tz, author),
            retry_with,
        ))
    }

    /// The model's SQL, through the guard; and, for a statement the model could correct, what
    /// to tell it.
    async fn model_sql(
        &self,
        tenant: &Tenant,
        question: &str,
        sql: &str,
        author: &Author,
    ) -> (Answer, Option<String>) {
        let outcome = self.run_checked(tenant, sql).await;
        let retry_with = match &outcome {
            Ok(_) => None,
            Err(Failure::Refused(reason)) => Some(format!("The SQL guard refused it: {reason}")),
            Err(Failure::Query { class, detail }) => {
                // The server's text can quote row values: the model gets the class and, for an
                // unknown name, the name (its own text), nothing else.
                let name = run::unknown_name(detail)
                    .map(|name| format!(" ({name})"))
                    .unwrap_or_default();
                Some(format!("ClickHouse failed: {}{name}", class.describe()))
            }
            Err(Failure::Unavailable(_)) => None,
        };
        (
            Answer::from_model(question, sql, outcome, author),
            retry_with,
        )
    }

    async fn ask_offline(
        &self,
        doors: &Doors<'_>,
        tenant: &Tenant,
        question: &str,
    ) -> Result<Answer, AskError> {
        let vocabulary = self.vocabulary(doors, tenant).await?;
        let context = translator::Context {
            today: doors.today(),
            tz: doors.tz,
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
        self.answer_typed(doors, tenant, question, translation, &OFFLINE)
            .await
    }

    /// The tenant's names, read through the query model at most once a minute.
    async fn vocabulary(
        &self,
        doors: &Doors<'_>,
        tenant: &Tenant,
    ) -> Result<Arc<Vocabulary>, AskError> {
        if let Ok(cache) = self.vocabularies.lock()
            && let Some((read, vocabulary)) = cache.get(&tenant.id)
            && read.elapsed() < VOCABULARY_TTL
        {
            return Ok(vocabulary.clone());
        }
        let vocabulary = Arc::new(
            Vocabulary::read(doors.client, tenant, doors.now)
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

/// What typed queries run with: the query model's client, the request's "now" (Unix
/// seconds) and the tenant's zone.
struct Doors<'a> {
    client: &'a clickhouse::Client,
    now: i64,
    tz: Tz,
}

impl Doors<'_> {
    /// Today in the tenant's zone.
    fn today(&self) -> NaiveDate {
        chrono::DateTime::from_timestamp(self.now, 0)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .date_naive()
    }
}

/// Why the model gave no answer.
#[derive(Debug)]
enum ModelFailure {
    /// The provider failed: the offline translator answers instead.
    Provider(ProviderError),
    /// ClickHouse failed.
    Store,
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
