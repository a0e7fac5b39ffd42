//! `kpis show --chart` and `kpis plot` against the real database: the sparklines drawn from
//! known stored windows, character for character; the sparklines moving under `--follow`; an
//! SVG that parses as XML with one point per window per KPI equal to what the consumer stored;
//! `--since`; an empty collection; flags that cannot be valid.

mod common {
    pub mod kafka_wire;
    pub mod kcat;
    pub mod messages;
    pub mod process;
    pub mod services;
}

use std::process::Stdio;
use std::time::Duration;

use common::kcat::kcat_produce;
use common::messages::{f64_of, metric_line};
use common::process::{assert_ok, poll, text};
use common::services::Sandbox;
use mongodb::bson::{doc, Bson, DateTime, Document};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const LIMIT: Duration = Duration::from_secs(60);

/// The KPIs of a window in the order the pictures show them.
const KPI_FIELDS: [&str; 6] = [
    "avg_cpu_percent",
    "avg_memory_percent",
    "avg_disk_io_mbps",
    "avg_network_mbps",
    "total_error_count",
    "messages_per_second",
];

fn date(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// A KPI document of the shape the consumer writes (`store::window_document`), with the given
/// six KPIs (errors as a whole number, a missing rate as null) and `alerts` alert entries.
fn window_doc(
    seq: i64,
    end: OffsetDateTime,
    stored: OffsetDateTime,
    kpis: [Option<f64>; 6],
    alerts: usize,
) -> Document {
    let number = |v: Option<f64>| v.map_or(Bson::Null, Bson::Double);
    let alert_list: Vec<Document> = (0..alerts)
        .map(|_| doc! {"server_id": "web01", "metric": "cpu_percent", "value": 95.0, "timestamp": date(end)})
        .collect();
    doc! {
        "_id": format!("t/g/0#{seq}"),
        "computed_at": date(stored),
        "window_start": date(end - Duration::from_secs(4)),
        "window_end": date(end),
        "window_duration_s": 4.0,
        "message_count": 20,
        "kpis": {
            "avg_cpu_percent": number(kpis[0]),
            "avg_memory_percent": number(kpis[1]),
            "avg_disk_io_mbps": number(kpis[2]),
            "avg_network_mbps": number(kpis[3]),
            "total_error_count": kpis[4].map_or(Bson::Null, |e| Bson::Int64(e as i64)),
            "messages_per_second": number(kpis[5]),
            "max_cpu_percent": 99.0,
            "max_memory_percent": 99.0,
        },
        "servers": [],
        "servers_omitted": 0_i64,
        "alerts": alert_list,
        "alerts_omitted": 0_i64,
        "stream": "t/g/0",
        "seq": seq,
    }
}

fn insert(sb: &Sandbox, docs: Vec<Document>) {
    sb.db()
        .collection::<Document>("kpis")
        .insert_many(docs)
        .run()
        .expect("insert KPI windows");
}

/// Eight windows, 4 s apart, stored in order and ending a minute ago; column by column:
/// a rising CPU, a flat memory, a falling disk, a network that exercises rounding, a single
/// error spike, and a rate missing from the third window.
fn eight_known_windows(sb: &Sandbox) {
    let cpu = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0];
    let disk = [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
    let network = [0.0, 70.0, 14.0, 15.0, 64.9, 35.0, 0.0, 70.0];
    let errors = [0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0];
    let rate = [
        Some(1.0),
        Some(2.0),
        None,
        Some(4.0),
        Some(5.0),
        Some(6.0),
        Some(7.0),
        Some(8.0),
    ];
    let first_end = OffsetDateTime::now_utc() - Duration::from_secs(60);
    let docs = (0..8)
        .map(|i| {
            let end = first_end + Duration::from_secs(4 * i as u64);
            let kpis = [
                Some(cpu[i]),
                Some(50.0),
                Some(disk[i]),
                Some(network[i]),
                Some(errors[i]),
                rate[i],
            ];
            window_doc(i as i64 + 1, end, end, kpis, usize::from(errors[i] > 0.0))
        })
        .collect();
    insert(sb, docs);
}

/// The lines after the table's blank line.
fn chart_block(stdout: &str) -> Vec<String> {
    stdout
        .split("\n\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no chart under the table:\n{stdout}"))
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn chart_draws_each_kpi_of_the_stored_windows_oldest_to_newest() {
    let sb = Sandbox::new("kpichart");
    eight_known_windows(&sb);

    let out = sb.run(&["kpis", "show", "--chart", "--limit", "8"], LIMIT);
    assert_ok(&out, "kpis show --chart");
    let stdout = text(&out.stdout);
    // The table is still there, newest first, then the sparklines.
    assert!(stdout.starts_with("WINDOW END (UTC)"), "{stdout}");
    assert_eq!(
        stdout.lines().nth(1).map(|l| l.contains("80.00")),
        Some(true)
    );
    assert_eq!(
        chart_block(&stdout),
        [
            "KPIs over 8 windows, oldest → newest:",
            "  cpu %      ▁▂▃▄▅▆▇█  min 10.00  max 80.00",
            "  memory %   ▁▁▁▁▁▁▁▁  min 50.00  max 50.00",
            "  disk MB/s  █▇▆▅▄▃▂▁  min 1.00  max 8.00",
            "  net Mbps   ▁█▂▃▇▅▁█  min 0.00  max 70.00",
            "  errors     ▁▁▁█▁▁▁▁  min 0  max 7",
            "  msg/s      ▁▂ ▄▅▆▇█  min 1.00  max 8.00",
        ]
    );

    // --limit 4: the sparklines cover the windows shown, rescaled to their own min and max.
    let out = sb.run(&["kpis", "show", "--chart", "--limit", "4"], LIMIT);
    assert_ok(&out, "kpis show --chart --limit 4");
    let chart = chart_block(&text(&out.stdout));
    assert_eq!(chart[0], "KPIs over 4 windows, oldest → newest:");
    assert_eq!(chart[1], "  cpu %      ▁▃▆█  min 50.00  max 80.00");
    assert_eq!(chart[5], "  errors     ▁▁▁▁  min 0  max 0");

    // Without --chart, nothing changes in the table's output.
    let plain = text(&sb.run(&["kpis", "show", "--limit", "8"], LIMIT).stdout);
    assert!(
        !plain.contains('▁') && plain.lines().count() == 9,
        "{plain}"
    );
}

#[test]
fn with_follow_the_sparklines_move_as_windows_arrive() {
    let sb = Sandbox::new("kpifollow");
    let now = OffsetDateTime::now_utc();
    let kpis = |cpu: f64| {
        [
            Some(cpu),
            Some(50.0),
            Some(1.0),
            Some(2.0),
            Some(0.0),
            Some(5.0),
        ]
    };
    insert(
        &sb,
        (1..=3)
            .map(|i| {
                let at = now - Duration::from_secs(10 - i as u64);
                window_doc(i, at, at, kpis(10.0 * i as f64), 0)
            })
            .collect(),
    );
    let log = sb.dir.join("follow.out");
    let mut follow = sb
        .command(&["kpis", "show", "--chart", "--follow", "--limit", "3"])
        .stdout(std::fs::File::create(&log).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kpis show --follow");
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let first = poll(LIMIT, Duration::from_millis(100), || {
        output()
            .contains("  cpu %      ▁▅█  min 10.00  max 30.00")
            .then_some(())
    });
    assert!(first.is_some(), "no first chart:\n{}", output());

    // A fourth window: the oldest leaves the sparkline, the new one enters on the right.
    let at = OffsetDateTime::now_utc();
    insert(&sb, vec![window_doc(4, at, at, kpis(0.0), 0)]);
    let moved = poll(LIMIT, Duration::from_millis(100), || {
        output()
            .contains("  cpu %      ▆█▁  min 0.00  max 30.00")
            .then_some(())
    });
    let _ = follow.kill();
    let _ = follow.wait();
    let shown = output();
    assert!(moved.is_some(), "the sparklines did not move:\n{shown}");
    assert_eq!(shown.matches("KPIs over 3 windows").count(), 2, "{shown}");
}

/// The points and alert ticks of a `kpis plot` SVG, read as XML.
struct PlotReadBack {
    /// Per KPI field: (window end in ms, value) of each point.
    points: Vec<(String, Vec<(i128, f64)>)>,
    /// Window ends (ms) of the alert ticks of the first panel.
    alert_ends: Vec<i128>,
}

fn millis(rfc3339: &str) -> i128 {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .unwrap_or_else(|e| panic!("data-end {rfc3339:?}: {e}"))
        .unix_timestamp_nanos()
        / 1_000_000
}

fn read_plot(path: &std::path::Path) -> PlotReadBack {
    let svg = std::fs::read_to_string(path).expect("the SVG file");
    let xml = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("not XML ({e}):\n{svg}"));
    let root = xml.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let class_of = |n: &roxmltree::Node, class: &str| {
        n.attribute("class")
            .is_some_and(|c| c.split(' ').any(|c| c == class))
    };
    let panels: Vec<roxmltree::Node> = root
        .descendants()
        .filter(|n| n.tag_name().name() == "g" && class_of(n, "panel"))
        .collect();
    let points = panels
        .iter()
        .map(|panel| {
            let kpi = panel.attribute("data-kpi").expect("data-kpi").to_string();
            let points = panel
                .descendants()
                .filter(|n| n.tag_name().name() == "circle" && class_of(n, "point"))
                .map(|n| {
                    let value = n.attribute("data-value").expect("data-value");
                    (
                        millis(n.attribute("data-end").expect("data-end")),
                        value.parse::<f64>().expect("a number"),
                    )
                })
                .collect();
            (kpi, points)
        })
        .collect();
    let alert_ends = panels
        .first()
        .map(|p| {
            p.descendants()
                .filter(|n| n.tag_name().name() == "rect" && class_of(n, "alert"))
                .map(|n| millis(n.attribute("data-end").expect("data-end")))
                .collect()
        })
        .unwrap_or_default();
    PlotReadBack { points, alert_ends }
}

/// What the plot should hold, from the stored documents: per KPI (end, value) of each window
/// with a value, and the ends of the windows with alerts.
fn expected_from(docs: &[Document]) -> PlotReadBack {
    let end = |d: &Document| {
        i128::from(
            d.get_datetime("window_end")
                .expect("window_end")
                .timestamp_millis(),
        )
    };
    let points = KPI_FIELDS
        .iter()
        .map(|field| {
            let path = format!("kpis.{field}");
            let points = docs
                .iter()
                .filter(|d| {
                    !matches!(
                        d.get_document("kpis").ok().and_then(|k| k.get(*field)),
                        None | Some(Bson::Null)
                    )
                })
                .map(|d| (end(d), f64_of(d, &path)))
                .collect();
            (field.to_string(), points)
        })
        .collect();
    let alerted: Vec<i128> = docs
        .iter()
        .filter(|d| d.get_array("alerts").is_ok_and(|a| !a.is_empty()))
        .map(end)
        .collect();
    PlotReadBack {
        points,
        alert_ends: alerted,
    }
}

/// Sorted, so windows that ended in the same millisecond compare as sets of points.
fn sorted(mut points: Vec<(i128, f64)>) -> Vec<(i128, f64)> {
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points
}

#[test]
fn plot_has_one_point_per_window_per_kpi_equal_to_what_the_consumer_stored() {
    let sb = Sandbox::new("kpiplot");
    // 120 messages on one partition: six windows of 20, computed by the real consumer.
    let lines: Vec<String> = (0..120).map(|n| metric_line(&sb.name, n)).collect();
    kcat_produce(&sb.brokers, &sb.topic, 0, None, &[], &lines);
    let out = sb.run(
        &["consume", "--exit-when-idle", "2"],
        Duration::from_secs(120),
    );
    assert_ok(&out, "consume");
    let docs = sb.docs("kpis", doc! {}, doc! {"window_end": 1, "seq": 1});
    assert_eq!(docs.len(), 6, "windows stored");

    let svg = sb.dir.join("kpis.svg");
    let out = sb.run(
        &["kpis", "plot", "--out", svg.to_str().expect("utf-8 path")],
        LIMIT,
    );
    assert_ok(&out, "kpis plot");
    let PlotReadBack {
        points: expected,
        alert_ends: alerted,
    } = expected_from(&docs);
    assert!(
        !alerted.is_empty(),
        "metric_line readings cross the alert thresholds"
    );
    let plot = read_plot(&svg);
    assert_eq!(plot.points.len(), 6, "one panel per KPI");
    for ((kpi, points), (field, stored)) in plot.points.into_iter().zip(expected) {
        assert_eq!(kpi, field);
        // Exact equality: the SVG carries each stored f64 in its round-trip form.
        assert_eq!(sorted(points), sorted(stored), "{kpi}");
    }
    let mut ticks = plot.alert_ends;
    ticks.sort();
    assert_eq!(ticks, alerted, "alert ticks");
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.trim_end(),
        format!(
            "Wrote {}: 6 windows, {} with alerts.",
            svg.display(),
            alerted.len()
        )
    );
}

