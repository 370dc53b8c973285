//! The event layout of wire versions 1 and 2, kept so that records written before version 3
//! (which added `utm_content`, `utm_term` and the enrichment) still read during a rolling
//! upgrade and from a log that holds them.

use arcstr::ArcStr;
use bincode::Decode;

use crate::IngestWarning;

use crate::event::{Acquisition, Campaign, Client, Event, EventKind, Location, Page};

/// A record as versions 1 and 2 wrote it.
#[allow(clippy::large_enum_variant)]
#[derive(Decode)]
pub(super) enum RecordV2 {
    Event(EventV2),
    Warning(IngestWarning),
}

/// `Campaign` before `content` and `term`.
#[derive(Decode)]
struct CampaignV2 {
    source: String,
    medium: String,
    name: String,
}

/// `Event` as versions 1 and 2 laid it out: the field order is the format.
#[derive(Decode)]
pub(super) struct EventV2 {
    tenant: String,
    message_id: String,
    kind: EventKind,
    name: String,
    anonymous_id: String,
    user_id: String,
    previous_id: String,
    group_id: String,
    timestamp_ms: i64,
    original_timestamp_ms: Option<i64>,
    sent_at_ms: Option<i64>,
    received_at_ms: i64,
    page: Page,
    campaign: CampaignV2,
    ip: String,
    user_agent: String,
    is_bot: bool,
    locale: String,
    library: String,
    properties: Vec<(String, String)>,
    traits: Vec<(String, String)>,
    context: Vec<(String, String)>,
}

impl From<EventV2> for Event {
    /// The fields version 3 added are empty: such an event was not enriched.
    fn from(old: EventV2) -> Event {
        Event {
            tenant: old.tenant,
            message_id: old.message_id,
            kind: old.kind,
            name: old.name,
            anonymous_id: old.anonymous_id,
            user_id: old.user_id,
            previous_id: old.previous_id,
            group_id: old.group_id,
            timestamp_ms: old.timestamp_ms,
            original_timestamp_ms: old.original_timestamp_ms,
            sent_at_ms: old.sent_at_ms,
            received_at_ms: old.received_at_ms,
            page: old.page,
            campaign: Campaign {
                source: old.campaign.source.into(),
                medium: old.campaign.medium.into(),
                name: old.campaign.name.into(),
                content: ArcStr::new(),
                term: ArcStr::new(),
            },
            ip: old.ip,
            user_agent: old.user_agent,
            is_bot: old.is_bot,
            locale: old.locale,
            library: old.library,
            properties: old.properties,
            traits: old.traits,
            context: old.context,
            client: Client::default(),
            location: Location::default(),
            acquisition: Acquisition::default(),
            non_interactive: false,
        }
    }
}

impl From<RecordV2> for crate::Record {
    fn from(old: RecordV2) -> crate::Record {
        match old {
            RecordV2::Event(event) => crate::Record::Event(event.into()),
            RecordV2::Warning(warning) => crate::Record::Warning(warning),
        }
    }
}
