//! Settings resolved from flags, the environment and `.env`, and the errors they give.

use std::time::Duration;

use super::*;
use crate::cli::{ConsumeArgs, PlotArgs, ProduceArgs, ShowArgs, StatusArgs};
use crate::kafka::{SaslMechanism, Security, SecurityProtocol};
use crate::redact;
use crate::telemetry::HealthThreshold;
use crate::window::MAX_LISTED;

fn src(env: &[(&str, &str)], dotenv: &[(&str, &str)]) -> Sources {
    let m = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Sources::from_maps(m(env), m(dotenv))
}

#[test]
fn defaults_follow_the_exercise_names() {
    let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &src(&[], &[])).unwrap();
    assert_eq!(c.brokers, ["127.0.0.1:29092"]);
    assert_eq!(c.topic, "system-metrics-topic-iabdXX");
    assert_eq!(c.group, "grupo_iabdXX_id");
    assert_eq!(c.raw_collection, "system_metrics_raw_iabdXX");
    assert_eq!(c.kpi_collection, "system_metrics_kpis_iabdXX");
    assert_eq!(c.dlq_collection, "system_metrics_dlq_iabdXX");
    assert_eq!(c.mongo.uri, "mongodb://127.0.0.1:27017");
    assert_eq!(c.mongo.database, "monitoring");
    assert_eq!(c.window_size.get(), 20);
    assert_eq!(c.partitions, None);
    let p = ProduceSettings::resolve(&ProduceArgs::default(), &src(&[], &[])).unwrap();
    assert_eq!(p.servers, ["web01", "web02", "db01", "app01", "cache01"]);
    assert_eq!(p.interval, Duration::from_secs(10));
    assert_eq!((p.count, p.seed), (None, None));
}

#[test]
fn metrics_endpoint_and_static_membership_settings() {
    let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &src(&[], &[])).unwrap();
    assert_eq!(c.telemetry.metrics_addr, None, "off by default");
    assert_eq!(
        c.telemetry.health_threshold,
        HealthThreshold {
            step: Duration::from_secs(300),
            outage: Duration::from_secs(60)
        },
        "a step is stuck past the max step interval, a service down past 60 s"
    );
    assert_eq!(c.group_instance_id, None, "dynamic by default");
    let c = ConsumeSettings::resolve(
        &ConsumeArgs::default(),
        &src(
            &[
                ("METRICS_ADDR", "127.0.0.1:9100"),
                ("HEALTH_THRESHOLD_SECONDS", "2.5"),
                ("MAX_STEP_INTERVAL_SECONDS", "15"),
                ("KAFKA_GROUP_INSTANCE_ID", " consumer-0 "),
            ],
            &[],
        ),
    )
    .unwrap();
    assert_eq!(
        c.telemetry.metrics_addr,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    assert_eq!(
        c.telemetry.health_threshold,
        HealthThreshold {
            step: Duration::from_secs(15),
            outage: Duration::from_millis(2500)
        }
    );
    assert_eq!(c.group_instance_id.as_deref(), Some("consumer-0"));
    let p = ProduceSettings::resolve(
        &ProduceArgs {
            metrics_addr: Some("[::1]:0".into()),
            ..Default::default()
        },
        &src(&[], &[]),
    )
    .unwrap();
    assert_eq!(p.telemetry.metrics_addr, Some("[::1]:0".parse().unwrap()));
    assert_eq!(
        p.telemetry.health_threshold,
        HealthThreshold {
            step: Duration::from_secs(60),
            outage: Duration::from_secs(60)
        },
        "produce has no max step interval: a Produce request stuck 60 s is"
    );
    for (var, bad) in [
        ("METRICS_ADDR", "9100"),
        ("METRICS_ADDR", "127.0.0.1:65536"),
        ("METRICS_ADDR", ":9100"),
        ("HEALTH_THRESHOLD_SECONDS", "0"),
        ("KAFKA_GROUP_INSTANCE_ID", "  "),
    ] {
        let e = ConsumeSettings::resolve(&ConsumeArgs::default(), &src(&[(var, bad)], &[]))
            .unwrap_err();
        assert!(e.setting.starts_with(var), "{var}={bad}: {e}");
    }
}

#[test]
fn the_suffix_names_everything() {
    let c = ConsumeSettings::resolve(
        &ConsumeArgs::default(),
        &src(&[("METRICS_SUFFIX", "iabd07")], &[]),
    )
    .unwrap();
    assert_eq!(c.topic, "system-metrics-topic-iabd07");
    assert_eq!(c.group, "grupo_iabd07_id");
    assert_eq!(c.raw_collection, "system_metrics_raw_iabd07");
}

