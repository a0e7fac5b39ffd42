//! In-memory fakes of the store and the group's offsets, with the same uniqueness rules as the
//! real indexes (raw unique by `message_uuid`, dead letters and windows unique by `_id`), and a
//! crash switch: after a set number of sink calls the next call fails, possibly after writing
//! part of what it was given, as a process killed mid-write would leave it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde_json::{Map, Value};

use super::sink::*;
use crate::window::KpiWindow;

/// How a failing unordered insert leaves the collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// The first k documents are stored (one server applying the insert in order).
    Prefix,
    /// Any subset is stored (a sharded insert applied in parallel).
    Subset,
}

/// A raw document as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRaw {
    pub fields: Map<String, Value>,
    pub position: StoredPosition,
}

/// A dead letter as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDead {
    pub code: &'static str,
    pub reason: String,
    /// `None` for a record without value.
    pub payload: Option<Vec<u8>>,
    /// For a truncated payload: full length and SHA-256.
    pub truncated: Option<(usize, String)>,
    pub position: StoredPosition,
    pub duplicate_of: Option<StoredPosition>,
}

/// A KPI window as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    pub stream: String,
    pub seq: i64,
    pub topic_id: String,
    pub window: KpiWindow,
    pub next_offsets: Vec<(i32, i64)>,
}

/// Everything the fakes hold, shared by the store and committer handles.
#[derive(Debug)]
pub struct World {
    pub raw: HashMap<String, StoredRaw>,
    pub dead: BTreeMap<String, StoredDead>,
    pub windows: BTreeMap<String, StoredWindow>,
    /// Staged windows by (token, seq).
    pub staged: BTreeMap<(String, i64), StoredWindow>,
    pub committed: HashMap<i32, i64>,
    /// The first offset of each partition's log.
    pub log_start: HashMap<i32, i64>,
    /// The marker committed with each partition's offset, if any.
    pub markers: HashMap<i32, String>,
    /// The group refuses commits, as a coordinator refuses those of a member it fenced out.
    pub refuse_commits: bool,
    /// Every commit that took effect, in order.
    pub commits: Vec<Vec<(i32, i64)>>,
    /// Broken rules seen at call time (a commit not on a stored window's boundary).
    pub violations: Vec<String>,
    /// Window inserts that met a window already stored.
    pub window_replays: usize,
    /// Raw documents of this server are refused, as a schema validator would.
    pub refuse_server: Option<String>,
    /// Sink calls left before the next one fails; `None`: never fails.
    pub budget: Option<usize>,
    /// The injected failure is a single one (a call that failed and may succeed when made
    /// again), not a crash that fails every call until the process is replaced.
    pub crash_once: bool,
    /// A crash (not a single failed call) was injected: the process is as good as dead.
    pub killed: bool,
    /// Commits still to be refused as failed (a coordinator unavailable for a while).
    pub commit_outage: usize,
    /// Commits that failed (an outage, an injected crash).
    pub failed_commits: usize,
    /// Per partition truncated under the consumer, the offset its log now ends at: the one
    /// commit that may go back (to there), and may lie on no window boundary.
    pub truncated: HashMap<i32, i64>,
    /// The most windows one token may hold staged past its last commit: the loop's limit
    /// plus what one step can close. `None`: not checked.
    pub max_held: Option<usize>,
    /// Per staging token, the `seq` its last commit that went through named.
    pub last_marker: HashMap<String, i64>,
    pub partial: Partial,
    pub calls: usize,
    /// Injected crashes per operation, to show the schedule reaches every call.
    pub crashed_in: BTreeMap<&'static str, usize>,
    pub rng: fastrand::Rng,
}

impl World {
    pub fn new(seed: u64) -> Self {
        World {
            raw: HashMap::new(),
            dead: BTreeMap::new(),
            windows: BTreeMap::new(),
            staged: BTreeMap::new(),
            committed: HashMap::new(),
            log_start: HashMap::new(),
            markers: HashMap::new(),
            refuse_commits: false,
            commits: Vec::new(),
            violations: Vec::new(),
            window_replays: 0,
            refuse_server: None,
            budget: None,
            crash_once: false,
            killed: false,
            commit_outage: 0,
            failed_commits: 0,
            truncated: HashMap::new(),
            max_held: None,
            last_marker: HashMap::new(),
            partial: Partial::Prefix,
            calls: 0,
            crashed_in: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Shares the world between a store and a committer.
    pub fn shared(self) -> (FakeStore, FakeCommitter) {
        let w = Rc::new(RefCell::new(self));
        (FakeStore(Rc::clone(&w)), FakeCommitter(w))
    }

    /// Counts a call; true if this one is the crash.
    fn crashes(&mut self, operation: &'static str) -> bool {
        self.calls += 1;
        match &mut self.budget {
            None => false,
            Some(0) => {
                *self.crashed_in.entry(operation).or_default() += 1;
                if self.crash_once {
                    self.budget = None;
                } else {
                    self.killed = true;
                }
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
        }
    }

    /// Which of `n` documents a failing insert stores.
    fn partial_mask(&mut self, n: usize, mode: Partial) -> Vec<bool> {
        match mode {
            Partial::Prefix => {
                let k = self.rng.usize(..=n);
                (0..n).map(|i| i < k).collect()
            }
            Partial::Subset => (0..n).map(|_| self.rng.bool()).collect(),
        }
    }

    /// The stored windows of `stream`, by `seq`.
    pub fn stream_windows(&self, stream: &str) -> Vec<&StoredWindow> {
        let mut ws: Vec<&StoredWindow> = self
            .windows
            .values()
            .filter(|w| w.stream == stream)
            .collect();
        ws.sort_by_key(|w| w.seq);
        ws
    }
}

fn crash(operation: &'static str) -> SinkError {
    SinkError::new(operation, SinkErrorKind::Failed, "injected crash")
}

/// The store half of a [`World`].
pub struct FakeStore(pub Rc<RefCell<World>>);

/// The committer half of a [`World`].
pub struct FakeCommitter(pub Rc<RefCell<World>>);

impl FakeStore {
    /// The world, to read or arm.
    pub fn world(&self) -> std::cell::RefMut<'_, World> {
        self.0.borrow_mut()
    }
}

impl StoreSink for FakeStore {
    fn insert_raw(&mut self, records: &[RawRecord<'_>]) -> Result<Vec<InsertOutcome>, SinkError> {
        let mut w = self.0.borrow_mut();
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
