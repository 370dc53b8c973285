//! Records that flow between the operators.

use std::sync::Arc;

pub use arcstr::ArcStr;

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxHashSet;
use schemas::{Acquisition, Campaign, Client, Event, EventKind, Location, definitions};
use serde::{Deserialize, Serialize};

/// A whole event, shared between the stages that need all of it (the events sink, late
/// events). The stateful operators keep an [`Activity`] instead.
pub type SharedEvent = Arc<Event>;

/// What the stateful operators keep of an event: the fields sessions, identity and the
/// aggregates read: 56 bytes (64 with its shared count, a [`triomphe::Arc`], which has no
/// weak count: mimalloc's 64-byte size class, where 72 took its 80), against about 1.3 KB
/// for a whole [`Event`] with its properties and context. Strings are [`ArcStr`]s (one
/// pointer each, where `Arc<str>` took two words) from an [`Interner`], so a visitor's
/// retained events share one copy of each; the tenant and the two ids are one shared
/// [`EventIds`], as are the landing's parts; the message id is a [`MessageId`], a UUID held in
/// place.
///
/// The whole event goes to the events sink once, when it arrives; a later change of its
/// session or person reaches the sink as a correction of those two columns (see
/// `engine/src/sink/tables/events.rs`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Activity {
    /// Tenant, `anonymousId` and `userId`: see [`Activity::tenant`],
    /// [`Activity::anonymous_id`], [`Activity::user_id`].
    ids: triomphe::Arc<EventIds>,
    /// Segment's `messageId`.
    pub message_id: MessageId,
    /// Event time, Unix ms UTC.
    pub timestamp_ms: i64,
    /// When the gateway received it, its kind and whether it is an interaction: see
    /// [`Activity::received_at_ms`], [`Activity::kind`], [`Activity::interaction`].
    receipt: Receipt,
    /// A track's or screen's name, a page's path: what [`Activity::label`] and
    /// [`Activity::location`] read, by kind; an alias's `previousId` ([`Activity::previous_id`],
    /// which an erasure matches), in a field an alias does not otherwise use.
    detail: ArcStr,
    /// Where the visit came from, shared by every event of the same origin.
    pub landing: SharedLanding,
}

/// Who an event is of: its tenant and ids, shared by the events with the same ids that one
/// worker's [`Interner`] sees (one allocation of 32 bytes per worker for a visit, where three
/// pointers in each event took 24 bytes an event).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventIds {
    /// Tenant.
    pub tenant: ArcStr,
    /// Segment's `anonymousId` (empty when absent or a placeholder).
    pub anonymous_id: ArcStr,
    /// Segment's `userId` (empty when absent or a placeholder).
    pub user_id: ArcStr,
}

/// An event's receive time (Unix ms UTC) with its kind and whether it is an interaction, in
/// one word: the receive time in the upper 56 bits (a million years either side of 1970),
/// the kind's index in [`EventKind::ALL`] in the lowest 3, the interaction flag above them.
/// Two bytes of their own would take an [`Activity`] from 56 bytes to 64, and with its
/// shared count from mimalloc's 64-byte size class to its 80.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Receipt(i64);

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("received_at_ms", &self.received_at_ms())
            .field("kind", &self.kind())
            .field("interaction", &self.interaction())
            .finish()
    }
}

impl Receipt {
    const KIND_BITS: i64 = 0b111;
    const INTERACTION_BIT: i64 = 0b1000;
    const SHIFT: u32 = 8;

    fn new(received_at_ms: i64, kind: EventKind, interaction: bool) -> Receipt {
        let limit = 1_i64 << (63 - Self::SHIFT);
        let received_at_ms = received_at_ms.clamp(-limit, limit - 1);
        let kind = EventKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default() as i64;
        let interaction = if interaction {
            Self::INTERACTION_BIT
        } else {
            0
        };
        Receipt((received_at_ms << Self::SHIFT) | interaction | kind)
    }

    fn received_at_ms(self) -> i64 {
        self.0 >> Self::SHIFT
    }

    fn kind(self) -> EventKind {
        EventKind::ALL[(self.0 & Self::KIND_BITS) as usize % EventKind::ALL.len()]
    }

    fn interaction(self) -> bool {
        self.0 & Self::INTERACTION_BIT != 0
    }
}

/// The `Events` dimension of the kinds without a name of their own (PostHog's names); empty
/// for a track, whose dimension is its own name.
fn built_in_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Track => "",
        EventKind::Page => "$pageview",
        EventKind::Screen => "$screen",
        EventKind::Identify => "$identify",
        EventKind::Alias => "$alias",
        EventKind::Group => "$group",
    }
}

/// A collection difference as the 32-bit count that compact state keeps. Dedup lets each
/// message through once, so counts stay small; one that overflowed would saturate, not wrap.
pub(crate) fn saturating_count(diff: isize) -> i32 {
    i32::try_from(diff).unwrap_or(if diff > 0 { i32::MAX } else { i32::MIN })
}

/// The empty string: static, so neither making nor cloning it allocates or counts.
pub fn empty_str() -> ArcStr {
    ArcStr::new()
}

/// Segment's `messageId` as the operators hold it, in 16 bytes: a UUID in its canonical text
/// (lowercase and hyphenated: what the gateway assigns, and what Segment's and RudderStack's
/// libraries send) as its 128 bits, any other text shared. It compares, hashes, prints and
/// serializes as its text, so nothing downstream can tell the two forms apart. An
/// [`ArcStr`] would take 8 bytes and an allocation of 52 per event.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageId(MessageIdRepr);

#[derive(Clone, PartialEq, Eq)]
enum MessageIdRepr {
    /// The UUID's high and low halves. A UUID whose low half is zero is kept as text: the
    /// zero is the niche that keeps the id at 16 bytes.
    Uuid(u64, std::num::NonZeroU64),
    /// Any other text, including the empty id of an event that is in no session.
    Text(ArcStr),
}

