//! Records which commit the binary is built from, for `metricsctl --version` and the build-info
//! gauge: `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from it, or
//! `unknown` outside a git checkout (a source tarball, a Docker build context without `.git`).
//! `METRICSCTL_COMMIT`, when set, is taken as is: a build without `.git` can still say.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=METRICSCTL_COMMIT");
    let commit = match std::env::var("METRICSCTL_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => commit_from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=METRICSCTL_COMMIT={commit}");
    watch_git_state();
}

/// The short hash of HEAD, `-dirty` if a tracked file differs from it; `None` without git or
/// outside a checkout.
fn commit_from_git() -> Option<String> {
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    // Untracked files do not count: they are not part of what `cargo build` compiles from
    // the checkout unless someone adds them, and then they show as changes.
    let changes = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Some(if changes.is_empty() {
        hash
    } else {
        format!("{hash}-dirty")
    })
}

/// Runs git in the package directory; its trimmed standard output, or `None` if it failed.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Tells cargo what should run this script again. Once a script prints any `rerun-if-changed`,
/// cargo stops rerunning it on every change in the package, so the sources are named too: an
/// edit can turn the tree dirty. HEAD (a new commit or checkout moves it, or the branch it
/// names), the index (a commit or `git add`) and the packed refs are watched where they exist;
/// a path that does not exist would make cargo run the script on every build.
fn watch_git_state() {
    for path in ["build.rs", "Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from),
        git(&["rev-parse", "--git-common-dir"]).map(absolute),
    ) else {
        return;
    };
    let mut watched = vec![
        git_dir.join("HEAD"),
        git_dir.join("index"),
        common_dir.join("packed-refs"),
    ];
    // The branch HEAD names (`ref: refs/heads/main`) moves on every commit; in a worktree the
    // refs live in the common directory.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common_dir.join(branch));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `git rev-parse --git-common-dir` may answer relative to the package directory.
fn absolute(path: String) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        path
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }
}
