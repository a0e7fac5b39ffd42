//! A TCP proxy in front of the database that can hold back chosen requests: a slow write, made
//! to measure, or a database frozen for this proxy's clients only.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Forwards connections to `upstream`. While holding, a client message (one MongoDB wire
/// message: a little-endian length, then the rest) that contains `pattern` is kept back, and
/// with it everything after it on that connection, until released. An empty `pattern` holds
/// every message, the driver's monitoring checks included: to this proxy's clients the
/// database is frozen (as if SIGSTOPped: connections are accepted, nothing is answered) while
/// it keeps serving everyone else. Stops when dropped.
pub struct HoldingProxy {
    pub addr: String,
    holding: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HoldingProxy {
    /// Listens on a free loopback port ([`HoldingProxy::addr`]), forwarding to `upstream`.
    pub fn start(upstream: &str, pattern: Vec<u8>) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let holding = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, n, s, upstream) = (
            holding.clone(),
            held.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(Shutdown::Both);
                });
                let (h, n, pattern) = (h.clone(), n.clone(), pattern.clone());
                std::thread::spawn(move || loop {
                    let mut len = [0u8; 4];
                    if c_read.read_exact(&mut len).is_err() {
                        let _ = s_write.shutdown(Shutdown::Both);
                        return;
                    }
                    let size = (u32::from_le_bytes(len) as usize).max(4);
                    let mut message = len.to_vec();
                    message.resize(size, 0);
                    if c_read.read_exact(&mut message[4..]).is_err() {
                        let _ = s_write.shutdown(Shutdown::Both);
                        return;
                    }
                    if h.load(Ordering::SeqCst)
                        && (pattern.is_empty()
                            || message
                                .windows(pattern.len())
                                .any(|w| w == pattern.as_slice()))
                    {
                        n.fetch_add(1, Ordering::SeqCst);
                        while h.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        n.fetch_sub(1, Ordering::SeqCst);
                    }
                    if s_write.write_all(&message).is_err() {
                        return;
                    }
                });
            }
        });
        HoldingProxy {
            addr,
            holding,
            held,
            stop,
        }
    }

    /// Starts (true) or stops (false, releasing what is held) holding matching messages.
    pub fn hold(&self, on: bool) {
        self.holding.store(on, Ordering::SeqCst);
    }

    /// Messages held back right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.hold(false);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The bytes a MongoDB `insert` command into `collection` starts with (the command document's
/// first element, `insert: "<collection>"`, BSON-encoded).
pub fn mongo_insert_pattern(collection: &str) -> Vec<u8> {
    let mut p = b"\x02insert\x00".to_vec();
    p.extend_from_slice(&((collection.len() + 1) as i32).to_le_bytes());
    p.extend_from_slice(collection.as_bytes());
    p.push(0);
    p
}
