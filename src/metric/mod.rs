//! The metric message: what a server reports, how it is written, and how a received payload
//! is validated. Pure: no Kafka, no MongoDB, no clock.

mod payload;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use uuid::fmt::Hyphenated;
use uuid::Uuid;

/// One report of one server, exactly as the exercise defines the message. The server's name
/// and the report's time are shared by the messages that carry them, and the id is held as
/// its 16 bytes (written as lower-case hyphenated text, as `uuid4()` prints): a message
/// allocates nothing of its own (three allocations each were a fifth of the producer's work).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricMessage {
    pub server_id: Arc<str>,
    /// RFC 3339 in UTC with an explicit `+00:00` offset and microseconds.
    pub timestamp_utc: Arc<str>,
    pub metrics: Metrics,
    pub message_uuid: Uuid,
}

/// The five measured values of a report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub disk_io_mbps: f64,
    pub network_mbps: f64,
    pub error_count: i64,
}

impl MetricMessage {
    /// The JSON payload sent to Kafka: the same bytes `serde_json::to_string` writes for this
    /// struct (a test holds the two equal), written by hand because the producer makes one per
    /// message and serde's generic path cost it more than everything else it does (about 4,400
    /// of 10,300 instructions per message in a callgrind profile of `produce --interval 0`).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.json_len_estimate());
        self.write_json(&mut out);
        // Only whole UTF-8 strings and ASCII were written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// About how many bytes [`MetricMessage::to_json`] writes (at least that many, unless a
    /// string needs escapes), to size buffers.
    pub fn json_len_estimate(&self) -> usize {
        JSON_FIXED_BYTES + self.server_id.len() + self.timestamp_utc.len() + Hyphenated::LENGTH
    }

    /// Appends the JSON payload to `out` (UTF-8), so that a caller can write many messages into
    /// one buffer.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let m = &self.metrics;
        out.extend_from_slice(b"{\"server_id\":");
        push_json_str(out, &self.server_id);
        out.extend_from_slice(b",\"timestamp_utc\":");
        push_json_str(out, &self.timestamp_utc);
        out.extend_from_slice(b",\"metrics\":{\"cpu_percent\":");
        push_json_f64(out, m.cpu_percent);
        out.extend_from_slice(b",\"memory_percent\":");
        push_json_f64(out, m.memory_percent);
        out.extend_from_slice(b",\"disk_io_mbps\":");
        push_json_f64(out, m.disk_io_mbps);
        out.extend_from_slice(b",\"network_mbps\":");
        push_json_f64(out, m.network_mbps);
        out.extend_from_slice(b",\"error_count\":");
        // Writing into a Vec cannot fail.
        let _ = CompactFormatter.write_i64(out, m.error_count);
        out.extend_from_slice(b"},\"message_uuid\":\"");
        let mut id = [0; Hyphenated::LENGTH];
        // Hex digits and hyphens: nothing to escape.
        out.extend_from_slice(
            self.message_uuid
                .hyphenated()
                .encode_lower(&mut id)
                .as_bytes(),
        );
        out.extend_from_slice(b"\"}");
    }
}

/// The bytes of a message's JSON besides its three strings: keys, punctuation, numbers.
const JSON_FIXED_BYTES: usize = 160;

/// Appends `text` as a JSON string. Text with nothing to escape (every generated id and
/// timestamp) is copied whole; anything else goes through serde_json, so escapes stay its own.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Whether JSON needs an escape for any byte of `text`: a control character, `"` or `\\`.
/// Eight bytes at a time (the byte-by-byte loop was a tenth of the producer's instructions).
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `x` is zero (the classic test: exact for "any", which is all we ask).
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    // Whether any byte of `x` is below 0x20, i.e. any byte has none of the bits 0xe0 set.
    let has_control = |x: u64| has_zero(x & u64::from_ne_bytes([0xe0; 8]));
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if has_control(x)
            || has_zero(x ^ u64::from_ne_bytes([b'"'; 8]))
            || has_zero(x ^ u64::from_ne_bytes([b'\\'; 8]))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends a float as serde_json writes it: shortest round-trip form, `null` when not finite.
