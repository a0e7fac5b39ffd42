//! The records of one record batch (format v2), read as a stream from the batch's expanded
//! bytes (src/kafka/decompress.rs) instead of being decoded into memory at once.
//!
//! Every length and count in a batch comes from whoever produced it, so none sizes anything
//! before it is checked: a value up to [`MAX_PAYLOAD_BYTES`] is read into memory; a larger one
//! keeps its head ([`DEAD_LETTER_HEAD_BYTES`]) and passes through SHA-256 as it is read, so its
//! dead letter still identifies it; keys and headers are read past, never kept. The records one
//! fetch keeps are bounded too ([`Budget`]): past the budget, the next fetch starts at the first
//! record not kept. A batch may expand to at most [`EXPANDED_BATCH_MAX`] bytes; reading stops
//! there, and what is left of the batch is reported unreadable.

use std::io::{self, BufRead, Read};

use sha2::{Digest, Sha256};

use super::decompress::{expand, skip, Codec};
use super::records::FetchedRecord;
use crate::engine::{hex, Oversized, DEAD_LETTER_HEAD_BYTES, MAX_PAYLOAD_BYTES};

/// The most bytes one batch may expand to. Far above anything a producer writes (a batch is a
/// few MB at most), it bounds the time spent on a bomb, not the memory: that stays bounded
/// whatever the size.
pub const EXPANDED_BATCH_MAX: u64 = 4 << 30;
/// What one kept record costs the budget besides its value: its place in the list.
const RECORD_COST: usize = 64;

/// Where the fixed fields of a v2 batch lie (the base offset and length included).
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;
/// The length of a v2 batch's header: its records start here.
pub const RECORDS_AT: usize = 61;

/// How many record bytes one fetch may still keep in memory. The first record kept is always
/// taken, whatever its size, so a fetch always makes progress.
#[derive(Debug)]
pub struct Budget {
    left: usize,
    spent: bool,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Budget {
            left: bytes,
            spent: false,
        }
    }

    /// Takes `cost` if there is room (or nothing was taken yet).
    fn take(&mut self, cost: usize) -> bool {
        if self.spent && cost > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(cost);
        self.spent = true;
        true
    }
}

/// What one batch gave.
#[derive(Debug, Default)]
pub struct BatchRead {
    /// The records at or after the fetch offset, in offset order.
    pub records: Vec<FetchedRecord>,
    /// Reading stopped before the batch's end: the first offset not read, and why.
    pub stopped: Option<(i64, String)>,
    /// The budget ran out at this record: the next fetch starts here.
    pub resume_at: Option<i64>,
}

