//! Sealing: one partition's records numbered and encoded as a record batch v2 in the producer's
//! codec. Encoding and compressing is most of the sending thread's work, and the batches of one
//! request do not depend on each other (each partition has its own sequence), so a big request's
//! batches are sealed side by side.

use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    self, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{next_sequence, Compression, Identity};
use crate::kafka::{fatal, KafkaError};

/// Below this many payload bytes in one request, its batches are sealed in turn: starting a
/// thread costs tens of microseconds, more than sealing a few small batches.
const SIDE_BY_SIDE_BYTES: usize = 64 * 1024;

/// A batch sealed for one partition: numbered, encoded, and kept until the leader answers.
pub(super) struct Sealed {
    pub identity: Identity,
    pub base_sequence: i32,
    pub record_count: i32,
    /// The records, to recognise them when the caller sends them again (cheap: `Bytes` share
    /// the caller's buffers).
    pub records: Vec<(Bytes, Bytes)>,
    pub bytes: Bytes,
}

impl Sealed {
    /// Whether `share` is exactly the records this batch was sealed from, in order: the
    /// caller re-sending what was in doubt. (A record taken already reads as `None`.)
    pub fn holds<'a>(
        &self,
        share: impl ExactSizeIterator<Item = Option<&'a (Bytes, Bytes)>>,
    ) -> bool {
        share.len() == self.records.len()
            && share.zip(&self.records).all(|(r, sealed)| {
                r.is_some_and(|(key, value)| same(key, &sealed.0) && same(value, &sealed.1))
            })
    }
}

/// Whether two `Bytes` hold the same bytes. A record the caller sends again is usually the
/// same slice of the same buffer, which is told without reading it.
fn same(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Sealed batches, each with its partition.
pub(super) type Batches = Vec<(i32, Sealed)>;

/// One partition's records to seal, numbered from `base_sequence`.
pub(super) struct Unsealed {
    pub partition: i32,
    pub base_sequence: i32,
    pub records: Vec<(Bytes, Bytes)>,
}

/// Seals the batches of one request under `identity`, in the order given. A request big
/// enough for threads to pay is sealed by this thread and one helper per further batch, up to
/// one worker per core, each taking the next batch not yet taken (a helper that cannot start
/// leaves its share to the others).
pub(super) fn seal_all(
    batches: Vec<Unsealed>,
    identity: Identity,
    compression: Compression,
) -> Result<Batches, KafkaError> {
    let seal_one = move |b: Unsealed| seal_one(b, identity, compression);
    let bytes: usize = batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let count = batches.len();
    if count < 2 || bytes < SIDE_BY_SIDE_BYTES {
        return seal_in_turn(batches, identity, compression);
    }
    let queue = Mutex::new(batches.into_iter().enumerate());
    let work = || {
        let mut sealed = Vec::new();
        loop {
            // Nothing panics while holding the lock, but a poisoned queue is still whole.
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((i, batch)) = next else {
                return sealed;
            };
            sealed.push((i, seal_one(batch)));
        }
    };
    // One worker per core at most: a topic of many partitions gives a request many batches.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sealed = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..count.min(cores.max(2)))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("seal".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mut sealed = work();
        for helper in helpers {
            sealed.extend(helper.join().unwrap_or_default());
        }
        sealed
    });
    if sealed.len() < count {
        return Err(fatal("produce", "a thread sealing a batch failed"));
    }
    sealed.sort_unstable_by_key(|(i, _)| *i);
    sealed.into_iter().map(|(_, s)| s).collect()
}

/// Seals the batches one after the other on this thread. Batches sealed ahead are sealed so:
/// they have a request's round trip to hide in, and on a machine of few cores the leader
/// answering that request needs the core a helper would take (measured: sealed ahead side by
/// side, the producer spent about a tenth more CPU and ran about 5 % slower).
pub(super) fn seal_in_turn(
    batches: Vec<Unsealed>,
    identity: Identity,
    compression: Compression,
) -> Result<Batches, KafkaError> {
    batches
        .into_iter()
        .map(|b| seal_one(b, identity, compression))
        .collect()
}

fn seal_one(
    b: Unsealed,
    identity: Identity,
    compression: Compression,
) -> Result<(i32, Sealed), KafkaError> {
    seal(b.records, identity, b.base_sequence, compression).map(|s| (b.partition, s))
}

/// Numbers and encodes one partition's records as a record batch v2.
fn seal(
    batch: Vec<(Bytes, Bytes)>,
    identity: Identity,
    base_sequence: i32,
    compression: Compression,
) -> Result<Sealed, KafkaError> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let record_count = batch.len() as i32;
    // The records move into the codec's form and back out after encoding: cloning each key
    // and value would count references up and down twice per record, on counters the thread
    // that made the reports and the sending thread touch too.
    let mut records: Vec<Record> = batch
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: records::NO_PARTITION_LEADER_EPOCH,
            producer_id: identity.id,
            producer_epoch: identity.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: next_sequence(base_sequence, i as i32),
            timestamp,
            key: Some(key),
            value: Some(value),
            headers: Default::default(),
        })
        .collect();
    let mut bytes = BytesMut::with_capacity(
        records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Bytes::len) + 24)
            .sum::<usize>()
            + 64,
    );
    let options = RecordEncodeOptions {
        version: 2,
        compression: compression.codec(),
    };
    let encoded = if compression == Compression::Lz4 {
        RecordBatchEncoder::encode_with_custom_compression(
            &mut bytes,
            records.iter(),
            &options,
            Some(|records: &mut BytesMut, out: &mut BytesMut, _| Ok(lz4_fast(records, out)?)),
        )
    } else {
        RecordBatchEncoder::encode(&mut bytes, records.iter(), &options)
    };
    encoded.map_err(|e| {
        fatal(
            "produce",
            format!("encoding a {compression} batch failed: {e}"),
        )
    })?;
    let batch = records
        .iter_mut()
        .map(|r| {
            (
                r.key.take().unwrap_or_default(),
                r.value.take().unwrap_or_default(),
            )
        })
        .collect();
    Ok(Sealed {
        identity,
        base_sequence,
        record_count,
        records: batch,
        bytes: bytes.freeze(),
    })
}

