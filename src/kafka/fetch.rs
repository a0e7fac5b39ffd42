//! Fetch v13: one request to one leader for the partitions it leads. Fetch v13 names the topic
//! by its id, so a topic deleted and created again answers UNKNOWN_TOPIC_ID instead of quietly
//! serving the new log at the old log's offsets. What comes back is decoded by `records`.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;
use uuid::Uuid;

use super::connection::{Connection, WireError};
use super::records::{decode_records, DecodedRecords};

/// Upper bound of one whole fetch response.
const FETCH_MAX_BYTES: i32 = 64 * 1024 * 1024;

/// What to fetch from one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: i32,
}

/// One partition's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAnswer {
    pub partition: i32,
    pub error: Option<ResponseError>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub decoded: DecodedRecords,
}

/// Sends one Fetch to one leader for the partitions it leads.
pub fn fetch_from(
    connection: &mut Connection,
    topic_id: Uuid,
    positions: &[FetchPosition],
    max_wait: Duration,
) -> Result<Vec<PartitionAnswer>, WireError> {
    let request = FetchRequest::default()
        .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        // read_uncommitted, Kafka's default: see the README.
        .with_isolation_level(0)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(
                positions
                    .iter()
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p.partition)
                            .with_fetch_offset(p.offset)
                            .with_partition_max_bytes(p.max_bytes)
                    })
                    .collect(),
            )]);
    // The broker may hold the request for max_wait before it answers.
    let response = connection.call(&request, max_wait + Duration::from_secs(15))?;
    if let Some(e) = ResponseError::try_from_code(response.error_code) {
        return Err(WireError::Protocol(format!("fetch refused: {e}")));
    }
    let mut answers = Vec::new();
    for topic in response.responses {
        for p in topic.partitions {
            // A partition not asked about is left out; its records are not ours to read.
            let Some(offset) = positions
                .iter()
                .find(|q| q.partition == p.partition_index)
                .map(|q| q.offset)
            else {
                continue;
            };
            let error = ResponseError::try_from_code(p.error_code);
            let decoded = match (&error, &p.records) {
                (None, Some(data)) => decode_records(p.partition_index, offset, data),
                _ => DecodedRecords::default(),
            };
            answers.push(PartitionAnswer {
                partition: p.partition_index,
                error,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                decoded,
            });
        }
    }
    Ok(answers)
}
