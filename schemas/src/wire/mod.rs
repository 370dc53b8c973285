//! The binary wire format of the records in Kafka: one version byte, then the bincode 2
//! (standard config) encoding of that version's type.
//!
//! - Version 1: an [`Event`].
//! - Version 2 (issue 20): a record, an event or a gateway's [`IngestWarning`].
//! - Version 3 (written since issue 22): a [`Record`] as version 2, its event with
//!   `utm_content`, `utm_term`, the gateway's enrichment (client, location, acquisition) and
//!   the `non_interactive` flag.
//!
//! Versions 1 and 2 are still read (see `legacy`), their new fields empty.
//!
//! The version byte lets a newer gateway and an older engine (or the reverse) coexist during a
//! rolling upgrade: a reader refuses versions it does not know with a clear error, which the
//! engine routes to its dead-letter table instead of misreading bytes. Upgrade the engines
//! before the gateways.

mod legacy;
mod strings;

use bincode::{Decode, Encode};

use crate::{Event, IngestWarning};

/// The version written by this build.
pub const CURRENT_VERSION: u8 = 3;

/// What one Kafka record of the events topic holds.
// Nearly every record is an event, decoded and moved out at once: boxing it would cost an
// allocation per event to save bytes on a value that lives for a moment.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Record {
    /// An accepted event.
    Event(Event),
    /// A refused event or an ignored field, for `ingestion_warnings`.
    Warning(IngestWarning),
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Zero-length payload.
    #[error("empty payload")]
    Empty,
    /// A version byte this build does not understand.
    #[error("unknown wire format version {0} (this build reads versions 1 to {CURRENT_VERSION})")]
    UnknownVersion(u8),
    /// The bytes after the version byte are not a valid record.
    #[error("malformed record: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    /// Bytes were left over after a complete record.
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
}

/// Encodes an event as a current-version [`Record::Event`], without copying it into a record:
/// bincode writes an enum as its variant index (a varint, one byte here) and then the fields.
pub fn encode(event: &Event) -> Vec<u8> {
    encode_variant(0, event)
}

/// Encodes a gateway's warning as a current-version [`Record::Warning`].
pub fn encode_warning(warning: &IngestWarning) -> Vec<u8> {
    encode_variant(1, warning)
}

fn encode_variant(variant: u8, value: &impl Encode) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(256);
    buffer.extend([CURRENT_VERSION, variant]);
    // Writing into a Vec cannot fail, and every field type of a record is encodable.
    if let Err(error) = bincode::encode_into_std_write(value, &mut buffer, config()) {
        unreachable!("encoding into a Vec failed: {error}");
    }
    buffer
}

/// Decodes a payload of any version this build understands.
pub fn decode(payload: &[u8]) -> Result<Record, WireError> {
    let (&version, body) = payload.split_first().ok_or(WireError::Empty)?;
    match version {
        1 => decode_whole::<legacy::EventV2>(body).map(|event| Record::Event(event.into())),
        2 => decode_whole::<legacy::RecordV2>(body).map(Record::from),
        3 => decode_whole(body),
        other => Err(WireError::UnknownVersion(other)),
    }
}

