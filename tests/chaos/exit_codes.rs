//! Exit codes (I4): 2 and one line for a bad setting; 1 and one error line naming the
//! credentials when the database refuses them; 0 after SIGTERM while the database cannot be
//! reached; and the database password in no output.

use std::time::Duration;

use crate::common::process::{poll, text};
use crate::harness::{Chaos, PASSWORD, USER};
use crate::runs::{End, Proc};

/// The runs of the fast version in `make test`, each checked for its exit code and output.
pub fn documented_codes_and_no_password() {
    // The scenario connects with a user and password of its own (Chaos::new refuses services
    // whose URI would not take them, rather than leaving the password check out).
    let mut c = Chaos::new("quick_exit_codes");
    let password = PASSWORD;
    // A bad setting: 2, one line.
    let out =
        c.sb.run(&["consume", "--window-size", "0"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    // Credentials the database refuses (a mechanism FerretDB lacks): 1, no password.
    let refused = c.sb.mongodb_uri.replace(
        "authMechanism=PLAIN&authSource=$external",
        "authMechanism=SCRAM-SHA-1",
    );
    let out =
        c.sb.command(&["consume", "--exit-when-idle", "1"])
            .env("MONGODB_URI", &refused)
            .output()
            .expect("run");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains(password), "{all}");
    // FerretDB without authentication lacks SCRAM-SHA-1: the credentials are refused, exit 1,
    // one error line naming the credentials as the thing to check; the URI shows redacted.
    assert_eq!(out.status.code(), Some(1), "refused credentials: {all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {all}");
    assert!(
        errors[0].contains("check MONGODB_URI (user, password, options)"),
        "{all}"
    );
    assert!(all.contains(&format!("{USER}:****@")), "{all}");
    // SIGTERM while the database cannot be reached: 0, and the password stays hidden.
    // The database's port, whatever SERVICES_PORT_OFFSET moved it to, replaced by port 1.
    let port: String =
        c.sb.mongodb_uri
            .rsplit_once("@127.0.0.1:")
            .or_else(|| c.sb.mongodb_uri.rsplit_once("://127.0.0.1:"))
            .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_else(|| "27017".into());
    let unreachable = c.sb.mongodb_uri.replace(&format!(":{port}"), ":1");
    assert_ne!(
        unreachable, c.sb.mongodb_uri,
        "no port to replace in the services' URI"
    );
    let p = Proc::spawn_env(
        &c.sb,
        "consume-unreachable",
        &["consume"],
        &[("MONGODB_URI", &unreachable)],
    );
    let retrying = poll(Duration::from_secs(60), Duration::from_millis(100), || {
        p.log_text().contains("retrying in").then_some(())
    });
    assert!(retrying.is_some(), "no retry logged:\n{}", p.tail(20));
    c.end(p, End::Term);
    let log = &c.ended.last().unwrap().output;
    assert!(log.contains("retrying in"), "{log}");
    c.check_outputs();
}
