//! The idempotent producer: keyed records to one topic, one record batch v2 per partition and
//! one Produce request per leader, acknowledged by all in-sync replicas.
//!
//! Idempotence works as in Java's producer (the default there since Kafka 3.0): the broker
//! hands out a producer id (InitProducerId), every batch carries that id, an epoch and the
//! sequence number of its first record, and the leader stores a batch only if its sequence
//! follows the last one it stored for the partition; a batch it already holds is answered with
//! its original offset instead of being stored again. So a batch whose fate is unknown (the
//! connection broke, the answer never came) is re-sent exactly as it was, same bytes and same
//! sequence, and can never be stored twice.
//!
//! The caller re-sends what was not acknowledged; a partition's records that are re-sent
//! identically reuse their sealed batch. Records given up instead (the caller dropped them)
//! leave a gap in the sequence that the broker would refuse, so the producer then starts a new
//! epoch, as Java's does, and numbers from 0 again. The same happens when a leader answers
//! OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID (it lost or expired our state); a
//! producer fenced by a newer epoch asks for a new id.
//!
//! While a request is on the wire, the records the caller names as coming next are sealed
//! ahead (see `ahead`), so that sealing overlaps the wait for the answer.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::records;
use log::{debug, warn};

use seal::{seal_all, seal_in_turn, Batches, Sealed, Unsealed};

use super::cluster::{topic_name, AutoCreate, Cluster, TopicMeta};
use super::connection::{Connection, WireError};
use super::security::Security;
use super::{fail, fatal, partition_for_key, KafkaError};
use crate::shutdown::Shutdown;

mod ahead;
mod seal;

/// How long the leader may wait for all in-sync replicas before failing a produce.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one Produce exchange may take: the ack timeout plus room for the network.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long InitProducerId may keep answering "not yet" (a coordinator loading) before the
/// caller's backoff takes over.
const PRODUCER_ID_WAIT: Duration = Duration::from_secs(10);

/// The codec of the record batches the producer writes (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const NAMES: &'static str = "none, gzip, snappy, lz4, zstd";

    fn codec(self) -> records::Compression {
        match self {
            Compression::None => records::Compression::None,
            Compression::Gzip => records::Compression::Gzip,
            Compression::Snappy => records::Compression::Snappy,
            Compression::Lz4 => records::Compression::Lz4,
            Compression::Zstd => records::Compression::Zstd,
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown codec '{other}'; use one of {}",
                Compression::NAMES
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

/// Why one record was not stored: shared by every record of a refused batch.
pub type Refusal = Arc<str>;

/// Where Kafka stored one produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    /// -1 when the leader said it already held the batch but no longer knew where
    /// (DUPLICATE_SEQUENCE_NUMBER, for a batch older than the five it remembers).
    pub offset: i64,
}

/// The broker's name for this producer: batches of one id and epoch are numbered in sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    id: i64,
    epoch: i16,
}

#[derive(Default)]
struct PartitionState {
    next_sequence: i32,
    /// The batch sent last and not acknowledged: its fate is unknown until it is re-sent.
    in_doubt: Option<Sealed>,
    /// The batch sealed ahead for the records the caller sends next; used by the next call
    /// only if it is still exactly the batch that call would seal ([`ahead::usable`]).
    ahead: Option<Sealed>,
}

/// Sends keyed records to one topic, idempotently.
pub struct KafkaProducer {
    cluster: Cluster,
    compression: Compression,
    identity: Option<Identity>,
    partitions: HashMap<i32, PartitionState>,
    /// Set after an answer that says the metadata is out of date (a leader moved).
    stale: bool,
    shutdown: Shutdown,
}

/// A leader's answer, read into a verdict per partition, or the failed exchange.
type LeaderAnswer = Result<Vec<(i32, Verdict)>, WireError>;

/// What a leader's answer means for one partition's batch.
enum Verdict {
    Stored(i64),
    /// Not stored; the same batch may be sent again (a leader moved, replicas missing, a
    /// broken connection).
    Retry(String),
    /// Not stored, and the broker has lost or refuses our numbering: start a new epoch.
    NewEpoch(String),
    /// Not stored, and this producer id was fenced: ask for a new one.
    NewId(String),
    /// Retrying cannot help.
    Fatal(String),
}

