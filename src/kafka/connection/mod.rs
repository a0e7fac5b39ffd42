//! One blocking connection to one broker: opens the socket, learns the broker's API versions,
//! frames requests encoded by `kafka-protocol` and reads the matching responses. It only moves
//! bytes and picks versions; which request to send where is decided above.
//!
//! Everything that makes a socket a Kafka connection happens in [`Connection::open`]: connect,
//! the TLS handshake (`tls`), ApiVersions, then SASL (`sasl`); so the producer, fetch and group
//! code above never see the security layers. A SASL session the broker grants for a limited
//! time is renewed on the same socket before it runs out (KIP-368), checked before each request.
//!
//! Here: opening, securing and calling; `frame` writes the request frames and reads the answers.

mod frame;

use std::fmt;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use log::{debug, trace};

use super::sasl;
use super::security::Security;
use super::tls::{self, Transport};
use super::versions::{self, BrokerVersions, Range, TooOld};

/// How long a TCP connect may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the ApiVersions exchange that opens every connection may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A response larger than this is refused rather than allocated (a corrupt length prefix, or
/// something that is not a Kafka broker on the port).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;
/// How often a waiting [`Connection::call_interruptible`] checks whether to give up.
pub const INTERRUPT_POLL: Duration = Duration::from_millis(200);
/// How a read that met the end of the stream ends its message.
const CLOSED: &str = "the broker closed the connection";
/// Marks a frame size that is a TLS alert record's header read as a number.
const TLS_ALERT_AS_SIZE: &str = " (a TLS alert)";
/// The client id brokers log and Kafka's group tools show.
pub const CLIENT_ID: &str = "metricsctl";

/// A failed exchange with a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Connecting, writing or reading failed (refused, timed out), or the byte stream fell
    /// out of step (a bad frame size, an answer to another request): the connection is
    /// unusable and must be dropped.
    Io(String),
    /// The peer closed the connection (end of stream, reset, broken pipe): it must be dropped
    /// too. On a connection that served calls before, this is most often a broker that
    /// restarted or closed an idle socket, so [`Connection::call`] tries once more on a fresh
    /// connection before it reports this.
    Closed(String),
    /// The answer was framed correctly but did not decode as the expected response.
    Protocol(String),
    /// The broker lacks every version of an API we speak: retrying cannot help.
    TooOld(TooOld),
    /// The connection cannot be secured as configured (credentials refused, a mechanism the
    /// broker does not enable, a certificate that does not verify or is refused, TLS spoken to
    /// a plaintext port or the reverse): retrying cannot help either.
    Security(String),
}

impl WireError {
    /// The connection that failed this way is out of step or gone, and must be dropped (a
    /// `Protocol` error leaves it usable: the answer was framed and matched its request).
    pub fn breaks_connection(&self) -> bool {
        matches!(self, WireError::Io(_) | WireError::Closed(_))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e)
            | WireError::Closed(e)
            | WireError::Protocol(e)
            | WireError::Security(e) => f.write_str(e),
            WireError::TooOld(e) => e.fmt(f),
        }
    }
}

/// A connection to `addr`, with the broker's versions and a correlation id per request.
pub struct Connection {
    addr: String,
    stream: Transport,
    correlation_id: i32,
    versions: BrokerVersions,
    security: Security,
    /// When the SASL session the broker granted must be renewed; `None` without SASL or when
    /// the broker sets no limit.
    session: Option<Session>,
    /// Calls this connection answered: one that answered before and then finds the peer gone
    /// is retried once on a fresh connection.
    answered: u64,
}

/// The times of a SASL session with a limited lifetime.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// Re-authenticate on the next request from this instant on: 50 to 60 % of the lifetime,
    /// spread so that many connections do not renew at once. Java's client renews at 85 to 95 %
    /// from its network thread, whatever the connection is doing; ours renews only when a
    /// request goes out, so it starts earlier to leave a connection used every few seconds
    /// time to renew before the session ends.
    renew_at: Instant,
    /// From here on the broker may already have ended the session, and would close the
    /// connection on any request, a re-authentication included: reconnect instead (a
    /// connection left idle for most of its session).
    too_late: Instant,
}

impl Session {
    fn starting(started: Instant, lifetime: Duration) -> Session {
        let share = 0.50 + 0.10 * fastrand::f64();
        // The broker starts its clock when it has checked the credentials, after `started`.
        let margin = (lifetime / 50)
            .max(Duration::from_millis(100))
            .min(lifetime / 4);
        Session {
            renew_at: started + lifetime.mul_f64(share),
            too_late: started + lifetime - margin,
        }
    }
}