#[test]
fn plot_since_draws_the_windows_that_ended_in_the_span() {
    let sb = Sandbox::new("kpisince");
    let now = OffsetDateTime::now_utc();
    let ago = |minutes: u64| now - Duration::from_secs(60 * minutes);
    let kpis = |cpu: f64| {
        [
            Some(cpu),
            Some(41.5),
            Some(0.1 + 0.2),
            Some(2.0),
            Some(3.0),
            Some(1.0 / 3.0),
        ]
    };
    insert(
        &sb,
        vec![
            window_doc(1, ago(180), ago(180), kpis(11.0), 0),
            window_doc(2, ago(90), ago(90), kpis(22.0), 2),
            window_doc(3, ago(10), ago(10), kpis(33.0), 0),
            window_doc(4, ago(1), ago(1), kpis(44.0), 0),
        ],
    );
    let svg = sb.dir.join("since.svg");
    let svg_arg = svg.to_str().expect("utf-8 path");
    for (since, cpus) in [
        ("2h", vec![22.0, 33.0, 44.0]),
        ("30m", vec![33.0, 44.0]),
        ("1d", vec![11.0, 22.0, 33.0, 44.0]),
    ] {
        let out = sb.run(&["kpis", "plot", "--out", svg_arg, "--since", since], LIMIT);
        assert_ok(&out, since);
        let docs: Vec<Document> = sb
            .docs("kpis", doc! {}, doc! {"seq": 1})
            .into_iter()
            .filter(|d| cpus.contains(&f64_of(d, "kpis.avg_cpu_percent")))
            .collect();
        let expected = expected_from(&docs);
        let plot = read_plot(&svg);
        assert_eq!(plot.points, expected.points, "--since {since}");
        assert_eq!(plot.alert_ends, expected.alert_ends, "--since {since}");
    }

    // Nothing in the span: a line, exit 0, and the last picture left as it was.
    let before = std::fs::read_to_string(&svg).expect("svg");
    let out = sb.run(&["kpis", "plot", "--out", svg_arg, "--since", "30s"], LIMIT);
    assert_ok(&out, "--since 30s");
    assert_eq!(
        text(&out.stdout).trim_end(),
        format!(
            "No KPI window in {}.kpis ended in the last 30s: nothing to plot.",
            sb.database
        )
    );
    assert_eq!(std::fs::read_to_string(&svg).expect("svg"), before);
}