impl MessageId {
    /// The id of `text`; a canonical UUID (36 characters) is parsed, anything else shared.
    pub fn new(text: &str) -> MessageId {
        MessageId(Self::uuid(text).unwrap_or_else(|| MessageIdRepr::Text(ArcStr::from(text))))
    }

    /// The empty id: static, so it allocates nothing.
    pub fn empty() -> MessageId {
        MessageId(MessageIdRepr::Text(ArcStr::new()))
    }

    /// `text` as a UUID when it is one in canonical form, which alone prints back as `text`.
    fn uuid(text: &str) -> Option<MessageIdRepr> {
        if text.len() != 36 {
            return None;
        }
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        let mut canonical = [0u8; 36];
        if uuid.hyphenated().encode_lower(&mut canonical).as_bytes() != text.as_bytes() {
            return None;
        }
        let (high, low) = uuid.as_u64_pair();
        Some(MessageIdRepr::Uuid(high, std::num::NonZeroU64::new(low)?))
    }

    /// The id's text (on the stack for a UUID).
    pub fn text(&self) -> MessageIdText<'_> {
        match &self.0 {
            MessageIdRepr::Uuid(high, low) => {
                let mut buffer = [0u8; 36];
                uuid::Uuid::from_u64_pair(*high, low.get())
                    .hyphenated()
                    .encode_lower(&mut buffer);
                MessageIdText::Uuid(buffer)
            }
            MessageIdRepr::Text(text) => MessageIdText::Text(text),
        }
    }

    /// Whether the id is empty.
    pub fn is_empty(&self) -> bool {
        matches!(&self.0, MessageIdRepr::Text(text) if text.is_empty())
    }
}

/// A [`MessageId`]'s text, borrowed or, for a UUID, printed on the stack.
#[derive(Debug)]
pub enum MessageIdText<'a> {
    /// A UUID's 36 ASCII characters.
    Uuid([u8; 36]),
    /// Any other id.
    Text(&'a str),
}

impl std::ops::Deref for MessageIdText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Always ASCII: written by `encode_lower`.
            MessageIdText::Uuid(buffer) => std::str::from_utf8(buffer).unwrap_or_default(),
            MessageIdText::Text(text) => text,
        }
    }
}

impl From<&str> for MessageId {
    fn from(text: &str) -> MessageId {
        MessageId::new(text)
    }
}

impl From<String> for MessageId {
    fn from(text: String) -> MessageId {
        MessageId::new(&text)
    }
}

impl Ord for MessageId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            // Canonical UUIDs sort as text in the order of their bits: lowercase hex digits
            // sort as their values, and the hyphens stand at the same places.
            (MessageIdRepr::Uuid(a, b), MessageIdRepr::Uuid(c, d)) => (a, b).cmp(&(c, d)),
            _ => (*self.text()).cmp(&*other.text()),
        }
    }
}

impl PartialOrd for MessageId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for MessageId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (*self.text()).hash(state)
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.text(), f)
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(MessageId::new(&text))
    }
}

/// Where a visit came from and on what: what a session takes from its first event. Each part
/// is interned on its own (a site has a few dozen distinct clients and campaigns, a few
/// thousand locations), so a landing is five shared references (40 bytes), shared by every
/// event of the same origin, and a session holds one pointer to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Landing {
    /// The page's referrer.
    pub referrer: ArcStr,
    /// The five UTM fields.
    pub campaign: Arc<Campaign>,
    /// Source and channel, as the gateway classified them.
    pub acquisition: Arc<Acquisition>,
    /// Browser, OS and device.
    pub client: Arc<Client>,
    /// Country, region and city.
    pub location: Arc<Location>,
}

/// Activities are shared, not copied, between the operators that hold them.
pub type SharedActivity = triomphe::Arc<Activity>;

/// A landing shared by the events and sessions of the same origin. `triomphe`'s `Arc` has no
/// weak count, 8 bytes less than the standard one's: a visitor's page views each have a
/// landing of their own (the referrer is the page before), so there are about as many
/// landings as page views with a new referrer.
pub type SharedLanding = triomphe::Arc<Landing>;

impl Activity {
    /// The activity of `event`, its strings taken from `interner`. The message id is not
    /// interned: it is unique.
    pub fn of(event: &Event, interner: &mut Interner) -> Activity {
        let detail = match event.kind {
            EventKind::Page => &event.page.path,
            EventKind::Track | EventKind::Screen => &event.name,
            EventKind::Alias => &event.previous_id,
            EventKind::Identify | EventKind::Group => "",
        };
        Activity {
            ids: interner.ids(event),
            message_id: MessageId::new(&event.message_id),
            timestamp_ms: event.timestamp_ms,
            receipt: Receipt::new(event.received_at_ms, event.kind, event.is_interaction()),
            detail: interner.intern(detail),
            landing: interner.landing(event),
        }
    }

    /// Tenant.
    pub fn tenant(&self) -> &ArcStr {
        &self.ids.tenant
    }

    /// Segment's `anonymousId` (empty when absent or a placeholder).
    pub fn anonymous_id(&self) -> &ArcStr {
        &self.ids.anonymous_id
    }

    /// Segment's `userId` (empty when absent or a placeholder).
    pub fn user_id(&self) -> &ArcStr {
        &self.ids.user_id
    }

    /// When the gateway received the event, Unix ms UTC (within a million years of 1970).
    pub fn received_at_ms(&self) -> i64 {
        self.receipt.received_at_ms()
    }

    /// Kind of call.
    pub fn kind(&self) -> EventKind {
        self.receipt.kind()
    }

    /// A person's doing: not a bot's, not flagged non-interactive (see
    /// [`schemas::definitions`]); only interactions are activity.
    pub fn interaction(&self) -> bool {
        self.receipt.interaction()
    }

