//! `metricsctl --version` and `-V`: the package version and the commit the binary was built from,
//! exit 0, no services needed.

mod common;

use std::process::Command;

use common::{repo_root, text};

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
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string());
    match head {
        Some(head) if std::env::var_os("METRICSCTL_COMMIT").is_none() => {
            let short = commit.strip_suffix("-dirty").unwrap_or(commit);
            assert!(
                short.len() >= 7 && head.starts_with(short),
                "{commit} is not HEAD ({head})"
            );
        }
        _ => assert!(!commit.is_empty()),
    }
    assert_eq!(version("-V"), (Some(0), stdout, String::new()));
}
