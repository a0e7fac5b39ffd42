//! One blocking connection to one broker: frames requests encoded by `kafka-protocol` and reads
//! the matching responses. It only moves bytes; which request to send where is decided above.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// How long a TCP connect may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A response larger than this is refused rather than allocated (a corrupt length prefix, or
/// something that is not a Kafka broker on the port).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;
/// How often a waiting [`Connection::call_interruptible`] checks whether to give up.
pub const INTERRUPT_POLL: Duration = Duration::from_millis(200);
/// The client id brokers log and Kafka's group tools show.
pub const CLIENT_ID: &str = "metricsctl";

/// A failed exchange with a broker. `Io` means the connection is unusable and must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Connecting, writing or reading failed (refused, reset, timed out, closed).
    Io(String),
    /// The bytes did not decode as the expected response.
    Protocol(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e) | WireError::Protocol(e) => f.write_str(e),
        }
    }
}

/// A connection to `addr`, with a correlation id per request.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
}

impl Connection {
    /// Connects to `host:port`, trying each address it resolves to.
    pub fn open(addr: &str) -> Result<Connection, WireError> {
        let candidates: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| WireError::Io(format!("cannot resolve {addr}: {e}")))?
            .collect();
        let mut last = format!("{addr} resolves to no address");
        for candidate in candidates {
            match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    // Requests are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    return Ok(Connection {
                        addr: addr.to_string(),
                        stream,
                        correlation_id: 0,
                    });
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(WireError::Io(last))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` at `version` and waits up to `timeout` for its response.
    pub fn call<R>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, WireError>
    where
        R: Request,
    {
        self.call_interruptible(request, version, timeout, &|| false)
    }

    /// As [`Connection::call`], but gives up as soon as `interrupted()` turns true (checked at
    /// least every [`INTERRUPT_POLL`] while waiting): for requests a broker may hold for half a
    /// minute, such as a JoinGroup during a rebalance. A call given up leaves its response
    /// unread, so it fails as `Io` and the connection is dropped.
    pub fn call_interruptible<R>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<R::Response, WireError>
    where
        R: Request,
    {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_request(request, version, correlation_id)?;
        let deadline = Instant::now() + timeout;
        let io = |what: &str, e: std::io::Error| {
            WireError::Io(format!("{what} {} failed: {e}", self.addr))
        };
        self.stream
            .set_write_timeout(Some(timeout))
            .and_then(|()| {
                self.stream
                    .set_read_timeout(Some(timeout.min(INTERRUPT_POLL)))
            })
            .map_err(|e| io("configuring the socket to", e))?;
        self.stream
            .write_all(&frame)
            .map_err(|e| io("writing to", e))?;

        let mut size = [0u8; 4];
        self.read_full(&mut size, deadline, interrupted)?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| {
                WireError::Protocol(format!(
                    "{} answered a frame of {size} bytes; is it a Kafka broker?",
                    self.addr
                ))
            })?;
        let mut body = vec![0u8; size];
        self.read_full(&mut body, deadline, interrupted)?;
        decode_response::<R>(Bytes::from(body), version, correlation_id)
            .map_err(|e| WireError::Protocol(format!("{}: {e}", self.addr)))
    }

    /// Fills `buf` from the socket by the deadline. A read that times out keeps what it read
    /// so far (`read_exact` would lose it), checks the deadline and `interrupted`, and waits on.
    fn read_full(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(), WireError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(WireError::Io(format!(
                        "reading from {} failed: the broker closed the connection",
                        self.addr
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if interrupted() {
                        return Err(WireError::Io(format!(
                            "waiting for {} given up: stop requested",
                            self.addr
                        )));
                    }
                    if Instant::now() >= deadline {
                        return Err(WireError::Io(format!(
                            "reading from {} failed: no answer within the request timeout",
                            self.addr
                        )));
                    }
                }
                Err(e) => {
                    return Err(WireError::Io(format!(
                        "reading from {} failed: {e}",
                        self.addr
                    )))
                }
            }
        }
        Ok(())
    }
}

/// The size-prefixed frame of one request.
fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
) -> Result<BytesMut, WireError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .and_then(|()| request.encode(&mut body, version))
        .map_err(|e| WireError::Protocol(format!("encoding a request failed: {e}")))?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a response body (after the size prefix) and checks it answers our request.
fn decode_response<R: Request>(
    mut body: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, String> {
    let header = kafka_protocol::messages::ResponseHeader::decode(
        &mut body,
        R::Response::header_version(version),
    )
    .map_err(|e| format!("undecodable response header: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "response to request {} arrived for request {correlation_id}",
            header.correlation_id
        ));
    }
    R::Response::decode(&mut body, version).map_err(|e| format!("undecodable response: {e}"))
}