    /// Whether the event is activity (see [`schemas::definitions::is_activity`]).
    pub fn is_activity(&self) -> bool {
        definitions::is_activity(self.kind(), self.interaction())
    }

    /// Whether the event is a page view (see [`schemas::definitions::is_page_view`]).
    pub fn is_page_view(&self) -> bool {
        definitions::is_page_view(self.kind(), self.interaction())
    }

    /// The `Events` dimension of the event: a track's name, else `$pageview`, `$screen`,
    /// `$identify`, ... (PostHog's names for the built-in kinds).
    pub fn label(&self) -> &str {
        match self.kind() {
            EventKind::Track => &self.detail,
            kind => built_in_label(kind),
        }
    }

    /// [`Activity::label`], shared: what the per-minute rollups key their rows by.
    pub fn shared_label(&self) -> ArcStr {
        // By the kind's discriminant: `EventKind::ALL` lists the kinds in declaration order.
        static BUILT_IN: std::sync::LazyLock<[ArcStr; 6]> = std::sync::LazyLock::new(|| {
            EventKind::ALL.map(|kind| ArcStr::from(built_in_label(kind)))
        });
        match self.kind() {
            EventKind::Track => self.detail.clone(),
            kind => BUILT_IN[kind as usize].clone(),
        }
    }

    /// An alias's `previousId`; empty for other events.
    pub fn previous_id(&self) -> &str {
        match self.kind() {
            EventKind::Alias => &self.detail,
            _ => "",
        }
    }

    /// Where a page view happened, as [`Event::page_view_location`]; empty otherwise.
    pub fn location(&self) -> &str {
        match self.kind() {
            EventKind::Page | EventKind::Screen => &self.detail,
            _ => "",
        }
    }

    /// [`Activity::location`], shared: what a session keeps as its entry and exit path.
    pub fn shared_location(&self) -> ArcStr {
        match self.kind() {
            EventKind::Page | EventKind::Screen => self.detail.clone(),
            _ => empty_str(),
        }
    }

    /// The id that keys the visitor, as [`Event::visitor_id`]; shared.
    pub fn visitor(&self) -> &ArcStr {
        if self.ids.anonymous_id.is_empty() {
            &self.ids.user_id
        } else {
            &self.ids.anonymous_id
        }
    }
}

/// Shares equal strings, ids and landings within one worker. Interning only saves memory:
/// equality is always by content.
///
/// A table that reaches its sweep size forgets the entries no record holds any more (their
/// only reference is the table's) instead of everything: starting afresh made a second copy
/// of every string and landing still in use, 6.6 MB of `bench-operators`' 222 MB of state.
/// After a sweep the table sweeps next at a quarter more than it kept (or at the first sweep
/// size, whichever is more) and is shrunk to room for that many: a table holds at most a quarter more than the
/// entries in use at its last sweep, or the first sweep size, and a sweep, which visits the
/// table's entries, comes after at least a quarter as many inserts as it leaves entries
/// (O(1) an insert). At twice, a long-running engine held up to as many strings and landings
/// no event used any more as it used (`bench memory`: 1.74x the interned entries over the
/// second half of the run).
#[derive(Debug)]
pub struct Interner {
    strings: Swept<FxHashSet<ArcStr>>,
    /// By the hash of the three strings (see [`ids_hash`]), as landings are.
    ids: Swept<HashTable<triomphe::Arc<EventIds>>>,
    /// By the hash of the landing's content (see [`landing_hash`]): an event's landing is
    /// found in one probe, hashing its fields once, and a landing costs the table a pointer.
    landings: Swept<HashTable<SharedLanding>>,
    campaigns: Swept<FxHashSet<Arc<Campaign>>>,
    acquisitions: Swept<FxHashSet<Arc<Acquisition>>>,
    clients: Swept<FxHashSet<Arc<Client>>>,
    locations: Swept<FxHashSet<Arc<Location>>>,
}

/// One table of an [`Interner`] with the size at which it next sweeps.
#[derive(Debug)]
struct Swept<S> {
    table: S,
    first_sweep_at: usize,
    sweep_at: usize,
}

/// A table of shared values whose entries the table alone holds can be dropped.
trait Sweep {
    fn len(&self) -> usize;
    /// Drops the entries whose only reference is the table's.
    fn drop_unused(&mut self);
    /// Frees the room beyond what `entries` entries need.
    fn shrink_to(&mut self, entries: usize);
}

impl<T: Eq + std::hash::Hash> Sweep for FxHashSet<Arc<T>> {
    fn len(&self) -> usize {
        FxHashSet::len(self)
    }
    fn drop_unused(&mut self) {
        self.retain(|shared| Arc::strong_count(shared) > 1);
    }
    fn shrink_to(&mut self, entries: usize) {
        FxHashSet::shrink_to(self, entries);
    }
}

impl Sweep for FxHashSet<ArcStr> {
    fn len(&self) -> usize {
        FxHashSet::len(self)
    }
    fn drop_unused(&mut self) {
        // A literal (`strong_count` is `None`) is never freed: keeping it costs nothing.
        self.retain(|shared| ArcStr::strong_count(shared).is_none_or(|count| count > 1));
    }
    fn shrink_to(&mut self, entries: usize) {
        FxHashSet::shrink_to(self, entries);
    }
}

/// Values a [`HashTable`] of the interner holds, by the hash they were inserted under.
trait TableHash {
    fn table_hash(&self) -> u64;
}

impl TableHash for EventIds {
    fn table_hash(&self) -> u64 {
        ids_hash(&self.tenant, &self.anonymous_id, &self.user_id)
    }
}

impl TableHash for Landing {
    fn table_hash(&self) -> u64 {
        landing_hash(
            &self.referrer,
            &self.campaign,
            &self.acquisition,
            &self.client,
            &self.location,
        )
    }
}

