//! The committer half of the fakes: the group's offsets, with outages and fenced commits.

use super::*;

impl FakeCommitter {
    /// The process died with a commit in flight: the request may have reached the
    /// coordinator, or not.
    pub fn die_with_commit_in_flight(&mut self) {
        let mut w = self.0.borrow_mut();
        if let Some(c) = w.in_flight.take() {
            if w.rng.bool() {
                let _ = land(&mut w, &c.offsets, c.marker.as_deref());
            }
        }
    }
}

impl OffsetCommitter for FakeCommitter {
    fn start_commit(&mut self, offsets: &[(i32, i64)], marker: Option<&str>) {
        let mut w = self.0.borrow_mut();
        if w.in_flight.is_some() {
            let v = format!("commit {offsets:?} ({marker:?}) started while another was in flight");
            w.violations.push(v);
        }
        w.in_flight = Some(PendingCommit {
            offsets: offsets.to_vec(),
            marker: marker.map(str::to_string),
        });
        w.polls_left = w.commit_latency;
    }

    fn commit_outcome(&mut self, wait: bool) -> Option<Result<(), SinkError>> {
        let mut w = self.0.borrow_mut();
        w.in_flight.as_ref()?;
        if !wait && w.polls_left > 0 {
            w.polls_left -= 1;
            return None;
        }
        let c = w.in_flight.take()?;
        Some(land(&mut w, &c.offsets, c.marker.as_deref()))
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
        if let Some(c) = w.in_flight.take() {
            // The commit in flight ends first; its outcome is nobody's.
            let _ = land(&mut w, &c.offsets, c.marker.as_deref());
        }
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

/// A commit reaching the coordinator: refused during an outage or a fencing, else checked
/// against the rules and applied (an injected crash may still have applied it).
fn land(w: &mut World, offsets: &[(i32, i64)], marker: Option<&str>) -> Result<(), SinkError> {
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
