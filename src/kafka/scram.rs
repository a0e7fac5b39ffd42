//! The client side of SCRAM (RFC 5802) with SHA-256 or SHA-512 (RFC 7677), as Kafka's
//! SCRAM-SHA-256 and SCRAM-SHA-512 mechanisms speak it. Pure: messages in, messages out; the
//! nonce is passed in, so the RFC's test vectors run unchanged.
//!
//! Three messages go out and two come back:
//! 1. client-first `n,,n=<user>,r=<client nonce>` (no channel binding: `n,,`);
//! 2. server-first `r=<client nonce + server nonce>,s=<salt>,i=<iterations>`;
//! 3. client-final `c=biws,r=<nonce>,p=<proof>`, the proof made from the salted password;
//! 4. server-final `v=<server signature>`, which proves the server knows the password too.
//!
//! Kafka feeds the password to PBKDF2 as UTF-8 without SASLprep; so does this client (the two
//! agree for every ASCII password, and match Kafka's tools for the rest).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::digest::Digest;
use hmac::{EagerHash, Hmac, KeyInit, Mac};

/// The fewest PBKDF2 iterations accepted from a server: RFC 7677's minimum, and Kafka's.
pub const MIN_ITERATIONS: u32 = 4096;
/// More than this would keep the client busy for minutes: a broken or hostile server.
const MAX_ITERATIONS: u32 = 10_000_000;

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
    /// RFC 5802's own mechanism, only to run its test vector.
    #[cfg(test)]
    Sha1,
}

/// A server-first or server-final message that breaks the protocol, or a server that does not
/// know the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message that is not SCRAM as RFC 5802 writes it.
    Malformed(String),
    /// The server ended the exchange with `e=<reason>`.
    Refused(String),
    /// The server's signature is wrong: it does not hold this user's credentials (or a
    /// man in the middle answered).
    ServerNotVerified,
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramError::Malformed(m) => write!(f, "malformed SCRAM message: {m}"),
            ScramError::Refused(r) => write!(f, "the server ended SCRAM: {r}"),
            ScramError::ServerNotVerified => {
                f.write_str("the server's SCRAM signature is wrong: it does not know this user")
            }
        }
    }
}

/// One SCRAM exchange, from the client-first message to checking the server's signature.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    /// `n=<user>,r=<client nonce>`: the client-first message without its GS2 header.
    client_first_bare: String,
    /// Set by [`ScramClient::client_final`]: the signature the server must send back.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// `client_nonce` must be printable ASCII without a comma; [`new_nonce`] makes one.
    pub fn new(hash: ScramHash, username: &str, password: &str, client_nonce: String) -> Self {
        let client_first_bare = format!("n={},r={client_nonce}", escape_username(username));
        ScramClient {
            hash,
            password: password.to_string(),
            client_nonce,
            client_first_bare,
            server_signature: None,
        }
    }

    /// The first message: no channel binding, no authorization identity.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Reads the server-first message and answers with the client-final one, carrying the
    /// proof.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let first = ServerFirst::parse(server_first)?;
        if !first.nonce.starts_with(&self.client_nonce) || first.nonce == self.client_nonce {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours".into(),
            ));
        }
        if first.iterations < MIN_ITERATIONS {
            return Err(ScramError::Malformed(format!(
                "the server asks for {} iterations, fewer than the {MIN_ITERATIONS} that are safe",
                first.iterations
            )));
        }
        if first.iterations > MAX_ITERATIONS {
            return Err(ScramError::Malformed(format!(
                "the server asks for {} iterations",
                first.iterations
            )));
        }
        // "biws" is the base64 of the GS2 header "n,,".
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let keys = match self.hash {
            ScramHash::Sha256 => Keys::derive::<sha2::Sha256>(
                self.password.as_bytes(),
                &first.salt,
                first.iterations,
                auth_message.as_bytes(),
            ),
            ScramHash::Sha512 => Keys::derive::<sha2::Sha512>(
                self.password.as_bytes(),
                &first.salt,
                first.iterations,
                auth_message.as_bytes(),
            ),
            #[cfg(test)]
            ScramHash::Sha1 => Keys::derive::<sha1::Sha1>(
                self.password.as_bytes(),
                &first.salt,
                first.iterations,
                auth_message.as_bytes(),
            ),
        };
        self.server_signature = Some(keys.server_signature);
        Ok(format!(
            "{without_proof},p={}",
            BASE64.encode(&keys.client_proof)
        ))
    }

    /// Checks the server-final message: the server must prove it holds our credentials.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(reason) = server_final.strip_prefix("e=") {
            return Err(ScramError::Refused(reason.to_string()));
        }
        let value = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| ScramError::Malformed("the server-final message has no v=".into()))?;
        let signature = BASE64
            .decode(value)
            .map_err(|_| ScramError::Malformed("the server signature is not base64".into()))?;
        match &self.server_signature {
            Some(expected) if constant_time_eq(expected, &signature) => Ok(()),
            Some(_) => Err(ScramError::ServerNotVerified),
            None => Err(ScramError::Malformed(
                "a server-final message before the client-final one".into(),
            )),
        }
    }
}

/// A fresh client nonce: 24 random bytes from the operating system, in base64 (printable, no
/// comma).
pub fn new_nonce() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes for a SCRAM nonce: {e}"))?;
    Ok(BASE64.encode(bytes))
}

