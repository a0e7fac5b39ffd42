//! The Kafka settings: brokers, TLS and SASL, topic, group, static membership, partitions.

use std::path::PathBuf;

use super::values::{list, non_empty_name};
use super::*;
use crate::cli::{ConsumeArgs, ProduceArgs, StatusArgs};
use crate::kafka::security::{TlsFile, TlsFiles};
use crate::kafka::{SaslCredentials, SaslMechanism, Security, SecurityProtocol};

pub(super) fn brokers(v: Option<Value>) -> Result<Vec<String>, SettingError> {
    let Some(v) = v else {
        return Ok(vec![DEFAULT_BROKERS.to_string()]);
    };
    let list = list(&v.text);
    if list.is_empty() {
        return Err(v.error("must list at least one broker as host:port"));
    }
    for b in &list {
        let valid = match b.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            None => false,
        };
        if !valid {
            return Err(v.error(format!(
                "broker {b:?} is not host:port, e.g. 127.0.0.1:29092"
            )));
        }
    }
    Ok(list)
}

/// The Kafka security flags of a command that talks to Kafka (each falls back to its
/// variable).
pub(super) struct SecurityFlags<'a> {
    pub(super) protocol: &'a Option<String>,
    pub(super) mechanism: &'a Option<String>,
    pub(super) username: &'a Option<String>,
    pub(super) password: &'a Option<String>,
    pub(super) ca: &'a Option<String>,
    pub(super) certificate: &'a Option<String>,
    pub(super) key: &'a Option<String>,
}

/// The security flags of each command that talks to Kafka: all three name them alike.
macro_rules! security_flags_of {
    ($($args:ty),*) => {$(
        impl<'a> From<&'a $args> for SecurityFlags<'a> {
            fn from(args: &'a $args) -> Self {
                SecurityFlags {
                    protocol: &args.security_protocol,
                    mechanism: &args.sasl_mechanism,
                    username: &args.sasl_username,
                    password: &args.sasl_password,
                    ca: &args.ssl_ca_location,
                    certificate: &args.ssl_certificate_location,
                    key: &args.ssl_key_location,
                }
            }
        }
    )*};
}

security_flags_of!(ConsumeArgs, ProduceArgs, StatusArgs);

