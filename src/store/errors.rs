//! Database failures as the operator reads them: one line, secrets scrubbed, and whether
//! retrying can help (the store adapter retries what is transient).

use super::*;

/// Whether retrying a failed database operation can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No answer, a lost connection, a busy server, a refused document: try again.
    Transient,
    /// The settings are wrong (bad URI option, authentication) or a document cannot be written:
    /// retrying will not help.
    Permanent,
}

/// A failed database operation, with secrets scrubbed, written for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub operation: &'static str,
    pub detail: String,
    pub kind: StoreErrorKind,
}

impl StoreError {
    /// Retrying will not help.
    pub fn is_permanent(&self) -> bool {
        self.kind == StoreErrorKind::Permanent
    }
}

impl crate::retrying::Retryable for StoreError {
    fn permanent(&self) -> bool {
        self.is_permanent()
    }
    fn service(&self) -> crate::telemetry::Service {
        crate::telemetry::Service::Database
    }
    fn hint(&self) -> &'static str {
        "; check MONGODB_URI (user, password, options)"
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mongodb {} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for StoreError {}

pub(super) fn store_error(operation: &'static str, e: &DriverError) -> StoreError {
    let permanent = matches!(
        e.kind.as_ref(),
        ErrorKind::InvalidArgument { .. }
            | ErrorKind::Authentication { .. }
            | ErrorKind::InvalidTlsConfig { .. }
    );
    let text = match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => server_selection(message),
        // The kind alone: the error's labels and source add nothing for the operator.
        kind => kind.to_string(),
    };
    StoreError {
        operation,
        // The driver's message may quote the connection string; never let a password through.
        detail: redact::scrub(&first_line(&text)),
        kind: if permanent {
            StoreErrorKind::Permanent
        } else {
            StoreErrorKind::Transient
        },
    }
}

/// A server-selection failure in one short line: each server and why it did not answer,
/// instead of the driver's whole topology description.
pub(super) fn server_selection(message: &str) -> String {
    let head = message.split(". Topology:").next().unwrap_or(message);
    let servers: Vec<String> = message
        .split("{ Address: ")
        .skip(1)
        .map(|server| {
            let address = server.split(',').next().unwrap_or_default().trim();
            let why = server
                .split_once("Error: ")
                .map(|(_, e)| e.trim_start_matches("Kind: "))
                .and_then(|e| e.split(", labels:").next())
                .or_else(|| {
                    server
                        .split_once("Type: ")
                        .and_then(|(_, t)| t.split([',', '}']).next())
                })
                .unwrap_or("no answer");
            format!("{address}: {}", why.trim())
        })
        .collect();
    if servers.is_empty() {
        head.to_string()
    } else {
        format!("{head} ({})", servers.join("; "))
    }
}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