/// Reads the records of `batch` (a whole v2 batch, from its base offset on) at or after
/// `fetch_offset`. An `Err` names a problem found before any record: the whole batch is
/// unreadable.
pub fn read_batch(
    partition: i32,
    fetch_offset: i64,
    batch: &[u8],
    budget: &mut Budget,
) -> Result<BatchRead, String> {
    if batch.len() < RECORDS_AT {
        return Err("is shorter than its header".into());
    }
    let base = i64::from_be_bytes(batch[..8].try_into().unwrap_or_default());
    let crc = u32::from_be_bytes(batch[CRC_AT..ATTRIBUTES_AT].try_into().unwrap_or_default());
    let actual = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    if crc != actual {
        return Err(format!(
            "fails its checksum (CRC-32C {crc:#010x} written, {actual:#010x} computed)"
        ));
    }
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
    let codec = Codec::from_attributes(attributes)
        .ok_or_else(|| format!("names an unknown codec ({})", attributes & 0x7))?;
    let last_delta = i32::from_be_bytes(
        batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .try_into()
            .unwrap_or_default(),
    );
    let last = base
        .checked_add(i64::from(last_delta))
        .filter(|_| last_delta >= 0)
        .ok_or_else(|| format!("has a last offset delta of {last_delta}"))?;
    let count = i32::from_be_bytes(
        batch[RECORD_COUNT_AT..RECORDS_AT]
            .try_into()
            .unwrap_or_default(),
    );
    if count < 0 || i64::from(count) > i64::from(last_delta) + 1 {
        return Err(format!(
            "counts {count} records for {} offsets",
            i64::from(last_delta) + 1
        ));
    }
    let mut stream = expand(codec, &batch[RECORDS_AT..], EXPANDED_BATCH_MAX)
        .map_err(|e| format!("cannot be expanded ({e})"))?;

    let mut out = BatchRead::default();
    let mut next = base;
    let expect = |next: i64| Expect {
        partition,
        base,
        last,
        fetch_offset,
        next,
    };
    for i in 0..count {
        match read_record(&mut stream, &expect(next), budget) {
            Ok(Read1::Kept(r)) => {
                next = r.offset.saturating_add(1);
                out.records.push(r);
            }
            Ok(Read1::Passed(offset)) => next = offset.saturating_add(1),
            Ok(Read1::NoRoom(offset)) => {
                out.resume_at = Some(offset);
                return Ok(out);
            }
            Ok(Read1::Cut(r, why)) => {
                let from = r.offset.saturating_add(1);
                out.records.push(r);
                if from <= last {
                    out.stopped = Some((from, why));
                }
                return Ok(out);
            }
            Err(e) => {
                let why = match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        format!("ends after {i} of its {count} records")
                    }
                    _ => format!("cannot be read past record {i} of {count} ({e})"),
                };
                out.stopped = Some((next.max(fetch_offset), why));
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// What the next record is checked against.
struct Expect {
    partition: i32,
    base: i64,
    last: i64,
    fetch_offset: i64,
    /// The lowest offset it may have.
    next: i64,
}

/// One record read.
enum Read1 {
    Kept(FetchedRecord),
    /// Before the fetch offset: read past.
    Passed(i64),
    /// The budget has no room for the record at this offset.
    NoRoom(i64),
    /// Kept, but its value could not be read to its end: the batch stops there.
    Cut(FetchedRecord, String),
}

fn read_record(stream: &mut impl BufRead, x: &Expect, budget: &mut Budget) -> io::Result<Read1> {
    let length = varint(stream)?;
    let length = u64::try_from(length).map_err(|_| invalid(format!("a length of {length}")))?;
    let mut body = stream.take(length);
    let _attributes = byte(&mut body)?;
    let _timestamp_delta = varlong(&mut body)?;
    let delta = varint(&mut body)?;
    let offset = x.base.saturating_add(i64::from(delta));
    if delta < 0 || offset < x.next || offset > x.last {
        return Err(invalid(format!(
            "a record at offset {offset}, outside {}..={}",
            x.next, x.last
        )));
    }
    let key = varint(&mut body)?;
    exact_skip(&mut body, key)?;
    let value_len = varint(&mut body)?;
    if value_len < -1 {
        return Err(invalid(format!("a value length of {value_len}")));
    }
    if offset < x.fetch_offset {
        exact_skip(&mut body, value_len)?;
        skip_headers(&mut body)?;
        return finish(body, Read1::Passed(offset));
    }
    // A length from the wire: only what the budget allows is ever reserved.
    let value_len = usize::try_from(value_len).ok();
    let kept_len = value_len.map_or(0, |n| {
        if n > MAX_PAYLOAD_BYTES {
            DEAD_LETTER_HEAD_BYTES
        } else {
            n
        }
    });
    if !budget.take(kept_len + RECORD_COST) {
        return Ok(Read1::NoRoom(offset));
    }
    let record = |value, oversized| FetchedRecord {
        partition: x.partition,
        offset,
        value,
        oversized,
    };
    let Some(value_len) = value_len else {
        skip_headers(&mut body)?;
        return finish(body, Read1::Kept(record(None, None)));
    };
    let mut value_stream = (&mut body).take(value_len as u64);
    if value_len <= MAX_PAYLOAD_BYTES {
        // Grown as the bytes really arrive: a length that lies reserves no more than they.
        let mut value = Vec::with_capacity(value_len.min(DEAD_LETTER_HEAD_BYTES));
        value_stream.read_to_end(&mut value)?;
        if value.len() < value_len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        skip_headers(&mut body)?;
        return finish(body, Read1::Kept(record(Some(value), None)));
    }
    // Too large to keep: its head, and its length and digest as far as it can be read.
    let mut head = Vec::with_capacity(DEAD_LETTER_HEAD_BYTES);
    let mut sha = Sha256::new();
    let mut len = 0u64;
    let stopped = loop {
        let chunk = match value_stream.fill_buf() {
            Ok([]) => break (len < value_len as u64).then(|| "ends early".to_string()),
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(e.to_string()),
        };
        let room = DEAD_LETTER_HEAD_BYTES - head.len();
        head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        sha.update(chunk);
        let n = chunk.len();
        len += n as u64;
        value_stream.consume(n);
    };
    let oversized = Oversized {
        len,
        sha256: hex(&sha.finalize()),
        complete: stopped.is_none(),
    };
    let r = record(Some(head), Some(oversized));
    match stopped {
        Some(why) => Ok(Read1::Cut(
            r,
            format!("stops in the value of offset {offset}, {len} bytes in ({why})"),
        )),
        None => {
            skip_headers(&mut body)?;
            finish(body, Read1::Kept(r))
        }
    }
}

/// A record must end where its length said.
fn finish<R>(body: io::Take<R>, read: Read1) -> io::Result<Read1> {
    match body.limit() {
        0 => Ok(read),
        n => Err(invalid(format!("{n} bytes left over in a record"))),
    }
}

fn skip_headers(body: &mut impl BufRead) -> io::Result<()> {
    let count = varint(body)?;
    if count < 0 {
        return Err(invalid(format!("a header count of {count}")));
    }
    // Each header takes at least two bytes of the record, so the record's length bounds this.
    for _ in 0..count {
        let key = varint(body)?;
        if key < 0 {
            return Err(invalid(format!("a header key length of {key}")));
        }
        exact_skip(body, key)?;
        let value = varint(body)?;
        exact_skip(body, value)?;
    }
    Ok(())
}

/// Reads past a length-prefixed field of `len` bytes (-1: null).
fn exact_skip(r: &mut impl BufRead, len: i32) -> io::Result<()> {
    if len < -1 {
        return Err(invalid(format!("a field length of {len}")));
    }
    let want = u64::try_from(len).unwrap_or(0);
    if skip(r, want)? < want {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn byte(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

/// A zigzag varint of at most 5 bytes.
fn varint(r: &mut impl Read) -> io::Result<i32> {
    let v = unsigned(r, 5)?;
    let v = u32::try_from(v).map_err(|_| invalid("a varint past 32 bits".into()))?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// A zigzag varlong of at most 10 bytes.
fn varlong(r: &mut impl Read) -> io::Result<i64> {
    let v = unsigned(r, 10)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn unsigned(r: &mut impl Read, max_bytes: u32) -> io::Result<u64> {
    let mut v = 0u64;
    for i in 0..max_bytes {
        let b = byte(r)?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(invalid("a varint too long".into()))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("holds {what}"))
}
