//! A question as tokens the translator consumes one by one: contractions expanded, numbers in
//! words read as numbers, paths, quoted names and ids kept whole, every word stemmed (Snowball's
//! English stemmer) so that "sign-ups" meets `Signed Up` and "checkouts" meets
//! `Checkout Completed`.

use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A word (lowercased in [`Token::word`]).
    Word,
    /// A cardinal number, in digits or words.
    Number(u32),
    /// An ordinal: `1st`, `third`.
    Ordinal(u32),
    /// A path: `/pricing`.
    Path,
    /// A name in quotes (quotes removed, case kept).
    Quoted,
    /// Letters and digits mixed (`demo-user-2`, `u3`): an id, case kept.
    Id,
    /// An ISO date `2026-11-01`.
    Date(chrono::NaiveDate),
}

/// One token and whether a recogniser has used it.
#[derive(Debug, Clone)]
pub struct Token {
    /// As written (case kept).
    pub raw: String,
    /// Lowercased.
    pub word: String,
    /// The word's stem, undoubled (`added` and `add` both `ad`).
    pub stem: String,
    /// Its kind.
    pub kind: Kind,
    /// Taken by a recogniser.
    pub used: bool,
}

/// The stem the translator compares words by: Snowball's English stem, with a final doubled
/// consonant undoubled, so that "add" and "added" (stem `ad`) meet.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut stem = STEMMER.stem(&lower).into_owned();
    let bytes = stem.as_bytes();
    if bytes.len() >= 3 && bytes[bytes.len() - 1] == bytes[bytes.len() - 2] {
        let last = bytes[bytes.len() - 1];
        if last.is_ascii_alphabetic() && !b"aeiou".contains(&last) {
            stem.pop();
        }
    }
    stem
}

/// The words of a name (`Signed Up`, `black_friday`, `Mac OS X`), stemmed.
pub fn name_stems(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(stem)
        .collect()
}

const CONTRACTIONS: [(&str, &str); 27] = [
    ("what's", "what is"),
    ("how's", "how is"),
    ("how'd", "how did"),
    ("what'd", "what did"),
    ("who's", "who is"),
    ("where's", "where is"),
    ("when's", "when is"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("there's", "there is"),
    ("let's", "let us"),
    ("we've", "we have"),
    ("we're", "we are"),
    ("i'm", "i am"),
    ("i'd", "i would"),
    ("didn't", "did not"),
    ("don't", "do not"),
    ("doesn't", "does not"),
    ("isn't", "is not"),
    ("aren't", "are not"),
    ("wasn't", "was not"),
    ("weren't", "were not"),
    ("haven't", "have not"),
    ("hasn't", "has not"),
    ("can't", "can not"),
    ("won't", "will not"),
    ("y'all", "you"),
];

/// Words that only introduce a pasted message ("Support ticket, customer asks: \"…\"").
const FRAMING: &[&str] = &[
    "a", "an", "the", "from", "support", "ticket", "customer", "client", "user", "asks", "asked",
    "says", "said", "writes", "wrote", "email", "mail", "message", "pasted", "question", "request",
    "chat", "slack", "in", "our", "my",
];

const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const ORDINALS: [&str; 12] = [
    "zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh",
];

fn number_word(word: &str) -> Option<u32> {
    if let Some(n) = UNITS.iter().position(|unit| *unit == word) {
        return u32::try_from(n).ok();
    }
    if let Some(n) = TENS.iter().position(|ten| *ten == word) {
        return u32::try_from(20 + 10 * n).ok();
    }
    match word {
        "a" | "an" => None,
        "dozen" => Some(12),
        "hundred" => Some(100),
        _ => None,
    }
}

fn ordinal_word(word: &str) -> Option<u32> {
    if let Some(n) = ORDINALS.iter().position(|ordinal| *ordinal == word) {
        return u32::try_from(n).ok();
    }
    let digits = word
        .strip_suffix("st")
        .or_else(|| word.strip_suffix("nd"))
        .or_else(|| word.strip_suffix("rd"))
        .or_else(|| word.strip_suffix("th"))?;
    digits.parse().ok().filter(|_| !digits.is_empty())
}

/// The question's tokens, in order.
pub fn tokenize(question: &str) -> Vec<Token> {
    let text = question
        .replace(['\u{2019}', '\u{2018}'], "'")
        .replace(['\u{201c}', '\u{201d}'], "\"");
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|d| *d == c)
                .map_or(chars.len(), |p| i + 1 + p);
            let inner: String = chars[i + 1..end].iter().collect();
            if inner.split_whitespace().count() >= 4 {
                // Quoted prose (a pasted message) is read as words; a quoted name stays whole.
                // What introduces it ("Support ticket, customer asks:") is framing.
                if chars[..i].iter().rev().find(|c| !c.is_whitespace()) == Some(&':')
                    && tokens
                        .iter()
                        .all(|t: &Token| FRAMING.contains(&t.word.as_str()))
                {
                    tokens.clear();
                }
                tokens.extend(tokenize(&inner));
            } else if !inner.trim().is_empty() {
                tokens.push(token(inner.trim(), Kind::Quoted));
            }
            i = end + 1;
        } else if c == '/' && (i == 0 || !chars[i - 1].is_alphanumeric()) {
            let end = chars[i..]
                .iter()
                .position(|d| !(d.is_alphanumeric() || "/-_.~%".contains(*d)))
                .map_or(chars.len(), |p| i + p);
            let path: String = chars[i..end].iter().collect();
            tokens.push(token(path.trim_end_matches(['.', ',']), Kind::Path));
            i = end;
        } else if c.is_alphanumeric() {
            let end = chars[i..]
                .iter()
                .position(|d| !(d.is_alphanumeric() || "-_'".contains(*d)))
                .map_or(chars.len(), |p| i + p);
            let word: String = chars[i..end].iter().collect();
            push_word(&mut tokens, word.trim_end_matches(['-', '\'']));
            i = end;
        } else {
            i += 1;
        }
    }
    join_number_words(tokens)
}