#[test]
fn an_empty_collection_prints_the_line_kpis_show_prints_and_writes_nothing() {
    let sb = Sandbox::new("kpiempty");
    let svg = sb.dir.join("empty.svg");
    let plot = sb.run(
        &["kpis", "plot", "--out", svg.to_str().expect("utf-8 path")],
        LIMIT,
    );
    let show = sb.run(&["kpis", "show", "--chart"], LIMIT);
    assert_ok(&plot, "kpis plot");
    assert_ok(&show, "kpis show");
    assert_eq!(
        text(&plot.stdout),
        format!(
            "No KPI windows yet in {}.kpis: run `metricsctl consume` first.\n",
            sb.database
        )
    );
    assert_eq!(text(&plot.stdout), text(&show.stdout));
    assert!(!svg.exists());
    // Not even a staging file is left behind.
    let left: Vec<_> = std::fs::read_dir(&sb.dir).expect("dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn flags_that_cannot_be_valid_exit_2_with_one_line() {
    let sb = Sandbox::new("kpiflags");
    let svg = sb.dir.join("k.svg");
    let svg_arg = svg.to_str().expect("utf-8 path");
    let missing_dir = sb.dir.join("no-such-dir").join("k.svg");
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec!["--out", svg_arg, "--limit", "5", "--since", "1h"],
            "give either --limit or --since",
        ),
        (
            vec!["--out", svg_arg, "--since", "2 weeks"],
            "followed by s, m, h or d",
        ),
        (
            vec!["--out", svg_arg, "--since", "0m"],
            "followed by s, m, h or d",
        ),
        (
            vec!["--out", missing_dir.to_str().expect("utf-8 path")],
            "cannot write",
        ),
        (
            vec!["--out", sb.dir.to_str().expect("utf-8 path")],
            "must name a file",
        ),
        (vec!["--limit", "5"], "--out"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["kpis", "plot"];
        args.extend(&flags);
        let out = sb.run(&args, LIMIT);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{flags:?}: {stderr}"
        );
        assert!(!svg.exists() && !missing_dir.exists());
    }
    let out = sb.run(&["kpis", "show", "--chart", "--json"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).lines().count(), 1);
}
