//! Outages on purpose: Kafka nodes and FerretDB of this checkout killed and started again, and
//! the care that takes on shared services: waiting until no other test run of this checkout
//! uses them, holding the lock `scripts/services.sh` takes while a service is down, and
//! bringing every service back when the test ends, pass or fail.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use mongodb::sync::Client;

use super::process::{assert_ok, poll, run_tool, signal_pid, text};
use super::services::{repo_root, service_setting};

/// Kafka nodes of the running mode (1 or 3).
pub fn kafka_nodes() -> u32 {
    service_setting("KAFKA_NODES", "1").parse().unwrap_or(1)
}

/// `scripts/services.sh ARGS...` for this checkout's services, which may run on moved ports:
/// the script takes `SERVICES_PORT_OFFSET` from the environment only, and a test run by hand
/// (not under `make`) has it in `.local/services.env` alone.
fn services_command(args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/services.sh")).args(args);
    c.env(
        "SERVICES_PORT_OFFSET",
        service_setting("SERVICES_PORT_OFFSET", "0"),
    );
    c
}

/// `scripts/services.sh ARGS...` to completion within 400 s.
pub fn services_sh(args: &[&str]) -> Output {
    run_tool(services_command(args), None, Duration::from_secs(400))
}

/// SIGKILLs Kafka node `n`; returns its pid.
pub fn kill_broker(n: u32) -> u32 {
    let out = services_sh(&["kill-broker", &n.to_string()]);
    assert_ok(&out, "services.sh kill-broker");
    text(&out.stdout).trim().parse().expect("a pid")
}

/// Starts Kafka node `n` again; returns once it answers.
pub fn start_broker(n: u32) {
    let out = services_sh(&["start-broker", &n.to_string()]);
    assert_ok(&out, "services.sh start-broker");
}
/// A process's parent pid, from /proc/PID/stat.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// True when `ancestor` is `pid` or one of its ancestors.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match parent_pid(pid) {
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// Other people's test runs against the shared services: test binaries (`target/*/deps/`),
/// `cargo test` and the benchmark driver (`bench/run.py`), except this process, its ancestors
/// and its own children. One line per process (pid and command). Only runs from this checkout
/// count (their working directory is in it): another checkout has services of its own
/// (`.local/`, its own ports), which stopping ours does not touch.
pub fn other_test_processes() -> Vec<String> {
    let me = std::process::id();
    let root = repo_root();
    let root = root.canonicalize().unwrap_or(root);
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(program) = args.first() else {
            continue;
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        // metricsctl processes of a test run descend from its test binary, found here; others
        // (a demo, a stray consumer) are no tests and ride out an outage like any consumer.
        let busy = (program.contains("target/") && program.contains("/deps/"))
            || (name == "cargo"
                && matches!(args.get(1).map(String::as_str), Some("test" | "nextest")))
            || args.iter().any(|a| a.ends_with("bench/run.py"));
        let here =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d.starts_with(&root));
        // Not a zombie, not this run's own parent chain or children.
        if !busy
            || !here
            || parent_pid(pid).is_none()
            || descends_from(me, pid)
            || descends_from(pid, me)
        {
            continue;
        }
        found.push(format!("{pid} {}", args.join(" ")));
    }
    found.sort();
    found
}

