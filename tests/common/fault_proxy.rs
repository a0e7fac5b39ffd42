//! [`FaultProxy`]: a listener on loopback standing for a broker that misbehaves in one fixed
//! way ([`Fault`]), for the hostile-peer tests of issue 15. It forwards to a real broker where
//! the fault needs answers to spoil, and counts the connections and the request frames it sees,
//! so a test can bound how hard a client hammers a broken broker.
//!
//! Threads and blocking sockets only; everything stops when the value is dropped. Unlike
//! [`super::kafka_proxy::KafkaProxy`] it rewrites no metadata: a client learns the real
//! broker's address from the first answer that gets through, so the proxy stands for a broker
//! the client knows only from its bootstrap list.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A frame larger than this ends the connection (not Kafka on the other side).
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// How the proxy misbehaves, on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accepts the connection, reads the requests, never answers, never closes.
    Silent,
    /// Forwards to the broker, but sends its answers back one byte every `0` (a slow link or a
    /// hostile peer stretching each read).
    Trickle(Duration),
    /// Forwards each request; of each answer sends the size and half the body, then closes.
    CloseMidFrame,
    /// Forwards each request; answers with the correlation id of another request.
    WrongCorrelationId,
}

/// The listener and its counters.
pub struct FaultProxy {
    addr: String,
    fault: Fault,
    shared: Arc<Shared>,
}

struct Shared {
    stop: AtomicBool,
    connections: AtomicU64,
    requests: AtomicU64,
    started: Instant,
    /// Client sockets still open, shut down when the proxy is dropped.
    open: Mutex<Vec<TcpStream>>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:<ephemeral>`; `upstream` is the broker answers come from (unused
    /// by [`Fault::Silent`]).
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr").to_string();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            started: Instant::now(),
            open: Mutex::new(Vec::new()),
        });
        let upstream = upstream.to_string();
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, upstream, fault, s));
        FaultProxy {
            addr,
            fault,
            shared,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Request frames read from clients so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Seconds since the proxy started.
    pub fn age(&self) -> f64 {
        self.shared.started.elapsed().as_secs_f64()
    }

    pub fn summary(&self) -> String {
        format!(
            "fault proxy {} ({:?}): {} connections, {} requests in {:.1} s",
            self.addr,
            self.fault,
            self.connections(),
            self.requests(),
            self.age()
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: String, fault: Fault, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                if let Ok(c) = client.try_clone() {
                    shared.open.lock().unwrap().push(c);
                }
                let upstream = upstream.clone();
                let shared = shared.clone();
                thread::spawn(move || serve(client, &upstream, fault, &shared));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One client connection, until either side closes or the proxy stops.
fn serve(client: TcpStream, upstream: &str, fault: Fault, shared: &Arc<Shared>) {
    let _ = client.set_read_timeout(Some(POLL));
    if fault == Fault::Silent {
        let mut client = client;
        while read_frame(&mut client, shared).is_some() {
            shared.requests.fetch_add(1, Ordering::SeqCst);
        }
        return;
    }
    let Ok(broker) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = broker.set_read_timeout(Some(POLL));
    let (Ok(mut client_in), Ok(mut broker_out)) = (client.try_clone(), broker.try_clone()) else {
        return;
    };
    // Requests go through as they are, counted.
    let s = shared.clone();
    thread::spawn(move || {
        while let Some(frame) = read_frame(&mut client_in, &s) {
            s.requests.fetch_add(1, Ordering::SeqCst);
            if broker_out.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = broker_out.shutdown(Shutdown::Both);
    });
    // Answers come back spoiled.
    let (mut client_out, mut broker_in) = (client, broker);
    while let Some(mut frame) = read_frame(&mut broker_in, shared) {
        let sent = match fault {
            Fault::Silent => unreachable!("handled above"),
            Fault::Trickle(every) => frame.iter().all(|b| {
                thread::sleep(every);
                !shared.stop.load(Ordering::SeqCst) && client_out.write_all(&[*b]).is_ok()
            }),
            Fault::CloseMidFrame => {
                let half = 4 + (frame.len() - 4) / 2;
                let _ = client_out.write_all(&frame[..half]);
                false
            }
            Fault::WrongCorrelationId => {
                if frame.len() >= 8 {
                    let id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                    frame[4..8].copy_from_slice(&id.wrapping_add(1000).to_be_bytes());
                }
                client_out.write_all(&frame).is_ok()
            }
        };
        if !sent {
            break;
        }
    }
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = broker_in.shutdown(Shutdown::Both);
}

/// One size-prefixed frame (size included), or `None` at the end of the stream or at stop.
fn read_frame(stream: &mut TcpStream, shared: &Shared) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    fill(stream, &mut size, shared)?;
    let len = usize::try_from(i32::from_be_bytes(size)).ok()?;
    if len > MAX_FRAME {
        return None;
    }
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&size);
    fill(stream, &mut frame[4..], shared)?;
    Some(frame)
}

fn fill(stream: &mut TcpStream, buf: &mut [u8], shared: &Shared) -> Option<()> {
    let mut filled = 0;
    while filled < buf.len() {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
    Some(())
}
