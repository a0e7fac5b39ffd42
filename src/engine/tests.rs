//! The engine's rules one at a time, against the in-memory fakes.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use time::macros::datetime;
use time::OffsetDateTime;

use super::fake::{FakeCommitter, FakeStore, World};
use super::*;

const T0: OffsetDateTime = datetime!(2026-11-22 18:00:00 UTC);
const TOPIC_ID: &str = "6f1d0a52-0000-4000-8000-000000000001";
const OTHER_TOPIC_ID: &str = "6f1d0a52-0000-4000-8000-000000000002";

fn payload(uuid: &str, server: &str, cpu: f64) -> Vec<u8> {
    serde_json::json!({
        "server_id": server,
        "timestamp_utc": "2026-11-22T18:00:00.000000+00:00",
        "metrics": {
            "cpu_percent": cpu, "memory_percent": 50.0, "disk_io_mbps": 1.0,
            "network_mbps": 2.0, "error_count": 0
        },
        "message_uuid": uuid
    })
    .to_string()
    .into_bytes()
}

fn rec(partition: i32, offset: i64, value: &[u8]) -> Record {
    Record {
        partition,
        offset,
        value: Some(value.to_vec()),
        oversized: None,
    }
}

fn config(topic_id: &str, partitions: &[i32], window: usize) -> EngineConfig {
    EngineConfig {
        log: LogId {
            topic: "metrics".into(),
            topic_id: topic_id.into(),
        },
        group: "kpi".into(),
        partitions: partitions.to_vec(),
        window_size: NonZeroUsize::new(window).unwrap(),
        servers_listed: crate::window::MAX_LISTED,
        limits: Limits::default(),
        publication: Publication::Direct,
    }
}

fn world() -> (FakeStore, FakeCommitter) {
    World::new(1).shared()
}

fn resume(c: EngineConfig, store: &mut FakeStore, committer: &mut FakeCommitter) -> Engine {
    Engine::resume(c, &HashMap::new(), store, committer).unwrap()
}

/// Steps through all of `records`, returning the summed counts.
fn run(
    e: &mut Engine,
    records: &[Record],
    store: &mut FakeStore,
    committer: &mut FakeCommitter,
) -> Counts {
    let mut total = Counts::default();
    let mut rest = records;
    while !rest.is_empty() {
        let r = e.step(rest, T0, store, committer).unwrap();
        total.add(&r.counts);
        rest = &rest[r.consumed..];
    }
    total
}

#[test]
fn names_carry_the_topic_id() {
    let c = config(TOPIC_ID, &[2, 0, 1, 0], 3);
    let (mut s, mut k) = world();
    let mut e = resume(c, &mut s, &mut k);
    assert_eq!(e.stream(), format!("metrics/{TOPIC_ID}/kpi/0,1,2"));
    assert_eq!(
        window_id(e.stream(), 4),
        format!("metrics/{TOPIC_ID}/kpi/0,1,2#4")
    );
    e.step(
        &[Record {
            partition: 1,
            offset: 9,
            value: None,
            oversized: None,
        }],
        T0,
        &mut s,
        &mut k,
    )
    .unwrap();
    let w = s.world();
    assert_eq!(
        w.dead.keys().collect::<Vec<_>>(),
        [&format!("metrics/{TOPIC_ID}/1/9")]
    );
}

#[test]
fn a_reread_is_a_replay_and_the_same_event_elsewhere_is_a_duplicate() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 10), &mut s, &mut k);
    let a = payload("u-1", "web01", 10.0);
    let first = run(&mut e, &[rec(0, 0, &a)], &mut s, &mut k);
    assert_eq!((first.stored, first.replayed), (1, 0));

    // No window closed, nothing committed: a restart reads offset 0 again, then the same
    // event produced a second time at offset 1.
    drop(e);
    let mut e = resume(config(TOPIC_ID, &[0], 10), &mut s, &mut k);
    assert_eq!(e.positions()[&0], 0);
    let again = run(&mut e, &[rec(0, 0, &a), rec(0, 1, &a)], &mut s, &mut k);
    assert_eq!(
        (again.stored, again.replayed, again.dead_lettered),
        (0, 1, 1)
    );
    // The replay is counted in the open window; the duplicate is not.
    assert_eq!(e.pending(), 1);

    let w = s.world();
    assert_eq!(w.raw.len(), 1);
    let d = &w.dead[&format!("metrics/{TOPIC_ID}/0/1")];
    assert_eq!(d.code, "duplicate_message_uuid");
    let of = d.duplicate_of.as_ref().unwrap();
    assert_eq!(
        (of.topic_id.as_str(), of.partition, of.offset),
        (TOPIC_ID, 0, 0)
    );
    assert_eq!(d.payload.as_deref(), Some(a.as_slice()));
}

