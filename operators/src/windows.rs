//! The open windows of a windowed operator (the minute rollups, the visitor hours), by tenant
//! and window start: one mechanism for finding the windows a batch changed, releasing the
//! windows no change can reach any more, and counting what they hold for the gauges.
//!
//! A batch visits only the windows it changed (a list of them, not a scan of every window
//! held); release splits whole windows off each tenant's ordered map, and the counts are kept
//! as windows change and go, so the gauges cost nothing per batch.

use std::collections::BTreeMap;

use arcstr::ArcStr;
use rustc_hash::FxHashMap;

use crate::expiry::Expiry;

/// What a window holds, as [`Windows`] counts it for its gauge.
pub(crate) trait WindowState: Default {
    /// The entries held (ids, rows), as the operator's gauge reports them.
    fn entries(&self) -> usize;
}

/// A window and whether the batch being applied has changed it yet.
#[derive(Debug, Default)]
struct Held<W> {
    state: W,
    changed: bool,
}

/// One worker's open windows of one operator.
#[derive(Debug)]
pub(crate) struct Windows<W> {
    /// By tenant, then window start (Unix ms).
    by_tenant: FxHashMap<ArcStr, BTreeMap<i64, Held<W>>>,
    /// The windows the batch changed, in the order it first did.
    changed: Vec<(ArcStr, i64)>,
    /// Windows held.
    open: usize,
    /// [`WindowState::entries`] summed over the windows held.
    entries: usize,
    expiry: Expiry,
}

impl<W: WindowState> Windows<W> {
    /// No windows; each is kept `keep_ms` after its start against the clock
    /// ([`Windows::observe`]).
    pub(crate) fn new(keep_ms: i64) -> Windows<W> {
        Windows {
            by_tenant: FxHashMap::default(),
            changed: Vec::new(),
            open: 0,
            entries: 0,
            expiry: Expiry::new(keep_ms),
        }
    }

    /// Moves the clock to a record received at `received_at_ms` (Unix ms).
    pub(crate) fn observe(&mut self, received_at_ms: i64) {
        self.expiry.observe(received_at_ms);
    }

    /// Applies `change` to the window of `tenant` starting at `start_ms` (created empty when
    /// there is none) and notes it changed in this batch.
    pub(crate) fn update(&mut self, tenant: &str, start_ms: i64, change: impl FnOnce(&mut W)) {
        let windows = match self.by_tenant.get_mut(tenant) {
            Some(windows) => windows,
            None => self.by_tenant.entry(ArcStr::from(tenant)).or_default(),
        };
        let open = &mut self.open;
        let held = windows.entry(start_ms).or_insert_with(|| {
            *open += 1;
            Held::default()
        });
        let first_change = !held.changed;
        held.changed = true;
        let entries_before = held.state.entries();
        change(&mut held.state);
        self.entries = self.entries + held.state.entries() - entries_before;
        if first_change && let Some((tenant, _)) = self.by_tenant.get_key_value(tenant) {
            self.changed.push((tenant.clone(), start_ms));
        }
    }

    /// Visits each window the batch changed once, as `visit(tenant, start_ms, window)`, and
    /// starts the next batch.
    pub(crate) fn drain_changed(&mut self, mut visit: impl FnMut(&str, i64, &mut W)) {
        for (tenant, start_ms) in std::mem::take(&mut self.changed) {
            let Some(held) = self
                .by_tenant
                .get_mut(&tenant)
                .and_then(|windows| windows.get_mut(&start_ms))
            else {
                continue;
            };
            held.changed = false;
            let entries_before = held.state.entries();
            visit(&tenant, start_ms, &mut held.state);
            self.entries = self.entries + held.state.entries() - entries_before;
        }
    }

    /// Releases the windows that start before the clock's cutoff: no change can reach them
    /// any more. Call it after [`Windows::drain_changed`], so that a released window has
    /// emitted its last change.
    pub(crate) fn release(&mut self) {
        let cutoff = self.expiry.cutoff();
        for windows in self.by_tenant.values_mut() {
            let kept = windows.split_off(&cutoff);
            let released = std::mem::replace(windows, kept);
            self.open -= released.len();
            self.entries -= released
                .values()
                .map(|held| held.state.entries())
                .sum::<usize>();
        }
    }

    /// Windows held.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Entries held in all windows ([`WindowState::entries`]).
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }
}
