//! How much state each operator holds: one mechanism for every operator, read by the engine's
//! `/metrics` and by the memory tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The number of entries one operator holds on one worker, set by the operator after each
/// batch it processes. Clones share the count; a default gauge is read by no one.
#[derive(Debug, Clone, Default)]
pub struct StateGauge(Arc<AtomicUsize>);

impl StateGauge {
    /// Records the entries held now.
    pub fn set(&self, entries: usize) {
        self.0.store(entries, Relaxed);
    }

    /// The entries last recorded.
    pub fn get(&self) -> usize {
        self.0.load(Relaxed)
    }
}

/// One worker's state, per structure (see [`StateGauges::all`] for the names exported).
/// Every structure that grows with the stream has a gauge: what the engine holds can be read
/// from `/metrics` structure by structure, and the state-bound tests check each.
#[derive(Debug, Clone, Default)]
pub struct StateGauges {
    /// Remembered message ids (dedup).
    pub dedup_ids: StateGauge,
    /// The earliest claim of each claim subject (identity, kept for good).
    pub earliest_claims: StateGauge,
    /// Identity claims of earlier runs (read at start), held to be retracted if an erasure
    /// covers them (identity, kept for good).
    pub stored_claims: StateGauge,
    /// Ids in the id -> person map this worker emitted (identity, kept for good).
    pub linked_ids: StateGauge,
    /// Strings, event ids, landings and their parts shared by the interner of retained
    /// events (those no record uses any more are swept out as a table fills).
    pub interned_strings: StateGauge,
    /// Events retained for re-attribution.
    pub attributed_events: StateGauge,
    /// Ids whose events are retained for re-attribution (`assign_persons`' visitors).
    pub attributed_ids: StateGauge,
    /// The linked ids' persons as `assign_persons` holds them, each person's own id not
    /// included (kept for good, as the identity map it copies).
    pub attributed_persons: StateGauge,
    /// Release times scheduled for the attributed ids, stale copies included (Flink would
    /// call them timers).
    pub attribution_timers: StateGauge,
    /// Events retained for re-sessionization.
    pub sessionized_events: StateGauge,
    /// Persons whose events and sessions are retained for re-sessionization.
    pub sessionized_persons: StateGauge,
    /// Release times scheduled for those persons, stale copies included.
    pub session_timers: StateGauge,
    /// Open (tenant, minute) windows of the rollups.
    pub windows: StateGauge,
    /// Ids counted in the open windows' distinct counts: one per id and minute.
    pub window_ids: StateGauge,
    /// Rows of open visitor-hour windows.
    pub visitor_hours: StateGauge,
    /// Visitors seen within the active-visitors window.
    pub active_visitors: StateGauge,
}

impl StateGauges {
    /// Every gauge with the name it is exported under (`kind` label of
    /// `clickstream_engine_state_entries`), in pipeline order.
    pub fn all(&self) -> [(&'static str, &StateGauge); 16] {
        [
            ("dedup_ids", &self.dedup_ids),
            ("earliest_claims", &self.earliest_claims),
            ("stored_claims", &self.stored_claims),
            ("linked_ids", &self.linked_ids),
            ("interned_strings", &self.interned_strings),
            ("attributed_events", &self.attributed_events),
            ("attributed_ids", &self.attributed_ids),
            ("attributed_persons", &self.attributed_persons),
            ("attribution_timers", &self.attribution_timers),
            ("sessionized_events", &self.sessionized_events),
            ("sessionized_persons", &self.sessionized_persons),
            ("session_timers", &self.session_timers),
            ("windows", &self.windows),
            ("window_ids", &self.window_ids),
            ("visitor_hours", &self.visitor_hours),
            ("active_visitors", &self.active_visitors),
        ]
    }
}