#[test]
fn the_topic_id_tells_two_logs_at_the_same_position_apart() {
    let (mut s, mut k) = world();
    let a = payload("u-1", "web01", 10.0);
    let mut old = resume(config(TOPIC_ID, &[0], 10), &mut s, &mut k);
    run(&mut old, &[rec(0, 0, &a)], &mut s, &mut k);

    // The topic was deleted and recreated: a new log under the same name, offsets from 0
    // again. The same message_uuid at the same partition and offset is not a replay.
    let mut new = resume(config(OTHER_TOPIC_ID, &[0], 10), &mut s, &mut k);
    assert_ne!(new.stream(), old.stream());
    let c = run(&mut new, &[rec(0, 0, &a)], &mut s, &mut k);
    assert_eq!((c.replayed, c.dead_lettered), (0, 1));
    assert_eq!(new.pending(), 0);

    let w = s.world();
    let d = &w.dead[&format!("metrics/{OTHER_TOPIC_ID}/0/0")];
    assert_eq!(d.code, "duplicate_message_uuid");
    assert_eq!(d.duplicate_of.as_ref().unwrap().topic_id, TOPIC_ID);
    assert_eq!(w.raw["u-1"].position.topic_id, TOPIC_ID);
}

#[test]
fn a_database_refusal_is_dead_lettered() {
    let (mut s, mut k) = world();
    s.world().refuse_server = Some("bad".into());
    let mut e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    let c = run(
        &mut e,
        &[rec(0, 0, &payload("u-1", "bad", 1.0))],
        &mut s,
        &mut k,
    );
    assert_eq!((c.stored, c.dead_lettered, c.windows), (0, 1, 0));
    let w = s.world();
    let d = &w.dead[&format!("metrics/{TOPIC_ID}/0/0")];
    assert_eq!(d.code, "rejected_by_database");
    assert!(d.reason.contains("code 121"), "{}", d.reason);
}

#[test]
fn every_kind_of_bad_record_gets_its_code() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 5), &mut s, &mut k);
    let records = [
        Record {
            partition: 0,
            offset: 0,
            value: None,
            oversized: None,
        },
        rec(0, 1, &[0xff, 0xfe]),
        rec(0, 2, b"{not json"),
        rec(0, 3, br#"{"server_id":"a"}"#),
    ];
    let c = run(&mut e, &records, &mut s, &mut k);
    assert_eq!((c.messages, c.dead_lettered), (4, 4));
    let codes: Vec<&str> = s.world().dead.values().map(|d| d.code).collect();
    assert_eq!(
        codes,
        ["no_value", "not_utf8", "invalid_json", "bad_timestamp"]
    );
    assert_eq!(s.world().dead.values().next().unwrap().payload, None);
}

#[test]
fn steps_are_bounded_by_count_and_bytes_but_take_at_least_one_record() {
    let limits = Limits::default();
    let small: Vec<Record> = (0..2_500).map(|i| rec(0, i, b"x")).collect();
    assert_eq!(step_len(&small, &limits), MAX_STEP_MESSAGES);
    assert_eq!(step_len(&small[..10], &limits), 10);
    assert_eq!(step_len(&[], &limits), 0);

    let mib = vec![b'x'; 1024 * 1024];
    let big: Vec<Record> = (0..10).map(|i| rec(0, i, &mib)).collect();
    assert_eq!(step_len(&big, &limits), 4, "4 MiB of payload per step");

    let huge = vec![rec(0, 0, &vec![b'x'; MAX_STEP_BYTES + 1]), rec(0, 1, b"x")];
    assert_eq!(
        step_len(&huge, &limits),
        1,
        "an oversized record is a step alone"
    );
    assert_eq!(step_len(&huge[1..], &limits), 1);
    let after = vec![rec(0, 0, b"x"), rec(0, 1, &vec![b'x'; MAX_STEP_BYTES])];
    assert_eq!(
        step_len(&after, &limits),
        1,
        "the large one waits for the next step"
    );

    // The engine takes one step at a time and says how far it got.
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 10), &mut s, &mut k);
    let r = e.step(&small, T0, &mut s, &mut k).unwrap();
    assert_eq!(r.consumed, MAX_STEP_MESSAGES);
    assert_eq!(e.positions()[&0], MAX_STEP_MESSAGES as i64);
}