impl<T: TableHash> Sweep for HashTable<triomphe::Arc<T>> {
    fn len(&self) -> usize {
        HashTable::len(self)
    }
    fn drop_unused(&mut self) {
        self.retain(|shared| triomphe::Arc::count(shared) > 1);
    }
    fn shrink_to(&mut self, entries: usize) {
        HashTable::shrink_to(self, entries, |shared| shared.table_hash());
    }
}

impl<S: Sweep + Default> Swept<S> {
    fn new(sweep_at: usize) -> Self {
        Swept {
            table: S::default(),
            first_sweep_at: sweep_at.max(1),
            sweep_at: sweep_at.max(1),
        }
    }

    /// The table, swept first if an insert would take it to its sweep size. The counts read
    /// are a snapshot, and safe to read: an entry counted at one is held by nothing but the
    /// table, so no other worker can clone it meanwhile; one counted above one may be
    /// dropped by its holders right after, and goes at a later sweep.
    fn for_insert(&mut self) -> &mut S {
        if self.table.len() >= self.sweep_at {
            self.table.drop_unused();
            let left = self.table.len();
            self.sweep_at = left.saturating_add(left / 4).max(self.first_sweep_at);
            // Room up to the next sweep, no more: shrinking to what is left would grow the
            // table again before that sweep.
            self.table.shrink_to(self.sweep_at);
        }
        &mut self.table
    }
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_capacity(1 << 16)
    }
}

impl Interner {
    /// An interner whose tables first sweep at `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Interner {
            strings: Swept::new(capacity),
            ids: Swept::new(capacity),
            landings: Swept::new(capacity),
            campaigns: Swept::new(capacity),
            acquisitions: Swept::new(capacity),
            clients: Swept::new(capacity),
            locations: Swept::new(capacity),
        }
    }

    /// The strings and shared parts held, in use or not yet swept.
    pub fn entries(&self) -> usize {
        self.strings.table.len()
            + self.ids.table.len()
            + self.landings.table.len()
            + self.campaigns.table.len()
            + self.acquisitions.table.len()
            + self.clients.table.len()
            + self.locations.table.len()
    }

    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> ArcStr {
        if let Some(shared) = self.strings.table.get(s) {
            return shared.clone();
        }
        let shared = ArcStr::from(s);
        self.strings.for_insert().insert(shared.clone());
        shared
    }

    /// The shared tenant and ids of an event.
    pub fn ids(&mut self, event: &Event) -> triomphe::Arc<EventIds> {
        let hash = ids_hash(&event.tenant, &event.anonymous_id, &event.user_id);
        let is_event_ids = |ids: &triomphe::Arc<EventIds>| {
            *ids.anonymous_id == *event.anonymous_id
                && *ids.user_id == *event.user_id
                && *ids.tenant == *event.tenant
        };
        if let Some(shared) = self.ids.table.find(hash, is_event_ids) {
            return shared.clone();
        }
        let shared = triomphe::Arc::new(EventIds {
            tenant: self.intern(&event.tenant),
            anonymous_id: self.intern(&event.anonymous_id),
            user_id: self.intern(&event.user_id),
        });
        self.ids
            .for_insert()
            .insert_unique(hash, shared.clone(), |ids| ids.table_hash());
        shared
    }

    /// The shared landing of an event: its referrer, campaign and enrichment.
    pub fn landing(&mut self, event: &Event) -> SharedLanding {
        let hash = landing_hash(
            &event.page.referrer,
            &event.campaign,
            &event.acquisition,
            &event.client,
            &event.location,
        );
        let is_event_landing = |landing: &SharedLanding| {
            *landing.referrer == *event.page.referrer
                && *landing.campaign == event.campaign
                && *landing.acquisition == event.acquisition
                && *landing.client == event.client
                && *landing.location == event.location
        };
        if let Some(shared) = self.landings.table.find(hash, is_event_landing) {
            return shared.clone();
        }
        // Parts are interned on their own too: visitors share a campaign or a browser far
        // more often than a whole landing.
        let shared = triomphe::Arc::new(Landing {
            referrer: self.intern(&event.page.referrer),
            campaign: shared(&mut self.campaigns, &event.campaign),
            acquisition: shared(&mut self.acquisitions, &event.acquisition),
            client: shared(&mut self.clients, &event.client),
            location: shared(&mut self.locations, &event.location),
        });
        self.landings
            .for_insert()
            .insert_unique(hash, shared.clone(), |landing| landing.table_hash());
        shared
    }
}

/// The hash of an event's tenant and ids, the same from an event's fields as from shared ones.
fn ids_hash(tenant: &str, anonymous_id: &str, user_id: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one((tenant, anonymous_id, user_id))
}

/// The hash of a landing's content, the same from an event's fields as from a landing's
/// shared parts.
fn landing_hash(
    referrer: &str,
    campaign: &Campaign,
    acquisition: &Acquisition,
    client: &Client,
    location: &Location,
) -> u64 {
    rustc_hash::FxBuildHasher.hash_one((referrer, campaign, acquisition, client, location))
}

/// The copy of `value` in `set`, added if it is new.
fn shared<T: Clone + Eq + std::hash::Hash>(
    set: &mut Swept<FxHashSet<Arc<T>>>,
    value: &T,
) -> Arc<T> {
    if let Some(found) = set.table.get(value) {
        return found.clone();
    }
    let found = Arc::new(value.clone());
    set.for_insert().insert(found.clone());
    found
}

/// What kind of id a node of the identity graph is. `User` sorts first, so the minimum label
/// of a component, the canonical person, is a known user id whenever the person has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdKind {
    /// A `userId` from the customer's own system.
    User,
    /// An `anonymousId` (or an alias's `previousId` that is no known user id).
    Anonymous,
}

