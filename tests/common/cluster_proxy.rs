//! [`ClusterProxy`]: a proxy in front of every broker of a cluster, one listener on loopback
//! per node, for the hostile-peer tests of issue 15 on the three-node cluster. A client is
//! given the listeners as its bootstrap list, and Metadata and FindCoordinator answers are
//! rewritten so that every node they name is reached through its own listener: the client never
//! learns a real broker address, so a fault set on one node's listener reaches every connection
//! the client has to that node, however it learned of it.
//!
//! Each node's listener forwards faithfully until a test switches it to a [`BrokerFault`] (and
//! back) at a moment of its choosing; connections already open are affected from their next
//! frame on. Requests and connections are counted per node, so a test can bound how hard a
//! client hammers a broken broker.
//!
//! Threads and blocking sockets only, two pump threads per proxied connection; everything stops
//! when the value is dropped.
#![allow(dead_code)]

// The frame and rewriting helpers of the single-broker proxy (`kafka_proxy.rs`, next to this
// file), shared rather than written twice.
#[path = "kafka_proxy.rs"]
mod kafka_proxy;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_proxy::{
    accept_loop, needs_rewrite, note_request, read_frame, rewrite_addresses, write_frame,
};

/// How often a frame held by a frozen listener looks whether it may go on.
const HOLD_POLL: Duration = Duration::from_millis(20);

/// How one node's listener misbehaves, from the next frame of every connection on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerFault {
    /// Forwards everything as it is.
    Healthy,
    /// Accepts connections and holds every frame, both ways, where it is: a broker that hangs
    /// (a stopped process, a dead link whose TCP connections stay open). Held frames go on when
    /// the listener is healthy again, as a resumed broker would answer what it was asked.
    Silent,
    /// Forwards requests, and sends each answer back one byte every `0`.
    Trickle(Duration),
    /// Forwards requests; of each answer sends the size and half the body, then closes the
    /// connection (both sides).
    CloseMidFrame,
    /// Forwards requests; answers with the correlation id of another request.
    WrongCorrelationId,
}

/// The listeners, one per node, and their counters.
pub struct ClusterProxy {
    /// Node id and our listener's address, in the order of the bootstrap list given.
    listeners: Vec<(i32, String)>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Per node id: its fault and counters.
    nodes: HashMap<i32, Node>,
    /// Per node id: its broker's real address and our listener's port.
    routes: HashMap<i32, (String, u16)>,
    /// Answers that could not be rewritten (their connection was closed instead).
    rewrite_failures: Mutex<Vec<String>>,
    /// Every socket opened, so that dropping the proxy closes them all.
    sockets: Mutex<Vec<TcpStream>>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

struct Node {
    fault: Mutex<BrokerFault>,
    connections: AtomicU64,
    requests: AtomicU64,
    /// Requests by api key.
    by_api: Mutex<BTreeMap<i16, u64>>,
}

/// A node's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCounts {
    pub connections: u64,
    pub requests: u64,
}

