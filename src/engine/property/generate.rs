//! The generator: a random log per partition, and what it made each record to be (the oracle).

use super::*;

/// What the generator made a record to be: the oracle the invariants are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Made {
    /// A valid metric with this `message_uuid`, which the store takes.
    Valid(String),
    /// A valid metric of the server the fake store refuses ([`REFUSED`]).
    Refused,
    /// Refused before it reaches the store, with this reason code.
    Invalid(&'static str),
}

/// One generated world: a log per partition and the engine's settings.
pub(super) struct Case {
    pub(super) partitions: Vec<i32>,
    pub(super) logs: BTreeMap<i32, Vec<Record>>,
    /// What the fake Kafka serves: `logs` until a truncation cuts a partition's end off (then
    /// `logs` keeps what was read, the oracle).
    pub(super) live: BTreeMap<i32, Vec<Record>>,
    /// What each record (partition, offset) was made to be.
    pub(super) made: HashMap<(i32, i64), Made>,
    pub(super) log_start: HashMap<i32, i64>,
    /// Where a caught-up consumer stands: past the last record and any offsets after it that
    /// hold no record (transaction markers), which a fetch reports as its next offset.
    pub(super) ends: BTreeMap<i32, i64>,
    pub(super) window_size: usize,
    pub(super) limits: Limits,
    pub(super) partial: Partial,
    /// Windows staged and published after their commit, as group members do.
    pub(super) staged: bool,
    /// Engines take turns over random subsets of the partitions, as group members do across
    /// rebalances (each subset is its own window stream); the last one reads them all.
    pub(super) shares: bool,
    /// A partition's log is truncated under the consumer once in a while.
    pub(super) truncate: bool,
    /// Windows held past a failing commit before the loop stops reading.
    pub(super) max_unpublished: usize,
}

impl Case {
    /// The configuration of the `incarnation`th engine of the case over `partitions`: a
    /// staging engine's token is its own.
    pub(super) fn config(&self, incarnation: usize, partitions: &[i32]) -> EngineConfig {
        EngineConfig {
            log: LogId {
                topic: TOPIC.into(),
                topic_id: TOPIC_ID.into(),
            },
            group: GROUP.into(),
            partitions: partitions.to_vec(),
            window_size: NonZeroUsize::new(self.window_size).unwrap(),
            servers_listed: crate::window::MAX_LISTED,
            limits: self.limits,
            publication: if self.staged {
                Publication::AfterCommit {
                    token: format!("engine{incarnation}"),
                }
            } else {
                Publication::Direct
            },
        }
    }
}

pub(super) fn metric_json(rng: &mut Rng, server: &str, uuid: &str) -> Value {
    // Some readings cross the alert thresholds.
    let hot = rng.u8(..5) == 0;
    serde_json::json!({
        "server_id": server,
        "timestamp_utc": format!("2026-11-22T18:{:02}:{:02}.{:06}+00:00",
            rng.u8(..60), rng.u8(..60), rng.u32(..1_000_000)),
        "metrics": {
            "cpu_percent": if hot { 95.5 } else { f64::from(rng.u8(..90)) + 0.25 },
            "memory_percent": f64::from(rng.u8(..=100)),
            "disk_io_mbps": rng.f64() * 500.0,
            "network_mbps": rng.f64() * 1000.0,
            "error_count": rng.i64(0..5)
        },
        "message_uuid": uuid,
        "extra": {"rack": rng.u8(..9)}
    })
}

pub(super) fn uuid(rng: &mut Rng) -> String {
    uuid::Uuid::from_u128(rng.u128(..)).to_string()
}

