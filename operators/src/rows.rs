//! The rows of an additive table that an operator keeps and emits as a differential
//! collection, shared by the per-minute rollups and the visitor hours.
//!
//! A batch may change one row many times (every page view of a minute); downstream wants one
//! change per row and batch: the row as it was before the batch retracted, the row as it is
//! after inserted. Each row carries a `touched` flag and the batch a list of the rows it
//! touched with their values before it, so an update costs one lookup (two for a new row) and
//! the batch's end walks only what changed. Rows settle with their window (see [`Settling`]);
//! a settled row back at zero stays, at zero, until the window settles again.

use std::hash::Hash;

use crate::settling::Settling;
use crate::windows::WindowState;

/// One row's value (`V::default()` is "no row") and whether the batch being applied has
/// changed it yet.
#[derive(Debug, Default)]
struct Row<V> {
    value: V,
    touched: bool,
}

/// Rows by key with the changes of the batch being applied.
#[derive(Debug)]
pub(crate) struct Rows<K, V> {
    rows: Settling<K, Row<V>>,
    /// The rows the batch changed, in the order it first did, each with its value before.
    touched: Vec<(K, Option<V>)>,
}

impl<K, V> Default for Rows<K, V> {
    fn default() -> Self {
        Rows {
            rows: Settling::default(),
            touched: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone, V: Default + PartialEq + Copy> Rows<K, V> {
    /// Changes the row of `key` (created at `V::default()` when there is none).
    pub(crate) fn update(&mut self, key: K, change: impl FnOnce(&mut V)) {
        let touched = &mut self.touched;
        let mut first_touch = |key: &K, row: &Row<V>| {
            let before = row.value;
            touched.push((key.clone(), (before != V::default()).then_some(before)));
        };
        let row = match self.rows.get_mut(&key) {
            Some(row) => {
                if !row.touched {
                    first_touch(&key, row);
                }
                row
            }
            None => {
                let row = Row::default();
                first_touch(&key, &row);
                self.rows.insert_new(key, row)
            }
        };
        row.touched = true;
        change(&mut row.value);
    }

    /// The batch's changes, each row once: `emit(key, before, after)` for every row whose
    /// value differs from before the batch (`None`: no row). Rows back at zero are removed.
    pub(crate) fn drain_changes(&mut self, mut emit: impl FnMut(K, Option<V>, Option<V>)) {
        for (key, before) in std::mem::take(&mut self.touched) {
            let Some(row) = self.rows.get_mut(&key) else {
                continue;
            };
            row.touched = false;
            let after = (row.value != V::default()).then_some(row.value);
            if after.is_none() {
                self.rows.remove_unless_settled(&key);
            }
            if before != after {
                emit(key, before, after);
            }
        }
    }
}

impl<K: Hash + Eq + Ord + Clone, V: Default + PartialEq + Copy> WindowState for Rows<K, V> {
    /// The rows held.
    fn entries(&self) -> usize {
        self.rows.len()
    }

    fn settle_when_due(&mut self) {
        self.rows.settle_dropping(|row| row.value == V::default());
    }
}