/// A value the Kafka side could not keep whole arrives as its head with its length and digest
/// as far as read: dead-lettered with those, and the records around it are stored.
#[test]
fn a_value_read_only_in_part_is_dead_lettered_with_what_was_read() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    let head = vec![0u8; DEAD_LETTER_HEAD_BYTES];
    let cut = |offset, complete| Record {
        partition: 0,
        offset,
        value: Some(head.clone()),
        oversized: Some(Oversized {
            len: 900_000_000,
            sha256: "ab".repeat(32),
            complete,
        }),
    };
    let records = [
        rec(0, 0, &payload("u-0", "web01", 1.0)),
        cut(1, true),
        cut(2, false),
        rec(0, 3, &payload("u-3", "web01", 2.0)),
    ];
    let c = run(&mut e, &records, &mut s, &mut k);
    assert_eq!((c.dead_lettered, c.stored), (2, 2));
    let w = s.world();
    for (offset, size) in [
        (1, "payload of 900000000 bytes"),
        (2, "more than 900000000 bytes"),
    ] {
        let d = &w.dead[&format!("metrics/{TOPIC_ID}/0/{offset}")];
        assert_eq!(d.code, "payload_too_large");
        assert!(d.reason.contains(size), "{}", d.reason);
        assert_eq!(d.payload.as_deref(), Some(&head[..]));
        assert_eq!(d.truncated, Some((900_000_000, "ab".repeat(32))));
    }
}

#[test]
fn an_oversized_payload_keeps_its_head_length_and_digest() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    // Valid JSON, but too large to store raw: the size rule comes first.
    let mut big = payload("u-big", "web01", 1.0);
    big.pop();
    big.extend_from_slice(br#","pad":""#);
    big.resize(MAX_PAYLOAD_BYTES + 1 - 2, b'a');
    big.extend_from_slice(br#""}"#);
    assert_eq!(big.len(), MAX_PAYLOAD_BYTES + 1);
    let exact = {
        let mut p = big.clone();
        p.truncate(MAX_PAYLOAD_BYTES - 2);
        p.extend_from_slice(br#""}"#);
        p
    };
    let c = run(
        &mut e,
        &[rec(0, 0, &big), rec(0, 1, &exact)],
        &mut s,
        &mut k,
    );
    assert_eq!((c.dead_lettered, c.stored, c.windows), (1, 1, 1));

    let w = s.world();
    let d = &w.dead[&format!("metrics/{TOPIC_ID}/0/0")];
    assert_eq!(d.code, "payload_too_large");
    assert_eq!(d.payload.as_deref(), Some(&big[..DEAD_LETTER_HEAD_BYTES]));
    let (len, sha) = d.truncated.clone().unwrap();
    assert_eq!(len, MAX_PAYLOAD_BYTES + 1);
    assert_eq!(sha, sha256_hex(&big));
    assert!(w.raw.contains_key("u-big"), "the 8 MiB one is stored raw");
}

#[test]
fn digests_are_sha256_in_lowercase_hex() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_kept_head_does_not_cut_a_character_in_two() {
    let text = "é".repeat(10); // two bytes each
    assert_eq!(head_len(text.as_bytes(), 5), 4);
    assert_eq!(head_len(text.as_bytes(), 6), 6);
    assert_eq!(head_len(&[0xff; 10], 5), 5, "binary is cut where asked");
    assert_eq!(head_len(b"abc", 64), 3);
}

#[test]
fn windows_are_stored_with_next_offsets_and_committed_after() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0, 1], 2), &mut s, &mut k);
    let records = [
        rec(0, 0, &payload("a", "web01", 95.0)),
        rec(1, 0, b"junk"),
        rec(1, 1, &payload("b", "web02", 10.0)),
        // Read after the window closed: not covered by it.
        rec(0, 1, b"junk"),
        rec(1, 2, &payload("c", "web01", 10.0)),
    ];
    let r = e.step(&records, T0, &mut s, &mut k).unwrap();
    assert_eq!(r.windows.len(), 1);
    let w = &r.windows[0];
    assert_eq!((w.seq, w.new, w.window.message_count), (0, true, 2));
    assert_eq!(w.next_offsets, [(0, 1), (1, 2)]);
    assert_eq!(r.committed.as_deref(), Some(&[(0, 1), (1, 2)][..]));
    assert_eq!(
        e.positions().iter().collect::<Vec<_>>(),
        [(&0, &2), (&1, &3)]
    );
    assert_eq!((e.pending(), e.next_seq()), (1, 1));
    assert_eq!(s.world().committed, HashMap::from([(0, 1), (1, 2)]));

    // A restart resumes at the window's boundary, not at the positions reached.
    let e = resume(config(TOPIC_ID, &[1, 0], 2), &mut s, &mut k);
    assert_eq!(
        e.positions().iter().collect::<Vec<_>>(),
        [(&0, &1), (&1, &2)]
    );
    assert_eq!(e.next_seq(), 1);
}

