//! One partition's answer turned into data: records and where to fetch next, a re-created
//! topic noticed, a position out of range moved (`auto.offset.reset=earliest`, or past a
//! truncated log's end), a batch larger than the fetch size asked for again with more room.

use super::*;

impl KafkaSource {
    /// The log changed under us (a new topic id), if it did.
    pub(super) fn changed(&self, meta: &TopicMeta) -> Option<TopicInfo> {
        match self.admin.topic_id {
            Some(id) if id != meta.topic_id => Some(TopicInfo::from(meta)),
            _ => None,
        }
    }

    /// Turns one partition's answer into data; `Ok(None)` asks for a metadata reload.
    pub(super) fn take_answer(
        &mut self,
        answer: PartitionAnswer,
        at: i64,
    ) -> Result<Option<PartitionData>, KafkaError> {
        let partition = answer.partition;
        match answer.error {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => {
                return self.out_of_range(partition, at).map(Some);
            }
            Some(
                ResponseError::NotLeaderOrFollower
                | ResponseError::LeaderNotAvailable
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::UnknownTopicId
                | ResponseError::InconsistentTopicId
                | ResponseError::FencedLeaderEpoch
                | ResponseError::UnknownLeaderEpoch
                | ResponseError::ReplicaNotAvailable
                | ResponseError::KafkaStorageError
                | ResponseError::OffsetNotAvailable,
            ) => return Ok(None),
            Some(other) => {
                warn!("partition {partition}: fetch at offset {at} answered {other}; retrying");
                return Ok(None);
            }
        }
        let mut decoded = answer.decoded;
        let screened = self.suspects.screen(
            partition,
            std::mem::take(&mut decoded.unreadable),
            Instant::now(),
        );
        for bad in &screened.passed {
            error!(
                "partition {partition}: {} offset(s) {}..={} cannot be read and are passed \
                 over (two fetches returned the same bytes): {}",
                bad.last_offset
                    .saturating_sub(bad.first_offset)
                    .saturating_add(1),
                bad.first_offset,
                bad.last_offset,
                bad.reason
            );
        }
        if let Some((bad, pause)) = screened.cut {
            warn!(
                "partition {partition}: offsets {}..={} cannot be read ({}); fetching them \
                 again in {:.1} s, and passing over them if the same bytes come back",
                bad.first_offset,
                bad.last_offset,
                bad.reason,
                pause.as_secs_f64()
            );
            decoded.records.retain(|r| r.offset < bad.first_offset);
            return Ok(Some(PartitionData {
                partition,
                records: decoded.records,
                next_offset: bad.first_offset.max(at),
                high_watermark: (answer.high_watermark >= 0).then_some(answer.high_watermark),
            }));
        }
        let next_offset = match decoded.next_offset {
            Some(next) => {
                self.fetch_bytes.remove(&partition);
                next.max(at)
            }
            None => {
                if decoded.truncated {
                    self.grow_fetch_size(partition, at);
                }
                at
            }
        };
        Ok(Some(PartitionData {
            partition,
            records: decoded.records,
            next_offset,
            high_watermark: (answer.high_watermark >= 0).then_some(answer.high_watermark),
        }))
    }

    /// Kafka's `auto.offset.reset=earliest`: a position before the log start restarts at the
    /// log's start, saying how many offsets retention deleted unread. A position past the log's
    /// end means the log was cut below what was read (an unclean leader election): reading goes
    /// on at the end, and an ERROR line says how many offsets that passes over. A position
    /// inside the log (an answer older than the log's state) is kept and fetched again.
    pub(super) fn out_of_range(
        &mut self,
        partition: i32,
        at: i64,
    ) -> Result<PartitionData, KafkaError> {
        let bounds = self.admin.offset_bounds(&[partition])?;
        let Some(&(earliest, latest)) = bounds.get(&partition) else {
            return Err(fail(
                "list-offsets",
                format!("partition {partition} is missing from the answer"),
            ));
        };
        let next_offset = if at < earliest {
            warn!(
                "partition {partition}: offset {at} is before the log start {earliest}: {} \
                 offsets were deleted by retention unread; continuing at {earliest}",
                earliest.saturating_sub(at)
            );
            earliest
        } else if at > latest {
            error!(
                "partition {partition}: offset {at} is past the log end {latest}: the log was \
                 truncated below what was read (an unclean leader election?); the {} offsets \
                 {latest}..{} cannot be read as they were, and records written there since \
                 will be read from {latest} on",
                at.saturating_sub(latest),
                at.saturating_sub(1)
            );
            latest
        } else {
            warn!(
                "partition {partition}: offset {at} answered out of range, but the log holds \
                 {earliest}..{latest}; fetching it again"
            );
            at
        };
        Ok(PartitionData {
            partition,
            records: Vec::new(),
            next_offset,
            high_watermark: Some(latest),
        })
    }

    /// A batch larger than the fetch size came back cut: ask for more next time.
    pub(super) fn grow_fetch_size(&mut self, partition: i32, at: i64) {
        let size = self
            .fetch_bytes
            .entry(partition)
            .or_insert(FETCH_PARTITION_BYTES);
        if *size >= FETCH_PARTITION_BYTES_LIMIT {
            error!(
                "partition {partition}: the batch at offset {at} is larger than {} MiB and \
                 cannot be read; the consumer waits here",
                FETCH_PARTITION_BYTES_LIMIT / (1024 * 1024)
            );
            self.admin.shutdown.sleep(Duration::from_secs(5));
        } else {
            *size = size.saturating_mul(2).min(FETCH_PARTITION_BYTES_LIMIT);
            warn!(
                "partition {partition}: the batch at offset {at} is larger than the fetch size; \
                 fetching up to {} KiB",
                *size / 1024
            );
        }
    }
}