#[test]
fn flag_beats_environment_beats_dotenv() {
    let s = src(
        &[("WINDOW_SIZE", "5")],
        &[("WINDOW_SIZE", "7"), ("KAFKA_TOPIC", "from-dotenv")],
    );
    let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &s).unwrap();
    assert_eq!(c.window_size.get(), 5);
    assert_eq!(c.topic, "from-dotenv");
    let args = ConsumeArgs {
        window_size: Some("3".into()),
        ..Default::default()
    };
    assert_eq!(
        ConsumeSettings::resolve(&args, &s)
            .unwrap()
            .window_size
            .get(),
        3
    );
}

#[test]
fn connection_string_is_an_alias_that_mongodb_uri_overrides() {
    let s = src(&[("CONNECTION_STRING", "mongodb://alias-host:27017")], &[]);
    let k = KpisSettings::resolve(&ShowArgs::default(), &s).unwrap();
    assert_eq!(k.mongo.uri, "mongodb://alias-host:27017");
    let s = src(
        &[
            ("CONNECTION_STRING", "mongodb://alias-host"),
            ("MONGODB_URI", "mongodb://main-host"),
        ],
        &[],
    );
    let k = KpisSettings::resolve(&ShowArgs::default(), &s).unwrap();
    assert_eq!(k.mongo.uri, "mongodb://main-host");
}

#[test]
fn max_step_interval_defaults_to_five_minutes_and_takes_fractions() {
    let n = |env: &[(&str, &str)]| {
        ConsumeSettings::resolve(&ConsumeArgs::default(), &src(env, &[]))
            .unwrap()
            .max_step_interval
    };
    assert_eq!(n(&[]), Duration::from_secs(300));
    assert_eq!(
        n(&[("MAX_STEP_INTERVAL_SECONDS", " 15 ")]),
        Duration::from_secs(15)
    );
    assert_eq!(
        n(&[("MAX_STEP_INTERVAL_SECONDS", "10.5")]),
        Duration::from_millis(10_500)
    );
}

#[test]
fn servers_per_window_defaults_to_the_most_listed_and_takes_zero() {
    let n = |env: &[(&str, &str)]| {
        ConsumeSettings::resolve(&ConsumeArgs::default(), &src(env, &[]))
            .unwrap()
            .servers_per_window
    };
    assert_eq!(n(&[]), MAX_LISTED);
    assert_eq!(n(&[("SERVERS_PER_WINDOW", "0")]), 0);
    assert_eq!(n(&[("SERVERS_PER_WINDOW", " 7 ")]), 7);
}

#[test]
fn invalid_values_name_the_setting_and_its_origin() {
    let bad = |env: &[(&str, &str)]| {
        ConsumeSettings::resolve(&ConsumeArgs::default(), &src(env, &[]))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad(&[("WINDOW_SIZE", "0")]),
        "invalid setting WINDOW_SIZE (from environment): must be a whole number of at least 1 (got \"0\")"
    );
    assert!(bad(&[("MONGODB_URI", "http://x")]).contains("must start with mongodb://"));
    assert!(bad(&[("MONGODB_URI", "mongodb://")]).contains("has no host"));
    assert!(bad(&[("KAFKA_BROKERS", "localhost")]).contains("not host:port"));
    assert!(bad(&[("KAFKA_PARTITIONS", "0,x")]).contains("partition numbers"));
    assert_eq!(
        bad(&[("SERVERS_PER_WINDOW", "101")]),
        "invalid setting SERVERS_PER_WINDOW (from environment): must be a whole number from 0 to 100 (got \"101\")"
    );
    assert!(bad(&[("EXIT_WHEN_IDLE_SECONDS", "-1")]).contains("seconds"));
    for v in ["10", "5", "-1", "x", "NaN", "86401"] {
        assert!(
            bad(&[("MAX_STEP_INTERVAL_SECONDS", v)])
                .starts_with("invalid setting MAX_STEP_INTERVAL_SECONDS (from environment): must be a number of seconds above the group session timeout (10 s)"),
            "{v}"
        );
    }
    assert!(bad(&[("KAFKA_TOPIC", "bad topic")]).contains("Kafka's rule"));
    assert!(bad(&[("MONGODB_RAW_COLLECTION", "a$b")]).contains("'$'"));
    let e = ProduceSettings::resolve(
        &ProduceArgs {
            servers: Some(" , ".into()),
            ..Default::default()
        },
        &src(&[], &[]),
    )
    .unwrap_err();
    assert_eq!(e.setting, "--servers");
    assert!(e.problem.contains("at least one server"));
}

