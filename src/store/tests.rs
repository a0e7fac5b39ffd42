use super::*;

#[test]
fn server_selection_failures_fit_on_one_short_line() {
    let driver = "No available servers. Topology: { Type: Unknown, Servers: [ { Address: \
        127.0.0.1:27999, Type: Unknown, Error: Kind: I/O error: Connection refused (os error \
        111), labels: {\"RetryableError\"}, source: None, server response: None } ] }";
    assert_eq!(
        server_selection(driver),
        "No available servers (127.0.0.1:27999: I/O error: Connection refused (os error 111))"
    );
    let two = "Server selection timeout: None of the available servers suitable. Topology: { \
        Type: ReplicaSetNoPrimary, Servers: [ { Address: a:27017, Type: RsSecondary }, { \
        Address: b:27017, Type: Unknown, Error: Kind: timed out, labels: {} } ] }";
    assert_eq!(
        server_selection(two),
        "Server selection timeout: None of the available servers suitable (a:27017: \
         RsSecondary; b:27017: timed out)"
    );
    assert_eq!(server_selection("no topology here"), "no topology here");
}

fn raw_of(payload: &str) -> Result<Document, String> {
    let message = crate::metric::validate(payload.as_bytes()).unwrap();
    let record = RawRecord {
        message: &message,
        position: Position {
            topic: "t",
            topic_id: "id",
            partition: 2,
            offset: 7,
        },
        received_at: time::macros::datetime!(2026-11-22 18:00:01 UTC),
    };
    raw_document(&record).map(|d| d.to_document().unwrap())
}

const METRIC: &str = r#""server_id":"web01","timestamp_utc":"2026-11-22T18:00:00+00:00","metrics":{"cpu_percent":1,"memory_percent":2.5,"disk_io_mbps":3,"network_mbps":4,"error_count":0},"message_uuid":"u""#;

#[test]
fn a_raw_document_is_the_message_as_received_then_our_fields() {
    let d = raw_of(&format!(r#"{{{METRIC},"extra":{{"list":[1,2.5,"x"]}}}}"#)).unwrap();
    let names: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "_id",
            "server_id",
            "timestamp_utc",
            "metrics",
            "message_uuid",
            "extra",
            "timestamp",
            "received_at",
            "kafka"
        ]
    );
    assert_eq!(
        d.get("metrics")
            .unwrap()
            .as_document()
            .unwrap()
            .get("cpu_percent"),
        Some(&Bson::Int32(1))
    );
    assert_eq!(d.get_document("kafka").unwrap().get_i64("offset"), Ok(7));
}

#[test]
fn message_fields_named_like_ours_are_replaced_in_place_never_doubled() {
    let d = raw_of(&format!(
        r#"{{"kafka":{{"topic":"spoofed"}},{METRIC},"_id":"mine","received_at":0}}"#
    ))
    .unwrap();
    let names: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "_id",
            "kafka",
            "server_id",
            "timestamp_utc",
            "metrics",
            "message_uuid",
            "received_at",
            "timestamp"
        ]
    );
    assert!(d.get_object_id("_id").is_ok());
    assert_eq!(d.get_document("kafka").unwrap().get_str("topic"), Ok("t"));
    assert!(d.get_datetime("received_at").is_ok());
}

#[test]
fn a_message_whose_bson_would_exceed_the_limit_is_refused_with_a_reason() {
    let zeros = format!("[{}0]", "0,".repeat(1_500_000));
    let why = raw_of(&format!(r#"{{{METRIC},"zeros":{zeros}}}"#)).unwrap_err();
    assert!(why.contains("16777216"), "{why}");
}

#[test]
fn dates_read_back_as_rfc3339() {
    let t = time::macros::datetime!(2026-11-22 18:00:00.123 UTC);
    assert_eq!(
        to_json(Bson::DateTime(date(t))),
        Value::String("2026-11-22T18:00:00.123Z".into())
    );
}
