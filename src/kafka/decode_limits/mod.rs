//! Every count and length in an answer checked against the bytes that are really there, before
//! `kafka-protocol` decodes it.
//!
//! The crate sizes a vector from an array's count before it reads the elements: a count near
//! 2^31 in a frame of a few bytes asks for tens of GB, the allocation fails, and Rust aborts
//! the process (no unwinding, no LeaveGroup, no log line). The source may be a broker or
//! anything between us and it (plaintext), or, for the consumer protocol's subscription and
//! assignment bytes, another member of the group.
//!
//! So each answer is first walked here, field by field, following the layout of its API and
//! version (the schemas of Kafka's messages, written down for the versions we speak,
//! `versions::ours`): every array must hold as many elements as it claims and every string
//! or byte field as many bytes, within the frame. Only an answer that walks cleanly is handed
//! to the crate, whose allocations are then bounded by what the frame really holds. A known
//! tagged field is walked where the crate decodes it (in the stream), and must end where its
//! size says, so the walk and the crate always agree on where each field lies.
//!
//! Here: the walk; `layouts` holds the layouts it follows.

mod layouts;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Decodable;

use layouts::{response_layout, Tag, ASSIGNMENT, F, S, SUBSCRIPTION};

/// True when we hold the layout of the answer to `api` at `version`.
pub fn knows(api: ApiKey, version: i16) -> bool {
    response_layout(api, version).is_some()
}

/// Checks the answer `body` (after its header) to `api_key` at `version`, then decodes it.
/// A pair without a layout is refused: its counts could not be checked.
pub fn decode_response<R: Decodable>(
    api_key: i16,
    version: i16,
    body: &mut bytes::Bytes,
) -> Result<R, String> {
    let api = ApiKey::try_from(api_key).map_err(|()| format!("unknown API key {api_key}"))?;
    let (layout, flexible) = response_layout(api, version)
        .ok_or_else(|| format!("no layout for the answer to {api:?} v{version}"))?;
    check(layout, version, flexible, body)?;
    R::decode(body, version).map_err(|e| e.to_string())
}

/// Checks consumer-protocol bytes (a version, then a subscription or an assignment, as a
/// member writes them into JoinGroup and the leader into SyncGroup), then decodes them at
/// `version` clamped to what the crate reads (0 to 3).
pub fn decode_consumer_protocol<R: Decodable>(
    assignment: bool,
    version: i16,
    body: &mut bytes::Bytes,
) -> Result<R, String> {
    let version = version.clamp(0, 3);
    let layout = if assignment {
        &ASSIGNMENT
    } else {
        &SUBSCRIPTION
    };
    check(layout, version, false, body)?;
    R::decode(body, version).map_err(|e| e.to_string())
}

fn check(layout: &S, version: i16, flexible: bool, body: &[u8]) -> Result<(), String> {
    let mut walk = Walk {
        bytes: body,
        at: 0,
        version,
        flexible,
        depth: 0,
    };
    walk.structure(layout).map_err(|e| {
        format!(
            "malformed answer at byte {} of {}: {e}",
            walk.at,
            body.len()
        )
    })
}

/// Structures nest a few levels in the layouts; a deeper walk is a bug, not data.
const MAX_DEPTH: u32 = 8;

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
    depth: u32,
}

impl Walk<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.left() {
            return Err(format!("{n} bytes claimed, {} left", self.left()));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<i64, String> {
        let b = self.take(n)?;
        Ok(match n {
            2 => i64::from(i16::from_be_bytes([b[0], b[1]])),
            _ => i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        })
    }

    /// An unsigned varint read as the crate reads it: at most five bytes, bits past 32 lost.
    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = u32::from(self.take(1)?[0]);
            value |= (b & 0x7f).wrapping_shl(i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// The length of a string or bytes field, or an array's count; `None` for null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, String> {
        let n = if self.flexible {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            self.be(4)?
        } else {
            self.be(2)?
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(format!("a length of {n}")),
            n => Ok(Some(n as usize)),
        }
    }

    /// An array's count, checked against the bytes left: each element takes at least
    /// `min_size` of them.
    fn count(&mut self, min_size: usize) -> Result<usize, String> {
        let n = self.length(true)?.unwrap_or(0);
        if n.saturating_mul(min_size.max(1)) > self.left() {
            return Err(format!("an array of {n} elements in {} bytes", self.left()));
        }
        Ok(n)
    }

    fn field(&mut self, kind: F) -> Result<(), String> {
        match kind {
            F::Fixed(n) => self.take(n).map(|_| ()),
            F::Str => self.string(),
            F::Bytes => {
                let len = self.length(true)?;
                self.take(len.unwrap_or(0)).map(|_| ())
            }
            F::Ints(size) => {
                let n = self.count(size)?;
                self.take(n * size).map(|_| ())
            }
            F::Strings => {
                let n = self.count(if self.flexible { 1 } else { 2 })?;
                for _ in 0..n {
                    self.string()?;
                }
                Ok(())
            }
            F::Array(s) => {
                let n = self.count(1)?;
                for _ in 0..n {
                    self.structure(s)?;
                }
                Ok(())
            }
        }
    }