#[test]
fn resume_takes_the_later_of_commit_and_window_else_the_log_start() {
    let (mut s, mut k) = world();
    k.0.borrow_mut().committed = HashMap::from([(0, 7), (1, 3)]);
    let c = config(TOPIC_ID, &[0, 1, 2, 3], 2);
    let stream = stream_name(&c.log, &c.group, &c.partitions);
    {
        let mut w = s.world();
        let window = {
            let mut tw = crate::window::TumblingWindows::new(NonZeroUsize::new(1).unwrap());
            let v = crate::metric::validate(&payload("x", "a", 1.0)).unwrap();
            tw.push(
                crate::window::WindowMessage {
                    server_id: v.server_id,
                    timestamp: v.timestamp,
                    metrics: v.metrics,
                    partition: 0,
                    offset: 0,
                },
                T0,
            )
            .unwrap()
        };
        w.windows.insert(
            window_id(&stream, 4),
            fake::StoredWindow {
                stream: stream.clone(),
                seq: 4,
                topic_id: TOPIC_ID.into(),
                window,
                next_offsets: vec![(0, 5), (1, 9), (2, 1), (3, 2)],
            },
        );
    }
    let starts = HashMap::from([(2, 4), (3, 0)]);
    let e = Engine::resume(c, &starts, &mut s, &mut k).unwrap();
    // 0: commit 7 > window 5; 1: window 9 > commit 3; 2: window 1 deleted by retention,
    // the log starts at 4; 3: window 2.
    assert_eq!(
        e.positions()
            .iter()
            .map(|(p, o)| (*p, *o))
            .collect::<Vec<_>>(),
        [(0, 7), (1, 9), (2, 4), (3, 2)]
    );
    assert_eq!(e.next_seq(), 5);

    let (mut s, mut k) = world();
    let e = Engine::resume(
        config(TOPIC_ID, &[0, 1], 2),
        &HashMap::from([(1, 40)]),
        &mut s,
        &mut k,
    )
    .unwrap();
    assert_eq!(
        e.positions()
            .iter()
            .map(|(p, o)| (*p, *o))
            .collect::<Vec<_>>(),
        [(0, 0), (1, 40)]
    );
    assert_eq!(e.next_seq(), 0);
}

#[test]
fn a_failed_commit_loses_nothing() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    // Raw insert and window insert succeed, the commit is the crash (and may or may not
    // reach the broker).
    s.world().budget = Some(2);
    let r = e
        .step(&[rec(0, 0, &payload("a", "w", 1.0))], T0, &mut s, &mut k)
        .unwrap();
    assert!(r.commit_error.is_some());
    assert_eq!(r.committed, None);
    assert_eq!(e.positions()[&0], 1);
    s.world().budget = None;
    // The stored window says where to resume.
    let e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    assert_eq!(e.positions()[&0], 1);
}

#[test]
fn a_failed_step_advances_nothing_and_poisons_the_engine() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    s.world().budget = Some(1); // the raw insert succeeds, the window insert fails
    let records = [rec(0, 0, &payload("a", "w", 1.0))];
    let err = e.step(&records, T0, &mut s, &mut k).unwrap_err();
    assert!(matches!(err, EngineError::Sink(ref x) if x.operation == "window insert"));
    assert_eq!(e.positions()[&0], 0);
    assert!(e.is_poisoned());
    s.world().budget = None;
    assert_eq!(
        e.step(&records, T0, &mut s, &mut k),
        Err(EngineError::Poisoned)
    );

    // The crash may have stored the window or not; a resumed engine ends the same either way.
    let window_stored = !s.world().windows.is_empty();
    let mut e = resume(config(TOPIC_ID, &[0], 1), &mut s, &mut k);
    let r = e.step(&records, T0, &mut s, &mut k).unwrap();
    if window_stored {
        assert_eq!((r.counts.skipped, r.counts.windows), (1, 0));
    } else {
        assert_eq!((r.counts.replayed, r.counts.windows), (1, 1));
    }
    assert_eq!(e.positions()[&0], 1);
    let w = s.world();
    assert_eq!((w.raw.len(), w.windows.len()), (1, 1));
}