/// Waits until no one else has run tests for `settle` (a few seconds: `cargo test` starts its
/// test binaries one after the other), before a test stops a shared service. Panics after
/// `limit`, naming the processes, rather than pulling a service from under someone's test.
pub fn wait_for_no_other_tests(settle: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut quiet_since = Instant::now();
    let mut last_notice = Instant::now();
    loop {
        let others = other_test_processes();
        if !others.is_empty() {
            quiet_since = Instant::now();
            assert!(
                Instant::now() < deadline,
                "other tests still use the shared services after {limit:?}; not stopping a \
                 service under them:\n{}",
                others.join("\n")
            );
            if last_notice.elapsed() >= Duration::from_secs(30) {
                eprintln!(
                    "waiting for other test runs to end before stopping a service:\n  {}",
                    others.join("\n  ")
                );
                last_notice = Instant::now();
            }
        } else if quiet_since.elapsed() >= settle {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Brings every service back (`scripts/services.sh up`, which starts only what does not run)
/// when dropped, also when the test panicked: a test that stops a shared service holds one.
pub struct ServicesRestorer;

impl Drop for ServicesRestorer {
    fn drop(&mut self) {
        // No assertion here: a panic while unwinding would abort the whole test binary.
        let status = services_command(&["up"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("services.sh up after the test failed ({status:?}): run `make up`");
        }
    }
}

/// `scripts/services.sh up`: starts whatever does not run, returns once everything answers.
pub fn services_up() {
    let out = services_sh(&["up"]);
    assert_ok(&out, "services.sh up");
}

/// Holds `.local/services.lock`, the lock every state-changing `scripts/services.sh` command
/// takes, until dropped: while a test keeps a service down, another run's `services.sh up`
/// (`make test`, `make bench`) waits for it (up to 300 s) instead of starting the service
/// under the test. Released too when the test process dies (the holder reads its stdin).
pub struct ServicesLock {
    child: Child,
}

pub fn lock_services() -> ServicesLock {
    let lock = repo_root().join(".local/services.lock");
    let mut child = Command::new("flock")
        .args(["-w", "300"])
        .arg(&lock)
        .args(["-c", "echo locked; read _"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flock (util-linux)");
    let mut line = [0u8; 7];
    let got = child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut line)
        .is_ok();
    assert!(
        got && &line == b"locked\n",
        "could not take {} within 300 s",
        lock.display()
    );
    ServicesLock { child }
}

impl Drop for ServicesLock {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // `read` ends, the shell and flock exit: released
        let _ = self.child.wait();
    }
}

/// The pid files of the current mode's Kafka nodes.
fn kafka_pid_files() -> Vec<PathBuf> {
    let run = repo_root().join(".local/run");
    match kafka_nodes() {
        1 => vec![run.join("kafka.pid")],
        n => (1..=n)
            .map(|i| run.join(format!("kafka-{i}.pid")))
            .collect(),
    }
}

/// SIGKILLs every Kafka node of the current mode (Kafka is down) and waits until they are
/// gone; returns their pids. Works under [`lock_services`] (it does not go through
/// `services.sh`); `services_up` starts them again.
pub fn kill_all_kafka() -> Vec<u32> {
    let pids: Vec<u32> = kafka_pid_files()
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Kafka pid in {}", f.display()))
        })
        .collect();
    for pid in &pids {
        signal_pid(*pid, "KILL");
    }
    let gone = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        pids.iter().all(|p| parent_pid(*p).is_none()).then_some(())
    });
    assert!(gone.is_some(), "Kafka ({pids:?}) still runs after SIGKILL");
    pids
}

/// FerretDB's pid, from `.local/run/ferretdb.pid`.
pub fn ferretdb_pid() -> Option<u32> {
    std::fs::read_to_string(repo_root().join(".local/run/ferretdb.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// SIGKILLs FerretDB and waits until it is gone; returns its pid. `services_up` starts it again.
pub fn kill_ferretdb() -> u32 {
    let pid = ferretdb_pid().expect("FerretDB's pid file (.local/run/ferretdb.pid)");
    signal_pid(pid, "KILL");
    let gone = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (parent_pid(pid).is_none()).then_some(())
    });
    assert!(
        gone.is_some(),
        "FerretDB (pid {pid}) still runs after SIGKILL"
    );
    pid
}

/// True when the database answers a ping within about 2 s.
pub fn mongo_answers(uri: &str) -> bool {
    let Ok(mut options) = mongodb::options::ClientOptions::parse(uri).run() else {
        return false;
    };
    options.server_selection_timeout = Some(Duration::from_secs(2));
    options.connect_timeout = Some(Duration::from_secs(2));
    let Ok(client) = Client::with_options(options) else {
        return false;
    };
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .run()
        .is_ok()
}