impl ClusterProxy {
    /// Starts one listener per broker of `brokers` (`host:port,...`, node `i` being the `i`-th,
    /// counted from 1, as `scripts/services.sh` writes `KAFKA_BROKERS` for the cluster), every
    /// one healthy.
    pub fn start(brokers: &str) -> ClusterProxy {
        let upstreams: Vec<(i32, String)> = brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .enumerate()
            .map(|(i, b)| (i as i32 + 1, b.to_string()))
            .collect();
        // Every listener is bound before any accepts, so that the first Metadata answer can
        // already be rewritten to all of them.
        let bound: Vec<(i32, String, TcpListener)> = upstreams
            .into_iter()
            .map(|(node, upstream)| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind a cluster proxy");
                (node, upstream, listener)
            })
            .collect();
        let shared = Arc::new(Shared {
            nodes: bound
                .iter()
                .map(|(node, _, _)| {
                    let counters = Node {
                        fault: Mutex::new(BrokerFault::Healthy),
                        connections: AtomicU64::new(0),
                        requests: AtomicU64::new(0),
                        by_api: Mutex::new(BTreeMap::new()),
                    };
                    (*node, counters)
                })
                .collect(),
            routes: bound
                .iter()
                .map(|(node, upstream, l)| {
                    let port = l.local_addr().expect("listener address").port();
                    (*node, (upstream.clone(), port))
                })
                .collect(),
            rewrite_failures: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
            stop: Arc::default(),
            started: Instant::now(),
        });
        let mut listeners = Vec::new();
        for (node, upstream, listener) in bound {
            let port = listener.local_addr().expect("listener address").port();
            listeners.push((node, format!("127.0.0.1:{port}")));
            let s = shared.clone();
            accept_loop(listener, shared.stop.clone(), move |client| {
                connection(client, node, &upstream, s.clone())
            });
        }
        ClusterProxy { listeners, shared }
    }

    /// Every listener, `host:port,...`: what to give a client as its bootstrap list.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<&str> = self.listeners.iter().map(|(_, a)| a.as_str()).collect();
        addrs.join(",")
    }

    /// The listener standing for `node`.
    pub fn addr_of(&self, node: i32) -> String {
        self.listeners
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("the proxy has no listener for node {node}"))
    }

    /// Switches `node`'s listener to `fault` (or back to [`BrokerFault::Healthy`]).
    pub fn set(&self, node: i32, fault: BrokerFault) {
        *self.node(node).fault.lock().unwrap() = fault;
    }

    /// `node`'s connections and requests so far.
    pub fn counts(&self, node: i32) -> NodeCounts {
        let n = self.node(node);
        NodeCounts {
            connections: n.connections.load(Ordering::SeqCst),
            requests: n.requests.load(Ordering::SeqCst),
        }
    }

    /// Answers that could not be rewritten; empty when all went well.
    pub fn rewrite_failures(&self) -> Vec<String> {
        self.shared.rewrite_failures.lock().unwrap().clone()
    }

    /// One line for assertion messages: every node's fault and counters.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self
            .listeners
            .iter()
            .map(|(id, addr)| {
                let n = self.node(*id);
                format!(
                    "node {id} at {addr} ({:?}): {} connections, requests by api key {:?}",
                    *n.fault.lock().unwrap(),
                    n.connections.load(Ordering::SeqCst),
                    n.by_api.lock().unwrap()
                )
            })
            .collect();
        format!(
            "cluster proxy, {:.1} s old: {}; rewrite failures {:?}",
            self.shared.started.elapsed().as_secs_f64(),
            nodes.join("; "),
            self.rewrite_failures()
        )
    }

    fn node(&self, node: i32) -> &Node {
        self.shared
            .nodes
            .get(&node)
            .unwrap_or_else(|| panic!("the proxy has no listener for node {node}"))
    }
}

impl Drop for ClusterProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    fn fault(&self, node: i32) -> BrokerFault {
        self.nodes
            .get(&node)
            .map_or(BrokerFault::Healthy, |n| *n.fault.lock().unwrap())
    }

    /// Waits while `node` is silent; false when the proxy stopped meanwhile.
    fn hold_while_silent(&self, node: i32) -> bool {
        while self.fault(node) == BrokerFault::Silent {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            thread::sleep(HOLD_POLL);
        }
        !self.stop.load(Ordering::SeqCst)
    }

    fn keep(&self, s: &TcpStream) {
        if let Ok(clone) = s.try_clone() {
            self.sockets.lock().unwrap().push(clone);
        }
    }

    /// Our listener's port for a node an answer names. A node we have no listener for cannot
    /// be hidden from the client: the answer is refused (its connection closed) and noted.
    fn port_for(&self, node: i32, host: &str, port: i32) -> Result<i32, String> {
        match self.routes.get(&node) {
            Some((_, ours)) => Ok(i32::from(*ours)),
            None => Err(format!(
                "node {node} ({host}:{port}) has no listener in this proxy"
            )),
        }
    }
}

