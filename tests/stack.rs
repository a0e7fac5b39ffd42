//! The stack is real: a Kafka broker (4.4 by default, 3.9 when the services run it) and a
//! MongoDB-wire server answer on loopback, seen through the same crates the program uses
//! (`kafka-protocol`, `mongodb`) and through an independent client (kcat).

mod common {
    pub mod kafka_wire;
    pub mod kcat;
    pub mod process;
    pub mod services;
}

use std::collections::HashMap;
use std::process::Command;

use common::kafka_wire::{self, ensure_topic};
use common::kcat::kcat_read;
use common::process::text;
use common::services::Sandbox;
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

#[test]
fn kafka_round_trips_keyed_messages_and_keeps_group_offsets() {
    let sb = Sandbox::new("stack_kafka");
    let partitions = ensure_topic(&sb.brokers, &sb.topic).len();
    assert_eq!(
        partitions, 3,
        "the broker creates topics with num.partitions=3"
    );

    let keys = ["web01", "web02", "db01"];
    let acked = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let record = (Some(k.as_bytes()), Some(k.as_bytes()));
            kafka_wire::produce(&sb.brokers, &sb.topic, i as i32, &[record]).unwrap()
        })
        .filter(|offset| *offset == 0)
        .count();
    assert_eq!(
        acked, 3,
        "each partition acknowledged its first message at offset 0"
    );

    let mut read: HashMap<i32, (Vec<u8>, Vec<u8>)> = HashMap::new();
    for r in kcat_read(&sb.brokers, &sb.topic) {
        let bytes = |s: Option<String>| s.unwrap_or_default().into_bytes();
        read.insert(r.partition, (bytes(r.key), bytes(r.payload)));
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            read[&(i as i32)],
            (k.as_bytes().to_vec(), k.as_bytes().to_vec())
        );
    }

    // Offsets committed under the group come back from the group coordinator.
    let commits: Vec<(i32, i64)> = (0..3).map(|p| (p, 1)).collect();
    kafka_wire::commit_offsets(&sb.brokers, &sb.group, &sb.topic, &commits).unwrap();
    let got = kafka_wire::fetch_offsets(&sb.brokers, &sb.group, &sb.topic, &[0, 1, 2]).unwrap();
    assert_eq!(got, [(0, 1), (1, 1), (2, 1)]);
}

#[test]
fn mongodb_reports_duplicate_keys_from_an_unordered_insert_many() {
    let sb = Sandbox::new("stack_mongo");
    let coll = sb.db().collection::<Document>("raw");
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"message_uuid": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build(),
    )
    .run()
    .unwrap();
    coll.insert_one(doc! {"message_uuid": "a"}).run().unwrap();
    let err = coll
        .insert_many([
            doc! {"message_uuid": "b"},
            doc! {"message_uuid": "a"},
            doc! {"message_uuid": "c"},
        ])
        .ordered(false)
        .run()
        .unwrap_err();
    let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
        panic!("expected an InsertMany error, got {err}");
    };
    let errors: Vec<(usize, i32)> = failure
        .write_errors
        .iter()
        .flatten()
        .map(|e| (e.index, e.code))
        .collect();
    assert_eq!(errors, [(1, 11000)]);
    assert_eq!(sb.count("raw"), 3, "the unordered insert stored the others");
}

#[test]
fn kcat_sees_the_broker_too() {
    let sb = Sandbox::new("stack_kcat");
    ensure_topic(&sb.brokers, &sb.topic);
    let out = Command::new("kcat")
        .args(["-b", &sb.brokers, "-L", "-t", &sb.topic, "-m", "10"])
        .output()
        .expect("kcat is installed by `make up`");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(
        listing.contains(&format!("topic \"{}\" with 3 partitions", sb.topic)),
        "{listing}"
    );
}

/// `kpis show` against a server that refuses the credentials says to check them, not whether
/// the server runs, and never prints the password; a server that does not answer is asked
/// about.
#[test]
fn kpis_show_tells_refused_credentials_from_a_server_that_does_not_answer() {
    const PASSWORD: &str = "Stack-Wrong-Pw-5";
    let sb = Sandbox::new("stack_auth");
    // The refused URI is built from the services' hosts: a URI of another scheme is a broken
    // precondition (the services of `make up` are mongodb://), not a reason to pass unchecked.
    let rest = sb
        .mongodb_uri
        .strip_prefix("mongodb://")
        .unwrap_or_else(|| {
            panic!(
                "the services' MONGODB_URI is not a mongodb:// URI (scheme {:?}): this test needs \
             the services of `make up`",
                sb.mongodb_uri.split("://").next().unwrap_or("")
            )
        });
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // No mechanism named: the driver negotiates SCRAM, which FerretDB without authentication
    // lacks and MongoDB refuses for an unknown user; either way an authentication error.
    let refused = format!("mongodb://metricsctl-nobody:{PASSWORD}@{hosts}/");
    let out = sb
        .command(&["kpis", "show"])
        .env("MONGODB_URI", &refused)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("refused the credentials: check the user and password in MONGODB_URI"),
        "{err}"
    );
    assert!(!err.contains("is MongoDB running"), "{err}");
    assert!(
        !err.contains(PASSWORD) && err.contains("metricsctl-nobody:****@"),
        "{err}"
    );

    let out = sb
        .command(&["kpis", "show"])
        .env(
            "MONGODB_URI",
            "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1000",
        )
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is MongoDB running at mongodb://127.0.0.1:1/"),
        "{err}"
    );
}
