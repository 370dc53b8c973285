//! Collection updates into the upserts a ReplacingMergeTree table takes.

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Turns a batch of collection updates `(record, epoch, diff)` into one upsert per key: the
/// key's record after the batch, or, when it has none, a tombstone (`true`) carrying the last
/// record it had. A key whose records came and went within the batch also gets a tombstone:
/// the batch may span several epochs, and after a restart the earlier of them may be epochs
/// the crashed run already wrote.
///
/// Only the batch is known, not what was written before it, so a record's presence before the
/// batch is read off its first update: a record whose first change is a retraction was there.
/// (Keyed outputs hold at most one record per key, so counts are 0 or 1.) Multiple records
/// present for a key cannot happen for well-keyed outputs; the greatest is taken (and of
/// several removed ones the least) so that the choice is at least deterministic. The result
/// is ordered by key.
///
/// Records are netted in hash maps, not ordered maps: a record (an enriched event, a
/// session) is long, and the ordered maps' comparisons of whole records were a tenth of the
/// engine's time in `bench pipeline`.
pub fn upserts<D, K>(
    updates: impl IntoIterator<Item = (D, u64, isize)>,
    key: impl Fn(&D) -> K,
) -> Vec<(D, bool)>
where
    D: Ord + Hash,
    K: Ord + Hash,
{
    // Differential may deliver a time's updates unconsolidated: net them per (record, time).
    let mut netted: FxHashMap<(D, u64), isize> = FxHashMap::default();
    for (datum, time, diff) in updates {
        *netted.entry((datum, time)).or_default() += diff;
    }
    let mut by_time: Vec<((D, u64), isize)> =
        netted.into_iter().filter(|(_, diff)| *diff != 0).collect();
    by_time.sort_unstable_by_key(|((_, time), _)| *time);
    // Per record, in time order: its first change and its net change.
    let mut changes: FxHashMap<D, (isize, isize)> = FxHashMap::default();
    for ((datum, _), diff) in by_time {
        changes.entry(datum).or_insert((diff, 0)).1 += diff;
    }
    let mut by_key: FxHashMap<K, (Option<D>, Option<D>)> = FxHashMap::default();
    for (datum, (first, net)) in changes {
        let before = isize::from(first < 0);
        let (present, removed) = by_key.entry(key(&datum)).or_default();
        if before + net > 0 {
            if present.as_ref().is_none_or(|kept| datum > *kept) {
                *present = Some(datum);
            }
        } else if removed.as_ref().is_none_or(|kept| datum < *kept) {
            *removed = Some(datum);
        }
    }
    let mut upserts: Vec<(K, (D, bool))> = by_key
        .into_iter()
        .filter_map(|(key, (present, removed))| match (present, removed) {
            (Some(present), _) => Some((key, (present, false))),
            (None, Some(removed)) => Some((key, (removed, true))),
            (None, None) => None,
        })
        .collect();
    upserts.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    upserts.into_iter().map(|(_, upsert)| upsert).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_keep_the_latest_and_tombstone_the_lost_and_the_transient() {
        let updates = vec![
            (("s1", 1), 3, -1),
            (("s1", 2), 3, 1),
            (("s2", 5), 4, -1),
            (("s3", 7), 3, 1),
            (("s3", 7), 5, -1),
            (("s4", 1), 3, 1),
            (("s4", 9), 3, 1),
            (("s4", 9), 3, -1),
        ];
        let result = upserts(updates, |(key, _)| *key);
        assert_eq!(
            result,
            vec![
                (("s1", 2), false),
                (("s2", 5), true),
                (("s3", 7), true),
                (("s4", 1), false)
            ]
        );
    }

    #[test]
    fn a_value_that_changes_and_changes_back_is_rewritten_not_tombstoned() {
        let updates = vec![
            (("k", 247), 1, -1),
            (("k", 248), 1, 1),
            (("k", 248), 2, -1),
            (("k", 247), 2, 1),
        ];
        assert_eq!(upserts(updates, |(key, _)| *key), vec![(("k", 247), false)]);
    }
}
