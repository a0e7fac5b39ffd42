//! SASL authentication of a connection (KIP-152): SaslHandshake names the mechanism, then
//! SaslAuthenticate carries its messages: one for PLAIN, two for SCRAM. The broker's last
//! answer says how long the session lasts (KIP-368); `connection` authenticates again before
//! that, on the same socket.
//!
//! Failures that retrying cannot fix (wrong password, unknown user, a mechanism the broker does
//! not enable, a listener without SASL) are [`WireError::Security`], which stops the command
//! with one line; the password is never part of a message.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use super::connection::{Connection, WireError};
use super::scram::{self, ScramClient, ScramError, ScramHash};
use super::security::{SaslCredentials, SaslMechanism};

/// How long each SASL exchange may take.
const SASL_TIMEOUT: Duration = Duration::from_secs(10);

/// Authenticates `connection` as `credentials`. Returns how long the broker keeps the session
/// (`None`: until the connection closes).
pub fn authenticate(
    connection: &mut Connection,
    credentials: &SaslCredentials,
) -> Result<Option<Duration>, WireError> {
    let mechanism = credentials.mechanism;
    handshake(connection, mechanism)?;
    let lifetime_ms = match mechanism {
        SaslMechanism::Plain => {
            let mut token = Vec::new();
            token.push(0);
            token.extend_from_slice(credentials.username.as_bytes());
            token.push(0);
            token.extend_from_slice(credentials.password().as_bytes());
            step(connection, credentials, token)?.1
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = if mechanism == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let nonce = scram::new_nonce().map_err(WireError::Io)?;
            let mut client =
                ScramClient::new(hash, &credentials.username, credentials.password(), nonce);
            let (server_first, _) = step(connection, credentials, client.client_first().into())?;
            let server_first = text(&server_first, connection.addr())?;
            let client_final = client
                .client_final(&server_first)
                .map_err(|e| scram_failure(e, connection.addr(), credentials))?;
            let (server_final, lifetime) = step(connection, credentials, client_final.into())?;
            client
                .verify_server_final(&text(&server_final, connection.addr())?)
                .map_err(|e| scram_failure(e, connection.addr(), credentials))?;
            lifetime
        }
    };
    Ok(u64::try_from(lifetime_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis))
}

/// SaslHandshake v1 (v0 would mean raw tokens without SaslAuthenticate).
fn handshake(connection: &mut Connection, mechanism: SaslMechanism) -> Result<(), WireError> {
    let addr = connection.addr().to_string();
    let version = connection.version::<SaslHandshakeRequest>()?;
    if version < 1 {
        return Err(WireError::Security(format!(
            "{addr} speaks only SaslHandshake v0 (before Kafka 1.0): too old for SASL here"
        )));
    }
    let request =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
    let response = connection.call_now(&request, SASL_TIMEOUT)?;
    match ResponseError::try_from_code(response.error_code) {
        None => Ok(()),
        Some(ResponseError::UnsupportedSaslMechanism) => {
            let enabled: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
            Err(WireError::Security(format!(
                "{addr} does not enable SASL mechanism {mechanism}; it enables: {} (set \
                 KAFKA_SASL_MECHANISM to one of them)",
                if enabled.is_empty() {
                    "none".to_string()
                } else {
                    enabled.join(", ")
                }
            )))
        }
        Some(ResponseError::IllegalSaslState) => Err(WireError::Security(format!(
            "{addr} is not a SASL listener (it refused SaslHandshake): use the broker's SASL \
             port, or KAFKA_SECURITY_PROTOCOL=SSL / PLAINTEXT for this one"
        ))),
        Some(e) => Err(WireError::Protocol(format!(
            "{addr} refused SaslHandshake for {mechanism}: {e}"
        ))),
    }
}

/// One SaslAuthenticate round: our message out, the broker's back, with the session lifetime
/// the broker grants (0: none).
fn step(
    connection: &mut Connection,
    credentials: &SaslCredentials,
    message: Vec<u8>,
) -> Result<(Bytes, i64), WireError> {
    let addr = connection.addr().to_string();
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
    let response = connection.call_now(&request, SASL_TIMEOUT)?;
    match ResponseError::try_from_code(response.error_code) {
        None => Ok((response.auth_bytes, response.session_lifetime_ms)),
        Some(ResponseError::SaslAuthenticationFailed) => {
            let reason = response
                .error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(|| "no reason given".into());
            Err(WireError::Security(format!(
                "{addr} refused user {:?} with SASL {} ({reason}): check KAFKA_SASL_USERNAME, \
                 KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM",
                credentials.username, credentials.mechanism
            )))
        }
        Some(e) => Err(WireError::Security(format!(
            "{addr} refused SASL {} authentication: {e}{}",
            credentials.mechanism,
            response
                .error_message
                .as_ref()
                .map(|m| format!(" ({})", m.as_str()))
                .unwrap_or_default()
        ))),
    }
}

fn text(bytes: &Bytes, addr: &str) -> Result<String, WireError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| WireError::Security(format!("{addr} sent a SCRAM message that is not UTF-8")))
}

fn scram_failure(e: ScramError, addr: &str, credentials: &SaslCredentials) -> WireError {
    WireError::Security(format!(
        "SASL {} with {addr} as user {:?} failed: {e}",
        credentials.mechanism, credentials.username
    ))
}
