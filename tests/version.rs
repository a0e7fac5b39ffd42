//! `metricsctl --version` and `-V`: the package version and the commit the binary was built from,
//! exit 0, no services needed.

use std::process::Command;

/// What a process wrote, as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn version(flag: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_metricsctl"))
        .arg(flag)
        .output()
        .expect("run metricsctl");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn version_and_v_print_the_version_and_the_commit_built() {
    let (code, stdout, stderr) = version("--version");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stderr, "");
    let line = stdout.trim_end();
    let commit = line
        .strip_prefix(&format!(
            "metricsctl {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected version line {line:?}"));
    // Built from this checkout (the test builds the binary first), so the commit is HEAD's.
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string());
    // Each way build.rs finds the commit has one exact answer: the commit given, HEAD's short
    // hash (with `-dirty`), or `unknown` outside a checkout.
    let given = std::env::var("METRICSCTL_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    match (given, head) {
        (Some(given), _) => assert_eq!(commit, given, "METRICSCTL_COMMIT is taken as is"),
        (None, Some(head)) => {
            let short = commit.strip_suffix("-dirty").unwrap_or(commit);
            assert!(
                short.len() >= 7 && head.starts_with(short),
                "{commit} is not HEAD ({head})"
            );
        }
        (None, None) => assert_eq!(commit, "unknown", "no git checkout"),
    }
    assert_eq!(version("-V"), (Some(0), stdout, String::new()));
}
