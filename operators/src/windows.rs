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
    /// The entries held (ids, rows), as the operator's gauge reports them. It may change only
    /// inside the closures of [`Windows::update`] and [`Windows::drain_changed`]: the running
    /// count is kept from its value before and after each of them.
    fn entries(&self) -> usize;

    /// Called once the window's time has passed (by [`SETTLE_MARGIN_MS`]) and after each
    /// later change: what it holds may take a more compact form (see
    /// [`crate::settling::Settling`]), without changing [`WindowState::entries`].
    fn settle_when_due(&mut self) {}
}

/// How long after a window ends it settles: events arrive seconds after they happen, and
/// the few that arrive later find a settled window.
pub(crate) const SETTLE_MARGIN_MS: i64 = 10 * 60_000;

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
    /// How long after its start a window settles: its width and [`SETTLE_MARGIN_MS`].
    settle_after_ms: i64,
    /// The windows that start before this time (Unix ms) have settled.
    settled_before: i64,
}

impl<W: WindowState> Windows<W> {
    /// No windows; each is `width_ms` long and kept `keep_ms` after its start against the
    /// clock ([`Windows::observe`]).
    pub(crate) fn new(width_ms: i64, keep_ms: i64) -> Windows<W> {
        Windows {
            by_tenant: FxHashMap::default(),
            changed: Vec::new(),
            open: 0,
            entries: 0,
            expiry: Expiry::new(keep_ms),
            settle_after_ms: width_ms.saturating_add(SETTLE_MARGIN_MS),
            settled_before: i64::MIN,
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
            if start_ms < self.settled_before {
                held.state.settle_when_due();
            }
        }
    }

    /// Releases the windows that start before the clock's cutoff: no change can reach them
    /// any more. Call it after [`Windows::drain_changed`], so that a released window has
    /// emitted its last change. A window emptied by retractions is kept until the cutoff
    /// passes it too: finding it empty would cost a look at every window per batch.
    pub(crate) fn release(&mut self) {
        debug_assert!(self.changed.is_empty(), "release before drain_changed");
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
        // After the release: a window about to go is not settled first.
        self.settle();
    }

    /// Settles the windows whose time has passed since the last call.
    fn settle(&mut self) {
        let settle_before = self.expiry.clock().saturating_sub(self.settle_after_ms);
        if settle_before <= self.settled_before {
            return;
        }
        for windows in self.by_tenant.values_mut() {
            for held in windows.range_mut(self.settled_before..settle_before) {
                held.1.state.settle_when_due();
            }
        }
        self.settled_before = settle_before;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A window that holds a list of numbers, one entry each.
    #[derive(Debug, Default)]
    struct Numbers(Vec<u32>);

    impl WindowState for Numbers {
        fn entries(&self) -> usize {
            self.0.len()
        }
    }

    fn changed(windows: &mut Windows<Numbers>) -> Vec<(String, i64, Vec<u32>)> {
        let mut visited = Vec::new();
        windows.drain_changed(|tenant, start_ms, window| {
            visited.push((tenant.to_owned(), start_ms, window.0.clone()))
        });
        visited
    }

    #[test]
    fn a_batch_visits_each_window_it_changed_once_in_the_order_it_first_did() {
        let mut windows = Windows::new(10, 100);
        windows.update("b", 60, |w: &mut Numbers| w.0.push(1));
        windows.update("a", 0, |w| w.0.push(2));
        windows.update("b", 60, |w| w.0.push(3));
        assert_eq!(
            changed(&mut windows),
            [("b".into(), 60, vec![1, 3]), ("a".into(), 0, vec![2])]
        );
        assert_eq!((windows.open(), windows.entries()), (2, 3));
        assert_eq!(changed(&mut windows), []);
        windows.update("a", 0, |w| w.0.push(4));
        assert_eq!(changed(&mut windows), [("a".into(), 0, vec![2, 4])]);
    }

    #[test]
    fn entries_count_what_the_visit_removes() {
        let mut windows = Windows::new(10, 100);
        windows.update("a", 0, |w: &mut Numbers| w.0.extend([1, 2, 3]));
        windows.drain_changed(|_, _, window| window.0.truncate(1));
        assert_eq!((windows.open(), windows.entries()), (1, 1));
    }

    /// A window that counts its settles.
    #[derive(Debug, Default)]
    struct Settles(usize);

    impl WindowState for Settles {
        fn entries(&self) -> usize {
            1
        }
        fn settle_when_due(&mut self) {
            self.0 += 1;
        }
    }

    fn settles(windows: &Windows<Settles>, start_ms: i64) -> usize {
        windows.by_tenant["a"][&start_ms].state.0
    }

    /// A window settles once its width and the margin have passed, once; again after each
    /// later change; and at once when it is first made behind that line.
    #[test]
    fn a_window_settles_once_its_time_has_passed_and_after_each_later_change() {
        let mut windows: Windows<Settles> = Windows::new(10, i64::MAX / 2);
        windows.update("a", 0, |_| {});
        windows.drain_changed(|_, _, _| {});
        windows.observe(10 + SETTLE_MARGIN_MS);
        windows.release();
        assert_eq!(settles(&windows, 0), 0, "settled at its end and the margin");
        windows.observe(11 + SETTLE_MARGIN_MS);
        windows.release();
        windows.release();
        assert_eq!(settles(&windows, 0), 1);
        windows.update("a", 0, |_| {});
        windows.drain_changed(|_, _, _| {});
        windows.release();
        assert_eq!(settles(&windows, 0), 2, "a late change settles again");
        windows.update("a", -100, |_| {});
        windows.drain_changed(|_, _, _| {});
        assert_eq!(settles(&windows, -100), 1, "a window made behind the line");
    }

    /// A window starting at the cutoff stays; one starting before it goes, with its entries.
    #[test]
    fn release_keeps_windows_from_the_cutoff_on() {
        let mut windows = Windows::new(10, 100);
        for (tenant, start_ms, count) in
            [("a", 899, 1), ("a", 900, 2), ("b", 899, 4), ("b", 950, 8)]
        {
            windows.update(tenant, start_ms, |w: &mut Numbers| w.0.extend(0..count));
        }
        changed(&mut windows);
        windows.observe(1_000);
        windows.release();
        assert_eq!((windows.open(), windows.entries()), (2, 10));
        windows.observe(1_051);
        windows.release();
        assert_eq!((windows.open(), windows.entries()), (0, 0));
        windows.update("a", 900, |w| w.0.push(1));
        assert_eq!(changed(&mut windows), [("a".into(), 900, vec![1])]);
    }
}