impl KafkaProducer {
    pub fn new(
        brokers: Vec<String>,
        topic: String,
        compression: Compression,
        shutdown: Shutdown,
    ) -> Self {
        KafkaProducer {
            cluster: Cluster::new(brokers, topic, shutdown.clone()),
            compression,
            identity: None,
            partitions: HashMap::new(),
            stale: true,
            shutdown,
        }
    }

    /// Secures every connection to the brokers as `security` says (TLS, SASL).
    pub fn with_security(mut self, security: Security) -> Self {
        self.cluster.set_security(security);
        self
    }

    /// Sends `(key, value)` records, one batch per partition and one request per leader. Each
    /// record gets its own outcome: a partition that failed does not hide the others that
    /// succeeded, so the caller re-sends only what was not stored (in the same order).
    ///
    /// `next` are the records the caller expects to send in its next call (may be empty): they
    /// are sealed while this call waits for its answers, and that call reuses each batch that
    /// is still exactly what it would seal (see `ahead`).
    pub fn send(
        &mut self,
        records: Vec<(Bytes, Bytes)>,
        next: Vec<(Bytes, Bytes)>,
    ) -> Result<Vec<Result<Delivery, Refusal>>, KafkaError> {
        // Sealed ahead by the last call; whatever this call does not use is dropped.
        let mut ahead: HashMap<i32, Sealed> = self
            .partitions
            .iter_mut()
            .filter_map(|(p, s)| Some((*p, s.ahead.take()?)))
            .collect();
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let meta = self.metadata()?;
        let partition_count = meta.partitions.len() as u32;
        let by_partition = split(
            records
                .iter()
                .enumerate()
                .map(|(i, (key, _))| (partition_for_key(key, partition_count), i)),
            partition_count,
        );
        let identity = self.identity_for(&records, &by_partition)?;

        // One shared text for every record's default outcome: a String each would be an
        // allocation per message.
        let not_sent: Refusal = Arc::from("not sent");
        let mut outcomes: Vec<Result<Delivery, Refusal>> = vec![Err(not_sent); records.len()];
        let mut slots: Vec<Option<(Bytes, Bytes)>> = records.into_iter().map(Some).collect();
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut to_seal = Vec::new();
        for (p, idx) in &by_partition {
            let Some(leader) = meta.partitions.get(p).and_then(|l| l.broker) else {
                self.stale = true;
                let why: Refusal = Arc::from(format!("partition {p} has no leader"));
                for &i in idx {
                    outcomes[i] = Err(why.clone());
                }
                continue;
            };
            let state = self.partitions.entry(*p).or_default();
            let share = || idx.iter().map(|&i| slots[i].as_ref());
            let reuse = state
                .in_doubt
                .as_ref()
                .is_some_and(|s| s.identity == identity && s.holds(share()));
            if !reuse {
                match ahead::usable(ahead.remove(p), state, identity, share()) {
                    Some(sealed) => state.in_doubt = Some(sealed),
                    None => to_seal.push(Unsealed {
                        partition: *p,
                        base_sequence: state.next_sequence,
                        records: idx.iter().filter_map(|&i| slots[i].take()).collect(),
                    }),
                }
            }
            by_leader.entry(leader).or_default().push(*p);
        }
        debug!(
            "kafka produce: {} records, {} batches to seal now",
            slots.len(),
            to_seal.len()
        );
        for (p, sealed) in seal_all(to_seal, identity, self.compression)? {
            self.partitions.entry(p).or_default().in_doubt = Some(sealed);
        }

        let next = ahead::plan(&self.partitions, next, partition_count);
        let (answers, sealed_ahead) = self.produce(&by_leader, next, identity);
        for (p, sealed) in sealed_ahead {
            self.partitions.entry(p).or_default().ahead = Some(sealed);
        }
        let mut new_epoch = None;
        let mut new_id = None;
        for (leader, answer) in answers {
            let verdicts: Vec<(i32, Verdict)> = match answer {
                Ok(v) => v,
                Err(WireError::TooOld(old)) => return Err(fatal("produce", old.to_string())),
                Err(WireError::Security(why)) => return Err(fatal("connection", why)),
                Err(e) => {
                    self.stale = true;
                    let why = format!("broker {leader}: {e}");
                    by_leader[&leader]
                        .iter()
                        .map(|p| (*p, Verdict::Retry(why.clone())))
                        .collect()
                }
            };
            for (p, verdict) in verdicts {
                let state = self.partitions.entry(p).or_default();
                let count = state.in_doubt.as_ref().map_or(0, |s| s.record_count);
                let idx = &by_partition[&p];
                match verdict {
                    Verdict::Stored(base) => {
                        if let Some(sealed) = state.in_doubt.take() {
                            state.next_sequence = next_sequence(sealed.base_sequence, count);
                        }
                        for (k, &i) in idx.iter().enumerate() {
                            let offset = if base < 0 { -1 } else { base + k as i64 };
                            outcomes[i] = Ok(Delivery {
                                partition: p,
                                offset,
                            });
                        }
                    }
                    Verdict::Retry(why) => {
                        // Numbered after a batch that is still in doubt: of no use.
                        state.ahead = None;
                        refuse(&mut outcomes, idx, p, &why);
                    }
                    Verdict::NewEpoch(why) => {
                        // The leader refused the batch: it is not in the log, so it is sealed
                        // again under the new epoch.
                        state.in_doubt = None;
                        refuse(&mut outcomes, idx, p, &why);
                        new_epoch = Some(why);
                    }
                    Verdict::NewId(why) => {
                        state.in_doubt = None;
                        refuse(&mut outcomes, idx, p, &why);
                        new_id = Some(why);
                    }
                    Verdict::Fatal(why) => {
                        let topic = self.cluster.topic();
                        return Err(fatal(
                            "produce",
                            format!("topic {topic}, partition {p}: {why}"),
                        ));
                    }
                }
            }
        }
        if let Some(why) = new_id {
            warn!("kafka produce: {why}; asking for a new producer id");
            self.identity = None;
            self.forget_sequences();
        } else if let Some(why) = new_epoch {
            warn!("kafka produce: {why}; starting a new producer epoch");
            self.bump_epoch();
        }
        Ok(outcomes)
    }

