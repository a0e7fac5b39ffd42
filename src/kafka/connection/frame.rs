//! The bytes on the socket: a size-prefixed request frame out, the matching answer in, read
//! by a deadline that a stop request or a trickling peer cannot stretch.

use std::fmt;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::*;

impl Connection {
    /// Writes one request frame and reads the body of its answer (after the response header,
    /// whose correlation id is checked).
    pub(super) fn exchange<E: fmt::Display>(
        &mut self,
        api_key: i16,
        version: i16,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
        encode_body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<Bytes, WireError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_frame(api_key, version, correlation_id, encode_body)?;
        let deadline = Instant::now() + timeout;
        let io = |what: &str, e: std::io::Error| {
            tls::failure(&e, &self.addr, &self.security, false).unwrap_or_else(|| {
                let message = format!("{what} {} failed: {e}", self.addr);
                if peer_gone(&e) {
                    WireError::Closed(message)
                } else {
                    WireError::Io(message)
                }
            })
        };
        let socket = self.stream.socket();
        socket
            .set_write_timeout(Some(timeout))
            .and_then(|()| socket.set_read_timeout(Some(read_wait(deadline))))
            .map_err(|e| io("configuring the socket to", e))?;
        self.stream
            .write_all(&frame)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io("writing to", e))?;

        let mut size = [0u8; 4];
        self.read_full(&mut size, deadline, interrupted)?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| (4..=MAX_RESPONSE_BYTES).contains(s))
            .ok_or_else(|| {
                let tls = if size.to_be_bytes()[..2] == [0x15, 0x03] {
                    TLS_ALERT_AS_SIZE
                } else {
                    ""
                };
                WireError::Io(format!(
                    "{} answered a frame of {size} bytes{tls}; is it a Kafka broker?",
                    self.addr
                ))
            })?;
        let mut body = vec![0u8; size];
        self.read_full(&mut body, deadline, interrupted)?;
        let mut body = Bytes::from(body);
        let header_version = response_header_version(api_key, version);
        let header = kafka_protocol::messages::ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| {
                WireError::Io(format!("{}: undecodable response header: {e}", self.addr))
            })?;
        if header.correlation_id != correlation_id {
            return Err(WireError::Io(format!(
                "{}: the answer to request {} arrived for request {correlation_id}",
                self.addr, header.correlation_id
            )));
        }
        Ok(body)
    }

    /// Fills `buf` from the socket by the deadline. A read that times out keeps what it read
    /// so far (`read_exact` would lose it), checks the deadline and `interrupted`, and waits on.
    /// The deadline is checked after every read too, so a peer that trickles a byte now and
    /// then cannot stretch the call past it.
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
                    return Err(WireError::Closed(format!(
                        "reading from {} failed: {CLOSED}",
                        self.addr
                    )))
                }
                Ok(n) => {
                    filled += n;
                    if filled < buf.len() {
                        if Instant::now() >= deadline {
                            return Err(WireError::Io(format!(
                                "reading from {} failed: the answer did not arrive within the \
                                 request timeout ({filled} of {} bytes came)",
                                self.addr,
                                buf.len()
                            )));
                        }
                        // The next read waits no longer than what is left of the deadline.
                        let _ = self
                            .stream
                            .socket()
                            .set_read_timeout(Some(read_wait(deadline)));
                    }
                }
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
                    return Err(
                        tls::failure(&e, &self.addr, &self.security, false).unwrap_or_else(|| {
                            let message = format!("reading from {} failed: {e}", self.addr);
                            if peer_gone(&e) {
                                WireError::Closed(message)
                            } else {
                                WireError::Io(message)
                            }
                        }),
                    )
                }
            }
        }
        Ok(())
    }
}

/// How long one read may block: until the deadline, but at most [`INTERRUPT_POLL`] (so a
/// stop request is seen), and never zero (which would mean no timeout at all).
pub(super) fn read_wait(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(1), INTERRUPT_POLL)
}

/// The peer closed or reset the connection (as opposed to a timeout or a local failure).
pub(super) fn peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// The size-prefixed frame of one request.
pub(super) fn encode_frame<E: fmt::Display>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<BytesMut, WireError> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = ApiKey::try_from(api_key)
        .map(|k| k.request_header_version(version))
        .unwrap_or(1);
    let mut frame = BytesMut::with_capacity(256);
    frame.extend_from_slice(&[0; 4]);
    let failed =
        |e: &dyn fmt::Display| WireError::Protocol(format!("encoding a request failed: {e}"));
    header
        .encode(&mut frame, header_version)
        .map_err(|e| failed(&e))?;
    encode_body(&mut frame).map_err(|e| failed(&e))?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// The header version of the answer to `api_key` at `version`. ApiVersions answers always use
/// v0, so that a client can read a broker's refusal of a version it does not know.
pub(super) fn response_header_version(api_key: i16, version: i16) -> i16 {
    ApiKey::try_from(api_key)
        .map(|k| k.response_header_version(version))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn request_frames_carry_their_size_and_header() {
        let mut frame = encode_frame(18, 3, 7, |_| Ok::<(), String>(())).unwrap();
        let size = frame.get_i32();
        assert_eq!(size as usize, frame.len());
        assert_eq!(frame.get_i16(), 18);
        assert_eq!(frame.get_i16(), 3);
        assert_eq!(frame.get_i32(), 7);
        assert_eq!(response_header_version(18, 3), 0);
    }
}