impl Connection {
    /// Connects to `host:port` (trying each address it resolves to), secures the socket as
    /// `security` says, asks the broker which API versions it speaks and authenticates.
    pub fn open(addr: &str, security: &Security) -> Result<Connection, WireError> {
        let socket = connect(addr)?;
        let stream = match security.tls_config() {
            Some(config) => tls::handshake(socket, addr, config, security, HANDSHAKE_TIMEOUT)
                .map_err(|e| Connection::handshake_failed(addr, security, e))?,
            None => Transport::Plain(socket),
        };
        let mut connection = Connection {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            versions: BrokerVersions::default(),
            security: security.clone(),
            session: None,
            answered: 0,
        };
        connection.versions = connection
            .api_versions()
            .map_err(|e| connection.first_answer_failed(e))?;
        debug!("connected to {addr}: {}", connection.versions.summary(addr));
        trace!("{addr} supports {}", connection.versions);
        connection.authenticate()?;
        Ok(connection)
    }

    /// SASL on this connection (again, when renewing), if the settings ask for it.
    fn authenticate(&mut self) -> Result<(), WireError> {
        let Some(credentials) = self.security.sasl().cloned() else {
            return Ok(());
        };
        let started = Instant::now();
        let lifetime = sasl::authenticate(self, &credentials)?;
        self.session = lifetime.map(|l| Session::starting(started, l));
        debug!(
            "authenticated to {} as {} with {}{}",
            self.addr,
            credentials.username,
            credentials.mechanism,
            lifetime.map_or(String::new(), |l| format!(
                ", session of {} ms",
                l.as_millis()
            ))
        );
        Ok(())
    }

    /// Renews the SASL session before the broker ends it (KIP-368): on the same socket while
    /// there is time, else (a connection idle past its session) on a new connection.
    fn keep_session(&mut self) -> Result<(), WireError> {
        let Some(session) = self.session else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= session.too_late {
            debug!(
                "the SASL session with {} ran out while idle: reconnecting",
                self.addr
            );
            *self = Connection::open(&self.addr, &self.security)?;
        } else if now >= session.renew_at {
            self.authenticate()?;
            debug!("re-authenticated to {} (KIP-368)", self.addr);
        }
        Ok(())
    }

    /// A TLS handshake the broker cut short: if the port answers a plaintext ApiVersions, it
    /// is a plaintext listener (retrying cannot help); else the broker is going down (retried).
    fn handshake_failed(addr: &str, security: &Security, e: WireError) -> WireError {
        match e {
            WireError::Io(m)
                if m.ends_with(tls::CLOSED_IN_HANDSHAKE)
                    && Connection::open(addr, &Security::plaintext()).is_ok() =>
            {
                WireError::Security(format!(
                    "{addr} {}: it is a plaintext listener (KAFKA_SECURITY_PROTOCOL is {}; use \
                     the broker's TLS port, or PLAINTEXT / SASL_PLAINTEXT for this one)",
                    tls::CLOSED_IN_HANDSHAKE,
                    security.protocol()
                ))
            }
            other => other,
        }
    }

