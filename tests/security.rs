//! Secured clusters against the real broker's secured listeners (`make up` opens them; their
//! addresses, user and files are in `.local/services.env` as LOCAL_KAFKA_*): SASL_SSL with PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512, mutual TLS, and SASL sessions of 5 s that must be renewed.
//!
//! What we write is read back by an independent client configured the same way, and what it
//! writes we store, every message once: kcat (librdkafka) for PLAIN and mutual TLS; Kafka's own
//! console tools for SCRAM (the kcat of Debian links librdkafka 2.0.2, whose SCRAM client-final
//! message Kafka 4.x refuses). Each failure the operator must fix by hand (wrong password,
//! unknown user, a mechanism the broker does not enable, TLS spoken to a plaintext port and
//! the reverse, a certificate that does not verify or does not name the host, a client
//! certificate refused) ends in seconds with one line and exit code 1, the password nowhere.

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod process;
    pub mod services;
}

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::kafka_tools::{create_topic, kafka_tool};
use common::messages::{metric_line, uuid_of};
use common::process::{assert_ok, run_tool, text, wait_with_limit};
use common::services::{service_setting, Sandbox};

const LIMIT: Duration = Duration::from_secs(90);
/// How fast a failure that retrying cannot fix must be reported.
const FAIL_FAST: Duration = Duration::from_secs(10);

fn local(key: &str) -> String {
    let v = service_setting(key, "");
    assert!(
        !v.is_empty(),
        "{key} is not in .local/services.env: run `make up` (scripts/services.sh up) to open \
         the secured listeners"
    );
    v
}