/// One client connection to `node`'s listener: a thread pumps requests to the broker, noting
/// each one's api key and version by correlation id; this thread pumps the answers back,
/// rewriting addresses and applying the node's fault as it is at each frame.
fn connection(client: TcpStream, node: i32, upstream: &str, shared: Arc<Shared>) {
    let Some(counters) = shared.nodes.get(&node) else {
        return;
    };
    counters.connections.fetch_add(1, Ordering::SeqCst);
    shared.keep(&client);
    let Ok(broker) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = broker.set_nodelay(true);
    shared.keep(&broker);
    let (Ok(mut from_client), Ok(mut to_broker)) = (client.try_clone(), broker.try_clone()) else {
        return;
    };
    let pending: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();

    let (requests_shared, requests_pending) = (shared.clone(), pending.clone());
    thread::spawn(move || {
        while let Ok(frame) = read_frame(&mut from_client) {
            if let Some((api_key, _)) = note_request(&frame, &requests_pending) {
                if let Some(n) = requests_shared.nodes.get(&node) {
                    n.requests.fetch_add(1, Ordering::SeqCst);
                    *n.by_api.lock().unwrap().entry(api_key).or_default() += 1;
                }
            }
            if !requests_shared.hold_while_silent(node)
                || write_frame(&mut to_broker, &frame).is_err()
            {
                break;
            }
        }
        let _ = from_client.shutdown(Shutdown::Both);
        let _ = to_broker.shutdown(Shutdown::Both);
    });

    let (mut from_broker, mut to_client) = (broker, client);
    while let Ok(frame) = read_frame(&mut from_broker) {
        if !shared.hold_while_silent(node) {
            break;
        }
        let Some(mut frame) = answer_for_client(&shared, &pending, frame) else {
            break;
        };
        let sent = match shared.fault(node) {
            BrokerFault::Healthy | BrokerFault::Silent => {
                write_frame(&mut to_client, &frame).is_ok()
            }
            BrokerFault::Trickle(_) => trickle(&shared, node, &mut to_client, &frame),
            BrokerFault::CloseMidFrame => {
                let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
                sized.extend_from_slice(&frame[..frame.len() / 2]);
                let _ = to_client.write_all(&sized);
                false
            }
            BrokerFault::WrongCorrelationId => {
                if let Some(id) = frame.get_mut(..4) {
                    let other = i32::from_be_bytes([id[0], id[1], id[2], id[3]]).wrapping_add(1000);
                    id.copy_from_slice(&other.to_be_bytes());
                }
                write_frame(&mut to_client, &frame).is_ok()
            }
        };
        if !sent {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_broker.shutdown(Shutdown::Both);
}

/// The answer `frame` (a body, without its size) as the client gets it: its addresses
/// rewritten when it is a Metadata or FindCoordinator answer. `None` closes the connection: an
/// answer to nothing forwarded, or one that could not be rewritten (noted).
fn answer_for_client(
    shared: &Shared,
    pending: &Mutex<HashMap<i32, (i16, i16)>>,
    frame: Vec<u8>,
) -> Option<Vec<u8>> {
    let id = frame.get(..4)?;
    let correlation = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    let (api_key, version) = pending.lock().unwrap().remove(&correlation)?;
    if !needs_rewrite(api_key) {
        return Some(frame);
    }
    let unknown = Mutex::new(None);
    let ours = |node, host: &str, port| {
        shared.port_for(node, host, port).unwrap_or_else(|e| {
            *unknown.lock().unwrap() = Some(e);
            port
        })
    };
    let rewritten = rewrite_addresses(&frame, api_key, version, &ours);
    let failure = match (rewritten, unknown.into_inner().unwrap()) {
        (Ok(out), None) => return Some(out),
        (Ok(_), Some(e)) | (Err(e), _) => e,
    };
    shared
        .rewrite_failures
        .lock()
        .unwrap()
        .push(format!("api key {api_key} v{version}: {failure}"));
    None
}

/// Sends `frame` (with its size) one byte at a time while `node` trickles, the rest at once
/// when it is switched back; false when the client is gone or the proxy stopped.
fn trickle(shared: &Shared, node: i32, to_client: &mut TcpStream, frame: &[u8]) -> bool {
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend_from_slice(frame);
    for (i, byte) in sized.iter().enumerate() {
        let BrokerFault::Trickle(every) = shared.fault(node) else {
            return to_client.write_all(&sized[i..]).is_ok();
        };
        thread::sleep(every);
        if shared.stop.load(Ordering::SeqCst) || to_client.write_all(&[*byte]).is_err() {
            return false;
        }
    }
    true
}