    /// A failure of the first request on a new socket. A plaintext request sent to a TLS port
    /// is answered by a TLS alert (read as a frame, a size starting 0x15 0x03) or, from Kafka,
    /// by closing the connection: then a TLS handshake on a new socket tells whether it was
    /// TLS, rather than a broker going down (which stays an `Io` error, retried).
    fn first_answer_failed(&self, e: WireError) -> WireError {
        let tls_port = |m: &str| {
            m.contains(TLS_ALERT_AS_SIZE)
                || (m.ends_with(CLOSED)
                    && connect(&self.addr)
                        .is_ok_and(|socket| tls::speaks_tls(socket, &self.addr, CONNECT_TIMEOUT)))
        };
        match e {
            WireError::Io(m) | WireError::Closed(m) if !self.stream.is_tls() && tls_port(&m) => {
                WireError::Security(format!(
                    "{} is a TLS listener (KAFKA_SECURITY_PROTOCOL is {}; \
                     use SSL or SASL_SSL for this port)",
                    self.addr,
                    self.security.protocol()
                ))
            }
            other => other,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version requests of type `R` go out at on this connection.
    pub fn version<R: Request>(&self) -> Result<i16, WireError> {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|()| WireError::Protocol(format!("request type {} has no API key", R::KEY)))?;
        self.versions
            .pick(api, &self.addr)
            .map_err(WireError::TooOld)
    }

    /// Sends `request` and waits up to `timeout` for its response.
    pub fn call<R: Request>(
        &mut self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        self.call_interruptible(request, timeout, &|| false)
    }

    /// As [`Connection::call`], but gives up as soon as `interrupted()` turns true (checked at
    /// least every [`INTERRUPT_POLL`] while waiting): for requests a broker may hold for half a
    /// minute, such as a JoinGroup during a rebalance. A call given up leaves its response
    /// unread, so it fails as `Io` and the connection is dropped.
    pub fn call_interruptible<R: Request>(
        &mut self,
        request: &R,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<R::Response, WireError> {
        self.keep_session()?;
        match self.call_once(request, timeout, interrupted) {
            // A broker that restarted, or closed a socket idle too long, ends the stream before
            // or while it answers: one more try on a fresh connection tells a broker that is
            // gone from one that only dropped this socket. Every request we send may be sent
            // twice (Produce carries the idempotent producer's sequence; commits, heartbeats,
            // joins and fetches are repeatable).
            Err(WireError::Closed(why)) if self.answered > 0 && !interrupted() => {
                debug!("{why}; calling again on a new connection");
                *self = Connection::open(&self.addr, &self.security)?;
                self.call_once(request, timeout, interrupted)
            }
            other => other,
        }
    }

    /// Sends `request` now, without renewing the SASL session first: for the SASL exchange
    /// itself.
    pub(super) fn call_now<R: Request>(
        &mut self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        self.call_once(request, timeout, &|| false)
    }

    fn call_once<R: Request>(
        &mut self,
        request: &R,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<R::Response, WireError> {
        let version = self.version::<R>()?;
        let body = self.exchange(R::KEY, version, timeout, interrupted, |buf| {
            // Sized once: a Produce request of 900 KiB grown by doubling was copied about
            // twice over while it was encoded.
            buf.reserve(request.compute_size(version).unwrap_or(0));
            request.encode(buf, version)
        })?;
        let mut body = body;
        // Counts and lengths are checked against the frame before the crate sizes anything; a
        // malformed answer drops the connection (an `Io` error), like a bad frame.
        let response =
            super::decode_limits::decode_response::<R::Response>(R::KEY, version, &mut body)
                .map_err(|e| WireError::Io(format!("{}: undecodable response: {e}", self.addr)))?;
        self.answered += 1;
        Ok(response)
    }

    /// ApiVersions, the first request on every connection. A broker older than our version of
    /// it answers UNSUPPORTED_VERSION in the v0 layout, which still lists its ranges.
    fn api_versions(&mut self) -> Result<BrokerVersions, WireError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let version = versions::API_VERSIONS;
        let body = self.exchange(
            ApiVersionsRequest::KEY,
            version,
            HANDSHAKE_TIMEOUT,
            &|| false,
            |buf| request.encode(buf, version),
        )?;
        let unsupported = body.len() >= 2
            && ResponseError::try_from_code(i16::from_be_bytes([body[0], body[1]]))
                == Some(ResponseError::UnsupportedVersion);
        let answer_version = if unsupported { 0 } else { version };
        let mut bytes = body;
        let response = super::decode_limits::decode_response::<ApiVersionsResponse>(
            ApiVersionsRequest::KEY,
            answer_version,
            &mut bytes,
        )
        .map_err(|e| {
            WireError::Protocol(format!(
                "{}: undecodable ApiVersions answer ({e}); is it a Kafka broker?",
                self.addr
            ))
        })?;
        let broker = BrokerVersions::new(response.api_keys.iter().map(|k| {
            (
                k.api_key,
                Range {
                    min: k.min_version,
                    max: k.max_version,
                },
            )
        }));
        if unsupported {
            // Names the broker's ApiVersions range, which lacks our v3.
            broker
                .pick(ApiKey::ApiVersions, &self.addr)
                .map_err(WireError::TooOld)?;
        }
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            return Err(WireError::Protocol(format!(
                "{} refused ApiVersions: {e}",
                self.addr
            )));
        }
        Ok(broker)
    }
}

fn connect(addr: &str) -> Result<TcpStream, WireError> {
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
                return Ok(stream);
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(WireError::Io(last))
}
