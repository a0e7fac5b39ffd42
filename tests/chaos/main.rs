//! The fault suite of issue 7: the real binary against the real services, under crashes,
//! signals, outages and hostile input, and then the stores checked against the invariants with
//! independent clients (kcat reads the topic byte for byte, the mongodb crate reads the stores):
//!
//! - **I1** every valid `message_uuid` is in the raw collection exactly once, stored from a
//!   position where kcat reads that very message, its fields unchanged;
//! - **I2** the windows' `message_count`s add up to the valid messages in complete windows (all
//!   stored messages but those of the open window, which lie past every window's end), each
//!   window's KPIs recompute from the raw documents it spans, the windows' offset spans of a
//!   partition are disjoint, no window `_id` or stream sequence number twice;
//! - **I3** every invalid record is dead-lettered once, at its position, with its reason code
//!   and its payload (or its head, length and SHA-256 when too large); every copy of a stored
//!   `message_uuid` read from another position is a duplicate naming the stored copy; no record
//!   is both stored and dead-lettered, none is neither;
//! - **I4** every run ends with its documented exit code (0 after SIGTERM and at idle, 2 for a
//!   bad setting, 1 for a runtime failure), and no output of any run holds the database
//!   password (the consumer connects with user and password; FerretDB without authentication
//!   takes any with `authMechanism=PLAIN`).
//!
//! `make test` runs the fast versions (three SIGKILLs in a 3,000-message backlog, the hostile
//! mix with 3 MiB values, exit codes). The long scenarios are `#[ignore]`d `chaos_*` tests run
//! by `make chaos` (release build, one at a time); those that stop a shared service wait until
//! no one else runs tests, and bring every service back when they end, pass or fail. Each
//! scenario writes its figures to `target/chaos/<scenario>.txt` (RELIABILITY.md quotes a run).
//! `CHAOS_SEED=N` replays a run's random kill moments and message mix.
//!
//! One file a scenario (the four kill-and-restart scenarios share `kills.rs`, the two Kafka
//! outages `kafka_down.rs`), the helpers they share in `harness.rs` (a scenario's sandbox, runs
//! and figures), `runs.rs` (one run of the binary), `invariants.rs` (I1-I3 and the checker's
//! self-test) and `outage.rs` (services stopped and brought back). The tests are declared
//! here, so their names stay those RELIABILITY.md and `make chaos CHAOS_ARGS=...` cite.

#[path = "../common"]
mod common {
    pub mod kafka_tools;
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod oracle;
    pub mod outages;
    pub mod process;
    pub mod rss;
    pub mod services;
}

mod both_down;
mod database_down;
mod database_frozen;
mod exit_codes;
mod harness;
mod hostile;
mod invariants;
mod kafka_down;
mod kills;
mod outage;
mod poison;
mod runs;

use kills::Sig;

// ---------------------------------------------------------------------------------------------
// `make test`: the fast versions.

#[test]
fn three_sigkills_during_a_3000_message_backlog_lose_nothing_and_double_nothing() {
    kills::three_sigkills_during_a_quick_backlog();
}

#[test]
fn hostile_input_of_every_kind_with_3_mib_values_is_dead_lettered_once_with_its_reason() {
    hostile::quick_mix();
}

#[test]
fn exit_codes_are_the_documented_ones_and_the_password_never_shows() {
    exit_codes::documented_codes_and_no_password();
}

#[test]
fn chaos_poison_a_field_name_with_a_nul_byte_is_dead_lettered_and_the_stream_goes_on() {
    poison::field_name_with_a_nul_byte();
}

#[test]
fn chaos_poison_a_payload_under_8_mib_whose_document_exceeds_16_mib_is_dead_lettered() {
    poison::document_over_16_mib();
}

#[test]
fn chaos_poison_long_server_ids_do_not_make_a_kpi_document_the_database_refuses() {
    poison::long_server_ids();
}

// ---------------------------------------------------------------------------------------------
// `make chaos`.

#[test]
#[ignore = "long: make chaos"]
fn chaos_sigkill_15_times_during_a_20000_message_backlog() {
    kills::backlog_scenario("sigkill_backlog", Sig::Kill, 15, 2000, &[]);
}

#[test]
#[ignore = "long: make chaos"]
fn chaos_sigkill_15_times_while_streaming() {
    kills::streaming_scenario("sigkill_streaming", Sig::Kill, 15);
}

#[test]
#[ignore = "long: make chaos"]
fn chaos_sigterm_15_times_during_a_20000_message_backlog() {
    kills::backlog_scenario("sigterm_backlog", Sig::Term, 15, 2000, &[]);
}

#[test]
#[ignore = "long: make chaos"]
fn chaos_sigterm_15_times_while_streaming() {
    kills::streaming_scenario("sigterm_streaming", Sig::Term, 15);
}

#[test]
#[ignore = "stops Kafka: make chaos"]
fn chaos_kafka_down_20s_while_producing_and_consuming() {
    kafka_down::kafka_outage("kafka_down_20s", 20.0);
}

#[test]
#[ignore = "stops Kafka: make chaos"]
fn chaos_kafka_down_90s_while_producing_and_consuming() {
    kafka_down::kafka_outage("kafka_down_90s", 90.0);
}

#[test]
#[ignore = "stops the database: make chaos"]
fn chaos_database_down_15s_mid_batch() {
    database_down::killed_15s_mid_batch();
}

#[test]
#[ignore = "stops the database: make chaos"]
fn chaos_database_frozen_35s_two_members_leave_after_the_max_step_interval_and_rejoin() {
    database_frozen::frozen_35s_under_two_members();
}

#[test]
#[ignore = "long: make chaos"]
fn chaos_hostile_input_of_every_kind_with_3_and_20_mib_values() {
    hostile::long_mix_with_a_kill();
}

#[test]
#[ignore = "stops Kafka and the database: make chaos"]
fn chaos_both_services_down_at_start() {
    both_down::both_down_at_start();
}
