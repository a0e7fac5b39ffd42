//! The verdict on one record that needs no database: too large, or what validation says; and
//! what a dead letter keeps of its payload.
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{DeadLetter, DeadLetterCode, DeadPayload, Limits, Position, Record, StoredPosition};
use crate::metric::{validate_record, Rejection, RejectionCode, ValidMetric};

/// What a step decided about one record.
pub(super) enum Fate {
    /// Valid: stored raw now, or already stored from this position.
    Valid(ValidMetric),
    /// Dead-lettered.
    Dead(Death),
}

/// Why a record is dead-lettered, and what of its payload is kept.
pub(super) struct Death {
    code: DeadLetterCode,
    reason: String,
    kept: Kept,
    duplicate_of: Option<StoredPosition>,
}

pub(super) enum Kept {
    /// The value as it is (none for a record without value).
    Whole,
    /// The first `head` bytes; `len` and `sha256` describe the whole payload.
    Truncated {
        head: usize,
        len: usize,
        sha256: String,
    },
}

impl Death {
    pub(super) fn rejected(r: Rejection) -> Self {
        Death {
            code: DeadLetterCode::Rejected(r.code),
            reason: r.reason,
            kept: Kept::Whole,
            duplicate_of: None,
        }
    }

    pub(super) fn duplicate(first: StoredPosition) -> Self {
        // The reason stays the documented constant; `duplicate_of` says where the first copy is.
        let reason = Rejection::duplicate().reason;
        Death {
            code: DeadLetterCode::Rejected(RejectionCode::DuplicateMessageUuid),
            reason,
            kept: Kept::Whole,
            duplicate_of: Some(first),
        }
    }

    pub(super) fn letter<'a>(
        &'a self,
        record: &'a Record,
        position: Position<'a>,
        received_at: OffsetDateTime,
    ) -> DeadLetter<'a> {
        let payload = match (&self.kept, record.value.as_deref()) {
            (_, None) => DeadPayload::Missing,
            (Kept::Whole, Some(bytes)) => DeadPayload::Whole(bytes),
            (Kept::Truncated { head, len, sha256 }, Some(bytes)) => DeadPayload::Truncated {
                head: bytes.get(..*head).unwrap_or(bytes),
                len: *len,
                sha256,
            },
        };
        DeadLetter {
            code: self.code,
            reason: &self.reason,
            payload,
            position,
            received_at,
            duplicate_of: self.duplicate_of.as_ref(),
        }
    }
}

/// The verdict on one record that needs no database: too large, or what validation says
/// (a record without value is refused there as `no_value`).
pub(super) fn judge(record: &Record, limits: &Limits) -> Fate {
    let value = record.value.as_deref();
    if let Some(o) = &record.oversized {
        let head = head_len(value.unwrap_or_default(), limits.head_bytes);
        let size = if o.complete {
            format!("payload of {} bytes", o.len)
        } else {
            format!("payload of more than {} bytes (read that far)", o.len)
        };
        return Fate::Dead(Death {
            code: DeadLetterCode::PayloadTooLarge,
            reason: format!(
                "{size} is larger than the {} bytes stored raw; kept its first {head} bytes and the SHA-256 of what was read",
                limits.payload_bytes
            ),
            kept: Kept::Truncated {
                head,
                len: usize::try_from(o.len).unwrap_or(usize::MAX),
                sha256: o.sha256.clone(),
            },
            duplicate_of: None,
        });
    }
    if let Some(payload) = value.filter(|p| p.len() > limits.payload_bytes) {
        let head = head_len(payload, limits.head_bytes);
        return Fate::Dead(Death {
            code: DeadLetterCode::PayloadTooLarge,
            reason: format!(
                "payload of {} bytes is larger than the {} bytes stored raw; kept its first {head} bytes and its SHA-256",
                payload.len(),
                limits.payload_bytes
            ),
            kept: Kept::Truncated {
                head,
                len: payload.len(),
                sha256: sha256_hex(payload),
            },
            duplicate_of: None,
        });
    }
    match validate_record(value) {
        Ok(v) => Fate::Valid(v),
        Err(r) => Fate::Dead(Death::rejected(r)),
    }
}

/// How many leading bytes of an oversized payload to keep: at most `max`, cut back to a
/// character boundary when the payload is UTF-8, so the kept head is still readable text.
pub(super) fn head_len(payload: &[u8], max: usize) -> usize {
    let head = &payload[..max.min(payload.len())];
    match std::str::from_utf8(head) {
        Ok(_) => head.len(),
        // Only the last character is cut: keep what comes before it.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        // Not UTF-8 anyway: it is kept as binary, byte for byte.
        Err(_) => head.len(),
    }
}

/// Lowercase hex SHA-256.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut hex, b| {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