    fn string(&mut self) -> Result<(), String> {
        let len = self.length(false)?;
        self.take(len.unwrap_or(0)).map(|_| ())
    }

    /// A structure's fields at this version, then (in flexible versions) its tagged fields.
    fn structure(&mut self, s: &S) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("structures nested too deep".into());
        }
        for &(from, to, kind) in s.fields {
            if (from..=to).contains(&self.version) {
                self.field(kind)?;
            }
        }
        if self.flexible {
            self.tagged_fields(s)?;
        }
        self.depth -= 1;
        Ok(())
    }

    /// Tagged fields: a count, then tag, size and content each. A tag the crate decodes is
    /// walked in the stream, as the crate reads it, and must end where its size says; any
    /// other is passed by its size, as the crate passes it.
    fn tagged_fields(&mut self, s: &S) -> Result<(), String> {
        let n = self.uvarint()?;
        // Each tagged field takes at least two bytes (its tag and its size).
        if (n as usize).saturating_mul(2) > self.left() {
            return Err(format!("{n} tagged fields in {} bytes", self.left()));
        }
        for _ in 0..n {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.left() {
                return Err(format!(
                    "a tagged field of {size} bytes, {} left",
                    self.left()
                ));
            }
            let known = s
                .tags
                .iter()
                .find(|(t, from, _)| *t == tag && self.version >= *from);
            match known {
                Some(&(_, _, content)) => {
                    let start = self.at;
                    match content {
                        Tag::Field(kind) => self.field(kind)?,
                        Tag::Struct(inner) => self.structure(inner)?,
                    }
                    if self.at - start != size {
                        return Err(format!(
                            "tagged field {tag} of {size} bytes holds {}",
                            self.at - start
                        ));
                    }
                }
                None => {
                    self.take(size)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, MetadataResponse};

    /// A version added to `versions::ours` without its layout here would be refused at run
    /// time: this test names it first.
    #[test]
    fn every_version_we_speak_has_a_layout() {
        for key in 0..=100i16 {
            let Ok(api) = ApiKey::try_from(key) else {
                continue;
            };
            let Some(range) = super::super::versions::ours(api) else {
                continue;
            };
            for v in range.min..=range.max {
                assert!(
                    knows(api, v),
                    "{api:?} v{v} has no layout in decode_limits/layouts.rs"
                );
            }
        }
        assert!(knows(ApiKey::ApiVersions, 0));
    }

    #[test]
    fn a_count_larger_than_the_frame_is_refused_before_decoding() {
        // Metadata v12: throttle, then the brokers array as a compact count (n + 1).
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
        body.extend_from_slice(&[0; 16]);
        let e = decode_response::<MetadataResponse>(
            ApiKey::Metadata as i16,
            12,
            &mut bytes::Bytes::from(body),
        )
        .unwrap_err();
        assert!(
            e.contains("an array of 2147483646 elements in 16 bytes"),
            "{e}"
        );

        // A Fetch answer cut anywhere is refused, never decoded past its end.
        let e = decode_response::<FetchResponse>(
            ApiKey::Fetch as i16,
            13,
            &mut bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f]),
        )
        .unwrap_err();
        assert!(e.starts_with("malformed answer at byte"), "{e}");
        assert!(decode_response::<FetchResponse>(
            ApiKey::Fetch as i16,
            14,
            &mut bytes::Bytes::new()
        )
        .is_err());
    }

    #[test]
    fn a_tagged_field_must_end_where_its_size_says() {
        // Fetch v13 with one topic and one partition whose tagged field 1 (current leader, a
        // structure of 9 bytes with its own tagged-field count) claims 2 bytes.
        let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        body.extend_from_slice(&[0; 16]); // topic id
        body.push(2); // one partition
        body.extend_from_slice(&[0; 4 + 2 + 8 + 8 + 8]);
        body.push(0); // aborted transactions: null
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // preferred read replica
        body.push(0); // records: null
        body.extend_from_slice(&[1, 1, 2]); // one tagged field: tag 1, size 2
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 5, 0]);
        body.extend_from_slice(&[0, 0]); // the topic's and the answer's tagged fields
        let e = decode_response::<FetchResponse>(
            ApiKey::Fetch as i16,
            13,
            &mut bytes::Bytes::from(body.clone()),
        )
        .unwrap_err();
        assert!(e.contains("tagged field 1 of 2 bytes holds 9"), "{e}");
        let size_at = body.len() - 12;
        body[size_at] = 9;
        let r = decode_response::<FetchResponse>(
            ApiKey::Fetch as i16,
            13,
            &mut bytes::Bytes::from(body),
        )
        .unwrap();
        assert_eq!(r.responses[0].partitions[0].current_leader.leader_epoch, 5);
    }
}