/// One id of one tenant: a node of the identity graph. Its strings are shared: a node is
/// cloned into every record of its events (as their person), so a clone must not allocate.
///
/// 16 bytes: the tenant and the kind are one shared [`Scope`] (a kind beside two pointers
/// padded a node to 24, and nodes key the persons' maps and every timer of their due
/// indexes). It compares, orders, hashes and serializes as the struct `{tenant, kind, id}`
/// it was, fields in that order.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "NodeParts", into = "NodeParts")]
pub struct Node {
    scope: triomphe::Arc<Scope>,
    /// The id.
    pub id: ArcStr,
}

/// What the nodes of one tenant and kind share.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scope {
    tenant: ArcStr,
    kind: IdKind,
}

/// A [`Node`] as it serializes.
#[derive(Serialize, Deserialize)]
struct NodeParts {
    tenant: ArcStr,
    kind: IdKind,
    id: ArcStr,
}

impl From<NodeParts> for Node {
    fn from(parts: NodeParts) -> Node {
        Node::new(&parts.tenant, parts.kind, parts.id)
    }
}

impl From<Node> for NodeParts {
    fn from(node: Node) -> NodeParts {
        NodeParts {
            tenant: node.tenant().clone(),
            kind: node.kind(),
            id: node.id,
        }
    }
}

thread_local! {
    /// The scopes nodes built on this thread share, by tenant and then kind: two per tenant,
    /// kept for the thread's life (a removed tenant's too: a few dozen bytes).
    static SCOPES: std::cell::RefCell<rustc_hash::FxHashMap<ArcStr, [Option<triomphe::Arc<Scope>>; 2]>> =
        std::cell::RefCell::default();
}

impl Node {
    /// The node of `id`, of kind `kind`, of `tenant`.
    pub fn new(tenant: &ArcStr, kind: IdKind, id: ArcStr) -> Node {
        let scope = SCOPES.with_borrow_mut(|scopes| {
            let by_kind = match scopes.get_mut(tenant.as_str()) {
                Some(by_kind) => by_kind,
                None => scopes.entry(tenant.clone()).or_default(),
            };
            by_kind[kind as usize]
                .get_or_insert_with(|| {
                    triomphe::Arc::new(Scope {
                        tenant: tenant.clone(),
                        kind,
                    })
                })
                .clone()
        });
        Node { scope, id }
    }

    /// Tenant.
    pub fn tenant(&self) -> &ArcStr {
        &self.scope.tenant
    }

    /// Kind of id.
    pub fn kind(&self) -> IdKind {
        self.scope.kind
    }

    /// The node whose person an event belongs to: its `userId` when it has one, else its
    /// `anonymousId` (Segment's model: an event with a `userId` belongs to that user, even on
    /// a browser another user logged in on first).
    pub fn attribution_of(activity: &Activity) -> Node {
        let (tenant, kind, id) = Node::attribution_parts(activity);
        Node::new(tenant, kind, id.clone())
    }

    /// The parts of [`Node::attribution_of`], borrowed: they hash as the node they make (a
    /// node's `Hash` feeds tenant, kind and id in order, as a tuple does its elements, and a
    /// reference hashes as what it points to), so an event is routed to its node's worker
    /// without cloning two strings.
    pub fn attribution_parts(activity: &Activity) -> (&ArcStr, IdKind, &ArcStr) {
        if activity.user_id().is_empty() {
            (
                activity.tenant(),
                IdKind::Anonymous,
                activity.anonymous_id(),
            )
        } else {
            (activity.tenant(), IdKind::User, activity.user_id())
        }
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.id == other.id
            && (triomphe::Arc::ptr_eq(&self.scope, &other.scope) || self.scope == other.scope)
    }
}

impl Eq for Node {}

impl Ord for Node {
    fn cmp(&self, other: &Node) -> std::cmp::Ordering {
        (&*self.scope, &self.id).cmp(&(&*other.scope, &other.id))
    }
}

impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Node) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Node {
    /// As the struct `{tenant, kind, id}` (and the tuple [`Node::attribution_parts`]) hash.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scope.tenant.hash(state);
        self.scope.kind.hash(state);
        self.id.hash(state);
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("tenant", self.tenant())
            .field("kind", &self.kind())
            .field("id", &self.id)
            .finish()
    }
}

/// A person: the canonical node of a connected component of linked ids.
pub type Person = Node;

/// Where a record sits in the log: `(partition, offset)`.
pub type Position = (i32, i64);

/// A statement about identity, taken from events or control messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentityClaim {
    /// This anonymous id is this user: made by `identify` and by any other event that carries
    /// both ids. Ordered by (`time_ms`, `message_id`), the first claim on an anonymous id
    /// decides which user it belongs to.
    Identify {
        /// Tenant.
        tenant: String,
        /// Event time of the claiming event.
        time_ms: i64,
        /// Tie breaker for claims at the same millisecond.
        message_id: String,
        /// The anonymous id.
        anonymous_id: String,
        /// The user id.
        user_id: String,
    },
    /// `alias`: `previous_id` and `user_id` are the same person, always accepted. Segment's
    /// `previousId` is whatever id the user had before: an anonymous id, or an earlier user
    /// id; it is resolved against the tenant's known user ids.
    Alias {
        /// Tenant.
        tenant: String,
        /// The earlier id, of either kind.
        previous_id: String,
        /// The user id.
        user_id: String,
    },
    /// This user id exists (an event carried it without an anonymous id). An alias's
    /// `previousId` that names a known user id merges with that user, not with an anonymous
    /// visitor of the same text.
    KnownUser {
        /// Tenant.
        tenant: String,
        /// The user id.
        user_id: String,
    },
}

