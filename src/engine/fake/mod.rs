//! In-memory fakes of the store and the group's offsets, with the same uniqueness rules as the
//! real indexes (raw unique by `message_uuid`, dead letters and windows unique by `_id`), and a
//! crash switch: after a set number of sink calls the next call fails, possibly after writing
//! part of what it was given, as a process killed mid-write would leave it.
//!
//! Here: the shared [`World`] and its crash switch; `store` is its [`StoreSink`] half,
//! `committer` its [`OffsetCommitter`] half.

mod committer;
mod store;

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

/// A commit started and not answered yet: its offsets and marker.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    pub offsets: Vec<(i32, i64)>,
    pub marker: Option<String>,
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
    /// The commit started and not answered yet.
    pub in_flight: Option<PendingCommit>,
    /// How many times a commit answers "still in flight" before its outcome: the
    /// coordinator's answer arriving steps later.
    pub commit_latency: usize,
    /// Polls left before the commit in flight answers.
    pub polls_left: usize,
    /// Raw inserts made while a commit was in flight: steps that did not wait for it.
    pub stored_during_commit: usize,
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
            in_flight: None,
            commit_latency: 0,
            polls_left: 0,
            stored_during_commit: 0,
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