    /// The topic's metadata, reloaded when an answer said it is out of date. The first load
    /// may create the topic where the brokers allow it.
    fn metadata(&mut self) -> Result<TopicMeta, KafkaError> {
        match self.cluster.meta() {
            Some(meta) if !self.stale => Ok(meta.clone()),
            _ => {
                let meta = self.cluster.refresh(AutoCreate::Yes)?;
                self.stale = false;
                Ok(meta)
            }
        }
    }

    /// The identity to seal this call's batches with. Batches in doubt that this call does
    /// not send again as they were are given up by the caller: the broker would refuse the
    /// next sequence numbers after such a gap, so a new epoch starts.
    fn identity_for(
        &mut self,
        records: &[(Bytes, Bytes)],
        by_partition: &BTreeMap<i32, Vec<usize>>,
    ) -> Result<Identity, KafkaError> {
        let abandoned = self
            .partitions
            .iter()
            .filter(|(p, s)| {
                s.in_doubt.as_ref().is_some_and(|sealed| {
                    let share = by_partition.get(p).map_or(&[][..], Vec::as_slice);
                    !sealed.holds(share.iter().map(|&i| Some(&records[i])))
                })
            })
            .count();
        if abandoned > 0 {
            warn!(
                "kafka produce: {abandoned} batch(es) whose delivery is unknown were given up; \
                 starting a new producer epoch so that later batches are accepted"
            );
            self.bump_epoch();
        }
        // Kafka's sequences wrap from i32::MAX to 0, and a batch may span the wrap; the codec
        // we encode with cannot write such a batch in one piece (it would write two, which a
        // broker refuses in a Produce request). After two billion records to one partition a
        // new epoch, numbered from 0, costs nothing.
        let wraps = by_partition.iter().any(|(p, share)| {
            self.partitions.get(p).is_some_and(|s| {
                s.in_doubt.is_none() && spans_wrap(s.next_sequence, share.len() as i32)
            })
        });
        if wraps {
            debug!("kafka produce: sequence numbers would wrap; starting a new producer epoch");
            self.bump_epoch();
        }
        match self.identity {
            Some(identity) => Ok(identity),
            None => {
                let identity = self.init_producer_id()?;
                debug!(
                    "kafka produce: producer id {} epoch {}",
                    identity.id, identity.epoch
                );
                self.identity = Some(identity);
                Ok(identity)
            }
        }
    }