impl IdentityClaim {
    /// The claims an event makes (after placeholder ids were removed): an identify claim when
    /// it carries both ids, an alias claim for `alias`, and otherwise a known-user claim
    /// when it carries a user id.
    pub fn of_event(event: &Event) -> impl Iterator<Item = IdentityClaim> + use<> {
        let tenant = || event.tenant.clone();
        let has_user = !event.user_id.is_empty();
        let identify =
            (has_user && !event.anonymous_id.is_empty()).then(|| IdentityClaim::Identify {
                tenant: tenant(),
                time_ms: event.timestamp_ms,
                message_id: event.message_id.clone(),
                anonymous_id: event.anonymous_id.clone(),
                user_id: event.user_id.clone(),
            });
        let alias = (event.kind == EventKind::Alias && has_user && !event.previous_id.is_empty())
            .then(|| IdentityClaim::Alias {
                tenant: tenant(),
                previous_id: event.previous_id.clone(),
                user_id: event.user_id.clone(),
            });
        // Both other claims already name the user id as a user.
        let known =
            (has_user && identify.is_none() && alias.is_none()).then(|| IdentityClaim::KnownUser {
                tenant: tenant(),
                user_id: event.user_id.clone(),
            });
        identify.into_iter().chain(alias).chain(known)
    }

    /// The user id the claim names (every claim names one).
    pub fn user_id(&self) -> &str {
        match self {
            IdentityClaim::Identify { user_id, .. }
            | IdentityClaim::Alias { user_id, .. }
            | IdentityClaim::KnownUser { user_id, .. } => user_id,
        }
    }

    /// The claim's tenant and the ids it names (a known-user claim names one; the other is
    /// empty), what an erasure matches it by.
    pub fn ids(&self) -> (&str, [&str; 2]) {
        match self {
            IdentityClaim::Identify {
                tenant,
                anonymous_id,
                user_id,
                ..
            } => (tenant, [anonymous_id, user_id]),
            IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            } => (tenant, [previous_id, user_id]),
            IdentityClaim::KnownUser { tenant, user_id } => (tenant, [user_id, ""]),
        }
    }

    /// The tenant of the claim.
    pub fn tenant(&self) -> &str {
        match self {
            IdentityClaim::Identify { tenant, .. }
            | IdentityClaim::Alias { tenant, .. }
            | IdentityClaim::KnownUser { tenant, .. } => tenant,
        }
    }
}

/// A link an operator removed (unmerge control message): between the id `from_id`, of
/// whichever kind the link resolved it to, and the user id `user_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unlink {
    /// Tenant.
    pub tenant: String,
    /// The anonymous id, or an alias's `previousId`.
    pub from_id: String,
    /// The user id.
    pub user_id: String,
}

impl Unlink {
    /// The unlink of `from_id` and `user_id`.
    pub fn new(tenant: &str, from_id: &str, user_id: &str) -> Unlink {
        Unlink {
            tenant: tenant.to_owned(),
            from_id: from_id.to_owned(),
            user_id: user_id.to_owned(),
        }
    }
}

/// An undirected link between two ids; a retraction of one unmerges.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Link {
    /// One end.
    pub a: Node,
    /// The other end.
    pub b: Node,
}

impl Link {
    /// The link between the id `from_id` of kind `from_kind` and the user id `user_id`.
    pub fn to_user(tenant: &str, from_kind: IdKind, from_id: &str, user_id: &str) -> Link {
        let tenant: ArcStr = ArcStr::from(tenant);
        Link {
            a: Node::new(&tenant, from_kind, ArcStr::from(from_id)),
            b: Node::new(&tenant, IdKind::User, ArcStr::from(user_id)),
        }
    }
}

/// A session: a person's events separated from the next by less than the inactivity gap.
///
/// Its strings are shared with the events and the person they come from: a session is rebuilt
/// and re-emitted (retraction and insertion) at every event that extends it, so building one
/// must not allocate a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Session {
    /// Tenant.
    pub tenant: ArcStr,
    /// The message id of the session's first event: stable while that event stays first.
    pub session_id: MessageId,
    /// The person's canonical id.
    pub person_id: ArcStr,
    /// The anonymous (or user) id of the first event.
    pub visitor_id: ArcStr,
    /// Event time of the first event.
    pub start_ms: i64,
    /// Event time of the last event.
    pub end_ms: i64,
    /// Activity events (page views and track calls) in the session.
    pub events: u32,
    /// Page views (`page` and `screen`) in the session.
    pub page_views: u32,
    /// Whether the session is a bounce, by its tenant's [`schemas::BounceRule`].
    pub bounce: bool,
    /// Location of the first page view (path, or screen name).
    pub entry_path: ArcStr,
    /// Location of the last page view (path, or screen name).
    pub exit_path: ArcStr,
    /// Referrer, campaign, source, channel, client and location of the first event.
    pub landing: SharedLanding,
}

impl Session {
    /// `end - start`.
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// An event with what the engine derived for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Enriched {
    /// The event.
    pub event: SharedActivity,
    /// Its session (the message id of the session's first event), empty for events that are
    /// not activity (identify, alias, group).
    pub session_id: MessageId,
    /// Its person's canonical id.
    pub person_id: ArcStr,
}

/// Which aggregate a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Events by name (`dimension`: track name, `$pageview`, `$screen`, `$identify`, ...).
    Events,
    /// Page views (`page` and `screen`) by location (`dimension`: path, or screen name).
    PageViews,
    /// Distinct visitors (anonymous ids) with activity in the minute.
    UniqueVisitors,
    /// Distinct persons with activity in the minute.
    UniquePersons,
    /// Sessions that started in the minute.
    SessionsStarted,
    /// Of those, bounces.
    Bounces,
    /// Of those, total duration in milliseconds.
    SessionDurationMs,
}

impl Metric {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Events => "events",
            Metric::PageViews => "page_views",
            Metric::UniqueVisitors => "unique_visitors",
            Metric::UniquePersons => "unique_persons",
            Metric::SessionsStarted => "sessions_started",
            Metric::Bounces => "bounces",
            Metric::SessionDurationMs => "session_duration_ms",
        }
    }
}

