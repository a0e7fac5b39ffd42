//! Hostile peers (issue 15) against the real broker: records written to hurt the consumer.
//!
//! Decompression bombs: a zstd record of a few KB on the wire whose value is hundreds of MB of
//! zeros, between two runs of ordinary messages on one partition. Each is dead-lettered as
//! `payload_too_large` with its head, its length and the SHA-256 of its value, the ordinary
//! messages are all stored, and the consumer's peak memory stays small whatever the bomb
//! expands to.

mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod process;
    pub mod rss;
    pub mod services;
}

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka_tools::create_topic;
use common::kcat::kcat_produce;
use common::messages::metric_line;
use common::process::{assert_ok, run_tool, text, wait_with_limit};
use common::rss::watch_peak_rss;
use common::services::Sandbox;
use mongodb::bson::doc;

/// The consumer's run, bombs included (a debug build hashes and expands a few GB).
const LIMIT: Duration = Duration::from_secs(600);
/// The peak resident memory a consumer may reach, in KiB.
const PEAK_RSS_MAX_KIB: u64 = 256 * 1024;
/// What a dead letter keeps of a payload too large to store.
const HEAD_BYTES: usize = 64 * 1024;
/// Ordinary messages before and after the bombs.
const ORDINARY: u64 = 30;

/// A file of `len` zeros, sparse: it costs no disk.
fn zeros_file(dir: &Path, len: u64) -> PathBuf {
    let path = dir.join(format!("zeros-{len}"));
    File::create(&path)
        .and_then(|f| f.set_len(len))
        .expect("zeros file");
    path
}

/// The SHA-256 of a file, as `sha256sum` prints it (lowercase hex).
fn sha256_of(path: &Path) -> String {
    let mut c = Command::new("sha256sum");
    c.arg(path);
    let out = run_tool(c, None, Duration::from_secs(120));
    assert_ok(&out, "sha256sum");
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// Writes the file's content as one zstd record to partition 0, as kcat does when told the
/// message may be that large (the broker checks the compressed size, a few KB).
fn kcat_zstd_record(brokers: &str, topic: &str, path: &Path) {
    let mut c = Command::new("kcat");
    c.args(["-b", brokers, "-P", "-t", topic, "-p", "0", "-z", "zstd"])
        .args(["-X", "message.max.bytes=1000000000"])
        .arg(path);
    let out = run_tool(c, None, Duration::from_secs(180));
    assert_ok(&out, "kcat -P (bomb)");
}

/// Ordinary messages `from..from + ORDINARY` to partition 0.
fn ordinary(sb: &Sandbox, from: u64) {
    let lines: Vec<String> = (from..from + ORDINARY)
        .map(|n| metric_line(&sb.name, n))
        .collect();
    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &lines);
}

/// 30 ordinary messages, one zstd record of zeros per entry of `bombs` (bytes), 30 more; then
/// one consumer to the end. Checks every bomb's dead letter and every message stored; returns
/// the consumer's peak RSS in KiB.
fn bombs_between_ordinary_messages(label: &str, bombs: &[u64]) -> u64 {
    let sb = Sandbox::new(label);
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "1"]);
    ordinary(&sb, 0);
    let mut digests = Vec::new();
    for &len in bombs {
        let path = zeros_file(&sb.dir, len);
        kcat_zstd_record(&sb.brokers, &sb.topic, &path);
        digests.push(sha256_of(&path));
        let _ = std::fs::remove_file(&path);
    }
    ordinary(&sb, ORDINARY);

    let started = Instant::now();
    let child = sb
        .command(&["consume", "--exit-when-idle", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metricsctl");
    let mut rss = watch_peak_rss(child.id());
    let out = wait_with_limit(child, LIMIT);
    let peak = rss.finish();
    assert_ok(&out, "consume");
    let took = started.elapsed();

    assert_eq!(sb.count("raw"), 2 * ORDINARY, "{}", text(&out.stderr));
    let dead = sb.docs("dlq", doc! {}, doc! { "kafka.offset": 1 });
    assert_eq!(dead.len(), bombs.len(), "{dead:?}");
    for (i, d) in dead.iter().enumerate() {
        let offset = ORDINARY as i64 + i as i64;
        assert_eq!(
            d.get_document("kafka").unwrap().get_i64("offset"),
            Ok(offset)
        );
        assert_eq!(d.get_str("reason_code"), Ok("payload_too_large"), "{d}");
        assert_eq!(d.get_bool("payload_truncated"), Ok(true));
        assert_eq!(d.get_i64("payload_length"), Ok(bombs[i] as i64), "{d}");
        assert_eq!(d.get_str("payload_sha256"), Ok(digests[i].as_str()));
        let head = match d.get("payload") {
            Some(mongodb::bson::Bson::String(s)) => s.len(),
            Some(mongodb::bson::Bson::Binary(b)) => b.bytes.len(),
            other => panic!("payload {other:?}"),
        };
        assert_eq!(head, HEAD_BYTES);
    }
    eprintln!(
        "hostile: {} bomb(s) of {:?} bytes: peak RSS {} MiB, consumed in {:.1} s",
        bombs.len(),
        bombs,
        peak / 1024,
        took.as_secs_f64()
    );
    assert!(
        peak < PEAK_RSS_MAX_KIB,
        "peak RSS {peak} KiB, over {PEAK_RSS_MAX_KIB} KiB"
    );
    peak
}

#[test]
fn a_zstd_bomb_of_600_mb_is_dead_lettered_in_bounded_memory() {
    bombs_between_ordinary_messages("bomb600", &[600_000_000]);
}

#[test]
fn five_zstd_bombs_of_900_mb_in_a_row_are_each_dead_lettered_in_bounded_memory() {
    bombs_between_ordinary_messages("bomb900x5", &[900_000_000; 5]);
}

/// A committed position past the log's end (as after an unclean leader election cut the log
/// below what was read): the consumer says so in an ERROR line with the number of offsets it
/// passes over, goes on at the end, and stores what is written after.
#[test]
fn a_position_past_the_log_end_is_an_error_line_with_the_count_not_a_silent_jump() {
    let sb = Sandbox::new("past_end");
    create_topic(&sb.brokers, &sb.topic, &["--partitions", "1"]);
    ordinary(&sb, 0);
    common::kafka_wire::commit_offsets(&sb.brokers, &sb.group, &sb.topic, &[(0, 1000)])
        .expect("commit offset 1000");
    let child = sb
        .command(&["consume", "--exit-when-idle", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metricsctl");
    // Written once the consumer has moved to the end: these are read.
    std::thread::sleep(Duration::from_secs(4));
    ordinary(&sb, ORDINARY);
    let out = wait_with_limit(child, Duration::from_secs(120));
    assert_ok(&out, "consume");
    let log = text(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("past the log end"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{log}"));
    assert!(
        line.contains("offset 1000 is past the log end 30") && line.contains("the 970 offsets"),
        "{line}"
    );
    assert_eq!(sb.count("raw"), ORDINARY, "{log}");
}
