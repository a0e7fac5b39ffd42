//! The TLS client configuration, built once from the PEM files `KAFKA_SSL_*_LOCATION` name:
//! what only the files can tell (readable, PEM, a key that fits its certificate) is checked
//! here, each problem a [`TlsFileError`] naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::security::{TlsFile, TlsFileError, TlsFiles};

/// TLS 1.2 and 1.3 through rustls with the `ring` provider; the broker's certificate must
/// chain to the CA file (or a built-in root) and name the host we dialled.
pub(super) fn tls_config(files: &TlsFiles) -> Result<ClientConfig, TlsFileError> {
    let mut roots = RootCertStore::empty();
    match &files.ca {
        Some(path) => {
            let certs = read_certificates(path, TlsFile::Ca)?;
            for cert in certs {
                roots.add(cert).map_err(|e| TlsFileError {
                    file: TlsFile::Ca,
                    problem: format!("{} holds a certificate rustls refuses: {e}", path.display()),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsFileError {
            file: TlsFile::Ca,
            problem: format!("TLS cannot be set up: {e}"),
        })?
        .with_root_certificates(roots);
    match (&files.certificate, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert, TlsFile::Certificate)?;
            let key_der = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsFileError {
                    file: TlsFile::Key,
                    problem: format!(
                        "{} does not fit the certificate of {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(TlsFileError {
            file: TlsFile::Certificate,
            problem: "a client certificate needs its private key (KAFKA_SSL_KEY_LOCATION)".into(),
        }),
        (None, Some(_)) => Err(TlsFileError {
            file: TlsFile::Key,
            problem: "a private key needs its certificate (KAFKA_SSL_CERTIFICATE_LOCATION)".into(),
        }),
    }
}

/// Every certificate of a PEM file; a file without one is refused.
fn read_certificates(
    path: &Path,
    file: TlsFile,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let problem = |p: String| TlsFileError { file, problem: p };
    readable(path, file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|_| problem(format!("cannot read {}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|_| {
            problem(format!(
                "{} is not a PEM file of certificates (-----BEGIN CERTIFICATE-----)",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(problem(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). The parser's own errors may quote a
/// line of the file, so they are never shown.
pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    readable(path, TlsFile::Key)?;
    PrivateKeyDer::from_pem_file(path).map_err(|_| TlsFileError {
        file: TlsFile::Key,
        problem: format!(
            "{} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        ),
    })
}

fn readable(path: &Path, file: TlsFile) -> Result<(), TlsFileError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| TlsFileError {
            file,
            problem: format!("cannot read {}: {}", path.display(), e.kind()),
        })
}