fn push_json_f64(out: &mut Vec<u8>, value: f64) {
    if let Some(cents) = whole_cents(value) {
        push_cents(out, cents);
    } else if value.is_finite() {
        // Writing into a Vec cannot fail.
        let _ = CompactFormatter.write_f64(out, value);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Below this, a double is within 0.002 of its neighbours' distance (its ulp is at most
/// 2^-9), so no two decimals with at most two fractional digits round to the same double.
const CENTS_EXACT_BELOW: f64 = 1e13;

/// `value` in hundredths, when `value` is the double nearest to a decimal with at most two
/// fractional digits (every value the generator draws: it rounds to 2 decimals), non-negative
/// and below [`CENTS_EXACT_BELOW`]. The shortest text that reads back as such a double is that
/// decimal itself (any other decimal of as few digits lies 0.01 away, many ulps off), which is
/// what serde_json writes: so it can be written from an integer, without the general
/// shortest-digits search that took a tenth of the producer's instructions.
fn whole_cents(value: f64) -> Option<u64> {
    if !(0.0..CENTS_EXACT_BELOW).contains(&value) || value.is_sign_negative() {
        return None;
    }
    // Half up is enough (the value is not negative), and cheaper than `round`: a wrong guess
    // fails the check below and takes the general path.
    let cents = (value * 100.0 + 0.5) as u64;
    // Exact: `cents` is below 2^53, and IEEE division rounds correctly, so this is the double
    // nearest to cents / 100.
    (cents as f64 / 100.0 == value).then_some(cents)
}

/// Writes `cents / 100` as serde_json writes that double: the integer part, a point, and the
/// fraction without trailing zeros but at least one digit (`41.2`, `41.0`, `0.05`).
fn push_cents(out: &mut Vec<u8>, cents: u64) {
    // The integer part has at most 11 digits below CENTS_EXACT_BELOW; written backwards.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut whole = cents / 100;
    loop {
        at -= 1;
        digits[at] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    let fraction = cents % 100;
    out.push(b'.');
    out.push(b'0' + (fraction / 10) as u8);
    if !fraction.is_multiple_of(10) {
        out.push(b'0' + (fraction % 10) as u8);
    }
}

/// Formats an instant the way the exercise's Python producer does
/// (`datetime.now(timezone.utc).isoformat()`): `2026-11-22T18:00:00.123456+00:00`.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let utc = at.to_offset(UtcOffset::UTC);
    let layout = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    // Every UTC instant between years 0 and 9999 fits this layout.
    utc.format(&layout).unwrap_or_default()
}

/// Parses `timestamp_utc`: RFC 3339 or ISO 8601 with an offset, or a naive ISO 8601 date-time
/// (what Python's `datetime.utcnow().isoformat()` writes), which is taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .or_else(|_| PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).map(|t| t.assume_utc()))
        .ok()
        .map(|t| t.to_offset(UtcOffset::UTC))
}

pub use payload::Field;
use payload::{name_with_nul, Scalar, Shallow, TopLevel};

/// A payload that passed validation: the typed fields the pipeline computes with, and the
/// original JSON object's fields, kept whole so the raw store holds the message exactly as
/// received.
#[derive(Debug, Clone)]
pub struct ValidMetric {
    /// The payload's top-level fields in the order received, each as its JSON text (parsed
    /// once; the store writes BSON from it without a tree of values in between).
    pub fields: Vec<Field>,
    pub server_id: String,
    pub timestamp: OffsetDateTime,
    pub metrics: Metrics,
    pub message_uuid: String,
}

/// Why a payload was refused; `code` is stable for programs, `reason` is written for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectionCode,
    pub reason: String,
}

