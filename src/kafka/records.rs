//! The decoding of what a fetch returns: record batches v2 in any codec a Kafka 3.9 broker
//! holds (none, gzip, snappy, lz4, zstd), mixed freely in one partition.
//!
//! A response is decoded batch by batch, because the broker cuts it at the byte limit and so
//! may end in a partial batch; the position then advances to the end of the last whole batch.
//! Control batches (transaction markers) are skipped: they carry no message. A batch's records
//! are read as a stream through a limit (src/kafka/batch.rs), so what a batch claims never
//! sizes memory.

use bytes::Bytes;

use super::batch::{read_batch, Budget};

/// Bytes in front of every batch: base offset (8) and batch length (4).
const BATCH_FRAME: usize = 12;
/// Where the v2 batch header keeps its magic byte, attributes and last offset delta.
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const HEADER_LEN: usize = 27;
/// The attributes bit of a control batch.
const CONTROL_BIT: i16 = 1 << 5;
/// The record bytes one partition's answer may keep once expanded (at least one record is
/// kept, up to the raw payload limit): past it, the next fetch starts at the first record not
/// kept, so a batch that expands a thousand times never holds more than this.
const KEPT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One record read from a partition: exactly what the engine consumes.
pub type FetchedRecord = crate::engine::Record;

/// A batch the consumer cannot read (corrupt, or a format Kafka 3 no longer writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub reason: String,
    /// Tells the bytes of this batch from other bytes at the same offset: a batch is passed
    /// over only once a second fetch returned the same bytes (corruption on the way would not
    /// repeat itself).
    pub fingerprint: u64,
}

impl UnreadableBatch {
    /// A batch known only by its first offset.
    fn at(offset: i64, problem: String, bytes: &[u8]) -> Self {
        UnreadableBatch {
            first_offset: offset,
            last_offset: offset,
            reason: format!("the batch at offset {offset} {problem}"),
            fingerprint: fingerprint(bytes),
        }
    }
}

/// The CRC-32C and the length of `bytes`.
fn fingerprint(bytes: &[u8]) -> u64 {
    (u64::from(crc32c::crc32c(bytes)) << 32) | (bytes.len() as u64 & 0xffff_ffff)
}

/// The records of one partition's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedRecords {
    /// Records at or after the fetch offset, in offset order.
    pub records: Vec<FetchedRecord>,
    /// The offset after the last whole batch, if the answer held one: where the next fetch
    /// starts. It may lie past the last record (control batches, compaction gaps).
    pub next_offset: Option<i64>,
    pub unreadable: Vec<UnreadableBatch>,
    /// Transaction markers skipped.
    pub control_records: u64,
    /// The answer ended in a batch cut short by the byte limit.
    pub truncated: bool,
}

