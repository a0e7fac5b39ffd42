//! The producer's bounded buffer of reports not yet acknowledged by Kafka.

use std::collections::VecDeque;

/// Keeps at most `capacity` items; pushing into a full outbox drops the oldest and counts it,
/// because while the broker is down the freshest metrics are the ones worth keeping.
#[derive(Debug)]
pub struct Outbox<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Adds an item; returns the one dropped to make room, if any.
    pub fn push(&mut self, item: T) -> Option<T> {
        let evicted = if self.items.len() >= self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        evicted
    }

    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.items.front_mut()
    }

    pub fn pop_front(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Items from oldest to newest, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut()
    }

    /// Items from oldest to newest.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_oldest_when_full_and_counts_it() {
        let mut o = Outbox::new(2);
        assert_eq!(o.push(1), None);
        assert_eq!(o.push(2), None);
        assert_eq!(o.push(3), Some(1));
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.len(), 2);
        assert_eq!(o.pop_front(), Some(2));
        assert_eq!(o.pop_front(), Some(3));
        assert!(o.is_empty());
    }
}