/// One way to reach the secured listeners: metricsctl's settings and the same for the
/// independent clients.
struct Secured {
    brokers: String,
    /// metricsctl's variables.
    env: Vec<(&'static str, String)>,
    /// kcat's `-X` options.
    kcat: Vec<String>,
    /// A Java client's properties (console producer and consumer).
    java: String,
}

fn password() -> String {
    local("LOCAL_KAFKA_SASL_PASSWORD")
}

fn sasl_ssl_at(brokers: String, mechanism: &str) -> Secured {
    let (user, password, ca) = (
        local("LOCAL_KAFKA_SASL_USERNAME"),
        password(),
        local("LOCAL_KAFKA_SSL_CA_LOCATION"),
    );
    let module = if mechanism == "PLAIN" {
        "org.apache.kafka.common.security.plain.PlainLoginModule"
    } else {
        "org.apache.kafka.common.security.scram.ScramLoginModule"
    };
    Secured {
        brokers,
        env: vec![
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".into()),
            ("KAFKA_SASL_MECHANISM", mechanism.into()),
            ("KAFKA_SASL_USERNAME", user.clone()),
            ("KAFKA_SASL_PASSWORD", password.clone()),
            ("KAFKA_SSL_CA_LOCATION", ca.clone()),
        ],
        kcat: [
            "security.protocol=SASL_SSL".to_string(),
            format!("sasl.mechanisms={mechanism}"),
            format!("sasl.username={user}"),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={ca}"),
        ]
        .into_iter()
        .flat_map(|x| ["-X".to_string(), x])
        .collect(),
        java: format!(
            "security.protocol=SASL_SSL\nsasl.mechanism={mechanism}\n\
             sasl.jaas.config={module} required username=\"{user}\" password=\"{password}\";\n\
             ssl.truststore.type=PEM\nssl.truststore.location={ca}\n"
        ),
    }
}

fn sasl_ssl(mechanism: &str) -> Secured {
    sasl_ssl_at(local("LOCAL_KAFKA_SASL_SSL_BROKERS"), mechanism)
}

fn mutual_tls() -> Secured {
    let (ca, cert, key) = (
        local("LOCAL_KAFKA_SSL_CA_LOCATION"),
        local("LOCAL_KAFKA_SSL_CERTIFICATE_LOCATION"),
        local("LOCAL_KAFKA_SSL_KEY_LOCATION"),
    );
    Secured {
        brokers: local("LOCAL_KAFKA_SSL_BROKERS"),
        env: vec![
            ("KAFKA_SECURITY_PROTOCOL", "SSL".into()),
            ("KAFKA_SSL_CA_LOCATION", ca.clone()),
            ("KAFKA_SSL_CERTIFICATE_LOCATION", cert.clone()),
            ("KAFKA_SSL_KEY_LOCATION", key.clone()),
        ],
        kcat: [
            "security.protocol=SSL".to_string(),
            format!("ssl.ca.location={ca}"),
            format!("ssl.certificate.location={cert}"),
            format!("ssl.key.location={key}"),
        ]
        .into_iter()
        .flat_map(|x| ["-X".to_string(), x])
        .collect(),
        java: String::new(),
    }
}

/// metricsctl with the sandbox's names, reaching Kafka through `secured`.
fn command(sb: &Sandbox, secured: &Secured, args: &[&str]) -> Command {
    let mut c = sb.command(args);
    c.env("KAFKA_BROKERS", &secured.brokers);
    for (k, v) in &secured.env {
        c.env(k, v);
    }
    c
}

fn run(sb: &Sandbox, secured: &Secured, args: &[&str], limit: Duration) -> Output {
    let child = command(sb, secured, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metricsctl");
    wait_with_limit(child, limit)
}

/// The `message_uuid`s metricsctl's producer wrote (it logs nothing per message, so they are
/// counted from what the independent client reads).
fn uuids(payloads: &[String]) -> BTreeSet<String> {
    payloads.iter().filter_map(|p| uuid_of(p)).collect()
}

/// Every payload of the topic, read with kcat through `secured`.
fn kcat_read_secured(secured: &Secured, topic: &str) -> Vec<String> {
    let mut c = Command::new("kcat");
    c.args([
        "-b",
        &secured.brokers,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ])
    .args(&secured.kcat);
    let out = run_tool(c, None, LIMIT);
    assert_ok(&out, "kcat -C over the secured listener");
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn kcat_write_secured(secured: &Secured, topic: &str, lines: &[String]) {
    let mut c = Command::new("kcat");
    c.args(["-b", &secured.brokers, "-P", "-t", topic])
        .args(&secured.kcat);
    let input = lines.join("\n") + "\n";
    let out = run_tool(c, Some(input.as_bytes()), LIMIT);
    assert_ok(&out, "kcat -P over the secured listener");
}

/// Kafka's console consumer through `secured`: every payload of the topic.
fn java_read_secured(sb: &Sandbox, secured: &Secured, expected: usize) -> Vec<String> {
    let config = sb.dir.join("consumer.properties");
    std::fs::write(&config, &secured.java).expect("consumer config");
    let out = kafka_tool(&[
        "console-consumer",
        "--bootstrap-server",
        &secured.brokers,
        "--topic",
        &sb.topic,
        "--from-beginning",
        "--max-messages",
        &expected.to_string(),
        "--timeout-ms",
        "30000",
        "--consumer.config",
        config.to_str().expect("path"),
    ]);
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(String::from)
        .collect()
}

fn java_write_secured(sb: &Sandbox, secured: &Secured, lines: &[String]) {
    let config = sb.dir.join("producer.properties");
    std::fs::write(&config, &secured.java).expect("producer config");
    let mut c = Command::new("bash");
    c.arg(common::services::repo_root().join("scripts/kafka-tool.sh"))
        .args([
            "console-producer",
            "--bootstrap-server",
            &secured.brokers,
            "--topic",
            &sb.topic,
            "--producer.config",
            config.to_str().expect("path"),
        ]);
    let input = lines.join("\n") + "\n";
    let out = run_tool(c, Some(input.as_bytes()), Duration::from_secs(120));
    assert_ok(&out, "kafka console producer over the secured listener");
}

/// The password of the local SASL user (and any other secret given) appears nowhere.
fn assert_no_secret(out: &Output, secrets: &[&str]) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for s in secrets {
        assert!(!all.contains(s), "a secret appears in the output:\n{all}");
    }
}

/// Which independent client checks a listener.
#[derive(Clone, Copy)]
enum Independent {
    Kcat,
    KafkaTools,
}

/// Our producer writes, the independent client reads every message; the independent client
/// writes, our consumer stores every message once; `status` reads the group's offsets.
fn round_trip(label: &str, secured: &Secured, independent: Independent) {
    let sb = Sandbox::new(label);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);

    // metricsctl -> independent client.
    let out = run(
        &sb,
        secured,
        &["produce", "--count", "10", "--interval", "0"],
        LIMIT,
    );
    assert_ok(&out, "produce over the secured listener");
    assert_no_secret(&out, &[&password()]);
    let read = match independent {
        Independent::Kcat => kcat_read_secured(secured, &sb.topic),
        Independent::KafkaTools => java_read_secured(&sb, secured, 50),
    };
    assert_eq!(read.len(), 50, "10 reports of 5 servers: {read:?}");
    assert_eq!(uuids(&read).len(), 50, "every message once");

    // independent client -> metricsctl.
    let lines: Vec<String> = (0..40).map(|n| metric_line(&sb.name, n)).collect();
    match independent {
        Independent::Kcat => kcat_write_secured(secured, &sb.topic, &lines),
        Independent::KafkaTools => java_write_secured(&sb, secured, &lines),
    }
    let out = run(
        &sb,
        secured,
        &["consume", "--exit-when-idle", "3", "--window-size", "10"],
        LIMIT,
    );
    assert_ok(&out, "consume over the secured listener");
    assert_no_secret(&out, &[&password()]);
    let raw = sb.docs("raw", mongodb::bson::doc! {}, mongodb::bson::doc! {});
    assert_eq!(
        raw.len(),
        90,
        "50 of ours and 40 of the independent client, each once"
    );
    let stored: BTreeSet<String> = raw
        .iter()
        .filter_map(|d| d.get_str("message_uuid").ok().map(String::from))
        .collect();
    assert_eq!(stored.len(), 90, "no message stored twice");
    for n in 0..40 {
        assert!(
            stored.contains(&format!("{}-{n}", sb.name)),
            "message {n} missing"
        );
    }

    let out = run(&sb, secured, &["status", "--json"], LIMIT);
    assert_no_secret(&out, &[&password()]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    assert_eq!(report["total_lag"], 0, "{report}");
}

#[test]
fn sasl_ssl_plain_round_trip_with_kcat() {
    round_trip("secplain", &sasl_ssl("PLAIN"), Independent::Kcat);
}

#[test]
fn sasl_ssl_scram_sha_256_round_trip_with_kafkas_console_tools() {
    round_trip(
        "secscram256",
        &sasl_ssl("SCRAM-SHA-256"),
        Independent::KafkaTools,
    );
}

#[test]
fn sasl_ssl_scram_sha_512_round_trip_with_kafkas_console_tools() {
    round_trip(
        "secscram512",
        &sasl_ssl("SCRAM-SHA-512"),
        Independent::KafkaTools,
    );
}

#[test]
fn mutual_tls_round_trip_with_kcat() {
    round_trip("secmtls", &mutual_tls(), Independent::Kcat);
}

/// Runs `produce` (which connects first thing) expecting a failure that retrying cannot fix:
/// one line on stderr, exit code 1, within seconds, no secret anywhere; returns the line.
fn fails_fast(sb: &Sandbox, secured: &Secured, secrets: &[&str]) -> String {
    fails_fast_running(
        sb,
        secured,
        &["produce", "--count", "1", "--interval", "0"],
        secrets,
    )
}

/// [`fails_fast`] for any command.
fn fails_fast_running(sb: &Sandbox, secured: &Secured, args: &[&str], secrets: &[&str]) -> String {
    let started = Instant::now();
    let out = run(sb, secured, args, LIMIT);
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(took < FAIL_FAST, "took {took:?}: {}", text(&out.stderr));
    assert_no_secret(&out, secrets);
    let errors: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(String::from)
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("retrying"),
        "no retry: {}",
        text(&out.stderr)
    );
    errors[0].clone()
}

fn with(mut secured: Secured, key: &'static str, value: &str) -> Secured {
    secured.env.retain(|(k, _)| *k != key);
    secured.env.push((key, value.to_string()));
    secured
}

fn without(mut secured: Secured, key: &'static str) -> Secured {
    secured.env.retain(|(k, _)| *k != key);
    secured
}

#[test]
fn credentials_the_broker_refuses_stop_at_once_naming_the_mechanism() {
    let sb = Sandbox::new("secbadpass");
    let wrong = "Wrong-Pass-Of-The-Test-42";
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let line = fails_fast(
            &sb,
            &with(sasl_ssl(mechanism), "KAFKA_SASL_PASSWORD", wrong),
            &[wrong, &password()],
        );
        assert!(
            line.contains(&format!(
                "refused user \"metricsctl\" with SASL {mechanism}"
            )),
            "{line}"
        );
        let line = fails_fast(
            &sb,
            &with(sasl_ssl(mechanism), "KAFKA_SASL_USERNAME", "nobody-here"),
            &[&password()],
        );
        assert!(
            line.contains(&format!(
                "refused user \"nobody-here\" with SASL {mechanism}"
            )),
            "{line}"
        );
    }
    // The consumer and status stop the same way.
    for args in [&["consume"][..], &["status"]] {
        let line = fails_fast_running(
            &sb,
            &with(sasl_ssl("SCRAM-SHA-256"), "KAFKA_SASL_PASSWORD", wrong),
            args,
            &[wrong, &password()],
        );
        assert!(
            line.contains("refused user \"metricsctl\" with SASL SCRAM-SHA-256"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn a_mechanism_the_broker_does_not_enable_names_the_brokers_list() {
    let sb = Sandbox::new("secmech");
    // The short-session listener enables PLAIN and SCRAM-SHA-512 only.
    let secured = sasl_ssl_at(
        local("LOCAL_KAFKA_SASL_SSL_SHORT_SESSION_BROKERS"),
        "SCRAM-SHA-256",
    );
    let line = fails_fast(&sb, &secured, &[&password()]);
    assert!(
        line.contains(
            "does not enable SASL mechanism SCRAM-SHA-256; it enables: PLAIN, SCRAM-SHA-512"
        ),
        "{line}"
    );
}

#[test]
fn tls_and_plaintext_ports_spoken_to_the_wrong_way_are_named() {
    let sb = Sandbox::new("secports");
    // Plaintext to the SASL_SSL port.
    let plaintext_to_tls = Secured {
        brokers: local("LOCAL_KAFKA_SASL_SSL_BROKERS"),
        env: vec![],
        kcat: vec![],
        java: String::new(),
    };
    let line = fails_fast(&sb, &plaintext_to_tls, &[]);
    assert!(line.contains("is a TLS listener"), "{line}");
    // TLS to the plaintext port.
    let mut tls_to_plaintext = sasl_ssl("PLAIN");
    tls_to_plaintext.brokers = sb.brokers.clone();
    let line = fails_fast(&sb, &tls_to_plaintext, &[&password()]);
    assert!(line.contains("it is a plaintext listener"), "{line}");
}

#[test]
fn certificates_that_do_not_verify_or_do_not_name_the_host_are_refused() {
    let sb = Sandbox::new("seccerts");
    // Without the local CA, the built-in roots cannot verify the broker.
    let line = fails_fast(
        &sb,
        &without(sasl_ssl("PLAIN"), "KAFKA_SSL_CA_LOCATION"),
        &[&password()],
    );
    assert!(
        line.contains("does not verify against the built-in root CAs"),
        "{line}"
    );
    // Another CA.
    let other = other_ca(&sb);
    let line = fails_fast(
        &sb,
        &with(
            sasl_ssl("PLAIN"),
            "KAFKA_SSL_CA_LOCATION",
            other.ca.to_str().expect("path"),
        ),
        &[&password()],
    );
    assert!(line.contains("does not verify against the CA of"), "{line}");
    // The broker's certificate names 127.0.0.1, not localhost.
    let mut by_name = sasl_ssl("PLAIN");
    by_name.brokers = by_name.brokers.replace("127.0.0.1", "localhost");
    let line = fails_fast(&sb, &by_name, &[&password()]);
    assert!(line.contains("does not match the host name"), "{line}");
}

#[test]
fn a_client_certificate_missing_or_refused_is_named() {
    let sb = Sandbox::new("secclient");
    let no_cert = without(
        without(mutual_tls(), "KAFKA_SSL_CERTIFICATE_LOCATION"),
        "KAFKA_SSL_KEY_LOCATION",
    );
    let line = fails_fast(&sb, &no_cert, &[]);
    assert!(line.contains("requires a client certificate"), "{line}");
    let other = other_ca(&sb);
    let refused = with(
        with(
            mutual_tls(),
            "KAFKA_SSL_CERTIFICATE_LOCATION",
            other.cert.to_str().expect("path"),
        ),
        "KAFKA_SSL_KEY_LOCATION",
        other.key.to_str().expect("path"),
    );
    let line = fails_fast(&sb, &refused, &[]);
    assert!(line.contains("refused the client certificate"), "{line}");
}

#[test]
fn a_broker_merely_down_is_retried_not_reported() {
    let sb = Sandbox::new("secdown");
    let mut secured = sasl_ssl("SCRAM-SHA-512");
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    secured.brokers = format!("127.0.0.1:{port}");
    let mut child = command(&sb, &secured, &["produce", "--count", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(4));
    let still_running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    assert!(still_running, "gave up: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("retrying in"),
        "{}",
        text(&out.stderr)
    );
    assert_no_secret(&out, &[&password()]);
}

#[test]
fn settings_that_cannot_work_stop_at_start_with_exit_code_2() {
    let sb = Sandbox::new("secsettings");
    let secret = "Settings-Secret-77";
    let cases: Vec<(Secured, &str)> = vec![
        (
            with(mutual_tls(), "KAFKA_SASL_PASSWORD", secret),
            "KAFKA_SASL_PASSWORD (from environment): needs KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            without(mutual_tls(), "KAFKA_SSL_CERTIFICATE_LOCATION"),
            "a private key needs its certificate",
        ),
        (
            with(
                sasl_ssl("PLAIN"),
                "KAFKA_SSL_CA_LOCATION",
                "/nonexistent/ca.pem",
            ),
            "cannot read /nonexistent/ca.pem",
        ),
        (
            with(sasl_ssl("PLAIN"), "KAFKA_SASL_MECHANISM", "GSSAPI"),
            "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
    ];
    for (secured, expected) in cases {
        for command in ["produce", "consume", "status"] {
            let out = run(&sb, &secured, &[command], LIMIT);
            assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
            let stderr = text(&out.stderr);
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains(expected), "{command}: {stderr}");
            assert_no_secret(&out, &[secret, &password()]);
        }
    }
}

#[test]
fn sessions_of_five_seconds_are_renewed_without_errors_or_rebalances() {
    let sb = Sandbox::new("secreauth");
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "3"]);
    let consumer_side = sasl_ssl_at(
        local("LOCAL_KAFKA_SASL_SSL_SHORT_SESSION_BROKERS"),
        "SCRAM-SHA-512",
    );
    let producer_side = sasl_ssl_at(local("LOCAL_KAFKA_SASL_SSL_SHORT_SESSION_BROKERS"), "PLAIN");
    let consumer_log = sb.dir.join("consumer.log");
    let mut consumer = command(
        &sb,
        &consumer_side,
        &["consume", "--exit-when-idle", "6", "--window-size", "10"],
    )
    .env("RUST_LOG", "metricsctl=debug")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&consumer_log).expect("log"))
    .spawn()
    .expect("spawn consumer");
    // 16 reports a second apart: more than three session lifetimes.
    let out = command(
        &sb,
        &producer_side,
        &["produce", "--count", "16", "--interval", "1"],
    )
    .env("RUST_LOG", "metricsctl=debug")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map(|c| wait_with_limit(c, LIMIT))
    .expect("spawn producer");
    assert_ok(&out, "produce with 5 s sessions");
    let producer_log = text(&out.stderr);
    let deadline = Instant::now() + LIMIT;
    let code = loop {
        if let Some(status) = consumer.try_wait().expect("try_wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the consumer did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    let consumer_log = std::fs::read_to_string(&consumer_log).unwrap_or_default();
    assert_eq!(code, Some(0), "{consumer_log}");
    for (who, log) in [("producer", &producer_log), ("consumer", &consumer_log)] {
        let renewed = log.matches("re-authenticated to").count();
        eprintln!("{who}: {renewed} re-authentications");
        assert!(renewed >= 2, "{who} renewed {renewed} sessions:\n{log}");
        assert!(!log.contains(" WARN "), "{who} warned:\n{log}");
        assert!(!log.contains(" ERROR "), "{who} failed:\n{log}");
    }
    assert_eq!(
        consumer_log.matches(": joined as ").count(),
        1,
        "one join, no rebalance:\n{consumer_log}"
    );
    assert_eq!(sb.count("raw"), 80, "16 reports of 5 servers, each once");
}

/// A CA the brokers do not trust, with a client certificate it signed.
struct OtherCa {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn other_ca(sb: &Sandbox) -> OtherCa {
    let dir = sb.dir.join("other-ca");
    std::fs::create_dir_all(&dir).expect("dir");
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.current_dir(&dir).args(args);
        let out = run_tool(c, None, Duration::from_secs(30));
        assert_ok(&out, "openssl");
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ca.key",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        "2",
        "-subj",
        "/CN=untrusted test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "client.key",
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        "client.key",
        "-subj",
        "/CN=untrusted client",
        "-out",
        "client.csr",
    ]);
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        "client.ext",
        "-out",
        "client.pem",
    ]);
    OtherCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.pem"),
        key: dir.join("client.key"),
    }
}
