//! Keeps secrets (the password of a connection string, a SASL password) out of every log line and
//! error. Secrets are registered once when settings are read; the logger and the error printer
//! pass every line through `scrub`, so no code path has to remember to redact.
//!
//! A secret is registered with the forms it may be printed in: as written, percent-decoded,
//! percent-encoded and escaped as `{:?}` escapes it, so a library that prints any of them is
//! covered.

use std::ops::Range;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

const MASK: &str = "****";

/// A derived form (decoded, encoded, escaped) shorter than this is not registered: it could be
/// an ordinary word, and the form as written is registered anyway.
const MIN_DERIVED_LEN: usize = 4;

/// Characters that a URI's userinfo must percent-encode (the MongoDB driver refuses them raw).
pub const USERINFO_RESERVED: &[char] = &[':', '/', '?', '#', '[', ']', '@'];

/// Registers a secret to be masked from now on (ignored when empty), with its percent-decoded,
/// percent-encoded and `{:?}`-escaped forms. For any secret: a URI's password, a SASL password.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let escape = |s: &str| {
        let quoted = format!("{s:?}");
        quoted[1..quoted.len() - 1].to_string()
    };
    let decoded = percent_decode(secret);
    let derived = [
        percent_encode(&decoded),
        escape(secret),
        escape(&decoded),
        decoded,
    ];
    let Ok(mut secrets) = SECRETS.write() else {
        return;
    };
    let forms = std::iter::once(secret.to_string())
        .chain(derived.into_iter().filter(|d| d.len() >= MIN_DERIVED_LEN));
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the password of a connection string (see [`uri_password`]), if it has one.
pub fn register_uri_password(uri: &str) {
    if let Some(p) = uri_password(uri) {
        register(p);
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

/// The password of a URI such as `mongodb://` or `mongodb+srv://`, as written (percent-encoded
/// or not): after the userinfo's first `:`, up to the last `@` that a host list follows
/// (`host[:port]` items, comma-separated, up to the next `/`, `?` or the end).
///
/// The driver ends the userinfo at the last `@` before the first `?`, which is the same for a
/// well-formed URI; but a password written with raw reserved characters (`/`, `?`, `@`, `:`)
/// defeats that reading (a `?` in it starts the options early), and the password must still be
/// masked whole. When an option's value holds an `@` too, this masks more than the password,
/// never less. When no `@` is followed by a host list, the last `@` ends the userinfo.
pub fn uri_password(uri: &str) -> Option<&str> {
    password_span(uri).map(|r| &uri[r])
}

/// Where the password of a URI lies, as bytes of `uri`; see [`uri_password`].
fn password_span(uri: &str) -> Option<Range<usize>> {
    let start = uri.find("://")? + 3;
    let rest = &uri[start..];
    let mut ats = rest.match_indices('@').map(|(i, _)| i);
    // No host list at all (the URI is wrong anyway): the last '@' ends the userinfo.
    let at = ats
        .clone()
        .rfind(|&i| host_list_follows(&rest[i + 1..]))
        .or_else(|| ats.next_back())?;
    let colon = rest[..at].find(':')?;
    let span = start + colon + 1..start + at;
    (!span.is_empty()).then_some(span)
}

/// True when `s` starts with a host list: `host[:port]` or `[ipv6][:port]` items (a host may be
/// a percent-encoded socket path), separated by commas, ending at a `/`, a `?` or the end.
fn host_list_follows(s: &str) -> bool {
    let hosts = s.split(['/', '?']).next().unwrap_or(s);
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let name_ok = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_%".contains(&b))
    };
    !hosts.is_empty()
        && hosts.split(',').all(|host| {
            if let Some(v6) = host.strip_prefix('[') {
                match v6.split_once(']') {
                    Some((addr, tail)) => {
                        !addr.is_empty()
                            && addr
                                .bytes()
                                .all(|b| b.is_ascii_hexdigit() || b":.%".contains(&b))
                            && (tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok))
                    }
                    None => false,
                }
            } else {
                match host.split_once(':') {
                    Some((name, port)) => name_ok(name) && port_ok(port),
                    None => name_ok(host),
                }
            }
        })
}

