//! Where a fresh engine starts: the staged windows a commit covers are published first, then
//! each partition resumes at the group's commit or after the furthest stored window.
use std::collections::{BTreeMap, HashMap};

use log::{info, warn};

use super::{
    parse_marker, stream_name, Engine, EngineConfig, EngineError, OffsetCommitter, StoreSink,
};
use crate::window::TumblingWindows;

impl Engine {
    /// Builds the engine where the last run left off: per partition the group's committed
    /// offset when it carries a marker (its committer published only behind its commits);
    /// else the later of the commit and the furthest stored window's next offset (this
    /// stream's last window and any window of the group on this log:
    /// [`StoreSink::furthest_positions`]); else `log_start` (the log's first offset, 0 when
    /// missing). A position below `log_start` (records deleted by retention before being read)
    /// moves up to it, with a warning.
    ///
    /// First, the staged windows the committed offsets' markers name are published, and their
    /// staged copies forgotten: their commit went through, so they are the group's windows,
    /// whoever staged them.
    pub fn resume<S, C>(
        mut config: EngineConfig,
        log_start: &HashMap<i32, i64>,
        store: &mut S,
        committer: &mut C,
    ) -> Result<Engine, EngineError>
    where
        S: StoreSink + ?Sized,
        C: OffsetCommitter + ?Sized,
    {
        config.partitions.sort_unstable();
        config.partitions.dedup();
        let stream = stream_name(&config.log, &config.group, &config.partitions);
        let committed = committer.committed(&config.partitions)?;
        let mut markers: BTreeMap<&str, i64> = BTreeMap::new();
        for (token, seq) in committed
            .values()
            .filter_map(|c| parse_marker(c.marker.as_deref()?))
        {
            let through = markers.entry(token).or_insert(seq);
            *through = (*through).max(seq);
        }
        for (token, through) in markers {
            let published = store.publish_staged(token, through)?;
            store.forget_staged(token, through)?;
            if published > 0 {
                info!(
                    "published {published} staged window(s) of {token} up to {through}: their offsets were committed, their publication had not finished"
                );
            }
        }
        let last = store.last_window(&stream)?;
        // A commit with a marker was made by a consumer that publishes its windows only after
        // their commit: no window lies past it, and it alone says where the partition stands
        // (even below a window, after a log truncation). A commit without one (a consumer that
        // stores directly, or the legacy unmarked format) may have been lost after its window
        // was stored, and a partition without a commit may have windows all the same (Kafka
        // expires the offsets of a group idle for a week): those resume after the group's
        // furthest window on this log too.
        let authoritative = |p: &i32| committed.get(p).is_some_and(|c| c.marker.is_some());
        let unsure: Vec<i32> = config
            .partitions
            .iter()
            .copied()
            .filter(|p| !authoritative(p))
            .collect();
        let furthest = if unsure.is_empty() {
            HashMap::new()
        } else {
            store.furthest_positions(&config.log.topic_id, &config.group, &unsure)?
        };

        let mut positions = BTreeMap::new();
        for &p in &config.partitions {
            let from_window = if authoritative(&p) {
                None
            } else {
                last.as_ref()
                    .and_then(|l| l.next_offsets.get(&p).copied())
                    .max(furthest.get(&p).copied())
            };
            let from_group = committed.get(&p).map(|c| c.offset);
            let start = log_start.get(&p).copied().unwrap_or(0);
            let mut at = from_window.max(from_group).unwrap_or(start);
            if at < start {
                warn!(
                    "partition {p}: offsets {at}..{start} were deleted by retention before being read; starting at {start}"
                );
                at = start;
            }
            info!(
                "partition {p}: starting at offset {at} (committed {}, last window {})",
                from_group.map_or("none".into(), |o| o.to_string()),
                from_window.map_or("none".into(), |o| o.to_string()),
            );
            positions.insert(p, at);
        }
        let next_seq = last.as_ref().map_or(0, |l| l.seq.saturating_add(1));
        Ok(Engine {
            windows: TumblingWindows::new(config.window_size)
                .listing_servers(config.servers_listed),
            config,
            stream,
            positions,
            next_seq,
            unpublished: Vec::new(),
            uncommitted: None,
            in_flight: None,
            published_staged: None,
            published_staged_count: 0,
            poisoned: false,
        })
    }
}