/// Compresses a batch's records as one LZ4 frame at LZ4's fast level, as librdkafka does by
/// default: kafka-protocol's own encoder uses the high-compression level 4, which spends several
/// times the CPU for a few percent smaller batches of JSON. The frame layout (64 KiB independent
/// blocks) is the one Kafka's readers expect.
fn lz4_fast(records: &[u8], out: &mut BytesMut) -> std::io::Result<()> {
    use bytes::BufMut;
    use std::io::Write;
    let mut encoder = lz4::EncoderBuilder::new()
        .level(0)
        .block_size(lz4::BlockSize::Max64KB)
        .block_mode(lz4::BlockMode::Independent)
        // No content checksum, as neither Java's producer nor librdkafka writes one: each
        // record batch has its CRC-32C already, and hashing every byte again (XXH32) took a
        // sixth of the time lz4 spent on a batch. Nor a checksum per block, which the lz4 crate
        // writes unless told not to.
        .checksum(lz4::ContentChecksum::NoChecksum)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .build(out.writer())?;
    encoder.write_all(records)?;
    encoder.finish().1
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{BatchDecodeInfo, RecordBatchDecoder};

    /// A sealed batch read back: its header (one batch, or the test fails) and its values.
    fn read_back(sealed: &Sealed) -> (BatchDecodeInfo, Vec<Bytes>) {
        let mut info = RecordBatchDecoder::decode_batch_info(&mut sealed.bytes.clone()).unwrap();
        assert_eq!(info.len(), 1, "one batch");
        let set = RecordBatchDecoder::decode(&mut sealed.bytes.clone()).unwrap();
        let values = set.records.into_iter().map(|r| r.value.unwrap()).collect();
        (info.remove(0), values)
    }

    #[test]
    fn a_sealed_batch_carries_the_identity_and_sequence_in_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records = vec![
                (Bytes::from("web01"), Bytes::from("{\"a\":1}")),
                (Bytes::from("web01"), Bytes::from("{\"a\":2}")),
            ];
            let identity = Identity { id: 42, epoch: 3 };
            let sealed = seal(records.clone(), identity, i32::MAX - 1, compression).unwrap();
            assert_eq!(sealed.record_count, 2);
            assert!(
                sealed.holds(records.iter().map(Some)),
                "recognises its own records"
            );
            assert!(
                !sealed.holds(records[..1].iter().map(Some)),
                "not a part of them"
            );
            let other = [
                records[0].clone(),
                (Bytes::from("web01"), Bytes::from("{}")),
            ];
            assert!(!sealed.holds(other.iter().map(Some)), "not other records");
            let (info, values) = read_back(&sealed);
            assert_eq!(info.producer_id, 42);
            assert_eq!(info.producer_epoch, 3);
            assert_eq!(info.base_sequence, i32::MAX - 1);
            assert_eq!(info.record_count, 2);
            assert_eq!(info.compression, compression.codec());
            assert_eq!(values, [&b"{\"a\":1}"[..], &b"{\"a\":2}"[..]]);
            let set = RecordBatchDecoder::decode(&mut sealed.bytes.clone()).unwrap();
            assert_eq!(set.records[1].sequence, i32::MAX);
        }
    }

    /// Sealed side by side or in turn, each batch carries its own partition's records and
    /// sequence, in the order the batches were given.
    #[test]
    fn the_batches_of_a_request_are_sealed_each_with_its_own_records_and_sequence() {
        let identity = Identity { id: 7, epoch: 1 };
        // 3 x 400 records of ~200 bytes: past SIDE_BY_SIDE_BYTES; 3 x 2 records: below.
        for per_batch in [400, 2] {
            let batches: Vec<Unsealed> = [2, 0, 1]
                .into_iter()
                .map(|p| Unsealed {
                    partition: p,
                    base_sequence: 1000 * p,
                    records: (0..per_batch)
                        .map(|i| {
                            let value =
                                format!("{{\"p\":{p},\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(180));
                            (Bytes::from(format!("srv-{p}")), Bytes::from(value))
                        })
                        .collect(),
                })
                .collect();
            let expected: Vec<_> = batches.iter().map(|b| b.records.clone()).collect();
            let sealed = seal_all(batches, identity, Compression::Lz4).unwrap();
            let partitions: Vec<i32> = sealed.iter().map(|(p, _)| *p).collect();
            assert_eq!(
                partitions,
                [2, 0, 1],
                "in the order given ({per_batch} per batch)"
            );
            for ((p, s), records) in sealed.iter().zip(&expected) {
                assert!(s.holds(records.iter().map(Some)), "partition {p}");
                let (info, values) = read_back(s);
                assert_eq!(info.base_sequence, 1000 * p);
                assert_eq!(info.producer_id, 7);
                let want: Vec<&Bytes> = records.iter().map(|(_, v)| v).collect();
                assert_eq!(values.iter().collect::<Vec<_>>(), want, "partition {p}");
            }
        }
    }
}