/// RFC 5802's saslname: `=` and `,` are written `=3D` and `=2C`.
fn escape_username(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

/// The attributes of a server-first message that the client needs.
struct ServerFirst {
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
}

impl ServerFirst {
    fn parse(message: &str) -> Result<ServerFirst, ScramError> {
        if message.starts_with("m=") {
            return Err(ScramError::Malformed(
                "the server requires an extension this client does not know".into(),
            ));
        }
        if let Some(reason) = message.strip_prefix("e=") {
            return Err(ScramError::Refused(reason.to_string()));
        }
        let mut attributes = message.split(',');
        let mut take = |name: &str| {
            attributes
                .next()
                .and_then(|a| a.strip_prefix(name))
                .ok_or_else(|| {
                    ScramError::Malformed(format!("the server-first message lacks {name}"))
                })
        };
        let nonce = take("r=")?.to_string();
        let salt = take("s=")?;
        let iterations = take("i=")?;
        let salt = BASE64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("the salt is not base64".into()))?;
        let iterations = iterations
            .parse::<u32>()
            .map_err(|_| ScramError::Malformed("the iteration count is not a number".into()))?;
        if nonce.is_empty() || nonce.contains(|c: char| !c.is_ascii_graphic()) {
            return Err(ScramError::Malformed("the nonce is not printable".into()));
        }
        Ok(ServerFirst {
            nonce,
            salt,
            iterations,
        })
    }
}

/// What the client sends (the proof) and expects back (the server's signature).
struct Keys {
    client_proof: Vec<u8>,
    server_signature: Vec<u8>,
}

impl Keys {
    /// RFC 5802 section 3:
    /// SaltedPassword = Hi(password, salt, i); ClientKey = HMAC(SaltedPassword, "Client Key");
    /// StoredKey = H(ClientKey); ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage);
    /// ServerSignature = HMAC(HMAC(SaltedPassword, "Server Key"), AuthMessage).
    fn derive<D: EagerHash + Digest>(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        auth_message: &[u8],
    ) -> Keys {
        let mut salted = vec![0u8; <D as Digest>::output_size()];
        pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, &mut salted);
        let client_key = hmac::<D>(&salted, b"Client Key");
        let stored_key = D::digest(&client_key).to_vec();
        let client_signature = hmac::<D>(&stored_key, auth_message);
        let client_proof = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::<D>(&salted, b"Server Key");
        Keys {
            client_proof,
            server_signature: hmac::<D>(&server_key, auth_message),
        }
    }
}

fn hmac<D: EagerHash>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one exchange and returns the client-final message.
    fn exchange(
        hash: ScramHash,
        user: &str,
        password: &str,
        nonce: &str,
        server_first: &str,
        server_final: &str,
    ) -> Result<String, ScramError> {
        let mut client = ScramClient::new(hash, user, password, nonce.into());
        assert_eq!(client.client_first(), format!("n,,n={user},r={nonce}"));
        let fin = client.client_final(server_first)?;
        client.verify_server_final(server_final)?;
        Ok(fin)
    }

    #[test]
    fn rfc_5802_scram_sha_1_example() {
        // RFC 5802, section 5.
        let fin = exchange(
            ScramHash::Sha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        )
        .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
    }

    #[test]
    fn rfc_7677_scram_sha_256_example() {
        // RFC 7677, section 3.
        let fin = exchange(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        )
        .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
    }

    #[test]
    fn scram_sha_512_matches_an_independent_computation() {
        // No RFC gives a SHA-512 example; this one was computed with Python's hashlib and
        // hmac from RFC 5802's formulas, with RFC 7677's inputs.
        let fin = exchange(
            ScramHash::Sha512,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            SHA512_SERVER_FINAL,
        )
        .unwrap();
        assert_eq!(fin, SHA512_CLIENT_FINAL);
    }

    const SHA512_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==";
    const SHA512_SERVER_FINAL: &str = "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==";

    #[test]
    fn a_server_without_the_password_is_caught() {
        let e = exchange(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        )
        .unwrap_err();
        assert_eq!(e, ScramError::ServerNotVerified);
    }

    #[test]
    fn server_first_messages_that_break_the_protocol_are_refused() {
        let bad = |server_first: &str| {
            ScramClient::new(ScramHash::Sha256, "u", "p", "abc".into())
                .client_final(server_first)
                .unwrap_err()
        };
        assert!(
            matches!(bad("r=xyz,s=AAAA,i=4096"), ScramError::Malformed(m) if m.contains("nonce"))
        );
        assert!(matches!(
            bad("r=abc,s=AAAA,i=4096"),
            ScramError::Malformed(_)
        ));
        assert!(
            matches!(bad("r=abcd,s=AAAA,i=1000"), ScramError::Malformed(m) if m.contains("iterations"))
        );
        assert!(matches!(
            bad("r=abcd,s=!!,i=4096"),
            ScramError::Malformed(_)
        ));
        assert!(matches!(bad("r=abcd,i=4096"), ScramError::Malformed(_)));
        assert!(matches!(
            bad("m=ext,r=abcd,s=AAAA,i=4096"),
            ScramError::Malformed(_)
        ));
        assert_eq!(
            bad("e=unknown-user"),
            ScramError::Refused("unknown-user".into())
        );
    }

    #[test]
    fn usernames_are_escaped_and_nonces_are_fresh() {
        let c = ScramClient::new(ScramHash::Sha256, "a=b,c", "p", "n0".into());
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=n0");
        let (a, b) = (new_nonce().unwrap(), new_nonce().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(!a.contains(','));
    }
}
