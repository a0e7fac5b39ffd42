//! Settings reach the binary from flags, the environment and `.env`; a wrong one stops it at
//! start with exit code 2 and one line naming the setting. No service is needed.

mod common;

use std::time::Duration;

use common::{text, Sandbox};

const LIMIT: Duration = Duration::from_secs(30);

fn refused(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = sb.command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn wrong_settings_exit_2_with_one_line_naming_them() {
    let sb = Sandbox::new("settings");
    let e = refused(&sb, &["consume", "--window-size", "0"], &[]);
    assert!(
        e.contains("--window-size") && e.contains("at least 1"),
        "{e}"
    );
    let e = refused(&sb, &["consume"], &[("WINDOW_SIZE", "zero")]);
    assert!(e.contains("WINDOW_SIZE (from environment)"), "{e}");
    let e = refused(&sb, &["consume", "--mongodb-uri", "mongo://x"], &[]);
    assert!(
        e.contains("--mongodb-uri") && e.contains("mongodb://"),
        "{e}"
    );
    let e = refused(
        &sb,
        &["kpis", "show"],
        &[("MONGODB_URI", "mongodb://u:Pw-Secret-1@")],
    );
    assert!(
        e.contains("has no host") && !e.contains("Pw-Secret-1"),
        "{e}"
    );
    let e = refused(&sb, &["produce", "--servers", ","], &[]);
    assert!(
        e.contains("--servers") && e.contains("at least one server"),
        "{e}"
    );
    let e = refused(&sb, &["produce"], &[("SERVER_IDS", "")]);
    assert!(e.contains("SERVER_IDS"), "{e}");
    let e = refused(&sb, &["produce", "--interval", "-3"], &[]);
    assert!(e.contains("--interval"), "{e}");
    let e = refused(&sb, &["produce", "--brokers", "nohostport"], &[]);
    assert!(e.contains("host:port"), "{e}");
    let e = refused(&sb, &["consume", "--no-such-flag"], &[]);
    assert!(e.contains("no-such-flag"), "{e}");
}

#[test]
fn dotenv_is_read_and_the_environment_wins_over_it() {
    let sb = Sandbox::new("dotenv");
    std::fs::write(
        sb.dir.join(".env"),
        "# settings\nWINDOW_SIZE=0\nKPIS_LIMIT=3\n",
    )
    .unwrap();
    let e = refused(&sb, &["consume"], &[]);
    assert!(e.contains("WINDOW_SIZE (from .env)"), "{e}");
    // The environment overrides .env, and a flag overrides both.
    let e = refused(
        &sb,
        &["consume"],
        &[("WINDOW_SIZE", "5"), ("MONGODB_DATABASE", "a/b")],
    );
    assert!(
        e.contains("MONGODB_DATABASE"),
        "the window size from the environment was accepted: {e}"
    );
    let e = refused(
        &sb,
        &["consume", "--window-size", "4", "--database", "a.b"],
        &[],
    );
    assert!(e.contains("--database"), "the flag beat .env: {e}");
    std::fs::write(sb.dir.join(".env"), "this is not a dotenv line\n").unwrap();
    let e = refused(&sb, &["kpis", "show"], &[]);
    assert!(e.contains(".env"), "{e}");
}

#[test]
fn help_exits_0() {
    let sb = Sandbox::new("help");
    let out = sb.run(&["consume", "--help"], LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--exit-when-idle"));
}
