//! The invariants, checked on what the fakes hold once the log is consumed.

use super::*;

pub(super) fn dead_id(p: i32, offset: i64) -> String {
    format!("{TOPIC}/{TOPIC_ID}/{p}/{offset}")
}

/// The invariants, on what the fakes hold once the log is consumed.
pub(super) fn check(case: &Case, world: &World, pending: usize) -> Result<(), String> {
    // What each record should have become.
    let mut expected_dead: BTreeMap<String, (&str, &Record, Option<StoredPosition>)> =
        BTreeMap::new();
    let mut occurrences: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in case.logs.values().flatten() {
        let id = dead_id(r.partition, r.offset);
        // The generator's word, never `metric::validate`'s.
        let code = match &case.made[&(r.partition, r.offset)] {
            Made::Invalid(code) => *code,
            Made::Refused => "rejected_by_database",
            Made::Valid(uuid) => {
                occurrences.entry(uuid.clone()).or_default().push(r);
                continue;
            }
        };
        expected_dead.insert(id, (code, r, None));
    }

    // I1: one raw document per valid message_uuid, from one of its positions, as received.
    if world.raw.len() != occurrences.len() {
        return Err(format!(
            "I1: {} raw documents for {} valid message_uuids",
            world.raw.len(),
            occurrences.len()
        ));
    }
    for (uuid, occ) in &occurrences {
        let Some(stored) = world.raw.get(uuid) else {
            return Err(format!("I1: {uuid} is not stored raw"));
        };
        let pos = &stored.position;
        let Some(first) = occ
            .iter()
            .find(|r| r.partition == pos.partition && r.offset == pos.offset)
        else {
            return Err(format!(
                "I1: {uuid} stored from {pos}, not one of its positions"
            ));
        };
        if pos.topic != TOPIC || pos.topic_id != TOPIC_ID {
            return Err(format!("I1: {uuid} stored with position {pos}"));
        }
        let received: Value = serde_json::from_slice(first.value.as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        if Value::Object(stored.fields.clone()) != received {
            return Err(format!("I1: {uuid} stored with changed fields"));
        }
        // One server applying inserts in order stores the first occurrence of a partition.
        if case.partial == Partial::Prefix
            && occ
                .iter()
                .any(|r| r.partition == pos.partition && r.offset < pos.offset)
        {
            return Err(format!(
                "I1: {uuid} stored from {pos}, not its first occurrence"
            ));
        }
        for r in occ
            .iter()
            .filter(|r| !(r.partition == pos.partition && r.offset == pos.offset))
        {
            expected_dead.insert(
                dead_id(r.partition, r.offset),
                ("duplicate_message_uuid", r, Some(pos.clone())),
            );
        }
    }

    // I3: every other record dead-lettered once, with its code and its payload.
    let missing: Vec<&String> = expected_dead
        .keys()
        .filter(|id| !world.dead.contains_key(*id))
        .collect();
    let unexpected: Vec<&String> = world
        .dead
        .keys()
        .filter(|id| !expected_dead.contains_key(*id))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(format!(
            "I3: dead letters missing {missing:?}, not expected {unexpected:?}"
        ));
    }
    for (id, (code, record, duplicate_of)) in &expected_dead {
        let d = &world.dead[id];
        if d.code != *code {
            return Err(format!(
                "I3: {id} dead-lettered as {}, expected {code}",
                d.code
            ));
        }
        if d.duplicate_of != *duplicate_of {
            return Err(format!(
                "I3: {id} duplicate of {:?}, expected {duplicate_of:?}",
                d.duplicate_of
            ));
        }
        let full = record.value.as_deref();
        let kept_right = match (full, &d.payload, &d.truncated) {
            (None, None, None) => true,
            (Some(v), Some(kept), None) => v.len() <= case.limits.payload_bytes && kept == v,
            (Some(v), Some(kept), Some((len, sha))) => {
                v.len() > case.limits.payload_bytes
                    && kept.len() <= case.limits.head_bytes
                    && kept.len() + 3 >= case.limits.head_bytes.min(v.len())
                    && v.starts_with(kept)
                    && *len == v.len()
                    && *sha == sha256_hex(v)
            }
            _ => false,
        };
        if !kept_right {
            return Err(format!(
                "I3: {id} kept {:?} / {:?}",
                d.payload.as_ref().map(Vec::len),
                d.truncated
            ));
        }
    }

    // I2: windows partition the raw messages in consumption order.
    check_spans(case, world, pending)?;
    if !world.truncated.is_empty() {
        // Windows went on from a lower offset after the truncation: checked by their spans.
        return commits_and_replays(world);
    }
    let stream = stream_name(
        &case.config(0, &case.partitions).log,
        GROUP,
        &case.partitions,
    );
    let windows = world.stream_windows(&stream);
    if windows.len() != world.windows.len() {
        if case.shares {
            // Several streams: their windows were checked by their spans.
            return commits_and_replays(world);
        }
        return Err("I2: windows of another stream".into());
    }
    let mut prev: BTreeMap<i32, i64> = case
        .partitions
        .iter()
        .map(|p| (*p, case.log_start[p]))
        .collect();
    let counted = |from: &BTreeMap<i32, i64>, to: Option<&BTreeMap<i32, i64>>| -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = world
            .raw
            .values()
            .map(|s| (s.position.partition, s.position.offset))
            .filter(|(p, o)| *o >= from[p] && to.is_none_or(|to| *o < to[p]))
            .collect();
        v.sort_unstable();
        v
    };
    for (i, w) in windows.iter().enumerate() {
        if w.seq != i as i64 || w.topic_id != TOPIC_ID {
            return Err(format!(
                "I2: window {i} stored as seq {} of {}",
                w.seq, w.topic_id
            ));
        }
        let next: BTreeMap<i32, i64> = w.next_offsets.iter().copied().collect();
        if next.keys().ne(prev.keys()) || next.iter().any(|(p, o)| *o < prev[p]) {
            return Err(format!("I2: window {i} ends at {next:?} before {prev:?}"));
        }
        let members = counted(&prev, Some(&next));
        if w.window.message_count != case.window_size || members.len() != case.window_size {
            return Err(format!(
                "I2: window {i} of {} messages covers {} stored ones ({prev:?}..{next:?})",
                w.window.message_count,
                members.len()
            ));
        }
        let mut spans: Vec<PartitionSpan> = Vec::new();
        for (p, o) in &members {
            match spans.last_mut() {
                Some(s) if s.partition == *p => {
                    s.last_offset = *o;
                    s.message_count += 1;
                }
                _ => spans.push(PartitionSpan {
                    partition: *p,
                    first_offset: *o,
                    last_offset: *o,
                    message_count: 1,
                }),
            }
        }
        if spans != w.window.partitions {
            return Err(format!(
                "I2: window {i} spans {:?}, its messages are {spans:?}",
                w.window.partitions
            ));
        }
        prev = next;
    }
    let open = counted(&prev, None);
    if open.len() >= case.window_size || open.len() != pending {
        return Err(format!(
            "I2: {} stored messages after the last window, the engine holds {pending}",
            open.len()
        ));
    }

    commits_and_replays(world)
}

