//! Reading `--metrics-addr`: plain HTTP GETs over a socket, and the Prometheus text parsed by
//! an independent parser, Python's `prometheus_client` (installed in .local/bench-venv by
//! `make test`, from bench/requirements.txt).
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::process::{run_tool, text};
use super::services::repo_root;

/// A port nobody listens on now (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// `GET path` on `addr`: the status and the body, `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// One sample: its name and labels, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a `/metrics` text, as `prometheus_client.parser` reads them (it fails the
/// test when the text is not valid Prometheus text format).
pub fn parse_metrics(exposition: &str) -> Vec<Sample> {
    let python = repo_root().join(".local/bench-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make test` builds it (bench/requirements.txt)",
        python.display()
    );
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut c = Command::new(python);
    c.args(["-c", script]);
    let out = run_tool(c, Some(exposition.as_bytes()), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "prometheus_client could not parse the exposition: {}\n{exposition}",
        text(&out.stderr)
    );
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    parsed
        .into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Scrapes and parses `/metrics` on `addr`.
pub fn scrape(addr: &str) -> Option<Vec<Sample>> {
    let (status, body) = http_get(addr, "/metrics")?;
    (status == 200).then(|| parse_metrics(&body))
}

/// The value of an unlabelled sample in `/metrics` on `addr`, read straight from the text
/// (for polling fast; the tests' checks go through [`parse_metrics`]).
pub fn quick_value(addr: &str, name: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics")?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
