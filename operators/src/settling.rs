//! A map for state that is written while it is new and rarely after: a window's entries once
//! its time has passed, the identity graph (kept for good, written when its ids link).
//!
//! A hash table is between 7/16 and 7/8 full, so an entry costs it up to 2.3 times its size
//! (and a control byte); the
//! windowed operators hold every (minute, id) and (hour, visitor, person) of the last four
//! days, about one entry per event, in tables like that. Once a window's time has passed,
//! only late events and corrections change it: its entries then move to a vector sorted by
//! key, which takes their size exactly, and a lookup there is a binary search. Entries added
//! after that go to the hash table again until they are an eighth of the settled ones.
//!
//! Removing a settled entry would move every entry after it; a window's entries are removed
//! by corrections (an identity merge retracts a visitor's rows under the old person), so the
//! windows leave a removed entry in place at its zero value instead
//! ([`Settling::remove_unless_settled`]), and the next settle drops it.

use std::borrow::Borrow;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Entries by key: the recent ones in a hash table, the settled ones in a sorted vector. A
/// key is in one of the two, never both.
#[derive(Debug)]
pub(crate) struct Settling<K, V> {
    recent: FxHashMap<K, V>,
    settled: Vec<(K, V)>,
}

impl<K, V> Default for Settling<K, V> {
    fn default() -> Self {
        Settling {
            recent: FxHashMap::default(),
            settled: Vec::new(),
        }
    }
}

impl<K, V> Settling<K, V> {
    /// Entries held, a settled entry left at its zero value until the next settle included.
    pub(crate) fn len(&self) -> usize {
        self.recent.len() + self.settled.len()
    }
}