#[test]
fn records_already_consumed_or_of_other_partitions_are_skipped() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 10), &mut s, &mut k);
    run(
        &mut e,
        &[rec(0, 0, b"junk"), rec(0, 1, b"junk")],
        &mut s,
        &mut k,
    );
    let r = e
        .step(
            &[
                rec(0, 0, b"junk"),
                rec(0, 1, b"junk"),
                rec(7, 5, b"junk"),
                rec(0, 5, b"junk"),
                rec(0, 3, b"junk"),
            ],
            T0,
            &mut s,
            &mut k,
        )
        .unwrap();
    assert_eq!((r.counts.skipped, r.counts.messages), (4, 1));
    assert_eq!(e.positions()[&0], 6, "gaps are fine; going back is not");
}

#[test]
fn advance_to_only_moves_forward() {
    let (mut s, mut k) = world();
    let mut e = resume(config(TOPIC_ID, &[0], 10), &mut s, &mut k);
    assert!(e.advance_to(0, 50));
    assert!(!e.advance_to(0, 10));
    assert!(!e.advance_to(3, 10));
    assert_eq!(e.positions()[&0], 50);
}

#[test]
fn another_writer_on_the_same_stream_is_detected() {
    let (mut s, mut k) = world();
    let c = config(TOPIC_ID, &[0], 1);
    // Three engines resumed before any stored a window: each numbers its first window 0.
    let mut a = resume(c.clone(), &mut s, &mut k);
    let mut twin = resume(c.clone(), &mut s, &mut k);
    let mut b = resume(c, &mut s, &mut k);
    let one = payload("a", "w", 1.0);
    a.step(&[rec(0, 0, &one)], T0, &mut s, &mut k).unwrap();

    // The same window over the same offsets is accepted as already stored.
    let r = twin.step(&[rec(0, 0, &one)], T0, &mut s, &mut k).unwrap();
    assert_eq!(
        (r.windows.len(), r.windows[0].new, r.counts.windows),
        (1, false, 0)
    );

    // Window 0 over other offsets is not.
    let err = b
        .step(&[rec(0, 3, &payload("b", "w", 1.0))], T0, &mut s, &mut k)
        .unwrap_err();
    assert!(matches!(err, EngineError::Diverged { .. }), "{err}");
    assert!(b.is_poisoned());
}

fn staged(topic_id: &str, partitions: &[i32], window: usize, token: &str) -> EngineConfig {
    EngineConfig {
        publication: Publication::AfterCommit {
            token: token.into(),
        },
        ..config(topic_id, partitions, window)
    }
}

/// `n` valid records of partition 0 from `from`, uuids `u-{offset}`.
fn partition0(from: i64, n: i64) -> Vec<Record> {
    (from..from + n)
        .map(|o| rec(0, o, &payload(&format!("u-{o}"), "web01", o as f64)))
        .collect()
}