/// `KAFKA_SECURITY_PROTOCOL` and what goes with it. A combination that cannot work (SASL
/// settings without a SASL protocol, TLS files without TLS, a key without its certificate) and
/// a file that cannot be used are setting errors; the password is registered as a secret
/// before anything can quote it.
pub(super) fn kafka_security(src: &Sources, f: &SecurityFlags) -> Result<Security, SettingError> {
    let password = src.pick(f.password, "sasl-password", &["KAFKA_SASL_PASSWORD"]);
    if let Some(p) = &password {
        redact::register(&p.text);
    }
    let protocol_value = src.pick(
        f.protocol,
        "security-protocol",
        &["KAFKA_SECURITY_PROTOCOL"],
    );
    let protocol = match &protocol_value {
        Some(v) => v.text.parse().map_err(|e: String| v.error(e))?,
        None => SecurityProtocol::Plaintext,
    };
    let mechanism = src.pick(f.mechanism, "sasl-mechanism", &["KAFKA_SASL_MECHANISM"]);
    let username = src.pick(f.username, "sasl-username", &["KAFKA_SASL_USERNAME"]);
    let ca = src.pick(f.ca, "ssl-ca-location", &["KAFKA_SSL_CA_LOCATION"]);
    let certificate = src.pick(
        f.certificate,
        "ssl-certificate-location",
        &["KAFKA_SSL_CERTIFICATE_LOCATION"],
    );
    let key = src.pick(f.key, "ssl-key-location", &["KAFKA_SSL_KEY_LOCATION"]);
    let mismatch = |v: &Value, needs: &str| SettingError {
        setting: v.origin.clone(),
        problem: format!("needs KAFKA_SECURITY_PROTOCOL={needs}, but it is {protocol}"),
    };
    if !protocol.sasl() {
        if let Some(v) = [&mechanism, &username, &password]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(mismatch(v, "SASL_SSL or SASL_PLAINTEXT"));
        }
    }
    if !protocol.tls() {
        if let Some(v) = [&ca, &certificate, &key].into_iter().flatten().next() {
            return Err(mismatch(v, "SSL or SASL_SSL"));
        }
    }
    let required = |v: Option<Value>, var: &str, what: &str| match v {
        Some(v) if !v.text.trim().is_empty() => Ok(v),
        Some(v) => Err(SettingError {
            setting: v.origin,
            problem: format!("must not be empty with {protocol}"),
        }),
        None => Err(SettingError {
            setting: var.to_string(),
            problem: format!("{protocol} needs {what}"),
        }),
    };
    let sasl = if protocol.sasl() {
        let mechanism = required(
            mechanism,
            "KAFKA_SASL_MECHANISM",
            &format!("a SASL mechanism: {}", SaslMechanism::NAMES),
        )?;
        let mechanism: SaslMechanism = mechanism
            .text
            .parse()
            .map_err(|e: String| mechanism.error(e))?;
        let username = required(username, "KAFKA_SASL_USERNAME", "a SASL user")?;
        let password = required(password, "KAFKA_SASL_PASSWORD", "the SASL user's password")?;
        Some(SaslCredentials::new(
            mechanism,
            username.text.trim().to_string(),
            password.text,
        ))
    } else {
        None
    };
    let path = |v: &Option<Value>| -> Result<Option<PathBuf>, SettingError> {
        match v {
            Some(v) if v.text.trim().is_empty() => Err(v.error("must name a PEM file")),
            Some(v) => Ok(Some(PathBuf::from(v.text.trim()))),
            None => Ok(None),
        }
    };
    let files = TlsFiles {
        ca: path(&ca)?,
        certificate: path(&certificate)?,
        key: path(&key)?,
    };
    Security::new(protocol, sasl, files).map_err(|e| {
        let (value, var) = match e.file {
            TlsFile::Ca => (&ca, "KAFKA_SSL_CA_LOCATION"),
            TlsFile::Certificate => (&certificate, "KAFKA_SSL_CERTIFICATE_LOCATION"),
            TlsFile::Key => (&key, "KAFKA_SSL_KEY_LOCATION"),
        };
        SettingError {
            setting: value
                .as_ref()
                .map_or_else(|| var.to_string(), |v| v.origin.clone()),
            problem: e.problem,
        }
    })
}

pub(super) fn topic(v: Option<Value>, suffix: &str) -> Result<String, SettingError> {
    let Some(v) = v else {
        return Ok(format!("system-metrics-topic-{suffix}"));
    };
    let t = v.text.trim();
    let legal = !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if legal {
        Ok(t.to_string())
    } else {
        Err(v.error("must be 1-249 characters of letters, digits, '.', '_' or '-' (Kafka's rule)"))
    }
}

/// The consumer group, by default the exercise's `grupo_<suffix>_id`.
pub(super) fn group(v: Option<Value>, suffix: &str) -> Result<String, SettingError> {
    match v {
        Some(v) => non_empty_name(&v),
        None => Ok(format!("grupo_{suffix}_id")),
    }
}

/// A static member's id: Kafka takes any non-empty string up to 249 characters (the group and
/// topic name limit); control characters would only make the logs unreadable.
pub(super) fn group_instance_id(v: &Value) -> Result<String, SettingError> {
    let id = v.text.trim();
    if id.is_empty() || id.len() > 249 || id.chars().any(char::is_control) {
        return Err(v.error(
            "must be 1 to 249 printable characters, e.g. the pod or host name; leave it unset \
             for a dynamic member",
        ));
    }
    Ok(id.to_string())
}

pub(super) fn partitions(v: &Value) -> Result<Vec<i32>, SettingError> {
    let mut list = Vec::new();
    for part in v.text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.parse::<i32>() {
            Ok(p) if p >= 0 => list.push(p),
            _ => return Err(v.error("must be partition numbers like 0,1,2")),
        }
    }
    list.sort_unstable();
    list.dedup();
    if list.is_empty() {
        return Err(v.error("must name at least one partition, like 0,1"));
    }
    Ok(list)
}