/// A random payload of a random kind, and what it was made to be; valid ones are remembered
/// (with their `message_uuid`) so later records can repeat them (the same event produced twice).
pub(super) fn payload(
    rng: &mut Rng,
    limits: &Limits,
    produced: &mut Vec<(Vec<u8>, String)>,
) -> (Option<Vec<u8>>, Made) {
    let server = SERVERS[rng.usize(..SERVERS.len())];
    let roll = rng.u8(..100);
    let (bytes, made) = match roll {
        0..=59 => {
            let id = uuid(rng);
            let p = metric_json(rng, server, &id).to_string().into_bytes();
            produced.push((p.clone(), id.clone()));
            (p, Made::Valid(id))
        }
        60..=69 if !produced.is_empty() => {
            let (p, id) = produced[rng.usize(..produced.len())].clone();
            (p, Made::Valid(id))
        }
        60..=69 => (b"[]".to_vec(), Made::Invalid("not_an_object")),
        70..=73 => (vec![b'{', 0xff, 0xfe, b'}'], Made::Invalid("not_utf8")),
        74..=77 => (
            br#"{"server_id": "web01", "metrics": {"#.to_vec(),
            Made::Invalid("invalid_json"),
        ),
        78..=82 => {
            let mut v = {
                let id = uuid(rng);
                metric_json(rng, server, &id)
            };
            let (field, code) = [
                ("server_id", "bad_server_id"),
                ("timestamp_utc", "bad_timestamp"),
                ("metrics", "bad_metrics"),
                ("message_uuid", "bad_message_uuid"),
            ][rng.usize(..4)];
            v.as_object_mut().unwrap().remove(field);
            (v.to_string().into_bytes(), Made::Invalid(code))
        }
        83..=86 => return (None, Made::Invalid("no_value")),
        87..=92 => {
            // Large: valid JSON padded (size is judged before validity), or junk, sometimes
            // multi-byte text so the kept head must not split a character. Exactly at the limit
            // now and then: that one is still stored (or refused for what it is).
            let target = if rng.u8(..4) == 0 {
                limits.payload_bytes
            } else {
                limits.payload_bytes + 1 + rng.usize(..limits.payload_bytes)
            };
            let (mut bytes, within_limit) = match rng.u8(..3) {
                0 => {
                    let id = uuid(rng);
                    let mut v = metric_json(rng, server, &id);
                    v["pad"] = Value::String(String::new());
                    let base = v.to_string().len();
                    v["pad"] = Value::String("x".repeat(target.saturating_sub(base)));
                    let p = v.to_string().into_bytes();
                    // A strict prefix of a JSON object is not JSON: a cut one is invalid.
                    let made = if p.len() <= target {
                        Made::Valid(id.clone())
                    } else {
                        Made::Invalid("invalid_json")
                    };
                    if p.len() <= limits.payload_bytes {
                        produced.push((p.clone(), id));
                    }
                    (p, made)
                }
                1 => {
                    // "é€" is 5 bytes: a cut after 0 or 2 of them keeps whole characters
                    // (text, but not JSON), any other cut splits one (not UTF-8).
                    let made = if matches!(target % 5, 0 | 2) {
                        Made::Invalid("invalid_json")
                    } else {
                        Made::Invalid("not_utf8")
                    };
                    ("é€".repeat(target / 5 + 1).into_bytes(), made)
                }
                _ => {
                    let junk: Vec<u8> = (0..target).map(|_| rng.u8(..)).collect();
                    // Random bytes are all but never UTF-8; std's decoder says which.
                    let made = if std::str::from_utf8(&junk).is_err() {
                        Made::Invalid("not_utf8")
                    } else {
                        Made::Invalid("invalid_json")
                    };
                    (junk, made)
                }
            };
            bytes.truncate(target);
            let made = if bytes.len() > limits.payload_bytes {
                Made::Invalid("payload_too_large")
            } else {
                within_limit
            };
            (bytes, made)
        }
        _ => {
            let id = uuid(rng);
            (
                metric_json(rng, REFUSED, &id).to_string().into_bytes(),
                Made::Refused,
            )
        }
    };
    (Some(bytes), made)
}

pub(super) fn generate(rng: &mut Rng) -> Case {
    let mut all = vec![0, 1, 2, 3];
    rng.shuffle(&mut all);
    let mut partitions = all[..rng.usize(1..=3)].to_vec();
    partitions.sort_unstable();
    let limits = Limits {
        step_messages: rng.usize(1..=12),
        step_bytes: rng.usize(200..=3_000),
        payload_bytes: 600,
        head_bytes: rng.usize(1..=80),
    };
    let mut produced = Vec::new();
    let mut logs = BTreeMap::new();
    let mut made = HashMap::new();
    let mut log_start = HashMap::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let start = rng.i64(0..4);
        let mut offset = start;
        let mut log = Vec::new();
        for _ in 0..rng.usize(0..=40) {
            let (value, what) = payload(rng, &limits, &mut produced);
            made.insert((p, offset), what);
            log.push(Record {
                partition: p,
                offset,
                value,
                oversized: None,
            });
            // Gaps: compacted records, transaction markers.
            offset += 1 + if rng.u8(..8) == 0 { rng.i64(1..4) } else { 0 };
        }
        let end = log.last().map_or(start, |r: &Record| r.offset + 1) + rng.i64(0..3);
        log_start.insert(p, start);
        ends.insert(p, end);
        logs.insert(p, log);
    }
    Case {
        partitions,
        live: logs.clone(),
        logs,
        made,
        log_start,
        ends,
        window_size: rng.usize(1..=7),
        limits,
        partial: if rng.bool() {
            Partial::Prefix
        } else {
            Partial::Subset
        },
        staged: rng.bool(),
        shares: rng.bool(),
        truncate: rng.u8(..3) == 0,
        max_unpublished: rng.usize(1..=3),
    }
}