/// Decodes the `records` bytes of one partition, fetched from `fetch_offset`.
pub fn decode_records(partition: i32, fetch_offset: i64, data: &Bytes) -> DecodedRecords {
    let mut out = DecodedRecords::default();
    let mut budget = Budget::new(KEPT_BYTES_MAX);
    let mut at = 0usize;
    while data.len() - at >= BATCH_FRAME {
        let base_offset = be_i64(&data[at..at + 8]);
        let length = be_i32(&data[at + 8..at + 12]);
        let Ok(length) = usize::try_from(length) else {
            // A negative length cannot be framed past: treat the rest as one unreadable batch.
            out.unreadable.push(UnreadableBatch::at(
                base_offset,
                "has a negative length".into(),
                &data[at..],
            ));
            break;
        };
        let end = at + BATCH_FRAME + length;
        if end > data.len() {
            out.truncated = true;
            break;
        }
        let batch = data.slice(at..end);
        at = end;
        // Message sets v0/v1: a Kafka 3 broker stores v2 only, so they cannot normally occur;
        // their last offset is not in a fixed place, so only the first is named.
        let problem = if batch.len() < HEADER_LEN {
            Some("is shorter than its header".to_string())
        } else {
            let magic = batch[MAGIC_AT] as i8;
            (magic != 2).then(|| format!("is a message set v{magic}, not supported"))
        };
        if let Some(problem) = problem {
            out.unreadable
                .push(UnreadableBatch::at(base_offset, problem, &batch));
            out.next_offset = Some(base_offset.saturating_add(1));
            continue;
        }
        let attributes = be_i16(&batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]);
        // Offsets from the wire: arithmetic on them saturates rather than overflows.
        let last_offset =
            base_offset.saturating_add(i64::from(be_i32(&batch[LAST_OFFSET_DELTA_AT..HEADER_LEN])));
        out.next_offset = Some(last_offset.saturating_add(1));
        if last_offset < fetch_offset {
            continue;
        }
        if attributes & CONTROL_BIT != 0 {
            out.control_records += 1;
            continue;
        }
        match read_batch(partition, fetch_offset, &batch, &mut budget) {
            Ok(read) => {
                out.records.extend(read.records);
                if let Some((first_offset, why)) = read.stopped {
                    out.unreadable.push(UnreadableBatch {
                        first_offset,
                        last_offset,
                        reason: format!("the batch at offset {base_offset} {why}"),
                        fingerprint: fingerprint(&batch),
                    });
                }
                if let Some(resume) = read.resume_at {
                    // No room for more records in this answer: the next fetch starts there.
                    out.next_offset = Some(resume);
                    break;
                }
            }
            Err(why) => out.unreadable.push(UnreadableBatch {
                first_offset: base_offset.max(fetch_offset),
                last_offset,
                reason: format!("the batch at offset {base_offset} {why}"),
                fingerprint: fingerprint(&batch),
            }),
        }
    }
    out
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8]) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, value: Option<&str>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            // The encoder keeps records in one batch while offset - sequence stays the same.
            sequence: offset as i32,
            timestamp: 0,
            key: Some(Bytes::from_static(b"k")),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        }
    }

    /// One batch of `values` starting at `base`, in `compression`.
    fn batch(base: i64, values: &[&str], compression: Compression) -> BytesMut {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(base + i as i64, Some(v)))
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf
    }

    fn offsets(d: &DecodedRecords) -> Vec<i64> {
        d.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn reads_every_codec_mixed_in_one_partition() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(0, &["a", "b", "c"], Compression::None));
        all.extend_from_slice(&batch(3, &["d", "e"], Compression::Gzip));
        all.extend_from_slice(&batch(5, &["f"], Compression::None));
        all.extend_from_slice(&batch(6, &["g", "h"], Compression::Snappy));
        all.extend_from_slice(&batch(8, &["i", "j"], Compression::Lz4));
        all.extend_from_slice(&batch(10, &["k", "l"], Compression::Zstd));
        let d = decode_records(0, 0, &all.freeze());
        assert_eq!(offsets(&d), (0..12).collect::<Vec<_>>());
        let values: Vec<&[u8]> = d
            .records
            .iter()
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        assert_eq!(values[3], b"d");
        assert_eq!(values[11], b"l");
        assert_eq!(d.next_offset, Some(12));
        assert!(!d.truncated && d.unreadable.is_empty());
    }

    #[test]
    fn a_partial_last_batch_is_left_for_the_next_fetch() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(0, &["a", "b"], Compression::None));
        let second = batch(2, &["c", "d"], Compression::Gzip);
        all.extend_from_slice(&second[..second.len() - 5]);
        let d = decode_records(0, 0, &all.freeze());
        assert_eq!(offsets(&d), [0, 1]);
        assert_eq!(d.next_offset, Some(2));
        assert!(d.truncated);

        // Only a partial batch: no progress, and the caller knows it must ask for more bytes.
        let d = decode_records(0, 2, &second.freeze().slice(..20));
        assert_eq!(d.next_offset, None);
        assert!(d.truncated);
    }

    #[test]
    fn records_before_the_fetch_offset_are_dropped() {
        let all = batch(10, &["a", "b", "c", "d"], Compression::Lz4).freeze();
        let d = decode_records(3, 12, &all);
        assert_eq!(offsets(&d), [12, 13]);
        assert!(d.records.iter().all(|r| r.partition == 3));
        assert_eq!(d.next_offset, Some(14));
    }

    #[test]
    fn tombstones_are_records_without_value() {
        let records = vec![record(0, None), record(1, Some("x"))];
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let d = decode_records(0, 0, &buf.freeze());
        assert_eq!(d.records[0].value, None);
        assert_eq!(d.records[1].value.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn control_batches_are_skipped_but_advance_the_position() {
        let mut control = record(2, Some("marker"));
        control.control = true;
        control.transactional = true;
        control.producer_id = 7;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch(0, &["a", "b"], Compression::None));
        RecordBatchEncoder::encode(
            &mut buf,
            &[control],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let d = decode_records(0, 0, &buf.freeze());
        assert_eq!(offsets(&d), [0, 1]);
        assert_eq!(d.control_records, 1);
        assert_eq!(d.next_offset, Some(3));
    }

    #[test]
    fn a_corrupt_batch_is_named_and_passed() {
        let mut buf = BytesMut::new();
        let mut bad = batch(0, &["a", "b"], Compression::None);
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // breaks the CRC
        buf.extend_from_slice(&bad);
        buf.extend_from_slice(&batch(2, &["c"], Compression::None));
        let d = decode_records(0, 0, &buf.freeze());
        assert_eq!(offsets(&d), [2]);
        assert_eq!(d.unreadable.len(), 1);
        assert_eq!(
            (d.unreadable[0].first_offset, d.unreadable[0].last_offset),
            (0, 1)
        );
        assert_eq!(d.next_offset, Some(3));
    }

    fn encode(records: &[Record], compression: Compression) -> BytesMut {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf
    }

    #[test]
    fn a_value_past_the_raw_limit_keeps_its_head_length_and_digest_and_the_batch_goes_on() {
        use crate::engine::{DEAD_LETTER_HEAD_BYTES, MAX_PAYLOAD_BYTES};
        use sha2::{Digest, Sha256};
        let big = vec![b'z'; MAX_PAYLOAD_BYTES + 12_345];
        let mut records = vec![record(0, Some("a")), record(1, None), record(2, Some("c"))];
        records[1].value = Some(Bytes::from(big.clone()));
        for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let d = decode_records(4, 0, &encode(&records, compression).freeze());
            assert_eq!(offsets(&d), [0, 1, 2], "{compression:?}");
            assert!(d.unreadable.is_empty(), "{:?}", d.unreadable);
            let r = &d.records[1];
            assert_eq!(r.value.as_deref(), Some(&big[..DEAD_LETTER_HEAD_BYTES]));
            let o = r.oversized.as_ref().unwrap();
            assert_eq!(o.len, big.len() as u64);
            assert!(o.complete);
            assert_eq!(o.sha256, crate::engine::hex(&Sha256::digest(&big)));
            assert_eq!(d.records[2].value.as_deref(), Some(&b"c"[..]));
            assert_eq!(d.records[2].oversized, None);
        }
    }

    #[test]
    fn an_answer_keeps_a_bounded_number_of_bytes_and_resumes_where_it_stopped() {
        let value = "v".repeat(3 * 1024 * 1024);
        let values: Vec<&str> = (0..12).map(|_| value.as_str()).collect();
        let all = batch(100, &values, Compression::Zstd).freeze();
        let mut from = 100;
        let mut seen = Vec::new();
        while from < 112 {
            let d = decode_records(0, from, &all);
            let kept: usize = d
                .records
                .iter()
                .map(|r| r.value.as_ref().unwrap().len())
                .sum();
            assert!(kept <= KEPT_BYTES_MAX, "{kept}");
            assert!(!d.records.is_empty());
            seen.extend(offsets(&d));
            from = d.next_offset.unwrap();
        }
        assert_eq!(seen, (100..112).collect::<Vec<_>>());
    }

    #[test]
    fn counts_and_lengths_in_a_batch_size_nothing() {
        let good = batch(0, &["a", "b"], Compression::None);
        // The record count and a record's value length set to the largest i32: the batch is
        // refused or cut short, nothing is reserved by those numbers.
        let mut bad = good.clone();
        bad[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let d = decode_records(0, 0, &bad.freeze());
        assert!(d.records.is_empty());
        assert!(d.unreadable[0]
            .reason
            .contains("counts 2147483647 records for 2 offsets"));

        let mut r = record(0, Some("x"));
        r.value = Some(Bytes::from_static(b"0123456789"));
        let mut bad = encode(&[r], Compression::None);
        // The value length varint (zigzag 10 = 0x14) becomes a 5-byte i32::MAX.
        let at = bad.iter().rposition(|&b| b == 0x14).unwrap();
        let mut patched = bad[..at].to_vec();
        patched.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        patched.extend_from_slice(&bad[at + 1..]);
        bad = BytesMut::from(&patched[..]);
        let len = (bad.len() - 12) as i32;
        bad[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let d = decode_records(0, 0, &bad.freeze());
        assert_eq!(d.records.len(), 1, "{d:?}");
        let o = d.records[0].oversized.as_ref().unwrap();
        assert!(!o.complete);
        assert!(o.len < 100);
    }
}
