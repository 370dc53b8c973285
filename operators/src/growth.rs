//! How the vectors that hold most of the operators' state grow: a quarter at a time, not
//! double.
//!
//! A vector that doubles is a quarter empty on average, and half empty just after it grew;
//! for vectors that only a release shrinks, that room is state like the rest. A quarter at a
//! time keeps it about a tenth empty (a fifth just after it grew), for more copies as a
//! vector grows (still geometric: O(1) an element).

use thin_vec::ThinVec;

/// A vector of state.
pub(crate) trait GrowByAQuarter {
    /// Makes room for one more element: a quarter more (at least 2) when the vector is full.
    fn make_room_for_one(&mut self);
}

impl<T> GrowByAQuarter for ThinVec<T> {
    fn make_room_for_one(&mut self) {
        if self.len() == self.capacity() {
            self.reserve_exact((self.len() / 4).max(2));
        }
    }
}

impl<T> GrowByAQuarter for Vec<T> {
    fn make_room_for_one(&mut self) {
        if self.len() == self.capacity() {
            self.reserve_exact((self.len() / 4).max(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_vector_grows_by_a_quarter() {
        let mut events: ThinVec<u64> = ThinVec::new();
        let mut keys: Vec<u64> = Vec::new();
        for i in 0..1_000 {
            events.make_room_for_one();
            keys.make_room_for_one();
            for (len, capacity) in [
                (events.len(), events.capacity()),
                (keys.len(), keys.capacity()),
            ] {
                assert!(
                    capacity > len && capacity <= len + len / 4 + 2,
                    "room for {capacity} with {len} held"
                );
            }
            events.push(i);
            keys.push(i);
        }
    }
}
