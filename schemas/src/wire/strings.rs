//! `Decode` for the event and its parts, each string copied from the payload once, and
//! `Encode` for the parts whose strings are shared.
//!
//! bincode 2 decodes a `String` through `Vec<u8>`, which it allocates zero-filled and then
//! overwrites with the bytes (`vec![0u8; len]`, then a read): the zeroing alone took about a
//! twentieth of an engine worker's time (`perf` on `bench-operators`, 2026-12-05). A payload
//! is a slice, so a string's bytes can be validated in place and copied into an allocation
//! that is never zeroed; a reader without that view falls back to bincode's way.
//!
//! The dimension parts (campaign, client, location, acquisition) are fifteen strings of every
//! event, about ten of them set, but take a few thousand values between them. Their strings
//! come from a dictionary per thread: a value already seen costs a lookup and a reference
//! count, not an allocation and a free, and the operators and the sinks' rows share one copy
//! of each. A whole part whose bytes the thread decoded lately is taken from a memo of its
//! kind at the cost of one lookup (see [`PartMemo`]).
//!
//! The fields are read in declaration order, the order the derived `Encode` writes them;
//! the dimension parts are written by `encode_strings!` in the same order. `wire`'s layout
//! tests pin both with literal bytes.

use std::cell::RefCell;

use arcstr::ArcStr;
use bincode::de::read::Reader;
use bincode::de::{Decode, Decoder};
use bincode::enc::{Encode, Encoder};
use bincode::error::{DecodeError, EncodeError};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::{Acquisition, Campaign, Client, Event, Location, Page};

/// A length prefix, as bincode writes one (a `u64`, varint in the standard configuration).
fn length<D: Decoder>(decoder: &mut D) -> Result<usize, DecodeError> {
    let length = u64::decode(decoder)?;
    usize::try_from(length).map_err(|_| DecodeError::OutsideUsizeRange(length))
}

/// A `String`, laid out as bincode's own: a length, then that many bytes of UTF-8. The
/// length is claimed against the configuration's limit before anything is allocated.
fn string<D: Decoder>(decoder: &mut D) -> Result<String, DecodeError> {
    let length = length(decoder)?;
    if length == 0 {
        // A quarter of an event's owned strings are absent ids and fields.
        return Ok(String::new());
    }
    decoder.claim_container_read::<u8>(length)?;
    if let Some(bytes) = decoder.reader().peek_read(length) {
        let text = utf8(bytes)?.to_owned();
        decoder.reader().consume(length);
        return Ok(text);
    }
    let mut bytes = vec![0u8; length];
    decoder.reader().read(&mut bytes)?;
    String::from_utf8(bytes).map_err(|error| DecodeError::Utf8 {
        inner: error.utf8_error(),
    })
}

/// `bytes` as text. SIMD validation is faster on the long strings (URLs, user agents); the
/// standard library's error says where the bytes went wrong, so it reports a failure.
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes).map_err(|inner| DecodeError::Utf8 { inner }),
    }
}

/// How many strings a thread's dictionary holds before it starts afresh, so that a stream of
/// ever-new values (a campaign per e-mail) cannot grow it without bound. Sharing only saves
/// work and memory: equality is always by content.
pub(super) const DICTIONARY_CAPACITY: usize = 1 << 14;

/// The longest string the dictionary keeps, in bytes: browsers, countries, channels and
/// most campaigns fit, and the dictionary holds at most a megabyte of text however long the
/// values a client sends (up to the event's size limit); the part memos keep some of the
/// strings alive after the dictionary let them go (see [`PartMemo`]).
pub(super) const SHARED_UP_TO_BYTES: usize = 64;

thread_local! {
    /// The dimension strings this thread decoded lately.
    static DICTIONARY: RefCell<FxHashSet<ArcStr>> = RefCell::new(FxHashSet::default());
}

/// How many strings this thread's dictionary holds.
#[cfg(test)]
pub(super) fn dictionary_len() -> usize {
    DICTIONARY.with_borrow(FxHashSet::len)
}

