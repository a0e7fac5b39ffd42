//! Which build is running: the package version and the git commit the binary was built from
//! (recorded by `build.rs`). `metricsctl --version` prints them, and a `metricsctl_build_info`
//! gauge can carry the same two strings as labels.

/// The package version from `Cargo.toml`, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short hash of the commit built, `-dirty` appended when tracked files differed from it,
/// or `unknown` when the build had no git checkout to ask.
pub const COMMIT: &str = env!("METRICSCTL_COMMIT");

/// What `metricsctl --version` prints: `metricsctl 0.1.0 (commit 1a2b3c4)`.
pub fn version_line() -> String {
    format!("metricsctl {VERSION} (commit {COMMIT})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_the_package_version_and_the_commit() {
        assert_eq!(
            version_line(),
            format!(
                "metricsctl {} (commit {})",
                env!("CARGO_PKG_VERSION"),
                COMMIT
            )
        );
        assert!(!COMMIT.is_empty());
    }
}
