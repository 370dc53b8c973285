//! Request bodies as real clients send them: compressed (RudderStack's SDKs gzip every batch
//! by default), and with JSON that browsers produce but strict parsers refuse.

use std::borrow::Cow;
use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// Reads a request body and decodes its `Content-Encoding` (`gzip`, `x-gzip`, `deflate`, or
/// none), refusing more than `limit` bytes *after* decompression: a small compressed body that
/// inflates to gigabytes (a decompression bomb) stops at `limit + 1` bytes and gets `413`,
/// never an out-of-memory.
///
/// Errors: `413 request_too_large` past the limit, `415 unsupported_encoding` for another
/// encoding, `400 invalid_encoding` for a body that is not what its encoding says.
pub async fn read(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::RequestTooLarge { limit })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => inflate(flate2::read::MultiGzDecoder::new(&raw[..]), "gzip", limit),
        // HTTP's `deflate` is zlib-wrapped (RFC 9110); some clients send a raw deflate stream.
        "deflate" if has_zlib_header(&raw) => {
            inflate(flate2::read::ZlibDecoder::new(&raw[..]), "deflate", limit)
        }
        "deflate" => inflate(
            flate2::read::DeflateDecoder::new(&raw[..]),
            "deflate",
            limit,
        ),
        other => Err(ApiError::UnsupportedEncoding(other.to_owned())),
    }
}

/// A zlib stream starts with a compression-method byte of 8 (deflate) and a header whose two
/// bytes are a multiple of 31 (RFC 1950, 2.2).
fn has_zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn inflate(decoder: impl Read, encoding: &'static str, limit: usize) -> Result<Bytes, ApiError> {
    let mut inflated = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| ApiError::InvalidEncoding {
            encoding,
            reason: error.to_string(),
        })?;
    if inflated.len() > limit {
        return Err(ApiError::RequestTooLarge { limit });
    }
    Ok(inflated.into())
}

/// Replaces each JSON `\u` escape of a lone UTF-16 surrogate with `\ufffd` (U+FFFD).
///
/// Browsers cut strings by UTF-16 units, so a title truncated inside an emoji reaches us as
/// `"...\ud83d"`, which `JSON.stringify` escapes but a strict parser (serde_json, RFC 8259's
/// "should") refuses, failing the whole batch for one character. The replacement keeps the
/// text's length in bytes, so size limits see the same body. A body without such escapes is
/// returned as it is, without copying.
pub fn repair_lone_surrogates(json: &[u8]) -> Cow<'_, [u8]> {
    let mut repaired: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'\\' {
            i += 1;
            continue;
        }
        // Outside strings a backslash is invalid JSON anyway: the parser will say so.
        if json.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let unit = hex_unit(json, i + 2);
        let low_follows = || {
            json.get(i + 6..i + 8) == Some(b"\\u".as_slice())
                && hex_unit(json, i + 8).is_some_and(|next| (0xDC00..0xE000).contains(&next))
        };
        match unit {
            Some(0xD800..=0xDBFF) if low_follows() => i += 12,
            Some(0xD800..=0xDFFF) => {
                let out = repaired.get_or_insert_with(|| json.to_vec());
                out[i + 2..i + 6].copy_from_slice(b"fffd");
                i += 6;
            }
            _ => i += 2,
        }
    }
    repaired.map_or(Cow::Borrowed(json), Cow::Owned)
}

/// The code unit of the four hex digits at `at`, if they are four hex digits.
fn hex_unit(json: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(json.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write;

    fn headers(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap(),
        );
        headers
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_and_both_deflates_decode() {
        let json = br#"{"batch":[]}"#;
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(json).unwrap();
            e.finish().unwrap()
        };
        let raw = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(json).unwrap();
            e.finish().unwrap()
        };
        for (encoding, body) in [
            ("gzip", gzip(json)),
            ("deflate", zlib),
            ("deflate", raw),
            ("identity", json.to_vec()),
        ] {
            let decoded = read(Body::from(body), &headers(encoding), 1024)
                .await
                .unwrap();
            assert_eq!(&decoded[..], json, "{encoding}");
        }
    }

    #[tokio::test]
    async fn a_decompression_bomb_is_refused_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(
            bomb.len() < 500 * 1024,
            "{} bytes compressed: within the limit",
            bomb.len()
        );
        let error = read(Body::from(bomb), &headers("gzip"), 500 * 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ApiError::RequestTooLarge { limit: 512_000 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn unknown_and_broken_encodings_are_named() {
        let error = read(Body::from("{}"), &headers("br"), 1024)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "unsupported_encoding");
        let error = read(Body::from("{}"), &headers("gzip"), 1024)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "invalid_encoding");
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let cases: [(&str, &str); 6] = [
            (r#"{"t":"cut \ud83d"}"#, r#"{"t":"cut \ufffd"}"#),
            (r#"{"t":"\ude00 alone"}"#, r#"{"t":"\ufffd alone"}"#),
            (
                r#"{"t":"pair \ud83d\ude00 ok"}"#,
                r#"{"t":"pair \ud83d\ude00 ok"}"#,
            ),
            (
                r#"{"t":"high then high \ud83d\ud83d\ude00"}"#,
                r#"{"t":"high then high \ufffd\ud83d\ude00"}"#,
            ),
            (
                r#"{"t":"escaped backslash \\ud83d"}"#,
                r#"{"t":"escaped backslash \\ud83d"}"#,
            ),
            (r#"{"t":"\u00e9 plain"}"#, r#"{"t":"\u00e9 plain"}"#),
        ];
        for (input, expected) in cases {
            let repaired = repair_lone_surrogates(input.as_bytes());
            assert_eq!(std::str::from_utf8(&repaired).unwrap(), expected);
            assert_eq!(repaired.len(), input.len());
            let value: serde_json::Value = serde_json::from_slice(&repaired).unwrap();
            assert!(value["t"].is_string());
        }
        assert!(matches!(repair_lone_surrogates(b"{}"), Cow::Borrowed(_)));
    }
}