/// A dimension string, laid out as a `String`, shared through this thread's dictionary when
/// the reader lends its bytes and the string is short.
fn shared_string<D: Decoder>(decoder: &mut D) -> Result<ArcStr, DecodeError> {
    let length = length(decoder)?;
    if length == 0 {
        return Ok(ArcStr::new());
    }
    decoder.claim_container_read::<u8>(length)?;
    let Some(bytes) = decoder.reader().peek_read(length) else {
        let mut bytes = vec![0u8; length];
        decoder.reader().read(&mut bytes)?;
        return Ok(ArcStr::from(utf8(&bytes)?));
    };
    if length > SHARED_UP_TO_BYTES {
        let text = ArcStr::from(utf8(bytes)?);
        decoder.reader().consume(length);
        return Ok(text);
    }
    let shared = DICTIONARY.with_borrow_mut(|dictionary| {
        let text = utf8(bytes)?;
        if let Some(shared) = dictionary.get(text) {
            return Ok(shared.clone());
        }
        if dictionary.len() >= DICTIONARY_CAPACITY {
            dictionary.clear();
        }
        let shared = ArcStr::from(text);
        dictionary.insert(shared.clone());
        Ok(shared)
    })?;
    decoder.reader().consume(length);
    Ok(shared)
}

/// A `Vec<(String, String)>`, laid out as bincode's own.
fn pairs<D: Decoder>(decoder: &mut D) -> Result<Vec<(String, String)>, DecodeError> {
    let length = length(decoder)?;
    decoder.claim_container_read::<(String, String)>(length)?;
    let mut pairs = Vec::with_capacity(length);
    for _ in 0..length {
        // As bincode's `Vec` does: the claim above counted the pair's in-memory size, and
        // its strings claim their own bytes.
        decoder.unclaim_bytes_read(std::mem::size_of::<(String, String)>());
        pairs.push((string(decoder)?, string(decoder)?));
    }
    Ok(pairs)
}

/// `Decode` for a struct of strings only, read in the order the fields are listed (a struct
/// expression evaluates its fields in the order written), which must be the declaration
/// order; each string read by `$read`.
macro_rules! decode_strings {
    ($type:ident by $read:ident { $($field:ident),+ $(,)? }) => {
        impl<Context> Decode<Context> for $type {
            fn decode<D: Decoder<Context = Context>>(
                decoder: &mut D,
            ) -> Result<Self, DecodeError> {
                Ok($type {
                    $($field: $read(decoder)?,)+
                })
            }
        }
        bincode::impl_borrow_decode!($type);
    };
}

/// `Encode` for a struct of shared strings, each laid out as a `String` (a length, then the
/// bytes: bincode writes a `str` as it writes a `String`), in declaration order.
macro_rules! encode_strings {
    ($type:ident { $($field:ident),+ $(,)? }) => {
        impl Encode for $type {
            fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
                $(self.$field.as_str().encode(encoder)?;)+
                Ok(())
            }
        }
    };
}

/// How many parts of one kind a thread's [`PartMemo`] holds before it starts afresh.
pub(super) const MEMO_CAPACITY: usize = 1 << 12;

/// The longest encoded part the memo keeps, in bytes: a part of short strings (a client is
/// about 35 bytes, a location 20).
pub(super) const MEMO_UP_TO_BYTES: usize = 128;

/// The parts of one kind this thread decoded lately, by their encoded bytes.
///
/// A visitor's events carry the same client, location and, within a visit, campaign and
/// acquisition: a part's bytes seen before are its value again, found with one hash of the
/// part's bytes where decoding it looks up each of its two to five strings (validating,
/// hashing and comparing each: about a seventh of a worker's instructions in
/// `bench-operators`, callgrind on 2026-12-07). Equal bytes decode to equal values, so the
/// memo changes no result; a part that fails to decode is never kept, and a hit claims
/// against the configuration's limit exactly what decoding the part would have claimed, so
/// whether a record exceeds the limit does not depend on what the thread read before.
///
/// Bounded: [`MEMO_CAPACITY`] parts of at most [`MEMO_UP_TO_BYTES`] encoded bytes, a key of
/// that size and the part's strings (which the memo keeps alive beyond the dictionary's
/// bound), under 2 MiB per kind and thread at worst; a table, once grown, keeps its size.
///
/// The spans are read as bincode's varint lengths, the encoding of `wire`'s configuration,
/// the only one the dimension parts are decoded with.
#[derive(Debug)]
struct PartMemo<T>(FxHashMap<Box<[u8]>, T>);

impl<T> Default for PartMemo<T> {
    fn default() -> Self {
        PartMemo(FxHashMap::default())
    }
}

/// The encoded length of the `fields` strings at the reader's position, or `None` when the
/// reader does not lend its bytes, a length takes more than one byte (a string over 250
/// bytes), the part is longer than [`MEMO_UP_TO_BYTES`], or the bytes run out: the part is
/// then decoded as it comes.
fn part_span<D: Decoder>(decoder: &mut D, fields: usize) -> Option<usize> {
    /// bincode's varint: a value up to 250 is one byte (`SINGLE_BYTE_MAX` in bincode 2).
    const SINGLE_BYTE_MAX: u8 = 250;
    let mut span = 0;
    for _ in 0..fields {
        let &length = decoder.reader().peek_read(span + 1)?.last()?;
        if length > SINGLE_BYTE_MAX {
            return None;
        }
        span += 1 + usize::from(length);
        if span > MEMO_UP_TO_BYTES {
            return None;
        }
    }
    decoder.reader().peek_read(span).map(|_| span)
}