#[test]
fn a_staged_window_whose_commit_is_refused_is_never_published_and_its_messages_are_counted_once() {
    // Member a owns partition 0; its second window is staged while a rebalance hands the
    // partition to member b, so the coordinator refuses a's commit.
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    let r = a.step(&partition0(0, 2), T0, &mut s, &mut k).unwrap();
    assert_eq!(r.committed.as_deref(), Some(&[(0, 2)][..]));
    assert_eq!(
        s.world().windows.len(),
        1,
        "a's first window, committed, is published"
    );
    assert_eq!(
        s.world().staged.len(),
        1,
        "its staged copy is forgotten in a batch"
    );
    a.forget_staged(&mut s).unwrap();
    assert!(s.world().staged.is_empty(), "or when the engine is retired");

    s.world().refuse_commits = true;
    let r = a.step(&partition0(2, 2), T0, &mut s, &mut k).unwrap();
    assert!(r.commit_error.is_some() && r.windows.is_empty(), "{r:?}");
    assert_eq!(
        s.world().windows.len(),
        1,
        "a's refused window is not published"
    );
    assert_eq!(s.world().staged.len(), 1);

    // b resumes at the committed offset (a's first window) and counts offsets 2 and 3.
    s.world().refuse_commits = false;
    let mut b = resume(staged(TOPIC_ID, &[0], 2, "b"), &mut s, &mut k);
    assert_eq!(b.positions()[&0], 2);
    assert_eq!(b.next_seq(), 1);
    let r = b.step(&partition0(2, 2), T0, &mut s, &mut k).unwrap();
    assert_eq!(r.windows.len(), 1);
    // a, still running, goes on: nothing more of it is published either.
    s.world().refuse_commits = true;
    let _ = a.step(&partition0(4, 2), T0, &mut s, &mut k);
    let w = s.world();
    let ends: Vec<_> = w
        .stream_windows(&stream_name(&config(TOPIC_ID, &[0], 2).log, "kpi", &[0]))
        .iter()
        .map(|w| (w.seq, w.next_offsets.clone()))
        .collect();
    assert_eq!(ends, [(0, vec![(0, 2)]), (1, vec![(0, 4)])]);
    assert_eq!(w.window_replays, 0);
}

#[test]
fn a_window_committed_but_not_published_is_published_by_the_next_owner() {
    // a's commit goes through, then a dies before publishing (its insert fails).
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    run(&mut a, &partition0(0, 2), &mut s, &mut k);
    s.world().budget = Some(3); // raw insert, stage, commit; the window insert fails
    assert!(a.step(&partition0(2, 2), T0, &mut s, &mut k).is_err());
    assert_eq!(k.0.borrow().markers[&0], "a#1");
    // The failed insert may have stored it or not, as a process killed mid-write leaves it.
    s.world().windows.retain(|_, w| w.seq == 0);

    // b takes the partition over: it publishes a's window from the marker, then goes on.
    s.world().budget = None;
    let mut b = resume(staged(TOPIC_ID, &[0], 2, "b"), &mut s, &mut k);
    assert_eq!(s.world().windows.len(), 2);
    assert_eq!((b.positions()[&0], b.next_seq()), (4, 2));
    run(&mut b, &partition0(4, 2), &mut s, &mut k);
    let w = s.world();
    let seqs: Vec<i64> = w.windows.values().map(|w| w.seq).collect();
    assert_eq!(seqs.len(), 3);
    assert_eq!(w.raw.len(), 6);
}

#[test]
fn markers_name_a_token_and_a_window_number() {
    assert_eq!(staged_marker("0a1b", 17), "0a1b#17");
    assert_eq!(parse_marker("0a1b#17"), Some(("0a1b", 17)));
    assert_eq!(parse_marker("0a1b#-1"), Some(("0a1b", -1)));
    for bad in ["", "0a1b", "#3", "0a1b#", "0a1b#-2", "0a1b#x"] {
        assert_eq!(parse_marker(bad), None, "{bad:?}");
    }
}

#[test]
fn a_partition_whose_commit_expired_resumes_after_the_groups_furthest_window() {
    // Windows published behind commits; then Kafka forgets the group's offsets (retention of
    // an idle group's offsets) and the partitions come back under another partition set.
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    run(&mut a, &partition0(0, 4), &mut s, &mut k);
    assert_eq!(s.world().windows.len(), 2);
    k.0.borrow_mut().committed.clear();
    k.0.borrow_mut().markers.clear();
    let b = resume(staged(TOPIC_ID, &[0, 1], 2, "b"), &mut s, &mut k);
    assert_eq!(
        b.positions()[&0],
        4,
        "not from the log start: those are counted"
    );
    assert_eq!(b.positions()[&1], 0);
}

#[test]
fn a_direct_window_past_a_lost_commit_counts_for_another_partition_set() {
    // Stored directly over partition 0, its commit lost; then partitions 0 and 1 together
    // (another stream): partition 0 resumes after that window, not at the commit.
    let (mut s, mut k) = world();
    let mut a = resume(config(TOPIC_ID, &[0], 2), &mut s, &mut k);
    s.world().budget = Some(2); // raw insert, window insert; the commit fails
    let _ = a.step(&partition0(0, 2), T0, &mut s, &mut k);
    s.world().budget = None;
    assert_eq!(s.world().windows.len(), 1);
    k.0.borrow_mut().committed.clear();
    let b = resume(config(TOPIC_ID, &[0, 1], 2), &mut s, &mut k);
    assert_eq!(b.positions()[&0], 2);
}

