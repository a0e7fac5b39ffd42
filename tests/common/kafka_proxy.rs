//! Kafka on the wire, for tests that need a broker to misbehave: [`KafkaProxy`], a
//! fault-injecting TCP proxy in front of one real broker, and [`FakeBroker`], a listener that
//! answers only the few requests a test needs (an old broker's ApiVersions, a refused topic).
//!
//! Threads and blocking sockets only: one accept thread per listener, two pump threads per
//! proxied connection. Everything stops when the value is dropped.
//!
//! Frames are Kafka's: a big-endian i32 size, then the body. A request body starts with
//! `api_key: i16, api_version: i16, correlation_id: i32`; a response body with
//! `correlation_id: i32`. That is all the proxy reads of most frames; it decodes (with
//! `kafka-protocol`) only the responses it rewrites. The frame and rewriting helpers are public
//! for `cluster_proxy.rs`, the proxy in front of every node of the three-node cluster.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FindCoordinatorResponse, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Api key of Produce requests.
pub const PRODUCE: i16 = 0;
/// Api key of Fetch requests.
pub const FETCH: i16 = 1;
/// Api key of Metadata requests.
pub const METADATA: i16 = 3;
/// Api key of ApiVersions requests.
pub const API_VERSIONS: i16 = 18;
/// A frame larger than this is refused (a corrupt size, or not Kafka on the other side).
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// What the proxy does to Produce responses; switch with [`KafkaProxy::set_fault`] at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything as it is.
    None,
    /// The next `n` Produce responses are read from the broker (so the broker has stored the
    /// batch) and thrown away; the client's connection is closed instead. The client sees a
    /// closed connection and cannot know whether the batch was stored: it must retry, and an
    /// idempotent producer's retry must not be stored twice.
    DropProduceResponses(u32),
    /// The next `n` Produce responses are never forwarded, nor anything after them on the same
    /// connection (a response out of order would be a different fault), and the connection
    /// stays open: the client has to give up on it by its own request timeout.
    WithholdProduceResponses(u32),
}

/// A TCP proxy in front of a cluster: one listener on `127.0.0.1:<ephemeral>` for the bootstrap
/// broker, and one more for each broker the cluster's metadata names, opened as it is named.
///
/// Metadata and FindCoordinator responses are rewritten so that every broker address they carry
/// is one of the proxy's listeners (the same listener for the same node id): a client learns
/// broker addresses from them after bootstrapping and would otherwise connect to the brokers
/// directly, out of the proxy's reach. Faults and counters are the proxy's, over all listeners.
pub struct KafkaProxy {
    addr: String,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    fault: Mutex<Fault>,
    /// The listener standing for each broker: node id -> its port on 127.0.0.1.
    listeners: Mutex<HashMap<i32, u16>>,
    /// Requests seen, by api key.
    requests: Mutex<BTreeMap<i16, u64>>,
    dropped: AtomicU64,
    withheld: AtomicU64,
    connections: AtomicU64,
    /// Responses the proxy could not rewrite (their connection was closed instead).
    rewrite_failures: Mutex<Vec<String>>,
    /// Every socket opened, so that dropping the proxy closes them all.
    sockets: Mutex<Vec<TcpStream>>,
    stop: Arc<AtomicBool>,
}

impl KafkaProxy {
    /// Starts a proxy in front of `bootstrap` (`host:port`; of a list, the first), forwarding
    /// everything until a fault is set.
    pub fn start(bootstrap: &str) -> KafkaProxy {
        let bootstrap = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
        let shared = Arc::new(ProxyShared {
            fault: Mutex::new(Fault::None),
            listeners: Mutex::new(HashMap::new()),
            requests: Mutex::new(BTreeMap::new()),
            dropped: AtomicU64::new(0),
            withheld: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            rewrite_failures: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
            stop: Arc::default(),
        });
        let port = listen(&shared, bootstrap);
        KafkaProxy {
            addr: format!("127.0.0.1:{port}"),
            shared,
        }
    }

    /// `127.0.0.1:<port>`: what to give a client as its bootstrap broker.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// What is left of the current fault (`DropProduceResponses(0)` once it has fired).
    pub fn fault(&self) -> Fault {
        *self.shared.fault.lock().unwrap()
    }