/// The raw reserved characters in a URI's password (see [`USERINFO_RESERVED`]), each once, in
/// order: the driver refuses such a password, and the user must percent-encode them.
pub fn raw_reserved_in_password(uri: &str) -> Vec<char> {
    let mut found = Vec::new();
    for c in uri_password(uri).unwrap_or("").chars() {
        if USERINFO_RESERVED.contains(&c) && !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

/// The URI with its password masked, for showing where the program connects.
pub fn redact_uri(uri: &str) -> String {
    match password_span(uri) {
        Some(r) => format!("{}{MASK}{}", &uri[..r.start], &uri[r.end..]),
        None => uri.to_string(),
    }
}

/// Percent-encodes every byte but ASCII letters, digits and `-._~` (RFC 3986's unreserved set).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        assert_eq!(uri_password("mongodb://bob:@localhost"), None);
        assert_eq!(
            redact_uri("mongodb://localhost:27017"),
            "mongodb://localhost:27017"
        );
    }

    /// Passwords with raw reserved characters, as a user pastes a generated one: the password
    /// is found whole wherever the characters sit, with one host, several, a port, an IPv6
    /// literal, a socket path, with and without a database and options.
    #[test]
    fn a_password_with_raw_reserved_characters_is_found_whole() {
        let passwords = [
            "pa/ss0rd",
            "pa?ss0rd",
            "pa@ss0rd",
            "pa:ss0rd",
            "p/a?s@s:w#o[r]d",
            "@/?:",
            "ends-with-at@",
            "x@127.0.0.1/y?z",
            "a?b=c&d@e",
            "pa%2Fss%3F%40",
            "plain",
        ];
        let hosts = [
            "127.0.0.1:1",
            "db.example.net",
            "h1:27017,h2:27018",
            "[::1]:27017",
            "%2Ftmp%2Fmongodb-27017.sock",
        ];
        let tails = [
            "",
            "/",
            "/db",
            "/db?authSource=admin",
            "?tls=true",
            "/d?a=1&b=2",
        ];
        for scheme in ["mongodb", "mongodb+srv"] {
            for p in passwords {
                for h in hosts {
                    for t in tails {
                        let uri = format!("{scheme}://us.er:{p}@{h}{t}");
                        assert_eq!(uri_password(&uri), Some(p), "{uri}");
                        assert_eq!(
                            redact_uri(&uri),
                            format!("{scheme}://us.er:****@{h}{t}"),
                            "{uri}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_at_sign_in_the_options_masks_more_never_less() {
        let uri = "mongodb://u:pw@h:1/db?appName=a@b";
        assert_eq!(uri_password(uri), Some("pw@h:1/db?appName=a"));
        assert_eq!(redact_uri(uri), "mongodb://u:****@b");
        // An '@' that no host list follows is not the userinfo's end.
        let uri = "mongodb://u:pw@h:1/db?authMechanismProperties=SERVICE_NAME:a@/x";
        assert_eq!(uri_password(uri), Some("pw"));
    }

    #[test]
    fn the_raw_reserved_characters_of_a_password_are_named() {
        assert_eq!(
            raw_reserved_in_password("mongodb://u:a/b?c@d/@h/db"),
            vec!['/', '?', '@']
        );
        assert!(raw_reserved_in_password("mongodb://u:a%2Fb@h/db").is_empty());
        assert!(raw_reserved_in_password("mongodb://h/db?x=a:b").is_empty());
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

    #[test]
    fn a_secret_is_masked_decoded_encoded_and_escaped() {
        register_uri_password("mongodb://u:Unit%2Fpw%22q@h/db");
        assert_eq!(scrub("a Unit%2Fpw%22q b"), "a **** b");
        assert_eq!(scrub("a Unit/pw\"q b"), "a **** b");
        assert_eq!(scrub(r#"got "Unit/pw\"q""#), r#"got "****""#);
        register("Sasl pw/üñ");
        assert_eq!(scrub("x Sasl%20pw%2F%C3%BC%C3%B1 y"), "x **** y");
        // A short derived form is not registered: "%41" would otherwise mask every "A".
        register("%41");
        assert_eq!(scrub("A %41"), "A ****");
    }
}
