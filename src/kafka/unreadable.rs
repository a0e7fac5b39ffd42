//! When the consumer passes over a batch it cannot read (a failed checksum, a bad length, a
//! codec that does not expand): only once a second fetch, after a pause, returned the very same
//! bytes. Bytes spoiled on the way (a proxy, a network card) are then read right the next time
//! instead of being skipped, and a batch that is corrupt in the log is passed over after one
//! more fetch, not fetched again in a loop. Pure: the caller passes the time in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::records::UnreadableBatch;

/// The pause before the second fetch of a batch found unreadable, doubled each time the bytes
/// at that offset differ again, up to [`REFETCH_PAUSE_MAX`].
const REFETCH_PAUSE_FIRST: Duration = Duration::from_millis(500);
const REFETCH_PAUSE_MAX: Duration = Duration::from_secs(10);

/// A batch found unreadable once, waiting for its second fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Suspect {
    first_offset: i64,
    fingerprint: u64,
    /// Fetches in a row that found an unreadable batch at this offset.
    fetches: u32,
    /// The partition is not fetched before this.
    hold_until: Instant,
}

/// What to do with the unreadable batches of one partition's answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Screened {
    /// Seen twice with the same bytes: passed over (the caller names them in an ERROR line).
    pub passed: Vec<UnreadableBatch>,
    /// The first batch seen for the first time (or with other bytes than before): the answer
    /// is cut there, records from its first offset on are dropped, and the partition is
    /// fetched from there again after `pause`.
    pub cut: Option<(UnreadableBatch, Duration)>,
}

/// The batches of each partition seen unreadable once.
#[derive(Debug, Default)]
pub struct Suspects {
    by_partition: HashMap<i32, Suspect>,
}

impl Suspects {
    /// Sorts one answer's unreadable batches (in offset order) into passed and cut.
    pub fn screen(
        &mut self,
        partition: i32,
        unreadable: Vec<UnreadableBatch>,
        now: Instant,
    ) -> Screened {
        let before = self.by_partition.remove(&partition);
        let mut screened = Screened::default();
        for (i, bad) in unreadable.into_iter().enumerate() {
            let seen_before = before.as_ref().is_some_and(|s| {
                s.first_offset == bad.first_offset && s.fingerprint == bad.fingerprint
            });
            if i == 0 && seen_before {
                screened.passed.push(bad);
                continue;
            }
            let fetches = before
                .as_ref()
                .filter(|s| s.first_offset == bad.first_offset)
                .map_or(1, |s| s.fetches.saturating_add(1));
            let pause = refetch_pause(fetches);
            self.by_partition.insert(
                partition,
                Suspect {
                    first_offset: bad.first_offset,
                    fingerprint: bad.fingerprint,
                    fetches,
                    hold_until: now + pause,
                },
            );
            screened.cut = Some((bad, pause));
            break;
        }
        screened
    }

    /// The partition waits for the second fetch of a suspect batch.
    pub fn held(&self, partition: i32, now: Instant) -> bool {
        self.by_partition
            .get(&partition)
            .is_some_and(|s| now < s.hold_until)
    }

    /// Forgets every suspicion (another log is read now).
    pub fn clear(&mut self) {
        self.by_partition.clear();
    }
}

fn refetch_pause(fetches: u32) -> Duration {
    REFETCH_PAUSE_FIRST
        .saturating_mul(1 << fetches.saturating_sub(1).min(10))
        .min(REFETCH_PAUSE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(first: i64, last: i64, fingerprint: u64) -> UnreadableBatch {
        UnreadableBatch {
            first_offset: first,
            last_offset: last,
            reason: format!("the batch at offset {first} fails its checksum"),
            fingerprint,
        }
    }

    #[test]
    fn a_batch_is_passed_over_only_when_a_second_fetch_returns_the_same_bytes() {
        let mut s = Suspects::default();
        let t0 = Instant::now();
        let first = s.screen(0, vec![bad(10, 19, 7)], t0);
        assert!(first.passed.is_empty());
        assert_eq!(first.cut, Some((bad(10, 19, 7), REFETCH_PAUSE_FIRST)));
        assert!(s.held(0, t0));
        assert!(!s.held(1, t0), "other partitions go on");
        assert!(!s.held(0, t0 + REFETCH_PAUSE_FIRST));

        let second = s.screen(0, vec![bad(10, 19, 7)], t0 + REFETCH_PAUSE_FIRST);
        assert_eq!(second.passed, vec![bad(10, 19, 7)]);
        assert_eq!(second.cut, None);
        assert!(!s.held(0, t0 + REFETCH_PAUSE_FIRST));
    }

    #[test]
    fn other_bytes_at_the_same_offset_are_not_passed_over_and_the_pause_doubles() {
        let mut s = Suspects::default();
        let t0 = Instant::now();
        s.screen(0, vec![bad(10, 19, 7)], t0);
        let again = s.screen(0, vec![bad(10, 19, 8)], t0);
        assert!(again.passed.is_empty());
        assert_eq!(again.cut.map(|c| c.1), Some(REFETCH_PAUSE_FIRST * 2));
        let pauses: Vec<u128> = (1..8).map(|f| refetch_pause(f).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(refetch_pause(u32::MAX), REFETCH_PAUSE_MAX);
    }

    #[test]
    fn after_a_confirmed_batch_the_next_unreadable_one_is_cut_and_a_clean_answer_forgets() {
        let mut s = Suspects::default();
        let t0 = Instant::now();
        s.screen(3, vec![bad(10, 19, 7)], t0);
        let both = s.screen(3, vec![bad(10, 19, 7), bad(30, 39, 9)], t0);
        assert_eq!(both.passed, vec![bad(10, 19, 7)]);
        assert_eq!(both.cut.map(|c| c.0), Some(bad(30, 39, 9)));
        // The bytes came right this time: nothing held, nothing remembered.
        assert_eq!(s.screen(3, Vec::new(), t0), Screened::default());
        assert!(!s.held(3, t0));
        let fresh = s.screen(3, vec![bad(30, 39, 9)], t0);
        assert!(fresh.passed.is_empty(), "a suspicion forgotten starts over");
    }
}
