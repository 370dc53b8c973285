//! Clients of the user's own model: Anthropic's Messages API and any OpenAI-compatible
//! `/chat/completions` server (llama.cpp, vLLM, Ollama, OpenAI itself).
//!
//! Wire formats: Anthropic `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`, answer text in `content[].text`, tokens in
//! `usage.{input,output}_tokens` (docs.anthropic.com, Messages API). OpenAI-compatible
//! `POST {base}/chat/completions` (the base URL includes `/v1`, as those servers document it)
//! with `Authorization: Bearer`, text in `choices[0].message.content`, tokens in
//! `usage.{prompt,completion}_tokens`.
//!
//! Nothing the model answers is trusted: the body is bounded, the JSON checked, and the SQL
//! goes through the guard.

use std::time::Duration;

use serde_json::{Value, json};

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions.
    Openai,
}

impl ProviderKind {
    /// The name logged in `ask_log.provider`.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
        }
    }
}

/// How to reach a model. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Wire format.
    pub kind: ProviderKind,
    /// e.g. `https://api.anthropic.com` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Model name, e.g. `claude-sonnet-4-5` or `qwen2.5-coder`.
    pub model: String,
    /// API key; local servers often need none.
    pub api_key: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Largest answer the model may write, tokens.
    pub max_tokens: u32,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer text.
    pub text: String,
    /// Prompt tokens, as the provider counted them.
    pub input_tokens: u32,
    /// Answer tokens.
    pub output_tokens: u32,
}

/// Largest response body read from a provider, bytes: an answer is one SQL statement.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why the model gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer within the configured timeout.
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    /// The server could not be reached.
    #[error("the model server could not be reached")]
    Unreachable(#[source] reqwest::Error),
    /// The server answered with an error status.
    #[error("the model server answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the body, for the log.
        body: String,
    },
    /// The answer exceeded [`MAX_RESPONSE_BYTES`].
    #[error("the model's answer exceeded {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The body was not the provider's JSON.
    #[error("the model server's answer is not in its documented format: {0}")]
    Malformed(String),
}

/// A configured model.
#[derive(Debug, Clone)]
pub struct Provider {
    config: ProviderConfig,
    http: reqwest::Client,
}

impl Provider {
    /// A client for `config`.
    pub fn new(config: ProviderConfig) -> Provider {
        // No redirects: reqwest would carry the key's header to whatever host a redirect
        // names.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Provider { config, http }
    }

    /// The configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Asks the model: `system` instructions, then the conversation.
    ///
    /// # Errors
    /// [`ProviderError`]: timeout, unreachable, error status, oversized or malformed answer.
    pub async fn complete(
        &self,
        system: &str,
        messages: &[Message],
    ) -> Result<Completion, ProviderError> {
        let config = &self.config;
        let base = config.base_url.trim_end_matches('/');
        let turns: Vec<Value> = messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let request = match config.kind {
            ProviderKind::Anthropic => {
                let mut request = self
                    .http
                    .post(format!("{base}/v1/messages"))
                    .header("anthropic-version", "2023-06-01")
                    .json(&json!({
                        "model": config.model,
                        "max_tokens": config.max_tokens,
                        "temperature": 0,
                        "system": system,
                        "messages": turns,
                    }));
                if let Some(key) = &config.api_key {
                    request = request.header("x-api-key", key);
                }
                request
            }
            ProviderKind::Openai => {
                let mut all = vec![json!({"role": "system", "content": system})];
                all.extend(turns);
                let mut request = self
                    .http
                    .post(format!("{base}/chat/completions"))
                    .json(&json!({
                        "model": config.model,
                        "max_tokens": config.max_tokens,
                        "temperature": 0,
                        "messages": all,
                    }));
                if let Some(key) = &config.api_key {
                    request = request.bearer_auth(key);
                }
                request
            }
        };
        let body = tokio::time::timeout(config.timeout, self.send(request))
            .await
            .map_err(|_| ProviderError::Timeout(config.timeout))??;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|error| ProviderError::Malformed(error.to_string()))?;
        parse_completion(config.kind, &value)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, ProviderError> {
        let mut response = request.send().await.map_err(ProviderError::Unreachable)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(ProviderError::Unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ProviderError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(ProviderError::Status {
                status: status.as_u16(),
                body: text.chars().take(500).collect(),
            });
        }
        Ok(body)
    }
}

fn parse_completion(kind: ProviderKind, value: &Value) -> Result<Completion, ProviderError> {
    let malformed = |what: &str| ProviderError::Malformed(format!("no {what}"));
    let tokens = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    match kind {
        ProviderKind::Anthropic => {
            let blocks = value
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("content"))?;
            let text: String = blocks
                .iter()
                .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|block| block.get("text").and_then(Value::as_str))
                .collect();
            if text.is_empty() {
                return Err(malformed("text block in content"));
            }
            Ok(Completion {
                text,
                input_tokens: tokens("/usage/input_tokens"),
                output_tokens: tokens("/usage/output_tokens"),
            })
        }
        ProviderKind::Openai => {
            let text = value
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("choices[0].message.content"))?;
            Ok(Completion {
                text: text.to_owned(),
                input_tokens: tokens("/usage/prompt_tokens"),
                output_tokens: tokens("/usage/completion_tokens"),
            })
        }
    }
}

/// The typed query of an answer: a ```json block (or the whole answer) that reads as a
/// [`super::typed::TypedQuery`]; `None` for SQL or anything else.
pub fn extract_typed(text: &str) -> Option<super::typed::TypedQuery> {
    let fenced = text.split("```").nth(1).map(|block| {
        let block = block.trim_start();
        block.strip_prefix("json").unwrap_or(block)
    });
    serde_json::from_str(fenced.unwrap_or(text).trim()).ok()
}

/// The SQL in a model's answer: the first fenced code block if there is one, else the whole
/// text; a trailing semicolon dropped.
pub fn extract_sql(text: &str) -> String {
    let fenced = text.split("```").nth(1).map(|block| {
        let block = block.trim_start();
        block
            .strip_prefix("sql")
            .or_else(|| block.strip_prefix("SQL"))
            .or_else(|| block.strip_prefix("clickhouse"))
            .unwrap_or(block)
    });
    fenced
        .unwrap_or(text)
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_taken_from_a_fence_or_the_whole_answer() {
        assert_eq!(
            extract_sql("Here:\n```sql\nSELECT 1 FROM events;\n```\nDone"),
            "SELECT 1 FROM events"
        );
        assert_eq!(
            extract_sql("  SELECT 2 FROM events ; "),
            "SELECT 2 FROM events"
        );
    }

    #[test]
    fn both_wire_formats_parse() {
        let anthropic = json!({"content": [{"type": "text", "text": "SELECT 1"}], "usage": {"input_tokens": 10, "output_tokens": 3}});
        let completion = parse_completion(ProviderKind::Anthropic, &anthropic).unwrap();
        assert_eq!(
            (completion.text.as_str(), completion.input_tokens),
            ("SELECT 1", 10)
        );
        let openai = json!({"choices": [{"message": {"role": "assistant", "content": "SELECT 2"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}});
        let completion = parse_completion(ProviderKind::Openai, &openai).unwrap();
        assert_eq!(
            (completion.text.as_str(), completion.output_tokens),
            ("SELECT 2", 2)
        );
        assert!(parse_completion(ProviderKind::Openai, &anthropic).is_err());
    }
}