/// A part of `fields` dimension strings, from `memo` when its bytes were decoded before,
/// else by `decode` (and then kept).
fn memoized<D: Decoder, T: Clone + 'static>(
    decoder: &mut D,
    memo: &'static std::thread::LocalKey<RefCell<PartMemo<T>>>,
    fields: usize,
    decode: impl FnOnce(&mut D) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let Some(span) = part_span(decoder, fields) else {
        return decode(decoder);
    };
    let key = match decoder.reader().peek_read(span) {
        Some(bytes) => match memo.with_borrow(|memo| memo.0.get(bytes).cloned()) {
            Some(part) => {
                // What decoding it claims: 8 bytes for each length (a `u64`), then each
                // string's bytes; the span is a byte for each length and the strings' bytes.
                decoder.claim_bytes_read(span + 7 * fields)?;
                decoder.reader().consume(span);
                return Ok(part);
            }
            None => Box::<[u8]>::from(bytes),
        },
        None => return decode(decoder),
    };
    let part = decode(decoder)?;
    memo.with_borrow_mut(|memo| {
        if memo.0.len() >= MEMO_CAPACITY {
            memo.0.clear();
        }
        memo.0.insert(key, part.clone());
    });
    Ok(part)
}

thread_local! {
    static CAMPAIGNS: RefCell<PartMemo<Campaign>> = RefCell::default();
    static CLIENTS: RefCell<PartMemo<Client>> = RefCell::default();
    static LOCATIONS: RefCell<PartMemo<Location>> = RefCell::default();
    static ACQUISITIONS: RefCell<PartMemo<Acquisition>> = RefCell::default();
}

/// How many locations this thread's memo holds.
#[cfg(test)]
pub(super) fn location_memo_len() -> usize {
    LOCATIONS.with_borrow(|memo| memo.0.len())
}

/// `Decode` and `Encode` for a struct of dimension strings, decoded through the
/// [`PartMemo`] named.
macro_rules! shared_strings {
    ($type:ident by $memo:ident { $($field:ident),+ $(,)? }) => {
        impl<Context> Decode<Context> for $type {
            fn decode<D: Decoder<Context = Context>>(
                decoder: &mut D,
            ) -> Result<Self, DecodeError> {
                const FIELDS: usize = [$(stringify!($field)),+].len();
                memoized(decoder, &$memo, FIELDS, |decoder| {
                    Ok($type {
                        $($field: shared_string(decoder)?,)+
                    })
                })
            }
        }
        bincode::impl_borrow_decode!($type);
        encode_strings!($type { $($field),+ });
    };
}

decode_strings!(Page by string {
    path,
    url,
    referrer,
    title
});
shared_strings!(Campaign by CAMPAIGNS {
    source,
    medium,
    name,
    content,
    term
});
shared_strings!(Client by CLIENTS {
    device,
    browser,
    browser_version,
    os,
    os_version
});
shared_strings!(Location by LOCATIONS {
    country,
    region,
    city
});
shared_strings!(Acquisition by ACQUISITIONS { source, channel });

impl<Context> Decode<Context> for Event {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(Event {
            tenant: string(decoder)?,
            message_id: string(decoder)?,
            kind: Decode::decode(decoder)?,
            name: string(decoder)?,
            anonymous_id: string(decoder)?,
            user_id: string(decoder)?,
            previous_id: string(decoder)?,
            group_id: string(decoder)?,
            timestamp_ms: Decode::decode(decoder)?,
            original_timestamp_ms: Decode::decode(decoder)?,
            sent_at_ms: Decode::decode(decoder)?,
            received_at_ms: Decode::decode(decoder)?,
            page: Decode::decode(decoder)?,
            campaign: Decode::decode(decoder)?,
            ip: string(decoder)?,
            user_agent: string(decoder)?,
            is_bot: Decode::decode(decoder)?,
            locale: string(decoder)?,
            library: string(decoder)?,
            properties: pairs(decoder)?,
            traits: pairs(decoder)?,
            context: pairs(decoder)?,
            client: Decode::decode(decoder)?,
            location: Decode::decode(decoder)?,
            acquisition: Decode::decode(decoder)?,
            non_interactive: Decode::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(Event);
