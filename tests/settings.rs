//! Settings reach the binary from flags, the environment and `.env`; a wrong one stops it at
//! start with exit code 2 and one line naming the setting. No service is needed.

mod common {
    pub mod kafka_wire;
    pub mod process;
    pub mod services;
}

use std::process::Stdio;
use std::time::Duration;

use common::process::{text, wait_with_limit};
use common::services::{repo_root, Sandbox, OUR_VARS};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs the binary with `env` added and checks that it refuses to start: exit 2, one line.
/// Setting `CONNECTION_STRING` removes the sandbox's `MONGODB_URI`, which would win over it.
fn refused(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = sb.command(args);
    for (k, v) in env {
        if *k == "CONNECTION_STRING" {
            c.env_remove("MONGODB_URI");
        }
        c.env(k, v);
    }
    // A command that starts after all must not hang the test.
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_limit(child, LIMIT);
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
fn a_mongodb_uri_the_driver_refuses_exits_2_at_start_without_the_password() {
    let sb = Sandbox::new("settings_uri");
    let commands: [&[&str]; 3] = [&["consume"], &["kpis", "show"], &["status"]];
    for args in commands {
        let e = refused(
            &sb,
            args,
            &[(
                "MONGODB_URI",
                "mongodb://u:Uri-Secret-9@127.0.0.1:27017/?badoption=1",
            )],
        );
        assert!(
            e.contains("MONGODB_URI (from environment)")
                && e.contains("badoption is an invalid option")
                && e.contains("correct the connection string"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("Uri-Secret-9"), "{args:?}: {e}");
        assert!(!e.contains("labels"), "the driver's wrapping: {e}");
        let e = refused(&sb, args, &[("MONGODB_URI", "notaurl")]);
        assert!(
            e.contains("MONGODB_URI (from environment)")
                && e.contains("must start with mongodb://"),
            "{args:?}: {e}"
        );
        let e = refused(&sb, args, &[("CONNECTION_STRING", "mongodb://h/?w=-1")]);
        assert!(
            e.contains("CONNECTION_STRING (from environment)") && e.contains("`w` option"),
            "{args:?}: {e}"
        );
    }
    // The same URI given as a flag is named as the flag.
    let e = refused(
        &sb,
        &[
            "kpis",
            "show",
            "--mongodb-uri",
            "mongodb://h/?retryWrites=maybe",
        ],
        &[],
    );
    assert!(
        e.contains("--mongodb-uri") && e.contains("must be a boolean"),
        "{e}"
    );
}

/// `Sandbox::command` clears every variable of `OUR_VARS` so a developer's shell cannot leak
/// into a test: each variable `src/settings/` reads must be on that list.
#[test]
fn every_variable_the_program_reads_is_cleared_for_the_tests() {
    let root = repo_root();
    // Every file of the folder, its unit tests included (as when it was one file).
    let mut settings = String::new();
    for entry in std::fs::read_dir(root.join("src/settings")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            settings.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    // Every quoted name in upper case with an underscore, e.g. "KAFKA_BROKERS" (any text
    // between two quotes: an escaped quote elsewhere cannot hide one).
    let read: Vec<&str> = settings
        .split('"')
        .filter(|w| {
            w.contains('_')
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(read.len() >= 20, "found only {read:?}");
    let missing: Vec<&&str> = read.iter().filter(|v| !OUR_VARS.contains(v)).collect();
    assert!(missing.is_empty(), "not in OUR_VARS: {missing:?}");
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