/// Commits were checked as they happened; no window was computed twice.
pub(super) fn commits_and_replays(world: &World) -> Result<(), String> {
    if let Some(v) = world.violations.first() {
        return Err(format!("commit: {v}"));
    }
    if world.window_replays != 0 {
        return Err(format!("{} windows computed twice", world.window_replays));
    }
    Ok(())
}

/// I2 by offset spans, whatever the streams: every window holds `window_size` stored messages
/// within its spans, no stored message lies in two windows, and those in none are the last
/// engine's open window, at the end of their partitions.
pub(super) fn check_spans(case: &Case, world: &World, pending: usize) -> Result<(), String> {
    let stored: BTreeSet<(i32, i64)> = world
        .raw
        .values()
        .map(|s| (s.position.partition, s.position.offset))
        .collect();
    let mut counted: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    for (id, w) in &world.windows {
        let mut members = 0;
        for span in &w.window.partitions {
            for &(p, o) in stored
                .range((span.partition, span.first_offset)..=(span.partition, span.last_offset))
            {
                members += 1;
                if let Some(other) = counted.insert((p, o), id) {
                    return Err(format!(
                        "I2: partition {p} offset {o} in windows {other} and {id}"
                    ));
                }
            }
        }
        if members != case.window_size || w.window.message_count != case.window_size {
            return Err(format!(
                "I2: window {id} of {} messages spans {members} stored ones",
                w.window.message_count
            ));
        }
    }
    // Records read past a truncation's cut, dropped with the open window, are in no window.
    let truncated = |(p, o): &(i32, i64)| world.truncated.get(p).is_some_and(|cut| o >= cut);
    let uncounted: Vec<&(i32, i64)> = stored
        .iter()
        .filter(|m| !counted.contains_key(*m) && !truncated(m))
        .collect();
    if uncounted.len() != pending {
        return Err(format!(
            "I2: {} stored messages in no window, the last engine holds {pending}",
            uncounted.len()
        ));
    }
    if let Some((p, o)) = uncounted
        .iter()
        .find(|(p, o)| counted.keys().any(|(cp, co)| cp == p && co > o))
    {
        return Err(format!(
            "I2: partition {p} offset {o} is in no window, but later ones are"
        ));
    }
    Ok(())
}
