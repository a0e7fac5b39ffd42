//! The byte stream under a connection: a TCP socket, or TLS over it through rustls. Blocking
//! like the rest of the client; the socket's timeouts bound every read and write, and a read
//! that times out keeps rustls's state intact (it is built for sockets that say WouldBlock).
//!
//! Also here: what a TLS failure means for the operator (a certificate that does not verify
//! or does not name the host, a client certificate refused, a port that does not speak TLS),
//! each a [`WireError::Security`] that stops the command instead of being retried.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, StreamOwned};

use super::connection::WireError;
use super::security::Security;

/// How a connection closed by the broker during the TLS handshake is reported.
pub const CLOSED_IN_HANDSHAKE: &str = "closed the connection during the TLS handshake";

/// The socket, plain or wrapped in TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    /// The TCP socket underneath, for its timeouts.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    /// For TLS, pushes the records still buffered in rustls onto the socket: a request is only
    /// sent once this returns.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Runs the TLS handshake on a connected socket, checking the broker's certificate against the
/// configured roots and the host part of `addr`.
pub fn handshake(
    socket: TcpStream,
    addr: &str,
    config: &Arc<ClientConfig>,
    security: &Security,
    timeout: Duration,
) -> Result<Transport, WireError> {
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        WireError::Security(format!(
            "{addr}: {host:?} is neither a DNS name nor an IP address TLS can check"
        ))
    })?;
    let mut tls = ClientConnection::new(config.clone(), name)
        .map_err(|e| WireError::Security(format!("TLS with {addr} cannot start: {e}")))?;
    let mut socket = socket;
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(|e| WireError::Io(format!("configuring the socket to {addr} failed: {e}")))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut socket) {
            return Err(failure(&e, addr, security, true).unwrap_or_else(|| {
                let what = if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    "timed out".to_string()
                } else {
                    e.to_string()
                };
                WireError::Io(format!("the TLS handshake with {addr} failed: {what}"))
            }));
        }
    }
    Ok(Transport::Tls(Box::new(StreamOwned::new(tls, socket))))
}

/// Whether the listener at `addr` speaks TLS: a TLS handshake on a fresh socket gets as far as
/// the broker's certificate (whether it verifies does not matter). Asked only after a plaintext
/// connection was closed at its first request, which is what a Kafka TLS listener does with
/// bytes that are not TLS (it sends no alert), so the error can name the cause.
pub fn speaks_tls(socket: TcpStream, addr: &str, timeout: Duration) -> bool {
    let Ok(name) = ServerName::try_from(host_of(addr).to_string()) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let Ok(builder) =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    let Ok(mut tls) = ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    let mut socket = socket;
    if socket.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut socket) {
            let tls_error = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            return matches!(
                tls_error,
                Some(rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_))
            );
        }
    }
    true
}

/// What a failed read or write on a TLS connection means, when it is TLS that failed (a
/// certificate, an alert, bytes that are not TLS) rather than the network. `handshaking`: the
/// failure came before the handshake was done, where an early close means the port does not
/// speak TLS at all.
pub fn failure(
    e: &io::Error,
    addr: &str,
    security: &Security,
    handshaking: bool,
) -> Option<WireError> {
    let Some(tls_error) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        if handshaking && e.kind() == ErrorKind::UnexpectedEof {
            // Kafka closes a plaintext listener's connection when the ClientHello arrives (its
            // first bytes, read as a request size, are far too large); so does a broker going
            // down. `Connection::open` asks the port in plaintext to tell which.
            return Some(WireError::Io(format!("{addr} {CLOSED_IN_HANDSHAKE}")));
        }
        return None;
    };
    let message = match tls_error {
        rustls::Error::InvalidCertificate(
            c @ (CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }),
        ) => format!(
            "the TLS certificate of {addr} does not match the host name ({c}): connect with a \
             name or address the certificate holds"
        ),
        rustls::Error::InvalidCertificate(c) => format!(
            "the TLS certificate of {addr} does not verify against {} ({c})",
            security.trust()
        ),
        rustls::Error::AlertReceived(alert) => client_certificate_alert(*alert, addr, security)
            .unwrap_or_else(|| format!("{addr} ended TLS with the alert {alert:?}")),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "{addr} does not speak TLS ({tls_error}): is it a plaintext listener? \
             (KAFKA_SECURITY_PROTOCOL is {}; use the broker's TLS port, or PLAINTEXT / \
             SASL_PLAINTEXT for this one)",
            security.protocol()
        ),
        other => format!("TLS with {addr} failed: {other}"),
    };
    Some(WireError::Security(message))
}

/// The alerts a broker sends when it wants a client certificate it did not get, or does not
/// trust the one it got. With TLS 1.3 they come after our side of the handshake is done, on
/// the first read.
fn client_certificate_alert(
    alert: AlertDescription,
    addr: &str,
    security: &Security,
) -> Option<String> {
    let about_certificates = matches!(
        alert,
        AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied
            | AlertDescription::HandshakeFailure
    );
    if !about_certificates {
        return None;
    }
    Some(match &security.files().certificate {
        None => format!(
            "{addr} requires a client certificate (TLS alert {alert:?}): set \
             KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION"
        ),
        Some(cert) => format!(
            "{addr} refused the client certificate {} (TLS alert {alert:?}): is it signed by a \
             CA the broker trusts, and still valid?",
            cert.display()
        ),
    })
}

/// The host part of `host:port` (an IPv6 address loses its brackets).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_what_the_certificate_must_name() {
        assert_eq!(host_of("broker-1.example.com:9093"), "broker-1.example.com");
        assert_eq!(host_of("127.0.0.1:29094"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }
}