fn token(raw: &str, kind: Kind) -> Token {
    let word = raw.to_lowercase();
    Token {
        raw: raw.to_owned(),
        stem: stem(&word),
        word,
        kind,
        used: false,
    }
}

fn push_word(tokens: &mut Vec<Token>, raw: &str) {
    let lower = raw.to_lowercase();
    if let Some((_, expanded)) = CONTRACTIONS.iter().find(|(short, _)| *short == lower) {
        for part in expanded.split(' ') {
            tokens.push(token(part, Kind::Word));
        }
        return;
    }
    let raw = raw
        .strip_suffix("'s")
        .or_else(|| raw.strip_suffix("s'"))
        .unwrap_or(raw);
    let lower = raw.to_lowercase();
    if let Ok(date) = chrono::NaiveDate::parse_from_str(&lower, "%Y-%m-%d") {
        tokens.push(token(raw, Kind::Date(date)));
    } else if let Ok(number) = lower.parse::<u32>() {
        tokens.push(token(raw, Kind::Number(number)));
    } else if let Some((digits, unit)) = short_span(&lower) {
        tokens.push(token(digits, Kind::Number(digits.parse().unwrap_or(0))));
        tokens.push(token(unit, Kind::Word));
    } else if let Some(ordinal) = ordinal_word(&lower) {
        tokens.push(token(raw, Kind::Ordinal(ordinal)));
    } else if let Some((digits, unit)) = lower.split_once('-').filter(|(digits, unit)| {
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && matches!(
                unit.trim_end_matches('s'),
                "day" | "hour" | "minute" | "week" | "month"
            )
    }) {
        tokens.push(token(digits, Kind::Number(digits.parse().unwrap_or(0))));
        tokens.push(token(unit, Kind::Word));
    } else if lower.chars().any(|c| c.is_ascii_digit()) {
        tokens.push(token(raw, Kind::Id));
    } else if lower.contains(['-', '_']) {
        for part in lower.split(['-', '_']).filter(|part| !part.is_empty()) {
            push_word(tokens, part);
        }
    } else if let Some(number) = number_word(&lower) {
        tokens.push(token(raw, Kind::Number(number)));
    } else {
        tokens.push(token(raw.trim_matches('\''), Kind::Word));
    }
}

/// `24h`, `7d`, `2w`: a number and its unit.
fn short_span(word: &str) -> Option<(&str, &'static str)> {
    let split = word.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = word.split_at(split);
    let unit = match unit {
        "h" | "hr" | "hrs" => "hours",
        "d" => "days",
        "w" | "wk" | "wks" => "weeks",
        "mo" => "months",
        _ => return None,
    };
    (!digits.is_empty()).then_some((digits, unit))
}

/// "twenty five" and "twenty-five" as one number.
fn join_number_words(tokens: Vec<Token>) -> Vec<Token> {
    let mut joined: Vec<Token> = Vec::with_capacity(tokens.len());
    for token in tokens {
        if let (Some(last), Kind::Number(unit)) = (joined.last_mut(), &token.kind)
            && let Kind::Number(tens) = last.kind
            && tens >= 20
            && tens % 10 == 0
            && *unit < 10
            && TENS.contains(&last.word.as_str())
        {
            last.kind = Kind::Number(tens + unit);
            last.raw = format!("{} {}", last.raw, token.raw);
            continue;
        }
        joined.push(token);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(question: &str) -> Vec<(String, Kind)> {
        tokenize(question)
            .into_iter()
            .map(|t| (t.word, t.kind))
            .collect()
    }

    #[test]
    fn contractions_numbers_paths_and_ids() {
        let tokens = kinds(
            "What's the twenty-five top /docs/getting-started pages for demo-user-2 on Nov 3rd?",
        );
        assert_eq!(tokens[0], ("what".into(), Kind::Word));
        assert_eq!(tokens[1], ("is".into(), Kind::Word));
        assert_eq!(tokens[3].1, Kind::Number(25));
        assert_eq!(tokens[5], ("/docs/getting-started".into(), Kind::Path));
        assert_eq!(tokens[8], ("demo-user-2".into(), Kind::Id));
        assert_eq!(tokens[11].1, Kind::Ordinal(3));
    }

    #[test]
    fn stems_meet_across_forms() {
        assert_eq!(stem("added"), stem("add"));
        assert_eq!(stem("signed"), stem("sign"));
        assert_eq!(stem("checkouts"), stem("checkout"));
        assert_eq!(stem("upgrades"), stem("upgraded"));
        assert_eq!(name_stems("Signed Up"), vec!["sign", "up"]);
        let words: Vec<String> = tokenize("sign-ups").into_iter().map(|t| t.stem).collect();
        assert_eq!(words, vec!["sign", "up"]);
    }
}