    /// Starts a new epoch of the same producer id, as Java's idempotent producer does without
    /// asking the broker (KIP-360): a leader accepts a higher epoch that starts at sequence 0.
    /// An exhausted epoch asks for a new id instead.
    fn bump_epoch(&mut self) {
        self.identity = match self.identity {
            Some(Identity { id, epoch }) if epoch < i16::MAX - 1 => Some(Identity {
                id,
                epoch: epoch + 1,
            }),
            _ => None,
        };
        self.forget_sequences();
    }

    /// Numbering starts again from 0; sealed batches are sealed again under the new identity.
    fn forget_sequences(&mut self) {
        let in_doubt = self
            .partitions
            .values()
            .filter(|s| s.in_doubt.is_some())
            .count();
        if in_doubt > 0 {
            warn!(
                "kafka produce: {in_doubt} batch(es) whose delivery is unknown will be sent \
                 again under the new producer epoch: any of them the broker did store is stored \
                 twice"
            );
        }
        for state in self.partitions.values_mut() {
            state.next_sequence = 0;
            state.in_doubt = None;
            state.ahead = None;
        }
    }

    /// A new producer id from any broker.
    fn init_producer_id(&mut self) -> Result<Identity, KafkaError> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let deadline = Instant::now() + PRODUCER_ID_WAIT;
        loop {
            let response = self.cluster.call_any(&request).map_err(|e| KafkaError {
                operation: "init-producer-id",
                ..e
            })?;
            match ResponseError::try_from_code(response.error_code) {
                None => {
                    return Ok(Identity {
                        id: response.producer_id.0,
                        epoch: response.producer_epoch,
                    })
                }
                Some(
                    e @ (ResponseError::ClusterAuthorizationFailed
                    | ResponseError::TransactionalIdAuthorizationFailed),
                ) => {
                    return Err(fatal(
                        "init-producer-id",
                        format!(
                            "the brokers refuse this producer an id ({e}): ask the cluster's \
                             operator for IDEMPOTENT_WRITE on the cluster, or WRITE on the topic"
                        ),
                    ))
                }
                Some(e) if Instant::now() < deadline && self.shutdown.sleep(backoff()) => {
                    debug!("kafka init-producer-id: {e}; asking again");
                }
                Some(e) => return Err(fail("init-producer-id", e.to_string())),
            }
        }
    }

    /// One Produce request per leader, to all leaders at once; each answer is read into a
    /// verdict per partition. Meanwhile the batches `ahead` are sealed under `identity`, in
    /// turn on a thread of their own ([`seal_in_turn`]), and returned: none if that thread
    /// cannot start or sealing fails (sealing ahead only saves time; the next call seals what
    /// it lacks).
    fn produce(
        &mut self,
        by_leader: &BTreeMap<i32, Vec<i32>>,
        ahead: Vec<Unsealed>,
        identity: Identity,
    ) -> (Vec<(i32, LeaderAnswer)>, Batches) {
        let topic = self.cluster.topic().to_string();
        let requests: Vec<(i32, ProduceRequest)> = by_leader
            .iter()
            .map(|(leader, ps)| (*leader, self.request(&topic, ps)))
            .collect();
        let mut connections: Vec<(i32, Result<Connection, WireError>)> = requests
            .iter()
            .map(|(leader, _)| (*leader, self.cluster.take(*leader)))
            .collect();
        let shutdown = &self.shutdown;
        let compression = self.compression;
        let (answers, sealed_ahead) = std::thread::scope(|s| {
            let sealing = if ahead.is_empty() {
                None
            } else {
                std::thread::Builder::new()
                    .name("seal-ahead".into())
                    .spawn_scoped(s, move || seal_in_turn(ahead, identity, compression))
                    .ok()
            };
            let answers: Vec<(i32, Result<ProduceResponse, WireError>)> =
                if let [(leader, connection)] = connections.as_mut_slice() {
                    // One leader (always so on one broker): no thread needed.
                    vec![(*leader, exchange(connection, &requests[0].1, shutdown))]
                } else {
                    let running: Vec<_> = connections
                        .iter_mut()
                        .zip(&requests)
                        .map(|((leader, connection), (_, request))| {
                            let leader = *leader;
                            s.spawn(move || (leader, exchange(connection, request, shutdown)))
                        })
                        .collect();
                    running
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                (-1, Err(WireError::Io("a produce thread panicked".into())))
                            })
                        })
                        .collect()
                };
            let sealed_ahead = match sealing.map(|h| h.join()) {
                Some(Ok(Ok(sealed))) => sealed,
                Some(Ok(Err(e))) => {
                    debug!("kafka produce: sealing ahead failed ({e}); sealing in turn");
                    Vec::new()
                }
                Some(Err(_)) | None => Vec::new(),
            };
            (answers, sealed_ahead)
        });
        for ((_, connection), (_, answer)) in connections.into_iter().zip(&answers) {
            if let Ok(c) = connection {
                if !answer.as_ref().is_err_and(WireError::breaks_connection) {
                    self.cluster.put(c);
                }
            }
        }
        let answers = answers
            .into_iter()
            .map(|(leader, answer)| (leader, answer.map(|r| verdicts(&topic, r))))
            .collect();
        (answers, sealed_ahead)
    }

    /// The request for one leader: the sealed batch of each of its partitions.
    fn request(&self, topic: &str, partitions: &[i32]) -> ProduceRequest {
        let data = partitions
            .iter()
            .filter_map(|p| {
                let sealed = self.partitions.get(p)?.in_doubt.as_ref()?;
                Some(
                    PartitionProduceData::default()
                        .with_index(*p)
                        .with_records(Some(sealed.bytes.clone())),
                )
            })
            .collect();
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(ACK_TIMEOUT.as_millis() as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(data)])
    }
}