fn decode_whole<T: Decode<()>>(body: &[u8]) -> Result<T, WireError> {
    let (value, read) = bincode::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(WireError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

/// Limits allocations so that a corrupt length prefix cannot make a reader allocate gigabytes.
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 1 << 20 }>,
> {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Acquisition, Campaign, Client, EventKind, Location, Page};
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        let ids = (
            ".{0,12}", ".{0,12}", ".{0,12}", ".{0,12}", ".{0,12}", ".{0,12}",
        );
        let times = (
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            any::<i64>(),
        );
        let kv = proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4);
        (
            ids,
            times,
            proptest::sample::select(EventKind::ALL.to_vec()),
            (kv.clone(), kv.clone(), kv),
            (".{0,16}", ".{0,16}", any::<bool>()),
            // Every other string, each starting with its own index: a decoder that read two
            // fields in the wrong order cannot give the event back.
            proptest::collection::vec(".{0,6}", 22).prop_map(|parts| {
                parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, part)| format!("{i}:{part}"))
                    .collect::<Vec<_>>()
            }),
            any::<bool>(),
        )
            .prop_map(
                |(
                    (tenant, message_id, name, anonymous_id, user_id, previous_id),
                    (timestamp_ms, original_timestamp_ms, sent_at_ms, received_at_ms),
                    kind,
                    (properties, traits, context),
                    (path, user_agent, is_bot),
                    parts,
                    non_interactive,
                )| {
                    let part = |i: usize| parts[i].clone();
                    Event {
                        tenant,
                        message_id,
                        kind,
                        name,
                        anonymous_id,
                        user_id,
                        previous_id,
                        group_id: part(0),
                        timestamp_ms,
                        original_timestamp_ms,
                        sent_at_ms,
                        received_at_ms,
                        page: Page {
                            path,
                            url: part(1),
                            referrer: part(2),
                            title: part(3),
                        },
                        campaign: Campaign {
                            source: part(4).into(),
                            medium: part(5).into(),
                            name: part(6).into(),
                            content: part(7).into(),
                            term: part(8).into(),
                        },
                        ip: part(9),
                        user_agent,
                        is_bot,
                        locale: part(10),
                        library: part(11),
                        properties,
                        traits,
                        context,
                        client: Client {
                            device: part(12).into(),
                            browser: part(13).into(),
                            browser_version: part(14).into(),
                            os: part(15).into(),
                            os_version: part(16).into(),
                        },
                        location: Location {
                            country: part(17).into(),
                            region: part(18).into(),
                            city: part(19).into(),
                        },
                        acquisition: Acquisition {
                            source: part(20).into(),
                            channel: part(21).into(),
                        },
                        non_interactive,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(event in arb_event()) {
            let bytes = encode(&event);
            prop_assert_eq!(bytes[0], CURRENT_VERSION);
            prop_assert_eq!(decode(&bytes).unwrap(), Record::Event(event));
        }

        /// A reader that cannot lend its bytes (a stream) takes the copying path.
        #[test]
        fn a_stream_reads_the_same_event(event in arb_event()) {
            let bytes = encode(&event);
            let mut stream = std::io::Cursor::new(&bytes[1..]);
            let read: Record = bincode::decode_from_std_read(&mut stream, config()).unwrap();
            prop_assert_eq!(read, Record::Event(event));
        }

        #[test]
        fn truncation_is_an_error_not_a_panic(event in arb_event(), cut in 0usize..64) {
            let bytes = encode(&event);
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn unknown_version_is_refused_by_name() {
        let mut bytes = encode(&sample());
        bytes[0] = 7;
        let error = decode(&bytes).unwrap_err();
        assert!(matches!(error, WireError::UnknownVersion(7)), "{error:?}");
        assert!(error.to_string().contains("version 7"));
        bytes[0] = 3;
        bytes[1] = 9;
        assert!(
            matches!(decode(&bytes), Err(WireError::Malformed(_))),
            "an unknown record kind"
        );
    }

    /// A corrupt length prefix is refused before anything is allocated for it.
    #[test]
    fn a_string_longer_than_the_limit_is_refused() {
        // Version 3, an event, then a tenant of 2^40 bytes (varint: 253 then 8 bytes LE).
        let mut bytes = vec![3, 0, 253];
        bytes.extend((1u64 << 40).to_le_bytes());
        bytes.extend([0; 16]);
        let error = decode(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                WireError::Malformed(bincode::error::DecodeError::LimitExceeded)
            ),
            "{error:?}"
        );
    }

    #[test]
    fn empty_and_trailing_bytes_are_refused() {
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(WireError::TrailingBytes(1))));
    }

    fn decoded_event(bytes: &[u8]) -> Event {
        match decode(bytes) {
            Ok(Record::Event(event)) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    /// Two events with different clients hold one copy of the strings they share (through
    /// the dictionary, not the part memo); a long value is read right but not kept; a thread
    /// that has seen more values than its dictionary and its part memos hold starts afresh
    /// and still reads every value right.
    #[test]
    fn dimension_strings_are_shared_and_the_dictionary_stays_bounded() {
        let mut event = sample();
        event.client.browser = "Firefox".into();
        event.campaign.content = "c".repeat(strings::SHARED_UP_TO_BYTES + 1).into();
        let bytes = encode(&event);
        let first = decoded_event(&bytes);
        assert_eq!(first, event);
        let mut other = event.clone();
        other.client.os_version = "another".into();
        // A campaign too long for the memo, so that its strings are decoded again.
        other.campaign.term = "t".repeat(strings::MEMO_UP_TO_BYTES).into();
        let second = decoded_event(&encode(&other));
        assert_eq!(second, other);
        assert!(crate::ArcStr::ptr_eq(
            &first.client.browser,
            &second.client.browser
        ));
        assert!(!crate::ArcStr::ptr_eq(
            &first.campaign.content,
            &second.campaign.content
        ));
        let (mut most_strings, mut most_locations) = (0, 0);
        for city in 0..strings::DICTIONARY_CAPACITY + 10 {
            event.location.city = format!("city {city}").into();
            event.client.os_version = format!("{city}.0").into();
            assert_eq!(decoded_event(&encode(&event)), event);
            most_strings = most_strings.max(strings::dictionary_len());
            most_locations = most_locations.max(strings::location_memo_len());
        }
        assert_eq!(most_strings, strings::DICTIONARY_CAPACITY);
        assert_eq!(most_locations, strings::MEMO_CAPACITY);
        assert!(strings::location_memo_len() < strings::MEMO_CAPACITY);
        let after = decoded_event(&bytes);
        assert_eq!(after.client.browser, "Firefox");
        assert!(!crate::ArcStr::ptr_eq(
            &first.client.browser,
            &after.client.browser
        ));
    }

    /// A part is found by its bytes: a part decoded before is the same copy of each string,
    /// even one longer than the dictionary keeps; a part one byte apart, one longer than
    /// the memo keeps, one of strings too long for a one-byte length and one with an empty
    /// string read as themselves.
    #[test]
    fn parts_are_memoized_by_their_bytes() {
        let mut event = sample();
        event.location = Location {
            country: "DE".into(),
            region: "Bavaria".into(),
            city: "M".repeat(strings::SHARED_UP_TO_BYTES + 10).into(),
        };
        let bytes = encode(&event);
        let first = decoded_event(&bytes);
        let kept = strings::location_memo_len();
        let second = decoded_event(&bytes);
        assert_eq!(strings::location_memo_len(), kept);
        assert_eq!(second, event);
        assert!(crate::ArcStr::ptr_eq(
            &first.location.city,
            &second.location.city
        ));
        let mut next = event.clone();
        next.location.city = "N".repeat(strings::SHARED_UP_TO_BYTES + 10).into();
        assert_eq!(decoded_event(&encode(&next)), next);
        assert!(strings::location_memo_len() == kept + 1 || strings::location_memo_len() == 1);
        let mut variants = vec![];
        next.location.region = "r".repeat(strings::MEMO_UP_TO_BYTES / 2).into();
        variants.push(next.clone());
        next.location.city = "M".repeat(250).into();
        variants.push(next.clone());
        next.location.city = "M".repeat(251).into();
        variants.push(next.clone());
        next.location.region = "".into();
        variants.push(next.clone());
        next.client.browser = "b".repeat(300).into();
        variants.push(next);
        for variant in variants {
            let (once, twice) = (
                decoded_event(&encode(&variant)),
                decoded_event(&encode(&variant)),
            );
            assert_eq!((&once, &twice), (&variant, &variant));
        }
        assert_eq!(decoded_event(&bytes), event);
    }

    /// Whether a record is over the decoder's limit does not depend on what the thread
    /// decoded before: a part found in the memo claims what decoding it would. Records of
    /// many empty properties cross the 1 MiB limit by a few bytes around 21,840 pairs.
    #[test]
    fn a_memoized_part_claims_what_decoding_it_would() {
        let mut event = sample();
        let outcomes: Vec<(bool, bool)> = std::thread::spawn(move || {
            (21_800..21_880)
                .map(|pairs| {
                    // A campaign of its own: the first decode reads it, the second finds it.
                    event.campaign.source = format!("google {pairs}").into();
                    event.properties = vec![(String::new(), String::new()); pairs];
                    let bytes = encode(&event);
                    (decode(&bytes).is_ok(), decode(&bytes).is_ok())
                })
                .collect()
        })
        .join()
        .unwrap();
        assert!(
            outcomes.iter().all(|(first, second)| first == second),
            "{outcomes:?}"
        );
        assert!(outcomes.iter().any(|(first, _)| *first));
        assert!(outcomes.iter().any(|(first, _)| !*first));
    }

    /// The dimension parts are encoded by hand: each field, in declaration order, as a
    /// `String` (a length, then the bytes), as the derived encoding wrote them before.
    #[test]
    fn dimension_parts_keep_their_field_order_on_the_wire() {
        fn bytes(value: &impl Encode) -> Vec<u8> {
            bincode::encode_to_vec(value, config()).unwrap()
        }
        let campaign = Campaign {
            source: "s".into(),
            medium: "m".into(),
            name: "n".into(),
            content: "c".into(),
            term: "t".into(),
        };
        assert_eq!(
            bytes(&campaign),
            [1, b's', 1, b'm', 1, b'n', 1, b'c', 1, b't']
        );
        let client = Client {
            device: "d".into(),
            browser: "b".into(),
            browser_version: "v".into(),
            os: "o".into(),
            os_version: "w".into(),
        };
        assert_eq!(
            bytes(&client),
            [1, b'd', 1, b'b', 1, b'v', 1, b'o', 1, b'w']
        );
        let location = Location {
            country: "c".into(),
            region: "r".into(),
            city: "y".into(),
        };
        assert_eq!(bytes(&location), [1, b'c', 1, b'r', 1, b'y']);
        let acquisition = Acquisition {
            source: "s".into(),
            channel: "c".into(),
        };
        assert_eq!(bytes(&acquisition), [1, b's', 1, b'c']);
        let read =
            |encoded: &[u8]| -> Client { bincode::decode_from_slice(encoded, config()).unwrap().0 };
        assert_eq!(read(&bytes(&client)), client);
    }

    /// A dimension string that is not UTF-8 makes the record malformed, like any string.
    #[test]
    fn a_dimension_string_that_is_not_utf8_is_refused() {
        let mut event = sample();
        event.client.browser = "\u{263a}".into();
        let mut bytes = encode(&event);
        let at = bytes
            .windows(3)
            .position(|window| window == "\u{263a}".as_bytes())
            .expect("the browser's bytes");
        bytes[at] = 0xFF;
        let error = decode(&bytes).unwrap_err();
        assert!(
            matches!(
                error,
                WireError::Malformed(bincode::error::DecodeError::Utf8 { .. })
            ),
            "{error:?}"
        );
    }

    /// The v1 layout, as gateways before issue 20 wrote it: logs still hold such records,
    /// so they must read the same forever.
    const VERSION_1_SAMPLE: [u8; 42] = [
        1, 1, b'a', 2, b'm', b'1', 1, 1, b'/', 2, b'a', b'1', 0, 0, 0, 200, 0, 0, 202, 4, b'/',
        b'x', b'/', b'y', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, b'k', 1, b'v', 0, 0,
    ];

    #[test]
    fn version_1_records_still_read_as_events() {
        assert_eq!(decode(&VERSION_1_SAMPLE).unwrap(), Record::Event(sample()));
    }

    /// A version 2 record of `sample()` (its event body is version 1's), as gateways wrote
    /// it before version 3.
    #[test]
    fn version_2_records_still_read() {
        let mut bytes = vec![2, 0];
        bytes.extend(&VERSION_1_SAMPLE[1..]);
        assert_eq!(decode(&bytes).unwrap(), Record::Event(sample()));
        let warning = [2, 1, 1, b'a', 2, 1, b'm', 1, b'f', 1, b'v', 1, b'd', 10];
        assert!(matches!(decode(&warning), Ok(Record::Warning(_))));
    }

    /// Pins the v3 layout: if this changes, old Kafka data becomes unreadable, so bump
    /// `CURRENT_VERSION` and keep a decoder for version 3 instead of editing this test. An
    /// event is the version byte, the variant, version 1's body with two more campaign
    /// strings after the first three, then the client, location and acquisition strings and
    /// the `non_interactive` flag.
    #[test]
    fn version_3_layout_is_stable() {
        let mut event = sample();
        event.campaign.term = "t".into();
        event.client.browser = "B".into();
        event.location.country = "DE".into();
        event.acquisition.channel = "C".into();
        let bytes = encode(&event);
        // In the version 1 sample (version byte at 0) the campaign's three strings start at 27.
        let campaign_at = 27;
        let mut expected = vec![3, 0];
        expected.extend(&VERSION_1_SAMPLE[1..campaign_at]);
        expected.extend([0, 0, 0, 0, 1, b't']);
        expected.extend(&VERSION_1_SAMPLE[campaign_at + 3..]);
        expected.extend([0, 1, b'B', 0, 0, 0, 2, b'D', b'E', 0, 0, 0, 1, b'C', 0]);
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes).unwrap(), Record::Event(event));
        let warning = IngestWarning {
            tenant: "a".into(),
            kind: crate::WarningKind::InvalidIpIgnored,
            message_id: "m".into(),
            field: "f".into(),
            value: "v".into(),
            detail: "d".into(),
            received_at_ms: 5,
        };
        let bytes = encode_warning(&warning);
        assert_eq!(
            bytes,
            [3, 1, 1, b'a', 2, 1, b'm', 1, b'f', 1, b'v', 1, b'd', 10]
        );
        assert_eq!(decode(&bytes).unwrap(), Record::Warning(warning));
    }

    fn sample() -> Event {
        Event {
            tenant: "a".into(),
            message_id: "m1".into(),
            kind: EventKind::Page,
            name: "/".into(),
            anonymous_id: "a1".into(),
            user_id: String::new(),
            previous_id: String::new(),
            group_id: String::new(),
            timestamp_ms: 100,
            original_timestamp_ms: None,
            sent_at_ms: None,
            received_at_ms: 101,
            page: Page {
                path: "/x/y".into(),
                ..Page::default()
            },
            campaign: Campaign::default(),
            ip: String::new(),
            user_agent: String::new(),
            is_bot: true,
            locale: String::new(),
            library: String::new(),
            properties: vec![("k".into(), "v".into())],
            traits: vec![],
            context: vec![],
            ..Event::new("", "", EventKind::Page, 0)
        }
    }
}
