//! The store half of the fakes: raw documents, dead letters, windows, staging.

use super::*;

impl StoreSink for FakeStore {
    fn insert_raw(&mut self, records: &[RawRecord<'_>]) -> Result<Vec<InsertOutcome>, SinkError> {
        let mut w = self.0.borrow_mut();
        w.stored_during_commit += usize::from(w.in_flight.is_some());
        let fails = w.crashes("raw insert");
        let mode = w.partial;
        let mask = if fails {
            w.partial_mask(records.len(), mode)
        } else {
            vec![true; records.len()]
        };
        let mut outcomes = Vec::with_capacity(records.len());
        for (r, apply) in records.iter().zip(mask) {
            let outcome = if w.refuse_server.as_deref() == Some(r.message.server_id.as_str()) {
                InsertOutcome::Refused("Document failed validation (code 121)".into())
            } else if w.raw.contains_key(&r.message.message_uuid) {
                InsertOutcome::AlreadyStored
            } else {
                if apply {
                    w.raw.insert(
                        r.message.message_uuid.clone(),
                        StoredRaw {
                            fields: r
                                .message
                                .fields
                                .iter()
                                .map(|(k, v)| {
                                    (k.clone(), serde_json::from_str(v.get()).unwrap_or_default())
                                })
                                .collect(),
                            position: r.position.to_stored(),
                        },
                    );
                }
                InsertOutcome::Inserted
            };
            outcomes.push(outcome);
        }
        if fails {
            Err(crash("raw insert"))
        } else {
            Ok(outcomes)
        }
    }

    fn stored_positions(
        &mut self,
        uuids: &[&str],
    ) -> Result<HashMap<String, StoredPosition>, SinkError> {
        let mut w = self.0.borrow_mut();
        if w.crashes("raw lookup") {
            return Err(crash("raw lookup"));
        }
        Ok(uuids
            .iter()
            .filter_map(|u| Some((u.to_string(), w.raw.get(*u)?.position.clone())))
            .collect())
    }

    fn insert_dead_letters(&mut self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        let mut w = self.0.borrow_mut();
        let fails = w.crashes("dead-letter insert");
        let mask = if fails {
            w.partial_mask(letters.len(), Partial::Subset)
        } else {
            vec![true; letters.len()]
        };
        for (l, apply) in letters.iter().zip(mask) {
            if !apply {
                continue;
            }
            let (payload, truncated) = match l.payload {
                DeadPayload::Missing => (None, None),
                DeadPayload::Whole(b) => (Some(b.to_vec()), None),
                DeadPayload::Truncated { head, len, sha256 } => {
                    (Some(head.to_vec()), Some((len, sha256.to_string())))
                }
            };
            // Idempotent by _id: the first stored stays.
            w.dead.entry(l.id()).or_insert(StoredDead {
                code: l.code.as_str(),
                reason: l.reason.to_string(),
                payload,
                truncated,
                position: l.position.to_stored(),
                duplicate_of: l.duplicate_of.cloned(),
            });
        }
        if fails {
            Err(crash("dead-letter insert"))
        } else {
            Ok(())
        }
    }

    fn insert_windows(
        &mut self,
        windows: &[WindowRecord<'_>],
    ) -> Result<Vec<WindowOutcome>, SinkError> {
        let mut w = self.0.borrow_mut();
        let fails = w.crashes("window insert");
        // The contract: a failing window insert leaves a prefix.
        let mask = if fails {
            w.partial_mask(windows.len(), Partial::Prefix)
        } else {
            vec![true; windows.len()]
        };
        let mut outcomes = Vec::with_capacity(windows.len());
        for (r, apply) in windows.iter().zip(mask) {
            let id = r.id();
            if w.windows.contains_key(&id) {
                w.window_replays += 1;
                outcomes.push(WindowOutcome::AlreadyStored);
                continue;
            }
            if apply {
                w.windows.insert(id, stored_window(r));
            }
            outcomes.push(WindowOutcome::Inserted);
        }
        if fails {
            Err(crash("window insert"))
        } else {
            Ok(outcomes)
        }
    }

    fn last_window(&mut self, stream: &str) -> Result<Option<LastWindow>, SinkError> {
        let mut w = self.0.borrow_mut();
        if w.crashes("window lookup") {
            return Err(crash("window lookup"));
        }
        Ok(w.stream_windows(stream).last().map(|l| LastWindow {
            seq: l.seq,
            next_offsets: l.next_offsets.iter().copied().collect(),
        }))
    }

    fn furthest_positions(
        &mut self,
        topic_id: &str,
        _group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        let mut w = self.0.borrow_mut();
        if w.crashes("window scan") {
            return Err(crash("window scan"));
        }
        // One group per world.
        let mut found: HashMap<i32, i64> = HashMap::new();
        for window in w.windows.values().filter(|w| w.topic_id == topic_id) {
            for &(p, o) in &window.next_offsets {
                if partitions.contains(&p) {
                    let best = found.entry(p).or_insert(o);
                    *best = (*best).max(o);
                }
            }
        }
        Ok(found)
    }

    fn stage_windows(
        &mut self,
        token: &str,
        windows: &[WindowRecord<'_>],
    ) -> Result<(), SinkError> {
        let mut w = self.0.borrow_mut();
        let fails = w.crashes("window staging");
        let mask = if fails {
            w.partial_mask(windows.len(), Partial::Subset)
        } else {
            vec![true; windows.len()]
        };
        for (r, apply) in windows.iter().zip(mask) {
            if apply {
                w.staged
                    .entry((token.to_string(), r.seq))
                    .or_insert_with(|| stored_window(r));
            }
        }
        // Backpressure: a loop that reads on while its commits fail holds ever more windows.
        if let (Some(max), Some(last)) = (w.max_held, windows.last()) {
            let committed = w.last_marker.get(token).copied().unwrap_or(-1);
            let first = w
                .staged
                .range((token.to_string(), committed + 1)..)
                .take_while(|((t, _), _)| t == token)
                .map(|((_, seq), _)| *seq)
                .next()
                .unwrap_or(last.seq);
            let held = usize::try_from(last.seq - first + 1).unwrap_or(0);
            if held > max {
                let v = format!(
                    "{held} windows of {token} staged past its last commit (at most {max})"
                );
                w.violations.push(v);
            }
        }
        if fails {
            Err(crash("window staging"))
        } else {
            Ok(())
        }
    }

    fn publish_staged(&mut self, token: &str, through: i64) -> Result<usize, SinkError> {
        let mut w = self.0.borrow_mut();
        let fails = w.crashes("staged publication");
        let staged: Vec<StoredWindow> = w
            .staged
            .range((token.to_string(), i64::MIN)..=(token.to_string(), through))
            .map(|(_, s)| s.clone())
            .collect();
        // Ordered, like a window insert: a crash leaves a prefix.
        let mask = if fails {
            w.partial_mask(staged.len(), Partial::Prefix)
        } else {
            vec![true; staged.len()]
        };
        let mut published = 0;
        for (s, apply) in staged.into_iter().zip(mask) {
            let id = window_id(&s.stream, s.seq);
            if apply && !w.windows.contains_key(&id) {
                w.windows.insert(id, s);
                published += 1;
            }
        }
        if fails {
            Err(crash("staged publication"))
        } else {
            Ok(published)
        }
    }

    fn forget_staged(&mut self, token: &str, through: i64) -> Result<(), SinkError> {
        let mut w = self.0.borrow_mut();
        if w.crashes("staged forget") {
            return Err(crash("staged forget"));
        }
        w.staged
            .retain(|(t, seq), _| !(t.as_str() == token && *seq <= through));
        Ok(())
    }
}

fn stored_window(r: &WindowRecord<'_>) -> StoredWindow {
    StoredWindow {
        stream: r.stream.to_string(),
        seq: r.seq,
        topic_id: r.topic_id.to_string(),
        window: r.window.clone(),
        next_offsets: r.next_offsets.to_vec(),
    }
}
