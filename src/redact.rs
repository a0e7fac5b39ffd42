//! Keeps secrets (the password of a connection string) out of every log line and error.
//! Secrets are registered once when settings are read; the logger and the error printer pass
//! every line through `scrub`, so no code path has to remember to redact.

use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

const MASK: &str = "****";

/// Registers a secret to be masked from now on (ignored when empty).
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    if let Ok(mut secrets) = SECRETS.write() {
        if !secrets.iter().any(|s| s == secret) {
            secrets.push(secret.to_string());
            // Longest first, so a secret that contains another is masked whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }
}

/// `text` with every registered secret replaced by `****`.
pub fn scrub(text: &str) -> String {
    let Ok(secrets) = SECRETS.read() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// The password of a `mongodb://` or `mongodb+srv://` URI, as written (percent-encoded).
pub fn uri_password(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

/// The URI with its password masked, for showing where the program connects.
pub fn redact_uri(uri: &str) -> String {
    match uri_password(uri) {
        Some(p) => {
            // Replace only inside the userinfo, the first place the password can appear.
            let at = uri.find(&format!(":{p}@")).map(|i| i + 1);
            match at {
                Some(i) => format!("{}{MASK}{}", &uri[..i], &uri[i + p.len()..]),
                None => uri.replace(p, MASK),
            }
        }
        None => uri.to_string(),
    }
}

/// Percent-decodes a URI component, so the decoded form of a password is masked too.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_masks_the_password_of_a_uri() {
        let uri = "mongodb+srv://alice:s3cr%40t@cluster0.example.net/db?retryWrites=true";
        assert_eq!(uri_password(uri), Some("s3cr%40t"));
        assert_eq!(
            redact_uri(uri),
            "mongodb+srv://alice:****@cluster0.example.net/db?retryWrites=true"
        );
        assert_eq!(percent_decode("s3cr%40t"), "s3cr@t");
        assert_eq!(uri_password("mongodb://localhost:27017"), None);
        assert_eq!(uri_password("mongodb://bob@localhost"), None);
        assert_eq!(
            redact_uri("mongodb://localhost:27017"),
            "mongodb://localhost:27017"
        );
    }

    #[test]
    fn scrub_masks_registered_secrets_anywhere_in_a_line() {
        register("hunter2-unit-test");
        assert_eq!(
            scrub("auth failed for mongodb://u:hunter2-unit-test@h (hunter2-unit-test)"),
            "auth failed for mongodb://u:****@h (****)"
        );
        assert_eq!(scrub("nothing secret"), "nothing secret");
    }
}
