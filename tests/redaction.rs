//! The redaction table: every command that reads a MongoDB URI, run with URIs whose password
//! holds raw or percent-encoded reserved characters (`/`, `?`, `@`, `:`), each URI also wrong in
//! another way so the command fails (unreachable host, unknown option, bad database name,
//! credentials the server refuses, a DNS name that does not resolve, a port on `mongodb+srv`).
//! The password appears in no output, in no form (as written, decoded, encoded) and not even
//! in pieces. `produce` never reads the URI.

mod common {
    pub mod kafka_wire;
    pub mod process;
    pub mod services;
}

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::kafka_wire::ensure_topic;
use common::process::text;
use common::services::Sandbox;

/// Passwords as a generator makes them: distinctive 4-character pieces joined by reserved
/// characters, so a leaked piece is found as surely as the whole.
const RAW_PASSWORDS: [&str; 6] = [
    "Rk7q/Wx2m",
    "Hm9z?Ab3c",
    "Zt4k@Lp6g",
    "Qe5r:Vb8i",
    "Jd2s/Nf6?Gc1@Ty3:Pu0",
    "Ym4w@@Cx7v//Kb5n??",
];

/// How long `consume` runs before it is stopped: it retries an unreachable database for ever,
/// logging each attempt.
const CONSUME_RUN: Duration = Duration::from_secs(7);

/// The password's 4-character pieces between reserved characters.
fn pieces(password: &str) -> Vec<&str> {
    password
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The URIs for one password as written in them (raw or encoded), each wrong in another way.
fn uris(p: &str) -> Vec<String> {
    vec![
        format!("mongodb://app:{p}@127.0.0.1:1/admin"),
        format!("mongodb://app:{p}@127.0.0.1:27017/?badoption=1"),
        format!("mongodb://app:{p}@127.0.0.1:27017/ba$d"),
        format!("mongodb://app:{p}@127.0.0.1:27017/admin?authSource=admin"),
        format!("mongodb://app:{p}@127.0.0.1:1,127.0.0.1:2/?replicaSet=rs0&tls=maybe"),
        format!("mongodb+srv://app:{p}@metricsctl-test.invalid/db"),
        format!("mongodb+srv://app:{p}@metricsctl-test.invalid:27017/db"),
    ]
}

/// Runs one command with `uri` and debug logging; `consume` is stopped after [`CONSUME_RUN`].
/// Returns stdout and stderr together, and whether the command failed.
fn run(sb: &Sandbox, args: &[&str], uri: &str) -> (String, bool) {
    let mut c = sb.command(args);
    c.env("MONGODB_URI", uri)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn metricsctl");
    let limit = if args[0] == "consume" {
        CONSUME_RUN
    } else {
        Duration::from_secs(60)
    };
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = child.try_wait().expect("wait").is_none();
    if stopped {
        if args[0] == "consume" {
            common::process::terminate(&child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let failed = stopped || !out.status.success();
    (
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
        failed,
    )
}

#[test]
fn no_command_prints_a_uri_password_in_any_form() {
    let sb = Sandbox::new("redaction");
    // `status` reads the topic before the database.
    ensure_topic(&sb.brokers, &sb.topic);
    let commands: [&[&str]; 3] = [&["kpis", "show"], &["status"], &["consume"]];
    let mut cases = Vec::new();
    for password in RAW_PASSWORDS {
        for written in [password.to_string(), encode(password)] {
            for uri in uris(&written) {
                for args in commands {
                    cases.push((password, uri.clone(), args));
                }
            }
        }
    }
    // Most cases wait on a timeout: run them side by side, a few at a time.
    let total = cases.len();
    let queue = std::sync::Mutex::new(cases);
    let leaks = std::sync::Mutex::new(Vec::new());
    let outputs = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| loop {
                let Some((password, uri, args)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let (out, failed) = run(&sb, args, &uri);
                outputs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let decoded_forms = [password.to_string(), encode(password)];
                let leaked: Vec<&str> = decoded_forms
                    .iter()
                    .map(String::as_str)
                    .chain(pieces(password))
                    .filter(|f| out.contains(f))
                    .collect();
                let mut leaks = leaks.lock().unwrap();
                if !leaked.is_empty() {
                    leaks.push(format!("{args:?} {uri}: {leaked:?} in\n{out}"));
                }
                if !failed {
                    leaks.push(format!("{args:?} {uri}: did not fail\n{out}"));
                }
            });
        }
    });
    let leaks = leaks.into_inner().unwrap();
    assert_eq!(outputs.into_inner(), total);
    assert!(
        leaks.is_empty(),
        "{} of {total} runs:\n{}",
        leaks.len(),
        leaks.join("\n---\n")
    );
    eprintln!("redaction: {total} runs, no password in any output");
}

#[test]
fn a_raw_reserved_character_in_the_password_is_named_with_its_encoding() {
    let sb = Sandbox::new("redaction_hint");
    let mut c = sb.command(&["kpis", "show"]);
    c.env(
        "MONGODB_URI",
        "mongodb://app:Wq3e?Rt5y/Ui7o@127.0.0.1:27017/db",
    );
    let out = common::process::wait_with_limit(
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("must be percent-encoded: write ? as %3F, / as %2F"),
        "{err}"
    );
    assert!(
        !err.contains("Wq3e") && !err.contains("Rt5y") && !err.contains("Ui7o"),
        "{err}"
    );
}