/// `n` valid records of partition `p` from `from`, uuids `{tag}-{p}-{offset}`.
fn part(p: i32, from: i64, n: i64, tag: &str) -> Vec<Record> {
    (from..from + n)
        .map(|o| rec(p, o, &payload(&format!("{tag}-{p}-{o}"), "web01", o as f64)))
        .collect()
}

/// How many stored windows count offset `o` of partition `p`.
fn windows_counting(s: &FakeStore, p: i32, o: i64) -> usize {
    s.world()
        .windows
        .values()
        .filter(|w| {
            w.window
                .partitions
                .iter()
                .any(|sp| sp.partition == p && sp.first_offset <= o && o <= sp.last_offset)
        })
        .count()
}

#[test]
fn a_window_stored_directly_past_its_commit_is_not_counted_again_by_a_staging_engine() {
    // A consumer that stores directly (the legacy unstaged format) stored window 1 of
    // partition 0 and lost its commit; a staging member then gets partitions 0 and 1.
    let (mut s, mut k) = world();
    let mut old = resume(config(TOPIC_ID, &[0], 2), &mut s, &mut k);
    run(&mut old, &part(0, 0, 2, "u"), &mut s, &mut k);
    s.world().refuse_commits = true;
    let _ = old.step(&part(0, 2, 2, "u"), T0, &mut s, &mut k);
    s.world().refuse_commits = false;
    assert_eq!(
        k.0.borrow().committed[&0],
        2,
        "the commit is behind the window"
    );
    let mut new = resume(staged(TOPIC_ID, &[0, 1], 2, "n"), &mut s, &mut k);
    assert_eq!(new.positions()[&0], 4);
    run(&mut new, &part(0, 4, 2, "u"), &mut s, &mut k);
    assert_eq!(windows_counting(&s, 0, 2), 1);
}

#[test]
fn a_marked_commit_below_a_window_after_a_truncation_is_where_the_partition_resumes() {
    // Partitions 0 and 1 counted up to 10 on partition 0; the log is then truncated to 6,
    // and a member of partition 0 alone rewinds and counts the new records 6 and 7.
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0, 1], 2, "a"), &mut s, &mut k);
    run(&mut a, &part(0, 0, 10, "u"), &mut s, &mut k);
    drop(a);
    let mut b = resume(staged(TOPIC_ID, &[0], 2, "b"), &mut s, &mut k);
    assert!(b.rewind_to(0, 6));
    run(&mut b, &part(0, 6, 2, "new"), &mut s, &mut k);
    drop(b);
    // The commit says 8, the last window of {0,1} says 10: 8 and 9 are new records.
    let c = resume(staged(TOPIC_ID, &[0, 1], 2, "c"), &mut s, &mut k);
    assert_eq!(c.positions()[&0], 8);
}

#[test]
fn a_rewound_position_is_committed_at_once() {
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    run(&mut a, &part(0, 0, 10, "u"), &mut s, &mut k);
    drop(a);
    let mut b = resume(staged(TOPIC_ID, &[0], 2, "b"), &mut s, &mut k);
    assert!(b.rewind_to(0, 6));
    b.commit_positions(&mut k).unwrap();
    // b stops before its next window: a restart reads the truncated log from 6.
    drop(b);
    let c = resume(staged(TOPIC_ID, &[0], 2, "c"), &mut s, &mut k);
    assert_eq!(c.positions()[&0], 6);
}

#[test]
fn windows_held_while_commits_fail_are_published_once_a_commit_goes_through() {
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    s.world().refuse_commits = true;
    run(&mut a, &part(0, 0, 6, "u"), &mut s, &mut k);
    assert_eq!((a.unpublished(), s.world().windows.len()), (3, 0));
    let r = a.publish_pending(&mut s, &mut k, true).unwrap();
    assert!(r.commit_error.is_some() && r.windows.is_empty());
    s.world().refuse_commits = false;
    let r = a.publish_pending(&mut s, &mut k, true).unwrap();
    assert_eq!(r.committed.as_deref(), Some(&[(0, 6)][..]));
    assert_eq!((r.windows.len(), a.unpublished()), (3, 0));
    assert_eq!(s.world().windows.len(), 3);
    a.forget_staged(&mut s).unwrap();
    assert!(s.world().staged.is_empty());
    // Nothing waits: nothing is committed.
    let r = a.publish_pending(&mut s, &mut k, true).unwrap();
    assert!(r.committed.is_none() && r.commit_error.is_none());
}