    /// Requests with `api_key` the clients sent through the proxy.
    pub fn requests(&self, api_key: i16) -> u64 {
        let requests = self.shared.requests.lock().unwrap();
        requests.get(&api_key).copied().unwrap_or(0)
    }

    /// Every api key seen with its count, for assertion messages.
    pub fn request_counts(&self) -> BTreeMap<i16, u64> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Produce responses thrown away (their connection closed) by [`Fault::DropProduceResponses`].
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Produce responses held back for good by [`Fault::WithholdProduceResponses`].
    pub fn withheld(&self) -> u64 {
        self.shared.withheld.load(Ordering::SeqCst)
    }

    /// Client connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Responses that could not be decoded for rewriting; empty when all went well.
    pub fn rewrite_failures(&self) -> Vec<String> {
        self.shared.rewrite_failures.lock().unwrap().clone()
    }

    /// One line for assertion messages: counters and the fault left.
    pub fn summary(&self) -> String {
        format!(
            "proxy {}: {} connections, requests by api key {:?}, {} dropped, {} withheld, fault \
             left {:?}, rewrite failures {:?}",
            self.addr,
            self.connections(),
            self.request_counts(),
            self.dropped(),
            self.withheld(),
            self.fault(),
            self.rewrite_failures()
        )
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// What becomes of one Produce response.
enum Action {
    Forward,
    Drop,
    Withhold,
}

impl ProxyShared {
    /// What to do with the Produce response at hand; uses up one unit of the fault.
    fn produce_action(&self) -> Action {
        let mut fault = self.fault.lock().unwrap();
        match *fault {
            Fault::DropProduceResponses(n) if n > 0 => {
                *fault = Fault::DropProduceResponses(n - 1);
                Action::Drop
            }
            Fault::WithholdProduceResponses(n) if n > 0 => {
                *fault = Fault::WithholdProduceResponses(n - 1);
                Action::Withhold
            }
            _ => Action::Forward,
        }
    }

    fn keep(&self, s: &TcpStream) {
        if let Ok(clone) = s.try_clone() {
            self.sockets.lock().unwrap().push(clone);
        }
    }
}

/// A new listener of the proxy in front of `upstream`; returns its port.
fn listen(shared: &Arc<ProxyShared>, upstream: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Kafka proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let (s, upstream) = (shared.clone(), upstream.to_string());
    accept_loop(listener, shared.stop.clone(), move |client| {
        proxy_connection(client, &upstream, s.clone())
    });
    port
}

impl ProxyShared {
    /// The port of the listener standing for broker `node` at `host:port`, opened on first use.
    fn port_for(self: &Arc<Self>, node: i32, host: &str, port: i32) -> i32 {
        let mut listeners = self.listeners.lock().unwrap();
        let ours = *listeners
            .entry(node)
            .or_insert_with(|| listen(self, &format!("{host}:{port}")));
        i32::from(ours)
    }
}

/// Accepts connections on a thread until `stop`, handing each to `serve` on a thread of its own.
pub fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    serve: impl Fn(TcpStream) + Send + Sync + 'static,
) {
    // Non-blocking accept, so the thread notices `stop` (a blocking accept would wait forever).
    listener.set_nonblocking(true).expect("non-blocking accept");
    let serve = Arc::new(serve);
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    let _ = client.set_nodelay(true);
                    let serve = serve.clone();
                    thread::spawn(move || serve(client));
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

/// One client connection: a thread pumps requests to the broker (noting each one's api key and
/// version by correlation id), this thread pumps responses back, applying the fault.
fn proxy_connection(client: TcpStream, upstream: &str, shared: Arc<ProxyShared>) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let Ok(broker) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = broker.set_nodelay(true);
    shared.keep(&client);
    shared.keep(&broker);
    // correlation id -> (api key, api version) of requests sent and not yet answered.
    let pending: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();

    let (mut from_client, mut to_broker) = (
        client.try_clone().expect("clone"),
        broker.try_clone().expect("clone"),
    );
    let (requests_shared, requests_pending) = (shared.clone(), pending.clone());
    thread::spawn(move || {
        while let Ok(frame) = read_frame(&mut from_client) {
            if let Some((api_key, _)) = note_request(&frame, &requests_pending) {
                *requests_shared
                    .requests
                    .lock()
                    .unwrap()
                    .entry(api_key)
                    .or_default() += 1;
            }
            if write_frame(&mut to_broker, &frame).is_err() {
                break;
            }
        }
        let _ = from_client.shutdown(Shutdown::Both);
        let _ = to_broker.shutdown(Shutdown::Both);
    });

    let (mut from_broker, mut to_client) = (broker, client);
    let mut muted = false;
    while let Ok(frame) = read_frame(&mut from_broker) {
        if muted {
            continue; // a withheld response blocks everything after it on this connection
        }
        let correlation = match frame.get(..4) {
            Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => break,
        };
        let Some((api_key, version)) = pending.lock().unwrap().remove(&correlation) else {
            break; // a response to nothing we forwarded: not Kafka as we know it
        };
        let frame = match api_key {
            PRODUCE => match shared.produce_action() {
                Action::Drop => {
                    shared.dropped.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Action::Withhold => {
                    shared.withheld.fetch_add(1, Ordering::SeqCst);
                    muted = true;
                    continue;
                }
                Action::Forward => frame,
            },
            _ if needs_rewrite(api_key) => {
                let ours = |node, host: &str, port| shared.port_for(node, host, port);
                match rewrite_addresses(&frame, api_key, version, &ours) {
                    Ok(rewritten) => rewritten,
                    Err(e) => {
                        shared
                            .rewrite_failures
                            .lock()
                            .unwrap()
                            .push(format!("api key {api_key} v{version}: {e}"));
                        break;
                    }
                }
            }
            _ => frame,
        };
        if write_frame(&mut to_client, &frame).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_broker.shutdown(Shutdown::Both);
}

/// Notes a request frame's api key and version under its correlation id in `pending`, before
/// it is forwarded, so that its answer always finds them; returns them (`None`: too short to be
/// a request).
pub fn note_request(frame: &[u8], pending: &Mutex<HashMap<i32, (i16, i16)>>) -> Option<(i16, i16)> {
    let header = frame.get(..8)?;
    let api_key = i16::from_be_bytes([header[0], header[1]]);
    let version = i16::from_be_bytes([header[2], header[3]]);
    let correlation = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    pending
        .lock()
        .unwrap()
        .insert(correlation, (api_key, version));
    Some((api_key, version))
}

pub fn needs_rewrite(api_key: i16) -> bool {
    api_key == ApiKey::Metadata as i16 || api_key == ApiKey::FindCoordinator as i16
}

/// Re-encodes a Metadata or FindCoordinator response body (after the size) at the version the
/// request asked for, each broker's address replaced by 127.0.0.1 and the port `ours(node id,
/// host, port)` gives. The response header's version follows from the api key and version
/// (flexible versions have tagged fields).
pub fn rewrite_addresses(
    frame: &[u8],
    api_key: i16,
    version: i16,
    ours: &dyn Fn(i32, &str, i32) -> i32,
) -> Result<Vec<u8>, String> {
    let key = ApiKey::try_from(api_key).map_err(|()| format!("unknown api key {api_key}"))?;
    let header_version = key.response_header_version(version);
    let mut body = Bytes::copy_from_slice(frame);
    let header = ResponseHeader::decode(&mut body, header_version).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    header
        .encode(&mut out, header_version)
        .map_err(|e| e.to_string())?;
    let loopback = StrBytes::from_static_str("127.0.0.1");
    if key == ApiKey::Metadata {
        let mut response =
            MetadataResponse::decode(&mut body, version).map_err(|e| e.to_string())?;
        for b in &mut response.brokers {
            b.port = ours(b.node_id.0, &b.host, b.port);
            b.host = loopback.clone();
        }
        response
            .encode(&mut out, version)
            .map_err(|e| e.to_string())?;
    } else {
        let mut response =
            FindCoordinatorResponse::decode(&mut body, version).map_err(|e| e.to_string())?;
        // v0-v3 name one coordinator at the top level, v4+ a list (one per key asked); a node
        // id of -1 comes with an error and no address.
        if version < 4 && response.node_id.0 >= 0 {
            response.port = ours(response.node_id.0, &response.host, response.port);
            response.host = loopback.clone();
        }
        for c in &mut response.coordinators {
            if c.node_id.0 >= 0 {
                c.port = ours(c.node_id.0, &c.host, c.port);
                c.host = loopback.clone();
            }
        }
        response
            .encode(&mut out, version)
            .map_err(|e| e.to_string())?;
    }
    if !body.is_empty() {
        return Err(format!("{} bytes left after decoding", body.len()));
    }
    Ok(out.to_vec())
}

/// Reads one frame's body (without its size).
pub fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad frame size"))?;
    let mut body = vec![0u8; size];
    s.read_exact(&mut body)?;
    Ok(body)
}

pub fn write_frame(s: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    s.write_all(&frame)
}

// ---------------------------------------------------------------------------------------------

/// How a [`FakeBroker`] presents itself.
#[derive(Debug, Clone)]
pub struct FakeBrokerSpec {
    /// Version ranges advertised in ApiVersions in place of `kafka-protocol`'s own (which are
    /// a current broker's): `(api key, min, max)`; a `min` above `max` leaves the api out.
    pub versions: Vec<(ApiKey, i16, i16)>,
    /// The error code Metadata gives every topic asked for (0: the topic exists, with
    /// `partitions` partitions led by this broker, node 1).
    pub topic_error: i16,
    pub partitions: i32,
    /// The error code InitProducerId answers with (0: producer id 1000, epoch 0).
    pub init_producer_id_error: i16,
    /// Produce requests are answered with this error code for every partition (nothing is
    /// stored); `None`: their connection is closed without an answer.
    pub produce_error: Option<i16>,
}

impl Default for FakeBrokerSpec {
    fn default() -> Self {
        FakeBrokerSpec {
            versions: Vec::new(),
            topic_error: 0,
            partitions: 1,
            init_producer_id_error: 0,
            produce_error: None,
        }
    }
}

/// A listener that speaks just enough Kafka for a client to get to the point a test is about:
/// ApiVersions (with the ranges of its spec), Metadata (one broker, itself, node 1; every topic
/// asked for with the spec's error code), InitProducerId (producer id 1000, epoch 0, or the
/// spec's error) and, if the spec says so, Produce with an error. Any other request is counted
/// and its connection closed without an answer: the fake stores nothing, so it must never seem
/// to.
pub struct FakeBroker {
    addr: String,
    shared: Arc<FakeShared>,
}

struct FakeShared {
    spec: FakeBrokerSpec,
    host: String,
    port: i32,
    /// Requests seen, by (api key, version).
    requests: Mutex<BTreeMap<(i16, i16), u64>>,
    connections: AtomicU64,
    sockets: Mutex<Vec<TcpStream>>,
    stop: Arc<AtomicBool>,
}

impl FakeBroker {
    pub fn start(spec: FakeBrokerSpec) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake broker");
        let local = listener.local_addr().expect("fake broker address");
        let shared = Arc::new(FakeShared {
            spec,
            host: local.ip().to_string(),
            port: i32::from(local.port()),
            requests: Mutex::new(BTreeMap::new()),
            connections: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
            stop: Arc::default(),
        });
        let s = shared.clone();
        accept_loop(listener, shared.stop.clone(), move |client| {
            fake_connection(client, &s)
        });
        FakeBroker {
            addr: local.to_string(),
            shared,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Requests with `api_key` received, at any version.
    pub fn requests(&self, api_key: i16) -> u64 {
        let requests = self.shared.requests.lock().unwrap();
        requests
            .iter()
            .filter(|((k, _), _)| *k == api_key)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// One line for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "fake broker {}: {} connections, requests by (api key, version) {:?}",
            self.addr,
            self.connections(),
            self.shared.requests.lock().unwrap()
        )
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn fake_connection(mut client: TcpStream, shared: &FakeShared) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    if let Ok(clone) = client.try_clone() {
        shared.sockets.lock().unwrap().push(clone);
    }
    while let Ok(frame) = read_frame(&mut client) {
        let Some(response) = fake_answer(shared, frame) else {
            break;
        };
        if write_frame(&mut client, &response).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// The response frame body to one request, or `None` to close the connection instead.
fn fake_answer(shared: &FakeShared, frame: Vec<u8>) -> Option<Vec<u8>> {
    if frame.len() < 8 {
        return None;
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    *shared
        .requests
        .lock()
        .unwrap()
        .entry((api_key, version))
        .or_default() += 1;
    let key = ApiKey::try_from(api_key).ok()?;
    let mut body = Bytes::from(frame);
    let header = RequestHeader::decode(&mut body, key.request_header_version(version)).ok()?;
    let mut out = BytesMut::new();
    let mut header_version = key.response_header_version(version);
    match key {
        ApiKey::ApiVersions => {
            let mut response = ApiVersionsResponse::default();
            // Like Kafka: a version we do not know gets a v0 answer saying UNSUPPORTED_VERSION,
            // with our ranges, so the client can retry at one we do.
            let answer_version = if ApiKey::ApiVersions.valid_versions().max >= version {
                version
            } else {
                response.error_code = 35;
                header_version = 0;
                0
            };
            response.api_keys = advertised_versions(&shared.spec);
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, header_version)
                .ok()?;
            response.encode(&mut out, answer_version).ok()?;
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut body, version).ok()?;
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, header_version)
                .ok()?;
            fake_metadata(shared, &request, version)
                .encode(&mut out, version)
                .ok()?;
        }
        ApiKey::InitProducerId => {
            let mut response = InitProducerIdResponse::default();
            response.error_code = shared.spec.init_producer_id_error;
            if response.error_code == 0 {
                response.producer_id = 1000.into();
                response.producer_epoch = 0;
            }
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, header_version)
                .ok()?;
            response.encode(&mut out, version).ok()?;
        }
        ApiKey::Produce => {
            let error_code = shared.spec.produce_error?;
            let request = ProduceRequest::decode(&mut body, version).ok()?;
            let mut response = ProduceResponse::default();
            for topic in request.topic_data {
                let mut answer = TopicProduceResponse::default();
                answer.name = topic.name;
                answer.topic_id = topic.topic_id;
                for partition in topic.partition_data {
                    let mut p = PartitionProduceResponse::default();
                    p.index = partition.index;
                    p.error_code = error_code;
                    answer.partition_responses.push(p);
                }
                response.responses.push(answer);
            }
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, header_version)
                .ok()?;
            response.encode(&mut out, version).ok()?;
        }
        _ => return None,
    }
    Some(out.to_vec())
}

/// Every api key `kafka-protocol` knows, at its range, except those the spec overrides.
fn advertised_versions(spec: &FakeBrokerSpec) -> Vec<ApiVersion> {
    ApiKey::iter()
        .filter_map(|key| {
            let range = key.valid_versions();
            let (min, max) = spec
                .versions
                .iter()
                .find(|(k, _, _)| *k == key)
                .map_or((range.min, range.max), |(_, min, max)| (*min, *max));
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            (min <= max).then_some(v)
        })
        .collect()
}

/// This broker alone, and every topic asked for by name with the spec's error code. Only fields
/// that exist at every version are set, except the topic id (v10+), so any version encodes.
fn fake_metadata(shared: &FakeShared, request: &MetadataRequest, version: i16) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(1);
    broker.host = StrBytes::from_string(shared.host.clone());
    broker.port = shared.port;
    response.brokers = vec![broker];
    let names = request
        .topics
        .iter()
        .flatten()
        .filter_map(|t| t.name.clone());
    for name in names {
        let mut topic = MetadataResponseTopic::default();
        topic.error_code = shared.spec.topic_error;
        topic.name = Some(name);
        if version >= 10 {
            topic.topic_id = uuid::Uuid::new_v4();
        }
        if shared.spec.topic_error == 0 {
            topic.partitions = (0..shared.spec.partitions)
                .map(|p| {
                    let mut partition = MetadataResponsePartition::default();
                    partition.partition_index = p;
                    partition.leader_id = BrokerId(1);
                    partition.replica_nodes = vec![BrokerId(1)];
                    partition.isr_nodes = vec![BrokerId(1)];
                    partition
                })
                .collect();
        }
        response.topics.push(topic);
    }
    response
}