/// The kinds of bad input, as stored in the dead-letter collection's `reason_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionCode {
    /// The Kafka record has no value at all (a tombstone).
    NoValue,
    NotUtf8,
    InvalidJson,
    NotAnObject,
    BadServerId,
    BadTimestamp,
    BadMetrics,
    BadMessageUuid,
    /// A field name the database cannot store (it holds a NUL character).
    BadFieldName,
    /// The same `message_uuid` is already stored from another Kafka position.
    DuplicateMessageUuid,
    /// The database refused the document for a reason other than a duplicate.
    RejectedByDatabase,
}

impl RejectionCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::NoValue => "no_value",
            RejectionCode::NotUtf8 => "not_utf8",
            RejectionCode::InvalidJson => "invalid_json",
            RejectionCode::NotAnObject => "not_an_object",
            RejectionCode::BadServerId => "bad_server_id",
            RejectionCode::BadTimestamp => "bad_timestamp",
            RejectionCode::BadMetrics => "bad_metrics",
            RejectionCode::BadMessageUuid => "bad_message_uuid",
            RejectionCode::BadFieldName => "bad_field_name",
            RejectionCode::DuplicateMessageUuid => "duplicate_message_uuid",
            RejectionCode::RejectedByDatabase => "rejected_by_database",
        }
    }
}

/// The reason text of a duplicate event, as the dead-letter collection stores it.
pub const DUPLICATE_REASON: &str = "duplicate message_uuid";

impl Rejection {
    pub fn new(code: RejectionCode, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            reason: reason.into(),
        }
    }

    pub fn duplicate() -> Self {
        Rejection::new(RejectionCode::DuplicateMessageUuid, DUPLICATE_REASON)
    }
}

/// Validates one Kafka record's value against the message contract; a record without a value
/// (a tombstone) is rejected too.
pub fn validate_record(value: Option<&[u8]>) -> Result<ValidMetric, Rejection> {
    match value {
        Some(payload) => validate(payload),
        None => Err(Rejection::new(
            RejectionCode::NoValue,
            "the Kafka record has no value (a tombstone); a metric message is a JSON object",
        )),
    }
}

