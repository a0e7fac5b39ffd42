//! How a connection to a broker is secured: the protocol (plaintext, TLS, SASL, SASL over TLS),
//! the SASL credentials, and the TLS client configuration built once from the PEM files
//! (`tls_config`).
//!
//! The names are those users already know from librdkafka and Kafka's Java client
//! (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`, ...). `settings` reads the values;
//! this module checks what only the files can tell (readable, PEM, a key that fits its
//! certificate) and hands every connection the same [`Security`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::ClientConfig;

use super::tls_config::tls_config;

/// `KAFKA_SECURITY_PROTOCOL`: what wraps the Kafka protocol on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const NAMES: &'static str = "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL";

    /// Whether the socket speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether each connection authenticates with SASL after ApiVersions.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!("must be {}", SecurityProtocol::NAMES)),
        }
    }
}

/// `KAFKA_SASL_MECHANISM`: how the user proves who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// The password itself, in one message (RFC 4616): only sensible over TLS.
    Plain,
    /// A challenge and response that never sends the password (RFC 5802, RFC 7677).
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub const NAMES: &'static str = "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512";

    /// The name brokers use in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!("must be {}", SaslMechanism::NAMES)),
        }
    }
}

/// A SASL user. The password is kept out of `Debug`; `settings` also registers it with
/// `redact`, so no log line or error can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    password: String,
}

impl SaslCredentials {
    pub fn new(mechanism: SaslMechanism, username: String, password: String) -> Self {
        SaslCredentials {
            mechanism,
            username,
            password,
        }
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"****")
            .finish()
    }
}

/// The PEM files of `KAFKA_SSL_CA_LOCATION`, `KAFKA_SSL_CERTIFICATE_LOCATION` and
/// `KAFKA_SSL_KEY_LOCATION`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates a broker's certificate must chain to; `None`: the built-in roots.
    pub ca: Option<PathBuf>,
    /// The client certificate (chain) for mutual TLS, with its private key.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Which of the TLS files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Certificate,
    Key,
}

/// A TLS file that cannot be used, and why (never its contents: the key's could leak).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    pub file: TlsFile,
    pub problem: String,
}

/// Everything a connection needs to secure itself; cheap to clone (the TLS configuration is
/// shared).
#[derive(Clone, Default)]
pub struct Security {
    protocol: SecurityProtocol,
    sasl: Option<SaslCredentials>,
    files: TlsFiles,
    tls: Option<Arc<ClientConfig>>,
}

impl Security {
    /// No TLS, no SASL: what a local broker speaks.
    pub fn plaintext() -> Security {
        Security::default()
    }

    /// Builds the TLS configuration from the files (when `protocol` is SSL or SASL_SSL). The
    /// caller has checked that SASL credentials come with a SASL protocol and that a key comes
    /// with its certificate.
    pub fn new(
        protocol: SecurityProtocol,
        sasl: Option<SaslCredentials>,
        files: TlsFiles,
    ) -> Result<Security, TlsFileError> {
        let tls = if protocol.tls() {
            Some(Arc::new(tls_config(&files)?))
        } else {
            None
        };
        Ok(Security {
            protocol,
            sasl: sasl.filter(|_| protocol.sasl()),
            files,
            tls,
        })
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    pub fn sasl(&self) -> Option<&SaslCredentials> {
        self.sasl.as_ref()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn tls_config(&self) -> Option<&Arc<ClientConfig>> {
        self.tls.as_ref()
    }

    /// Where the broker's certificate is checked against, for messages.
    pub(crate) fn trust(&self) -> String {
        match &self.files.ca {
            Some(ca) => format!("the CA of {}", ca.display()),
            None => "the built-in root CAs (set KAFKA_SSL_CA_LOCATION for a private CA)".into(),
        }
    }

    /// One line for the log: the protocol, the mechanism and user, the files (never the
    /// password).
    pub fn describe(&self) -> String {
        let mut out = self.protocol.name().to_string();
        if let Some(s) = &self.sasl {
            out.push_str(&format!(", {} as {}", s.mechanism, s.username));
        }
        if self.protocol.tls() {
            match &self.files.ca {
                Some(ca) => out.push_str(&format!(", CA {}", ca.display())),
                None => out.push_str(", built-in root CAs"),
            }
            if let Some(cert) = &self.files.certificate {
                out.push_str(&format!(", client certificate {}", cert.display()));
            }
        }
        out
    }
}

impl PartialEq for Security {
    /// Equal settings; the TLS configuration is built from the files, so it is not compared.
    fn eq(&self, other: &Security) -> bool {
        self.protocol == other.protocol && self.sasl == other.sasl && self.files == other.files
    }
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("sasl", &self.sasl)
            .field("files", &self.files)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tls_config::read_key;
    use super::*;

    #[test]
    fn protocol_and_mechanism_names_are_librdkafkas() {
        assert_eq!(
            "sasl_ssl".parse::<SecurityProtocol>(),
            Ok(SecurityProtocol::SaslSsl)
        );
        assert_eq!("SSL".parse(), Ok(SecurityProtocol::Ssl));
        assert!("TLS".parse::<SecurityProtocol>().is_err());
        assert_eq!(
            "scram-sha-512".parse::<SaslMechanism>(),
            Ok(SaslMechanism::ScramSha512)
        );
        assert_eq!("PLAIN".parse(), Ok(SaslMechanism::Plain));
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
        assert!(SecurityProtocol::SaslSsl.tls() && SecurityProtocol::SaslSsl.sasl());
        assert!(!SecurityProtocol::Ssl.sasl() && !SecurityProtocol::SaslPlaintext.tls());
    }

    #[test]
    fn the_password_stays_out_of_debug_and_describe() {
        let creds = SaslCredentials::new(
            SaslMechanism::ScramSha256,
            "alice".into(),
            "Unit-Kafka-Secret".into(),
        );
        let security = Security::new(
            SecurityProtocol::SaslPlaintext,
            Some(creds),
            TlsFiles::default(),
        )
        .unwrap();
        let shown = format!("{security:?} {}", security.describe());
        assert!(!shown.contains("Unit-Kafka-Secret"), "{shown}");
        assert_eq!(
            security.describe(),
            "SASL_PLAINTEXT, SCRAM-SHA-256 as alice"
        );
    }

    #[test]
    fn without_a_ca_file_the_built_in_roots_are_used() {
        let security = Security::new(SecurityProtocol::Ssl, None, TlsFiles::default()).unwrap();
        assert!(security.tls_config().is_some());
        assert_eq!(security.describe(), "SSL, built-in root CAs");
    }

    #[test]
    fn unreadable_and_non_pem_files_are_refused_by_name() {
        let missing = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let e = Security::new(SecurityProtocol::Ssl, None, missing).unwrap_err();
        assert_eq!(e.file, TlsFile::Ca);
        assert!(
            e.problem.starts_with("cannot read /nonexistent/ca.pem"),
            "{e:?}"
        );

        let dir = std::env::temp_dir().join(format!("metricsctl-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        std::fs::write(&key, "not a key but a secret line\n").unwrap();
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "no certificate here\n").unwrap();
        let e = Security::new(
            SecurityProtocol::Ssl,
            None,
            TlsFiles {
                ca: None,
                certificate: Some(cert.clone()),
                key: Some(key.clone()),
            },
        )
        .unwrap_err();
        assert_eq!(e.file, TlsFile::Certificate);
        assert!(e.problem.contains("holds no PEM certificate"), "{e:?}");
        let e = read_key(&key).unwrap_err();
        assert!(!e.problem.contains("secret line"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