/// One Produce exchange on a leader's connection, or why there is none.
fn exchange(
    connection: &mut Result<Connection, WireError>,
    request: &ProduceRequest,
    shutdown: &Shutdown,
) -> Result<ProduceResponse, WireError> {
    match connection {
        Ok(c) => c.call_interruptible(request, CALL_TIMEOUT, &|| shutdown.requested()),
        Err(e) => Err(e.clone()),
    }
}

/// A verdict per partition of our topic in a leader's answer. A partition the answer leaves
/// out is retried.
fn verdicts(topic: &str, response: ProduceResponse) -> Vec<(i32, Verdict)> {
    response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| &t.partition_responses)
        .map(|p| (p.index, verdict(p)))
        .collect()
}

/// What Java's producer does with each answer, for an idempotent, non-transactional producer.
fn verdict(p: &PartitionProduceResponse) -> Verdict {
    let Some(e) = ResponseError::try_from_code(p.error_code) else {
        return Verdict::Stored(p.base_offset);
    };
    let detail = match &p.error_message {
        Some(m) if !m.is_empty() => format!("{e} ({})", m.as_str()),
        _ => e.to_string(),
    };
    match e {
        // Stored before, older than the five batches the leader remembers.
        ResponseError::DuplicateSequenceNumber => Verdict::Stored(-1),
        ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId => {
            Verdict::NewEpoch(detail)
        }
        ResponseError::InvalidProducerEpoch
        | ResponseError::ProducerFenced
        | ResponseError::InvalidProducerIdMapping => Verdict::NewId(detail),
        ResponseError::TopicAuthorizationFailed
        | ResponseError::ClusterAuthorizationFailed
        | ResponseError::TransactionalIdAuthorizationFailed => Verdict::Fatal(format!(
            "the broker refused the write ({detail}): ask the cluster's operator for WRITE on \
             the topic"
        )),
        ResponseError::MessageTooLarge
        | ResponseError::RecordListTooLarge
        | ResponseError::InvalidRecord
        | ResponseError::InvalidTimestamp
        | ResponseError::UnsupportedForMessageFormat
        | ResponseError::UnsupportedCompressionType
        | ResponseError::InvalidRequiredAcks => Verdict::Fatal(format!(
            "the broker will never take this batch ({detail}): check the topic's settings \
             (max.message.bytes, message.timestamp.*) and --compression"
        )),
        _ => Verdict::Retry(detail),
    }
}

/// The sequence `n` records after `sequence`: Kafka's sequences wrap from i32::MAX to 0.
fn next_sequence(sequence: i32, n: i32) -> i32 {
    if sequence > i32::MAX - n {
        n - (i32::MAX - sequence) - 1
    } else {
        sequence + n
    }
}

/// Whether a batch of `n` records numbered from `sequence` would pass i32::MAX.
fn spans_wrap(sequence: i32, n: i32) -> bool {
    i64::from(sequence) + i64::from(n) - 1 > i64::from(i32::MAX)
}