/// Validates one Kafka payload against the message contract, reading its JSON once.
pub fn validate(payload: &[u8]) -> Result<ValidMetric, Rejection> {
    use RejectionCode::*;
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(NotUtf8, format!("payload is not valid UTF-8 ({e})")))?;
    let invalid = |e: serde_json::Error| {
        Rejection::new(InvalidJson, format!("payload is not valid JSON ({e})"))
    };
    // serde_json reads at most 128 levels into a tree; the payload is not read into one here,
    // but the store converts it to BSON value by value, so the same limit applies up front.
    if nesting_depth(text) > MAX_NESTING {
        return Err(Rejection::new(
            InvalidJson,
            format!("payload is not valid JSON (nested deeper than {MAX_NESTING} levels)"),
        ));
    }
    let fields = match serde_json::from_str::<TopLevel>(text).map_err(invalid)? {
        TopLevel::Object(fields) => fields,
        TopLevel::Other(kind) => {
            return Err(Rejection::new(
                NotAnObject,
                format!("payload is JSON but not an object (got {kind})"),
            ))
        }
    };

    if let Some(path) = unstorable_name(&fields) {
        return Err(Rejection::new(
            BadFieldName,
            format!("field name {path:?} holds a NUL character, which MongoDB cannot store"),
        ));
    }
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    // The text is valid JSON already: reading one of its values again cannot fail.
    let scalar = |name: &str| -> Result<Option<Scalar>, Rejection> {
        field(name)
            .map(|v| serde_json::from_str::<Scalar>(v.get()).map_err(invalid))
            .transpose()
    };

    let server_id = match scalar("server_id")? {
        Some(Scalar::String(s)) if s.chars().count() > MAX_SERVER_ID_CHARS => {
            return Err(Rejection::new(
                BadServerId,
                format!(
                    "server_id is {} characters long; at most {MAX_SERVER_ID_CHARS} are accepted",
                    s.chars().count()
                ),
            ))
        }
        Some(Scalar::String(s)) if !s.trim().is_empty() => s,
        Some(Scalar::String(_)) => {
            return Err(Rejection::new(BadServerId, "server_id is an empty string"))
        }
        Some(other) => {
            return Err(Rejection::new(
                BadServerId,
                format!("server_id must be a string (got {})", other.kind()),
            ))
        }
        None => return Err(Rejection::new(BadServerId, "server_id is missing")),
    };

    let timestamp = match scalar("timestamp_utc")? {
        Some(Scalar::String(s)) => parse_timestamp(&s).ok_or_else(|| {
            Rejection::new(
                BadTimestamp,
                format!("timestamp_utc {s:?} is not an RFC 3339 / ISO 8601 date-time"),
            )
        })?,
        Some(other) => {
            return Err(Rejection::new(
                BadTimestamp,
                format!("timestamp_utc must be a string (got {})", other.kind()),
            ))
        }
        None => return Err(Rejection::new(BadTimestamp, "timestamp_utc is missing")),
    };

    let metrics = match field("metrics")
        .map(|v| serde_json::from_str::<Shallow>(v.get()).map_err(invalid))
        .transpose()?
    {
        Some(Shallow::Object(m)) => parse_metrics(&m).map_err(|r| Rejection::new(BadMetrics, r))?,
        Some(Shallow::Other(kind)) => {
            return Err(Rejection::new(
                BadMetrics,
                format!("metrics must be an object (got {kind})"),
            ))
        }
        None => return Err(Rejection::new(BadMetrics, "metrics is missing")),
    };

    let message_uuid = match scalar("message_uuid")? {
        Some(Scalar::String(s)) if !s.trim().is_empty() => s,
        Some(Scalar::String(_)) => {
            return Err(Rejection::new(
                BadMessageUuid,
                "message_uuid is an empty string",
            ))
        }
        Some(other) => {
            return Err(Rejection::new(
                BadMessageUuid,
                format!("message_uuid must be a string (got {})", other.kind()),
            ))
        }
        None => return Err(Rejection::new(BadMessageUuid, "message_uuid is missing")),
    };

    Ok(ValidMetric {
        fields,
        server_id,
        timestamp,
        metrics,
        message_uuid,
    })
}

fn parse_metrics(m: &HashMap<String, Scalar>) -> Result<Metrics, String> {
    let percent = |name: &str| -> Result<f64, String> {
        let v = number(m, name)?;
        if (0.0..=100.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("metrics.{name} must be within 0-100 (got {v})"))
        }
    };
    let rate = |name: &str| -> Result<f64, String> {
        let v = number(m, name)?;
        if v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("metrics.{name} must be >= 0 (got {v})"))
        }
    };
    let error_count = match m.get("error_count") {
        Some(Scalar::Number(n)) => match n.as_i64() {
            Some(i) if i >= 0 => i,
            _ => {
                return Err(format!(
                    "metrics.error_count must be a non-negative integer (got {n})"
                ))
            }
        },
        Some(other) => {
            return Err(format!(
                "metrics.error_count must be a non-negative integer (got {})",
                other.kind()
            ))
        }
        None => return Err("metrics.error_count is missing".to_string()),
    };
    Ok(Metrics {
        cpu_percent: percent("cpu_percent")?,
        memory_percent: percent("memory_percent")?,
        disk_io_mbps: rate("disk_io_mbps")?,
        network_mbps: rate("network_mbps")?,
        error_count,
    })
}

/// A finite JSON number (integers accepted). JSON itself cannot spell NaN or infinity, and
/// serde_json refuses a literal such as `1e999` that would overflow, but finiteness is checked
/// all the same.
fn number(m: &HashMap<String, Scalar>, name: &str) -> Result<f64, String> {
    match m.get(name) {
        Some(Scalar::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(format!("metrics.{name} must be a finite number (got {n})")),
        },
        Some(other) => Err(format!(
            "metrics.{name} must be a number (got {})",
            other.kind()
        )),
        None => Err(format!("metrics.{name} is missing")),
    }
}

/// The deepest nesting of arrays and objects accepted, as serde_json's own limit.
const MAX_NESTING: usize = 128;

