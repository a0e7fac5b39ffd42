//! Sealing ahead: the next request's batches sealed while this request is on the wire.
//!
//! A request's answer takes a round trip plus the leader's work (decoding, appending, waiting
//! for the in-sync replicas), and sealing (encoding and compressing) is most of the sending
//! thread's work. Done in turn, the two add up; done side by side, the wait hides the sealing.
//! So while a request is in flight, the records the caller will send next are sealed as if
//! this request's batches were stored: each partition's batch numbered from the sequence after
//! this request's batch for it (or from the partition's next sequence when this request has
//! none), under this request's identity.
//!
//! That is a guess, used only if it came true. At the next call a batch sealed ahead is sent
//! only when its partition has no batch in doubt, the partition's next sequence is the one the
//! batch starts at, the identity is the same, and the partition's share of the records is
//! exactly the one sealed. Anything else (a batch not stored, a new epoch or producer id, other
//! records, another partition count) drops it and the records are sealed again as usual. So a
//! batch sealed ahead can never reach a leader out of sequence order, ahead of a batch in
//! doubt, or under a stale identity: it is the batch the next call would have sealed.

use std::collections::HashMap;

use bytes::Bytes;

use super::seal::{Sealed, Unsealed};
use super::{next_sequence, partition_for_key, spans_wrap, split, Identity, PartitionState};

/// The batches to seal ahead for `next`, the records the caller sends after this request: one
/// per partition, in partition order, numbered after the batch this request holds for the
/// partition. A partition whose batch would pass the sequence wrap is left to the next call
/// (which starts a new epoch for it).
pub(super) fn plan(
    partitions: &HashMap<i32, PartitionState>,
    next: Vec<(Bytes, Bytes)>,
    partition_count: u32,
) -> Vec<Unsealed> {
    let next = next
        .into_iter()
        .map(|record| (partition_for_key(&record.0, partition_count), record));
    split(next, partition_count)
        .into_iter()
        .filter_map(|(partition, records)| {
            let base_sequence = partitions.get(&partition).map_or(0, after);
            (!spans_wrap(base_sequence, records.len() as i32)).then_some(Unsealed {
                partition,
                base_sequence,
                records,
            })
        })
        .collect()
}

/// The sequence a partition's next batch starts at once its batch in doubt (if any) is stored.
fn after(state: &PartitionState) -> i32 {
    match &state.in_doubt {
        Some(sealed) => next_sequence(sealed.base_sequence, sealed.record_count),
        None => state.next_sequence,
    }
}

/// `ahead`, the batch sealed ahead for a partition, if it is exactly what would be sealed now
/// for `share` (the partition's records of this call) under `identity`: see the module's
/// documentation.
pub(super) fn usable<'a>(
    ahead: Option<Sealed>,
    state: &PartitionState,
    identity: Identity,
    share: impl ExactSizeIterator<Item = Option<&'a (Bytes, Bytes)>>,
) -> Option<Sealed> {
    ahead.filter(|sealed| {
        state.in_doubt.is_none()
            && sealed.identity == identity
            && sealed.base_sequence == state.next_sequence
            && sealed.holds(share)
    })
}

#[cfg(test)]
mod tests {
    use super::super::seal::seal_all;
    use super::super::Compression;
    use super::*;

    const ID: Identity = Identity { id: 9, epoch: 2 };

    fn records(partition: i32, from: usize, n: usize) -> Vec<(Bytes, Bytes)> {
        // Keys that land on `partition` of 3 (found by trying, as the partitioner decides).
        let key = (0..)
            .map(|i| Bytes::from(format!("k{i}")))
            .find(|k| partition_for_key(k, 3) == partition)
            .unwrap_or_default();
        (from..from + n)
            .map(|i| (key.clone(), Bytes::from(format!("{{\"i\":{i}}}"))))
            .collect()
    }

    fn sealed(partition: i32, base: i32, identity: Identity, r: Vec<(Bytes, Bytes)>) -> Sealed {
        let batch = Unsealed {
            partition,
            base_sequence: base,
            records: r,
        };
        seal_all(vec![batch], identity, Compression::None)
            .unwrap()
            .remove(0)
            .1
    }