#[test]
fn kpis_plot_takes_a_limit_or_a_span_of_time_but_not_both() {
    let plot = |args: PlotArgs, env: &[(&str, &str)]| PlotSettings::resolve(&args, &src(env, &[]));
    let args = |limit: Option<&str>, since: Option<&str>| PlotArgs {
        out: "kpis.svg".into(),
        limit: limit.map(String::from),
        since: since.map(String::from),
        ..Default::default()
    };
    let windows = |a, env| plot(a, env).map(|p| p.windows);
    assert_eq!(
        windows(args(None, None), &[]),
        Ok(PlotWindows::Latest(DEFAULT_PLOT_LIMIT))
    );
    assert_eq!(
        windows(args(None, None), &[("KPIS_LIMIT", "7")]),
        Ok(PlotWindows::Latest(7))
    );
    assert_eq!(
        windows(args(Some("3"), None), &[]),
        Ok(PlotWindows::Latest(3))
    );
    // A flag beats the environment: --since with KPIS_LIMIT set is not a conflict.
    let minutes = |m: u64| Ok(PlotWindows::EndedWithin(Duration::from_secs(m * 60)));
    assert_eq!(
        windows(args(None, Some("30m")), &[("KPIS_LIMIT", "7")]),
        minutes(30)
    );
    assert_eq!(windows(args(None, Some(" 2h ")), &[]), minutes(120));
    assert_eq!(windows(args(None, Some("1d")), &[]), minutes(1440));
    assert_eq!(
        windows(args(None, Some("45s")), &[]),
        Ok(PlotWindows::EndedWithin(Duration::from_secs(45)))
    );

    let both = plot(args(Some("3"), Some("1h")), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        both,
        "invalid setting --since: give either --limit or --since, not both"
    );
    for bad in [
        "", "h", "0m", "-1h", "+1h", "1.5h", "90", "2 h", "1w", "2ħ", "36501d",
    ] {
        let e = plot(args(None, Some(bad)), &[]).unwrap_err();
        assert_eq!(e.setting, "--since", "{bad}");
        assert!(e.problem.contains("followed by s, m, h or d"), "{bad}: {e}");
    }
    assert!(plot(args(None, Some("36500d")), &[]).is_ok());
    for out in ["", " ", "."] {
        let e = plot(
            PlotArgs {
                out: out.into(),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(e.setting, "--out", "{out:?}");
    }
}

#[test]
fn kpis_show_draws_sparklines_for_people_only() {
    let show = |chart, json| {
        KpisSettings::resolve(
            &ShowArgs {
                chart,
                json,
                ..Default::default()
            },
            &src(&[], &[]),
        )
    };
    assert!(show(true, false).unwrap().chart);
    assert!(!show(false, true).unwrap().chart);
    let e = show(true, true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid setting --chart: draws for people; it cannot be combined with --json"
    );
}

#[test]
fn a_uri_password_never_appears_in_a_setting_error() {
    let e = ConsumeSettings::resolve(
        &ConsumeArgs {
            mongodb_uri: Some("mongodb://user:pa55-unit@".into()),
            ..Default::default()
        },
        &src(&[], &[]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("has no host"), "{e}");
    assert!(!e.contains("pa55-unit"), "{e}");
}

#[test]
fn the_drivers_parser_checks_uri_options_at_start_without_the_password() {
    let bad = |uri: &str| {
        KpisSettings::resolve(&ShowArgs::default(), &src(&[("MONGODB_URI", uri)], &[])).unwrap_err()
    };
    let e = bad("mongodb://u:Unit-Secret-3@127.0.0.1:27017/?badoption=1");
    assert_eq!(e.setting, "MONGODB_URI (from environment)");
    assert!(
        e.problem
            .starts_with("the MongoDB driver refuses it: badoption is an invalid option;"),
        "{e}"
    );
    assert!(!e.to_string().contains("Unit-Secret-3"), "{e}");
    assert!(
        !e.to_string().contains("labels"),
        "the driver's wrapping: {e}"
    );
    assert!(bad("mongodb://h/?retryWrites=maybe")
        .problem
        .contains("must be a boolean"));
    assert!(bad("mongodb://h/?authMechanism=FOO")
        .problem
        .contains("invalid mechanism string: FOO"));
    assert!(bad("mongodb+srv://h.example.net:27017/")
        .problem
        .contains("port cannot be specified"));
    let e = bad("mongodb://u:a:b-Unit-Secret-4@h/");
    assert!(
        e.problem
            .contains("must be percent-encoded: write : as %3A"),
        "{e}"
    );
    assert!(!e.to_string().contains("Unit-Secret-4"), "{e}");
}

#[test]
fn uris_the_driver_takes_are_kept_as_written() {
    for uri in [
        "mongodb://127.0.0.1:27017",
        "mongodb://u:p%40ss@a:27017,b:27018/db?replicaSet=rs0&authSource=admin&w=majority",
        "mongodb://chaos:x@127.0.0.1:27017/?authMechanism=PLAIN&authSource=$external",
        // No DNS lookup at start: the SRV records are read when connecting.
        "mongodb+srv://alice:s3cr%40t@cluster0.example.net/db?retryWrites=true",
    ] {
        let k = KpisSettings::resolve(&ShowArgs::default(), &src(&[("MONGODB_URI", uri)], &[]))
            .unwrap();
        assert_eq!(k.mongo.uri, uri);
    }
}

#[test]
fn partitions_are_sorted_and_unique() {
    let c = ConsumeSettings::resolve(
        &ConsumeArgs {
            partitions: Some("2, 0,2".into()),
            ..Default::default()
        },
        &src(&[], &[]),
    )
    .unwrap();
    assert_eq!(c.partitions, Some(vec![0, 2]));
}

#[test]
fn kafka_security_defaults_to_plaintext() {
    let p = ProduceSettings::resolve(&ProduceArgs::default(), &src(&[], &[])).unwrap();
    assert_eq!(p.security, Security::plaintext());
}

#[test]
fn sasl_settings_make_credentials_and_keep_the_password_secret() {
    let s = src(
        &[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "alice"),
            ("KAFKA_SASL_PASSWORD", "Unit-Kafka-Pass-1"),
        ],
        &[],
    );
    let c = ConsumeSettings::resolve(&ConsumeArgs::default(), &s).unwrap();
    assert_eq!(c.security.protocol(), SecurityProtocol::SaslPlaintext);
    let sasl = c.security.sasl().unwrap();
    assert_eq!(
        (sasl.mechanism, sasl.username.as_str()),
        (SaslMechanism::ScramSha512, "alice")
    );
    assert_eq!(sasl.password(), "Unit-Kafka-Pass-1");
    assert!(!format!("{c:?}").contains("Unit-Kafka-Pass-1"));
    assert_eq!(redact::scrub("refused Unit-Kafka-Pass-1"), "refused ****");
    // A flag beats the variable.
    let args = StatusArgs {
        sasl_username: Some("bob".into()),
        ..Default::default()
    };
    let st = StatusSettings::resolve(&args, &s).unwrap();
    assert_eq!(st.security.sasl().unwrap().username, "bob");
}

#[test]
fn security_combinations_that_cannot_work_are_refused_in_one_line() {
    let bad = |env: &[(&str, &str)]| {
        ProduceSettings::resolve(&ProduceArgs::default(), &src(env, &[]))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad(&[("KAFKA_SECURITY_PROTOCOL", "TLS")]),
        "invalid setting KAFKA_SECURITY_PROTOCOL (from environment): must be PLAINTEXT, SSL, \
         SASL_PLAINTEXT or SASL_SSL (got \"TLS\")"
    );
    assert_eq!(
        bad(&[
            ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("KAFKA_SASL_USERNAME", "alice")
        ]),
        "invalid setting KAFKA_SASL_USERNAME (from environment): needs \
         KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT, but it is SSL"
    );
    let e = bad(&[("KAFKA_SASL_PASSWORD", "Unit-Kafka-Pass-2")]);
    assert!(
        e.contains("KAFKA_SASL_PASSWORD (from environment): needs"),
        "{e}"
    );
    assert!(!e.contains("Unit-Kafka-Pass-2"), "{e}");
    assert_eq!(
        bad(&[("KAFKA_SSL_CA_LOCATION", "/tmp/ca.pem")]),
        "invalid setting KAFKA_SSL_CA_LOCATION (from environment): needs \
         KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, but it is PLAINTEXT"
    );
    assert_eq!(
        bad(&[("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]),
        "invalid setting KAFKA_SASL_MECHANISM: SASL_SSL needs a SASL mechanism: PLAIN, \
         SCRAM-SHA-256 or SCRAM-SHA-512"
    );
    assert!(bad(&[
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("KAFKA_SASL_MECHANISM", "GSSAPI")
    ])
    .contains("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (got \"GSSAPI\")"));
    assert_eq!(
        bad(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "alice"),
        ]),
        "invalid setting KAFKA_SASL_PASSWORD: SASL_SSL needs the SASL user's password"
    );
    assert_eq!(
        bad(&[
            ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("KAFKA_SSL_KEY_LOCATION", "/tmp/key.pem")
        ]),
        "invalid setting KAFKA_SSL_KEY_LOCATION (from environment): a private key needs its \
         certificate (KAFKA_SSL_CERTIFICATE_LOCATION)"
    );
    let e = bad(&[
        ("KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
    ]);
    assert!(
        e.starts_with(
            "invalid setting KAFKA_SSL_CA_LOCATION (from environment): cannot read \
             /nonexistent/ca.pem"
        ),
        "{e}"
    );
}