/// How deep arrays and objects nest in JSON text (brackets inside strings do not count). Only
/// meaningful for text that then parses.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The longest `server_id` accepted. A window lists its servers by id, so unbounded ids could
/// make a KPI document larger than the database takes (16 MiB).
pub const MAX_SERVER_ID_CHARS: usize = 256;

/// The first field name, at any depth (objects in arrays in arrays too), that holds a NUL:
/// BSON names are C strings. JSON can only spell a NUL as the escape `\u0000`, so a value whose
/// text has none is not read again.
fn unstorable_name(fields: &[Field]) -> Option<String> {
    fields.iter().find_map(|(name, value)| {
        if name.contains('\0') {
            return Some(name.clone());
        }
        if !value.get().contains("\\u0000") {
            return None;
        }
        name_with_nul(value).map(|path| format!("{name}.{path}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn needs_escape_agrees_with_a_byte_by_byte_check_at_every_position() {
        let slow = |t: &[u8]| t.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert_eq!(
                        needs_escape(&text),
                        slow(&text),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
            assert!(!needs_escape(&vec![b'a'; len]));
        }
    }

    #[test]
    fn numbers_written_from_cents_are_byte_for_byte_what_serde_json_writes() {
        let check = |value: f64| {
            let mut ours = Vec::new();
            push_json_f64(&mut ours, value);
            let theirs = serde_json::to_string(&value).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), theirs, "{value:e}");
        };
        // Every hundredth up to 10,000 (the generator's ranges and far past), computed both
        // ways it can be: divided, and rounded as the generator rounds.
        for cents in 0..=1_000_000u64 {
            check(cents as f64 / 100.0);
            check(crate::simulate::round2(cents as f64 / 100.0 + 0.001));
        }
        // Large ones up to the limit, and values just off a hundredth (the general path).
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..200_000 {
            let cents = rng.u64(0..1_000_000_000_000_000);
            let value = cents as f64 / 100.0;
            check(value);
            check(f64::from_bits(value.to_bits() + 1));
            check(f64::from_bits(value.to_bits().saturating_sub(1)));
            check(rng.f64() * 100.0);
        }
        for value in [
            -0.0,
            -1.5,
            1e13 - 0.01,
            1e13,
            1e13 + 0.01,
            0.001,
            5e-324,
            f64::MAX,
        ] {
            check(value);
        }
        assert_eq!(whole_cents(41.23), Some(4123));
        assert_eq!(
            whole_cents(41.234),
            None,
            "not a hundredth: the general path"
        );
        assert_eq!(
            whole_cents(-0.0),
            None,
            "-0.0 keeps its sign through the general path"
        );
    }

    #[test]
    fn the_hand_written_json_is_byte_for_byte_what_serde_json_writes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let odd = [
            "web01",
            "",
            "quote\"d",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "ünïcødé ✓",
            "\u{7f}del",
        ];
        let floats = [
            0.0,
            -0.0,
            5.0,
            12.25,
            99.99,
            1e-7,
            1e21,
            123456789.125,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
        ];
        for i in 0..2_000 {
            let mut metrics = crate::simulate::draw_metrics(&mut rng);
            if i < floats.len() {
                metrics.cpu_percent = floats[i];
                metrics.network_mbps = -floats[i];
            }
            if i % 3 == 0 {
                metrics.error_count = rng.i64(..);
            }
            let message = MetricMessage {
                server_id: odd[i % odd.len()].into(),
                timestamp_utc: format_timestamp(OffsetDateTime::UNIX_EPOCH).into(),
                metrics,
                message_uuid: Uuid::from_u128(rng.u128(..)),
            };
            let expected = serde_json::to_string(&message).unwrap();
            assert_eq!(message.to_json(), expected, "message {i}");
        }
    }

    #[test]
    fn names_with_nul_and_overlong_server_ids_are_refused() {
        let ok = r#"{"server_id":"web01","timestamp_utc":"2026-11-22T18:00:00+00:00","metrics":{"cpu_percent":1,"memory_percent":2,"disk_io_mbps":3,"network_mbps":4,"error_count":0},"message_uuid":"u"}"#;
        assert!(validate(ok.as_bytes()).is_ok());
        let nul = ok.replace(
            r#""message_uuid""#,
            r#""extra":{"a\u0000b":1},"message_uuid""#,
        );
        assert_eq!(
            validate(nul.as_bytes()).unwrap_err().code,
            RejectionCode::BadFieldName
        );
        let long = ok.replace("web01", &"x".repeat(MAX_SERVER_ID_CHARS + 1));
        assert_eq!(
            validate(long.as_bytes()).unwrap_err().code,
            RejectionCode::BadServerId
        );
    }
    use time::macros::datetime;

    fn good() -> Value {
        serde_json::json!({
            "server_id": "web01",
            "timestamp_utc": "2026-11-22T18:00:00.123456+00:00",
            "metrics": {
                "cpu_percent": 41.5, "memory_percent": 60, "disk_io_mbps": 12.25,
                "network_mbps": 80.0, "error_count": 2
            },
            "message_uuid": "8f0c1c52-4a4e-4d59-9a39-4f8f1f8f0c11",
            "extra": {"kept": true}
        })
    }

    fn with(path: &[&str], v: Value) -> Vec<u8> {
        let mut doc = good();
        let mut cur = &mut doc;
        for p in &path[..path.len() - 1] {
            cur = cur.get_mut(*p).unwrap();
        }
        cur[path[path.len() - 1]] = v;
        serde_json::to_vec(&doc).unwrap()
    }

    fn without(path: &[&str]) -> Vec<u8> {
        let mut doc = good();
        let mut cur = &mut doc;
        for p in &path[..path.len() - 1] {
            cur = cur.get_mut(*p).unwrap();
        }
        cur.as_object_mut().unwrap().remove(path[path.len() - 1]);
        serde_json::to_vec(&doc).unwrap()
    }

    fn code_of(payload: &[u8]) -> RejectionCode {
        validate(payload).unwrap_err().code
    }

    #[test]
    fn accepts_the_exercise_message_and_keeps_every_field_in_order() {
        let v = validate(&serde_json::to_vec(&good()).unwrap()).unwrap();
        assert_eq!(v.server_id, "web01");
        assert_eq!(v.timestamp, datetime!(2026-11-22 18:00:00.123456 UTC));
        assert_eq!(v.metrics.memory_percent, 60.0);
        assert_eq!(v.metrics.error_count, 2);
        let keys: Vec<&str> = v.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server_id",
                "timestamp_utc",
                "metrics",
                "message_uuid",
                "extra"
            ]
        );
    }

    #[test]
    fn naive_timestamps_are_utc_and_offsets_are_honoured() {
        assert_eq!(
            parse_timestamp("2026-11-22T18:00:00.123456"),
            Some(datetime!(2026-11-22 18:00:00.123456 UTC))
        );
        assert_eq!(
            parse_timestamp("2026-11-22T18:00:00"),
            Some(datetime!(2026-11-22 18:00:00 UTC))
        );
        assert_eq!(
            parse_timestamp("2026-11-22T20:00:00+02:00"),
            Some(datetime!(2026-11-22 18:00:00 UTC))
        );
        assert_eq!(
            parse_timestamp("2026-11-22T18:00:00Z"),
            Some(datetime!(2026-11-22 18:00:00 UTC))
        );
        assert_eq!(parse_timestamp("22/11/2026 18:00"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn formats_timestamps_like_python_isoformat_in_utc() {
        let t = datetime!(2026-11-22 19:00:00.5 +01:00);
        assert_eq!(format_timestamp(t), "2026-11-22T18:00:00.500000+00:00");
        assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
    }

    #[test]
    fn refuses_each_kind_of_bad_input_with_its_code() {
        use RejectionCode::*;
        assert_eq!(code_of(&[0xff, 0xfe, b'{']), NotUtf8);
        assert_eq!(code_of(b"{not json"), InvalidJson);
        assert_eq!(code_of(b""), InvalidJson);
        assert_eq!(code_of(b"[1,2]"), NotAnObject);
        assert_eq!(code_of(b"\"text\""), NotAnObject);
        assert_eq!(code_of(&without(&["server_id"])), BadServerId);
        assert_eq!(code_of(&with(&["server_id"], "".into())), BadServerId);
        assert_eq!(code_of(&with(&["server_id"], 7.into())), BadServerId);
        assert_eq!(code_of(&without(&["timestamp_utc"])), BadTimestamp);
        assert_eq!(
            code_of(&with(&["timestamp_utc"], "yesterday".into())),
            BadTimestamp
        );
        assert_eq!(code_of(&without(&["metrics"])), BadMetrics);
        assert_eq!(code_of(&with(&["metrics"], "high".into())), BadMetrics);
        assert_eq!(code_of(&without(&["metrics", "network_mbps"])), BadMetrics);
        assert_eq!(
            code_of(&with(&["metrics", "cpu_percent"], 100.5.into())),
            BadMetrics
        );
        assert_eq!(
            code_of(&with(&["metrics", "memory_percent"], (-1).into())),
            BadMetrics
        );
        assert_eq!(
            code_of(&with(&["metrics", "disk_io_mbps"], (-0.1).into())),
            BadMetrics
        );
        assert_eq!(
            code_of(&with(&["metrics", "cpu_percent"], "50".into())),
            BadMetrics
        );
        assert_eq!(
            code_of(&with(&["metrics", "error_count"], 1.5.into())),
            BadMetrics
        );
        assert_eq!(
            code_of(&with(&["metrics", "error_count"], (-1).into())),
            BadMetrics
        );
        assert_eq!(code_of(&without(&["message_uuid"])), BadMessageUuid);
        assert_eq!(
            code_of(&with(&["message_uuid"], "  ".into())),
            BadMessageUuid
        );
        assert_eq!(
            code_of(&with(&["message_uuid"], Value::Null)),
            BadMessageUuid
        );
    }

    #[test]
    fn overflowing_numbers_are_not_finite() {
        let payload = String::from_utf8(with(&["metrics", "disk_io_mbps"], 1.0.into()))
            .unwrap()
            .replace("\"disk_io_mbps\":1.0", "\"disk_io_mbps\":1e999");
        // serde_json refuses 1e999 outright; either way the message is refused, never stored.
        assert!(validate(payload.as_bytes()).is_err());
    }

    #[test]
    fn nesting_is_limited_like_a_json_tree_and_strings_do_not_count() {
        assert_eq!(
            nesting_depth(r#"{"a": [1, {"b": "[[[{{{\\"]]"}], "c": {}}"#),
            3
        );
        let deep = |n: usize| {
            serde_json::to_string(&good()).unwrap().replace(
                r#"{"kept":true}"#,
                &format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            )
        };
        assert!(validate(deep(MAX_NESTING - 1).as_bytes()).is_ok());
        assert_eq!(
            code_of(deep(MAX_NESTING).as_bytes()),
            RejectionCode::InvalidJson
        );
        let arrays = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(code_of(arrays.as_bytes()), RejectionCode::InvalidJson);
    }

    #[test]
    fn boundaries_are_inclusive() {
        let p = with(&["metrics", "cpu_percent"], 100.into());
        assert!(validate(&p).is_ok());
        let p = with(&["metrics", "disk_io_mbps"], 0.into());
        assert!(validate(&p).is_ok());
        let p = with(&["metrics", "error_count"], 0.into());
        assert!(validate(&p).is_ok());
    }

    #[test]
    fn reasons_name_the_field_and_the_value() {
        let r = validate(&with(&["metrics", "cpu_percent"], 120.into())).unwrap_err();
        assert_eq!(
            r.reason,
            "metrics.cpu_percent must be within 0-100 (got 120)"
        );
        assert_eq!(Rejection::duplicate().reason, "duplicate message_uuid");
    }
}