/// One aggregate value of one tenant and minute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggRow {
    /// Tenant.
    pub tenant: String,
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// Which aggregate.
    pub metric: Metric,
    /// Its dimension (empty for dimensionless metrics).
    pub dimension: String,
    /// Its value.
    pub value: i64,
}

/// Activity of one visitor, as one person, in one hour of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VisitorHour {
    /// Tenant.
    pub tenant: String,
    /// Start of the hour, Unix ms.
    pub hour_ms: i64,
    /// Anonymous id, or user id without one.
    pub visitor_id: String,
    /// The person the events belong to.
    pub person_id: String,
    /// Activity events.
    pub events: i64,
    /// Page views among them.
    pub page_views: i64,
}

/// Start of the minute containing `time_ms`.
pub fn minute_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(60_000) * 60_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;
    use proptest::prelude::*;

    /// The struct a node was before its tenant and kind were shared: a node must compare,
    /// order, hash and serialize as it did.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    struct PlainNode {
        tenant: ArcStr,
        kind: IdKind,
        id: ArcStr,
    }

    fn arb_node() -> impl Strategy<Value = (String, IdKind, String)> {
        let kind = prop_oneof![Just(IdKind::User), Just(IdKind::Anonymous)];
        ("t[ab]", kind, "[ab]{0,2}")
    }

    #[test]
    fn a_node_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }

    proptest! {
        /// Nodes built on different threads (different scopes) behave as the plain struct.
        #[test]
        fn a_node_behaves_as_the_plain_struct(a in arb_node(), b in arb_node()) {
            let plain = |(t, k, i): &(String, IdKind, String)| PlainNode {
                tenant: t.as_str().into(),
                kind: *k,
                id: i.as_str().into(),
            };
            let node = |(t, k, i): &(String, IdKind, String)| {
                Node::new(&ArcStr::from(t.as_str()), *k, i.as_str().into())
            };
            let here = node(&a);
            let b_elsewhere = {
                let b = b.clone();
                std::thread::spawn(move || node(&b)).join().expect("no panic")
            };
            let hash = |value: &dyn Fn(&mut std::hash::DefaultHasher)| {
                let mut hasher = std::hash::DefaultHasher::new();
                value(&mut hasher);
                std::hash::Hasher::finish(&hasher)
            };
            prop_assert_eq!(here == b_elsewhere, plain(&a) == plain(&b));
            prop_assert_eq!(here.cmp(&b_elsewhere), plain(&a).cmp(&plain(&b)));
            prop_assert_eq!(
                hash(&|h| std::hash::Hash::hash(&b_elsewhere, h)),
                hash(&|h| std::hash::Hash::hash(&plain(&b), h))
            );
            let bytes = bincode1::serialize(&here).expect("serializes");
            prop_assert_eq!(&bytes, &bincode1::serialize(&plain(&a)).expect("serializes"));
            let back: Node = bincode1::deserialize(&bytes).expect("deserializes");
            prop_assert_eq!(back, here);
        }
    }

    #[test]
    fn an_event_routes_to_the_worker_of_its_attribution_node() {
        let anonymous = event("t", "m1", "anon-1", 0);
        let mut known = event("t", "m2", "anon-1", 0);
        known.user_id = "user-1".into();
        let mut user_only = event("t2", "m3", "", 0);
        user_only.user_id = "anon-1".into();
        for event in [anonymous, known, user_only] {
            let activity = crate::testing::activity(&event);
            let node = Node::attribution_of(&activity);
            assert_eq!(
                crate::stash::route(&Node::attribution_parts(&activity)),
                crate::stash::route(&node),
                "{node:?}"
            );
        }
    }

    /// A message id's text as a client could send it: canonical UUIDs (some with a zero low
    /// half), uppercase ones, and other text; printed here, independently of the `uuid` crate.
    fn message_id_text() -> impl Strategy<Value = String> {
        let canonical = |bits: u128| {
            format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                bits >> 96,
                (bits >> 80) & 0xffff,
                (bits >> 64) & 0xffff,
                (bits >> 48) & 0xffff,
                bits & 0xffff_ffff_ffff
            )
        };
        prop_oneof![
            any::<u128>().prop_map(canonical),
            any::<u128>().prop_map(move |bits| canonical(bits).to_uppercase()),
            any::<u64>().prop_map(move |high| canonical(u128::from(high) << 64)),
            // Few distinct values, so that equal ids and common prefixes are frequent.
            (0u8..4).prop_map(move |n| canonical(u128::from(n) << 120 | 1)),
            "[0-9a-f-]{0,40}",
            "ajs-next-[0-9a-f]{4}",
        ]
    }

    proptest! {
        #[test]
        fn a_message_id_behaves_as_its_text(a in message_id_text(), b in message_id_text()) {
            let (x, y) = (MessageId::new(&a), MessageId::new(&b));
            prop_assert_eq!(x.to_string(), a.clone());
            prop_assert_eq!(&*x.text(), a.as_str());
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let hasher = std::hash::RandomState::new();
            use std::hash::BuildHasher;
            prop_assert_eq!(hasher.hash_one(&x), hasher.hash_one(a.as_str()));
            let json = serde_json::to_string(&x).expect("serializes");
            prop_assert_eq!(&json, &serde_json::to_string(&a).expect("serializes"));
            prop_assert_eq!(serde_json::from_str::<MessageId>(&json).expect("parses"), x.clone());
            prop_assert_eq!(x.is_empty(), a.is_empty());
        }
    }

    #[test]
    fn a_message_id_takes_16_bytes_and_an_activity_56() {
        assert_eq!(std::mem::size_of::<MessageId>(), 16);
        // 64 with triomphe's count: mimalloc's 64-byte size class (72 would take its 80).
        assert_eq!(std::mem::size_of::<Activity>(), 56);
    }

    #[test]
    fn events_of_one_visitor_share_their_ids_and_others_keep_their_own() {
        let mut interner = Interner::default();
        let of = |interner: &mut Interner, tenant: &str, anonymous: &str, user: &str| {
            let mut event = Event::new(tenant, "m", EventKind::Page, 0);
            event.anonymous_id = anonymous.into();
            event.user_id = user.into();
            Activity::of(&event, interner)
        };
        let first = of(&mut interner, "t", "a", "");
        let second = of(&mut interner, "t", "a", "");
        assert!(triomphe::Arc::ptr_eq(&first.ids, &second.ids));
        // Every field tells ids apart, a user id moving to the other side included.
        for (tenant, anonymous, user) in [
            ("u", "a", ""),
            ("t", "b", ""),
            ("t", "a", "x"),
            ("t", "", "a"),
        ] {
            let other = of(&mut interner, tenant, anonymous, user);
            assert_eq!(
                (
                    &**other.tenant(),
                    &**other.anonymous_id(),
                    &**other.user_id()
                ),
                (tenant, anonymous, user)
            );
            assert_ne!(other.ids, first.ids);
        }
        assert_eq!(
            (
                &**first.tenant(),
                &**first.anonymous_id(),
                &**first.user_id()
            ),
            ("t", "a", "")
        );
    }

    proptest! {
        /// The receive time, kind and interaction flag come back as they went in; a receive
        /// time beyond a million years of 1970 comes back at that limit.
        #[test]
        fn a_receipt_keeps_its_time_kind_and_flag(
            received_at_ms in prop_oneof![
                -(1_i64 << 55)..(1_i64 << 55),
                0_i64..4_000_000_000_000,
                Just(i64::MIN),
                Just(i64::MAX),
            ],
            kind in 0..EventKind::ALL.len(),
            interaction in any::<bool>(),
        ) {
            let kind = EventKind::ALL[kind];
            let receipt = Receipt::new(received_at_ms, kind, interaction);
            prop_assert_eq!(receipt.received_at_ms(), received_at_ms.clamp(-(1 << 55), (1 << 55) - 1));
            prop_assert_eq!(receipt.kind(), kind);
            prop_assert_eq!(receipt.interaction(), interaction);
        }
    }

    /// Events of one landing share one allocation; any field that differs makes another,
    /// with that event's content; a landing still held stays shared past the sweep size.
    #[test]
    fn equal_landings_are_shared_and_different_ones_kept_apart() {
        let mut interner = Interner::with_capacity(3);
        let mut base = event("t", "m", "a", 0);
        base.page.referrer = "https://news.example/".into();
        base.campaign.source = "newsletter".into();
        base.location.city = "Munich".into();
        let first = interner.landing(&base);
        assert!(triomphe::Arc::ptr_eq(
            &first,
            &interner.landing(&base.clone())
        ));
        let mut variants = Vec::new();
        for change in 0..4 {
            let mut other = base.clone();
            match change {
                0 => other.page.referrer = "https://search.example/".into(),
                1 => other.campaign.source = "ads".into(),
                2 => other.location.city = "Berlin".into(),
                _ => other.client.browser = "Firefox".into(),
            }
            let landing = interner.landing(&other);
            assert!(
                !triomphe::Arc::ptr_eq(&first, &landing),
                "change {change} shared"
            );
            assert_eq!(*landing.referrer, *other.page.referrer);
            assert_eq!(*landing.campaign, other.campaign);
            assert_eq!(*landing.location, other.location);
            assert_eq!(*landing.client, other.client);
            variants.push((other, landing));
        }
        // Past the sweep size, still held here: the same allocation.
        assert!(triomphe::Arc::ptr_eq(&first, &interner.landing(&base)));
    }

    /// A sweep forgets what no record holds and keeps what one does, and the tables stay
    /// within a quarter more than what is held (or the first sweep size).
    #[test]
    fn a_sweep_forgets_only_what_nothing_holds() {
        let mut interner = Interner::with_capacity(4);
        let held: Vec<ArcStr> = (0..40)
            .map(|i| interner.intern(&format!("held {i}")))
            .collect();
        for i in 0..1_000 {
            drop(interner.intern(&format!("passing {i}")));
            assert!(
                interner.strings.table.len() <= held.len() + held.len() / 4,
                "{} strings held by the table after {i} passing ones",
                interner.strings.table.len()
            );
        }
        for (i, string) in held.iter().enumerate() {
            let again = interner.intern(&format!("held {i}"));
            assert_eq!(again.as_ptr(), string.as_ptr(), "held {i} was copied");
        }
        // Ids and landings go the same way.
        let events: Vec<Event> = (0..100)
            .map(|i| {
                let mut event = event("t", "m", &format!("a{i}"), 0);
                event.page.referrer = format!("https://r{i}.example/");
                event
            })
            .collect();
        for event in &events {
            drop(interner.ids(event));
            drop(interner.landing(event));
        }
        assert!(
            interner.ids.table.len() <= 4,
            "{}",
            interner.ids.table.len()
        );
        assert!(
            interner.landings.table.len() <= 4,
            "{}",
            interner.landings.table.len()
        );
        let kept = interner.ids(&events[0]);
        for event in &events[1..] {
            drop(interner.ids(event));
        }
        assert!(triomphe::Arc::ptr_eq(&kept, &interner.ids(&events[0])));
    }

    #[test]
    fn the_shared_label_is_the_label_for_every_kind() {
        for kind in EventKind::ALL {
            let mut e = event("t", "m", "a", 0);
            e.kind = kind;
            e.name = "Signed Up".into();
            let activity = Activity::of(&e, &mut Interner::default());
            assert_eq!(&*activity.shared_label(), activity.label(), "{kind:?}");
        }
    }
}