/// `items` (each with its partition, below `partition_count`) by partition, in their order.
/// Each share is sized for an even split and a quarter more up front: a map entry per record,
/// and shares grown by doubling, were a few percent of the sending thread's work.
fn split<T>(
    items: impl ExactSizeIterator<Item = (i32, T)>,
    partition_count: u32,
) -> BTreeMap<i32, Vec<T>> {
    let partitions = partition_count.max(1) as usize;
    let even = items.len() / partitions;
    let mut shares: Vec<Vec<T>> = (0..partitions).map(|_| Vec::new()).collect();
    for (p, item) in items {
        // `partition_for_key` is always below the count; the bound only spares a panic.
        let share = &mut shares[(p as usize).min(partitions - 1)];
        if share.capacity() == 0 {
            share.reserve(even + even / 4 + 1);
        }
        share.push(item);
    }
    shares
        .into_iter()
        .enumerate()
        .filter(|(_, share)| !share.is_empty())
        .map(|(p, share)| (p as i32, share))
        .collect()
}

/// Every record of a partition's share refused for the same reason (one text, shared).
fn refuse(outcomes: &mut [Result<Delivery, Refusal>], share: &[usize], partition: i32, why: &str) {
    let why: Refusal = Arc::from(format!("partition {partition}: {why}"));
    for &i in share {
        outcomes[i] = Err(why.clone());
    }
}

fn backoff() -> Duration {
    Duration::from_millis(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_as_kafkas_do() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX - 2, 2), i32::MAX);
        assert_eq!(next_sequence(i32::MAX - 2, 3), 0);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 10), 8);
        assert!(!spans_wrap(i32::MAX - 1, 2));
        assert!(spans_wrap(i32::MAX - 1, 3));
        assert!(spans_wrap(i32::MAX, 2));
        assert!(!spans_wrap(0, 1000));
    }

    #[test]
    fn answers_are_read_as_javas_idempotent_producer_reads_them() {
        let answer = |e: Option<ResponseError>| {
            PartitionProduceResponse::default()
                .with_index(0)
                .with_error_code(e.map_or(0, |e| e.code()))
                .with_base_offset(if e.is_none() { 7 } else { -1 })
        };
        assert!(matches!(verdict(&answer(None)), Verdict::Stored(7)));
        assert!(matches!(
            verdict(&answer(Some(ResponseError::DuplicateSequenceNumber))),
            Verdict::Stored(-1)
        ));
        for e in [
            ResponseError::OutOfOrderSequenceNumber,
            ResponseError::UnknownProducerId,
        ] {
            assert!(matches!(verdict(&answer(Some(e))), Verdict::NewEpoch(_)));
        }
        for e in [
            ResponseError::ProducerFenced,
            ResponseError::InvalidProducerEpoch,
        ] {
            assert!(matches!(verdict(&answer(Some(e))), Verdict::NewId(_)));
        }
        for e in [
            ResponseError::NotLeaderOrFollower,
            ResponseError::NotEnoughReplicas,
            ResponseError::NotEnoughReplicasAfterAppend,
            ResponseError::RequestTimedOut,
        ] {
            assert!(matches!(verdict(&answer(Some(e))), Verdict::Retry(_)));
        }
        for e in [
            ResponseError::TopicAuthorizationFailed,
            ResponseError::MessageTooLarge,
        ] {
            assert!(matches!(verdict(&answer(Some(e))), Verdict::Fatal(_)));
        }
    }

    #[test]
    fn records_split_by_partition_keep_their_order() {
        let items = [(2, 'a'), (0, 'b'), (2, 'c'), (2, 'd'), (0, 'e')];
        let shares = split(items.into_iter(), 4);
        let shares: Vec<(i32, String)> = shares
            .into_iter()
            .map(|(p, share)| (p, share.into_iter().collect()))
            .collect();
        assert_eq!(shares, [(0, "be".into()), (2, "acd".into())]);
        assert!(split(std::iter::empty::<(i32, ())>(), 3).is_empty());
    }

    #[test]
    fn codecs_parse_by_name() {
        assert_eq!("LZ4".parse::<Compression>(), Ok(Compression::Lz4));
        assert_eq!(" zstd ".parse::<Compression>(), Ok(Compression::Zstd));
        let e = "brotli".parse::<Compression>().unwrap_err();
        assert!(e.contains("none, gzip, snappy, lz4, zstd"), "{e}");
    }
}
