//! The committer half of the fakes: the group's offsets, with outages and fenced commits.

use super::*;

impl OffsetCommitter for FakeCommitter {
    fn commit(&mut self, offsets: &[(i32, i64)], marker: Option<&str>) -> Result<(), SinkError> {
        let mut w = self.0.borrow_mut();
        if w.commit_outage > 0 {
            w.commit_outage -= 1;
            w.failed_commits += 1;
            return Err(SinkError::new(
                "offset commit",
                SinkErrorKind::Failed,
                "the coordinator is not available (COORDINATOR_NOT_AVAILABLE)",
            ));
        }
        if w.refuse_commits {
            return Err(SinkError::new(
                "offset commit",
                SinkErrorKind::Fenced,
                "the group refused this member's commit (ILLEGAL_GENERATION)",
            ));
        }
        let fails = w.crashes("offset commit");
        // A failed commit may still have reached the broker (the answer was lost).
        if fails && w.rng.bool() {
            w.failed_commits += 1;
            return Err(crash("offset commit"));
        }
        // After a truncation, the positions alone are committed: the truncated partition at its
        // new end, the others at their last boundary.
        let rewound = offsets.iter().any(|(p, o)| w.truncated.get(p) == Some(o));
        let boundary = rewound
            || match marker.and_then(parse_marker) {
                // Staged: the marker names the window the offsets end, staged before the commit.
                Some((token, seq)) => w
                    .staged
                    .get(&(token.to_string(), seq))
                    .is_some_and(|s| s.next_offsets == offsets),
                None => w.windows.values().any(|s| s.next_offsets == offsets),
            };
        if !boundary {
            let v = format!("commit {offsets:?} ({marker:?}) is not the boundary of a window stored or staged before it");
            w.violations.push(v);
        }
        for &(p, _) in offsets {
            match marker {
                Some(m) => w.markers.insert(p, m.to_string()),
                None => w.markers.remove(&p),
            };
        }
        for &(p, o) in offsets {
            if let Some(old) = w.committed.insert(p, o) {
                if o < old && w.truncated.get(&p) != Some(&o) {
                    let v = format!("partition {p}: commit moved back from {old} to {o}");
                    w.violations.push(v);
                }
            }
        }
        w.commits.push(offsets.to_vec());
        if let Some((token, seq)) = marker.and_then(parse_marker) {
            w.last_marker.insert(token.to_string(), seq);
        }
        if fails {
            w.failed_commits += 1;
            Err(crash("offset commit"))
        } else {
            Ok(())
        }
    }

    fn log_start(&mut self, partitions: &[i32]) -> Result<HashMap<i32, i64>, SinkError> {
        let w = self.0.borrow();
        Ok(partitions
            .iter()
            .filter_map(|p| Some((*p, *w.log_start.get(p)?)))
            .collect())
    }

    fn committed(&mut self, partitions: &[i32]) -> Result<HashMap<i32, Committed>, SinkError> {
        let mut w = self.0.borrow_mut();
        if w.crashes("offset fetch") {
            return Err(crash("offset fetch"));
        }
        Ok(partitions
            .iter()
            .filter_map(|p| {
                let committed = Committed {
                    offset: *w.committed.get(p)?,
                    marker: w.markers.get(p).cloned(),
                };
                Some((*p, committed))
            })
            .collect())
    }
}