#[test]
fn the_next_owner_forgets_the_staged_copies_it_published() {
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    s.world().budget = Some(3); // raw insert, stage, commit; the window insert fails
    assert!(a.step(&part(0, 0, 2, "u"), T0, &mut s, &mut k).is_err());
    s.world().budget = None;
    s.world().windows.clear();
    assert_eq!(s.world().staged.len(), 1);
    let _b = resume(staged(TOPIC_ID, &[0], 2, "b"), &mut s, &mut k);
    assert_eq!(s.world().windows.len(), 1);
    assert!(s.world().staged.is_empty());
}

#[test]
fn staged_copies_are_forgotten_in_batches() {
    let (mut s, mut k) = world();
    let mut a = resume(staged(TOPIC_ID, &[0], 1, "a"), &mut s, &mut k);
    let records = |from: i64, n: i64| -> Vec<Record> {
        (from..from + n)
            .map(|o| rec(0, o, &payload(&format!("u-{o}"), "web01", 50.0)))
            .collect()
    };
    let n = FORGET_STAGED_EVERY as i64;
    run(&mut a, &records(0, n - 1), &mut s, &mut k);
    assert_eq!(s.world().staged.len(), FORGET_STAGED_EVERY - 1);
    run(&mut a, &records(n - 1, 1), &mut s, &mut k);
    assert!(s.world().staged.is_empty());
    assert_eq!(s.world().windows.len(), FORGET_STAGED_EVERY);
}

#[test]
fn steps_store_on_while_a_commit_is_in_flight_and_publish_once_it_went_through() {
    let (mut s, mut k) = world();
    // The coordinator answers a commit on the fifth poll: a step polls twice (before and after
    // it starts one), so the commit window 0's step starts is answered two steps later.
    s.world().commit_latency = 4;
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    let r = a.step(&part(0, 0, 2, "u"), T0, &mut s, &mut k).unwrap();
    assert!(r.windows.is_empty() && r.committed.is_none());
    assert!(a.commit_in_flight());
    // The next step stores and stages while the commit of window 0 waits.
    let r = a.step(&part(0, 2, 2, "u"), T0, &mut s, &mut k).unwrap();
    assert_eq!((r.counts.stored, r.windows.len()), (2, 0));
    {
        let w = s.world();
        assert_eq!((w.raw.len(), w.staged.len()), (4, 2));
        assert!(w.windows.is_empty() && w.committed.is_empty());
    }
    // Answered: window 0 alone is published (window 1's commit starts only now).
    let r = a.step(&part(0, 4, 1, "u"), T0, &mut s, &mut k).unwrap();
    assert_eq!(r.committed.as_deref(), Some(&[(0, 2)][..]));
    assert_eq!(r.windows.iter().map(|w| w.seq).collect::<Vec<_>>(), [0]);
    assert_eq!((s.world().windows.len(), a.unpublished()), (1, 1));
    // Before the run ends, the commit in flight and what waits are waited for.
    let r = a.publish_pending(&mut s, &mut k, true).unwrap();
    assert_eq!(r.committed.as_deref(), Some(&[(0, 4)][..]));
    assert_eq!((s.world().windows.len(), a.unpublished()), (2, 0));
    assert!(!a.commit_in_flight());
}

#[test]
fn the_committed_offsets_are_read_after_the_commit_in_flight_ended() {
    let (mut s, mut k) = world();
    s.world().commit_latency = 5;
    let mut a = resume(staged(TOPIC_ID, &[0], 2, "a"), &mut s, &mut k);
    a.step(&part(0, 0, 2, "u"), T0, &mut s, &mut k).unwrap();
    assert!(a.commit_in_flight());
    drop(a);
    // The next engine reads the group's offsets only once the commit landed: it publishes
    // window 0 from the marker and resumes after it.
    let b = resume(staged(TOPIC_ID, &[0], 2, "b"), &mut s, &mut k);
    assert_eq!(b.positions()[&0], 2);
    assert_eq!(s.world().windows.len(), 1);
}