    #[test]
    fn ahead_batches_are_numbered_after_the_batch_in_flight_or_the_next_sequence() {
        let mut partitions = HashMap::new();
        // Partition 0 has a batch of 5 in flight from sequence 10; partition 1 none (next 7);
        // partition 2 was never written to.
        partitions.insert(
            0,
            PartitionState {
                next_sequence: 10,
                in_doubt: Some(sealed(0, 10, ID, records(0, 0, 5))),
                ahead: None,
            },
        );
        partitions.insert(
            1,
            PartitionState {
                next_sequence: 7,
                ..Default::default()
            },
        );
        let mut next = records(1, 0, 2);
        next.extend(records(0, 5, 3));
        next.extend(records(2, 0, 1));
        next.extend(records(0, 8, 1));
        let plan = plan(&partitions, next, 3);
        let got: Vec<(i32, i32, usize)> = plan
            .iter()
            .map(|u| (u.partition, u.base_sequence, u.records.len()))
            .collect();
        assert_eq!(got, [(0, 15, 4), (1, 7, 2), (2, 0, 1)]);
        // Each partition's records keep the caller's order.
        let mut want = records(0, 5, 3);
        want.extend(records(0, 8, 1));
        assert_eq!(plan[0].records, want);

        // A batch that would pass i32::MAX is not sealed ahead.
        partitions.get_mut(&1).unwrap().next_sequence = i32::MAX - 1;
        let plan = plan_of(&partitions, records(1, 0, 3));
        assert!(plan.is_empty());
    }

    fn plan_of(partitions: &HashMap<i32, PartitionState>, next: Vec<(Bytes, Bytes)>) -> Vec<i32> {
        plan(partitions, next, 3)
            .iter()
            .map(|u| u.partition)
            .collect()
    }

    #[test]
    fn a_batch_sealed_ahead_is_used_only_if_everything_before_it_went_as_guessed() {
        let share = records(0, 5, 3);
        let stored = PartitionState {
            next_sequence: 15,
            ..Default::default()
        };
        let use_it = |state: &PartitionState, ahead: Sealed, share: &[(Bytes, Bytes)]| {
            usable(Some(ahead), state, ID, share.iter().map(Some)).is_some()
        };
        // The request before was stored: the batch is the one the call would seal.
        assert!(use_it(&stored, sealed(0, 15, ID, share.clone()), &share));
        // The batch before is still in doubt: it goes first, alone.
        let in_doubt = PartitionState {
            next_sequence: 10,
            in_doubt: Some(sealed(0, 10, ID, records(0, 0, 5))),
            ahead: None,
        };
        assert!(!use_it(&in_doubt, sealed(0, 15, ID, share.clone()), &share));
        // The batch before was refused (its sequence not taken) or the numbering started again.
        let refused = PartitionState {
            next_sequence: 10,
            ..Default::default()
        };
        assert!(!use_it(&refused, sealed(0, 15, ID, share.clone()), &share));
        let restarted = PartitionState {
            next_sequence: 0,
            ..Default::default()
        };
        assert!(!use_it(
            &restarted,
            sealed(0, 15, ID, share.clone()),
            &share
        ));
        // A new epoch or producer id.
        let new_epoch = Identity { id: 9, epoch: 3 };
        assert!(!use_it(
            &stored,
            sealed(0, 15, new_epoch, share.clone()),
            &share
        ));
        // Other records, fewer, or more.
        let other = records(0, 6, 3);
        assert!(!use_it(&stored, sealed(0, 15, ID, share.clone()), &other));
        assert!(!use_it(
            &stored,
            sealed(0, 15, ID, share.clone()),
            &share[..2]
        ));
        let more = records(0, 5, 4);
        assert!(!use_it(&stored, sealed(0, 15, ID, share.clone()), &more));
        // Nothing sealed ahead.
        assert!(usable(None, &stored, ID, share.iter().map(Some)).is_none());
    }
}