impl<K: Hash + Eq + Ord, V> Settling<K, V> {
    fn settled_at<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.settled
            .binary_search_by(|(held, _)| held.borrow().cmp(key))
    }

    /// The value of `key`, if held.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + Ord + ?Sized,
    {
        if !self.settled.is_empty()
            && let Ok(at) = self.settled_at(key)
        {
            return Some(&mut self.settled[at].1);
        }
        self.recent.get_mut(key)
    }

    /// The value of `key`, if held.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + Ord + ?Sized,
    {
        if !self.settled.is_empty()
            && let Ok(at) = self.settled_at(key)
        {
            return Some(&self.settled[at].1);
        }
        self.recent.get(key)
    }

    /// Whether `key` is held.
    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets the value of `key`, in place when it is held; the value it had.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.get_mut(&key) {
            Some(held) => Some(std::mem::replace(held, value)),
            None => self.recent.insert(key, value),
        }
    }

    /// The value of `key`, `default()` inserted (among the recent entries) if it is not held;
    /// whether it was inserted.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        default: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        if !self.settled.is_empty()
            && let Ok(at) = self.settled_at(&key)
        {
            return (&mut self.settled[at].1, false);
        }
        let mut inserted = false;
        let value = self.recent.entry(key).or_insert_with(|| {
            inserted = true;
            default()
        });
        (value, inserted)
    }

    /// Inserts `key`, which must not be held, among the recent entries.
    pub(crate) fn insert_new(&mut self, key: K, value: V) -> &mut V {
        debug_assert!(
            self.settled_at(&key).is_err(),
            "a settled key inserted again"
        );
        debug_assert!(
            !self.recent.contains_key(&key),
            "a recent key inserted again"
        );
        self.recent.entry(key).or_insert(value)
    }

    /// Removes `key`; a settled entry is removed from its vector, a copy of the entries after
    /// it (the identity graph's removals are unlinks and forgotten ids, rare once an entry has
    /// settled; see [`Settling::remove_unless_settled`] for the windows').
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + Ord + ?Sized,
    {
        if let Some(value) = self.recent.remove(key) {
            return Some(value);
        }
        let at = self.settled_at(key).ok()?;
        Some(self.settled.remove(at).1)
    }

    /// Removes `key` if it is a recent entry; a settled one stays (the caller has left it at
    /// its zero value) until [`Settling::settle_dropping`] drops it.
    pub(crate) fn remove_unless_settled<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + Ord + ?Sized,
    {
        self.recent.remove(key);
    }

    /// Settles the recent entries if they are at least an eighth of the settled ones: while
    /// entries keep coming, each is copied about nine times (the settled part grows by an
    /// eighth at each settle), and the hash table is at most an eighth of the settled part.
    pub(crate) fn settle_when_due(&mut self) {
        self.settle_dropping(|_| false);
    }

    /// [`Settling::settle_when_due`], dropping the settled entries left `dead` (see
    /// [`Settling::remove_unless_settled`]) when it settles.
    ///
    /// The recent entries are sorted on their own and merged with the settled ones into a
    /// new vector (of the exact size once dead entries are shrunk away): O(n) for the
    /// settled part, and at the peak the two vectors and the recent entries. (Appending them and sorting the whole took a scratch buffer
    /// as large as the settled part beside a grown copy of it, three times the entries at
    /// the peak, each time the identity graph settled.)
    pub(crate) fn settle_dropping(&mut self, dead: impl Fn(&V) -> bool) {
        if self.recent.is_empty() || self.recent.len() * 8 < self.settled.len() {
            return;
        }
        let mut recent: Vec<(K, V)> = std::mem::take(&mut self.recent).into_iter().collect();
        // A key is held once, so no two are equal and an unstable sort orders them alike.
        recent.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let settled = std::mem::take(&mut self.settled);
        let mut merged = Vec::with_capacity(settled.len() + recent.len());
        let mut settled = settled
            .into_iter()
            .filter(|(_, value)| !dead(value))
            .peekable();
        let mut recent = recent.into_iter().peekable();
        loop {
            let next = match (settled.peek(), recent.peek()) {
                (Some((old, _)), Some((new, _))) if old < new => settled.next(),
                (_, Some(_)) => recent.next(),
                (Some(_), None) => settled.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        merged.shrink_to_fit();
        self.settled = merged;
    }

    /// Every entry, in no particular order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.recent
            .iter()
            .chain(self.settled.iter().map(|(key, value)| (key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, i32),
        Set(u8, i32),
        Remove(u8),
        Settle,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, -3i32..4).prop_map(|(k, v)| Op::Add(k, v)),
            2 => (0u8..40, -3i32..4).prop_map(|(k, v)| Op::Set(k, v)),
            1 => (0u8..40).prop_map(Op::Remove),
            1 => Just(Op::Settle),
        ]
    }

    proptest! {
        /// The oracle is a `BTreeMap`: whatever mix of adds, removals and settles, the map
        /// holds the same entries, each key once.
        #[test]
        fn holds_what_a_plain_map_holds(ops in prop::collection::vec(op(), 0..300)) {
            let mut map: Settling<String, i32> = Settling::default();
            let mut oracle: BTreeMap<String, i32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(k, v) => {
                        let key = format!("id-{k}");
                        let (value, inserted) = map.get_or_insert_with(key.clone(), || 0);
                        *value += v;
                        prop_assert_eq!(inserted, !oracle.contains_key(&key));
                        *oracle.entry(key).or_default() += v;
                    }
                    Op::Set(k, v) => {
                        let key = format!("id-{k}");
                        prop_assert_eq!(map.insert(key.clone(), v), oracle.insert(key.clone(), v));
                        prop_assert_eq!(map.get(key.as_str()), Some(&v));
                    }
                    Op::Remove(k) => {
                        let key = format!("id-{k}");
                        prop_assert_eq!(map.remove(key.as_str()), oracle.remove(&key));
                    }
                    Op::Settle => map.settle_when_due(),
                }
                prop_assert_eq!(map.len(), oracle.len());
            }
            let held: BTreeMap<String, i32> =
                map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            prop_assert_eq!(&held, &oracle);
            for (key, value) in &oracle {
                prop_assert_eq!(map.get_mut(key.as_str()).copied(), Some(*value));
            }
            prop_assert_eq!(map.get_mut("absent"), None);
            prop_assert!(!map.contains_key("absent"));
        }
    }

    proptest! {
        /// As the windows use it: an entry whose count returns to zero is removed if recent
        /// and left at zero if settled, and dropped by the next settle. The entries held at
        /// a count other than zero are the oracle's, and every zero left is a settled one.
        #[test]
        fn counts_left_at_zero_go_at_the_next_settle(
            ops in prop::collection::vec((0u8..30, -2i32..3, 0u8..8), 0..400),
        ) {
            let mut map: Settling<u8, i32> = Settling::default();
            let mut oracle: BTreeMap<u8, i32> = BTreeMap::new();
            for (key, diff, settle) in ops {
                if settle == 0 {
                    let due = !map.recent.is_empty() && map.recent.len() * 8 >= map.settled.len();
                    map.settle_dropping(|count| *count == 0);
                    if due {
                        prop_assert!(map.recent.is_empty());
                        prop_assert!(map.settled.iter().all(|(_, count)| *count != 0));
                    }
                }
                let (count, _) = map.get_or_insert_with(key, || 0);
                *count += diff;
                if *count == 0 {
                    map.remove_unless_settled(&key);
                }
                *oracle.entry(key).or_default() += diff;
                oracle.retain(|_, count| *count != 0);
            }
            let held: BTreeMap<u8, i32> =
                map.iter().filter(|(_, c)| **c != 0).map(|(k, c)| (*k, *c)).collect();
            prop_assert_eq!(&held, &oracle);
            prop_assert!(map.recent.values().all(|count| *count != 0));
            prop_assert!(map.settled.is_sorted_by_key(|(key, _)| *key));
        }
    }

    #[test]
    fn a_settled_window_takes_its_entries_size_and_late_entries_settle_at_an_eighth() {
        let mut map: Settling<u64, u64> = Settling::default();
        for key in 0..1_000 {
            map.insert_new(key * 2, 0);
        }
        map.settle_when_due();
        assert_eq!((map.recent.len(), map.settled.len()), (0, 1_000));
        assert_eq!(
            map.settled.capacity(),
            1_000,
            "a settled vector is exactly its size"
        );
        assert!(map.settled.is_sorted_by_key(|(key, _)| *key));
        for key in 0..124 {
            map.insert_new(key * 2 + 1, 0);
        }
        map.settle_when_due();
        assert_eq!(map.recent.len(), 124, "settled before an eighth");
        map.insert_new(1_999, 0);
        map.settle_when_due();
        assert_eq!((map.recent.len(), map.settled.len()), (0, 1_125));
        assert!(map.settled.is_sorted_by_key(|(key, _)| *key));
    }
}
