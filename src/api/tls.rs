//! TLS (rustls) configuration and client-certificate identity. A client certificate from the
//! configured CA authenticates the principal named by exactly one subject alternative name of
//! the configured type (default: a URI SAN `custodian:principal:<name>`); the subject CN is
//! never used. A certificate without the clientAuth extended key usage, with no such SAN, with
//! several, or with a name that is not a valid principal name is refused: the request is
//! answered 401 `client_certificate_refused` with the reason, unless it carries a bearer
//! token, which takes precedence as before. Policy then decides as for any principal: an
//! unknown name is denied everything. Connections are accepted in [`super::serve`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use crate::config::{ClientAuth, IdentitySan, TlsConfig};
use crate::domain::KeyName;

/// The prefix of the URI SAN that names a principal: `custodian:principal:<name>`.
pub const PRINCIPAL_URI_PREFIX: &str = "custodian:principal:";

/// The principal a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Principal name (from the one identity SAN; a valid principal name).
    pub principal: String,
    /// First 16 hex digits of the certificate's SHA-256, for logs and audit.
    pub fingerprint: String,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used.
    #[error("client CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_error(path, e))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| file_error(path, e))?
        .ok_or_else(|| file_error(path, "no private key in the file"))
}

/// Builds the rustls server configuration.
///
/// # Errors
/// [`TlsError`] naming the file or setting at fault.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match tls.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated().build()?,
                ClientAuth::Required => verifier.build()?,
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(certs(&tls.cert_file)?, private_key(&tls.key_file)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why a verified client certificate names no principal. Put in the request extensions (see
/// [`super::serve`]) so that `authenticate` answers 401 `client_certificate_refused` with this
/// reason when no bearer token is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefused {
    /// The certificate could not be parsed (or has duplicate extensions).
    #[error("the certificate could not be parsed")]
    Unparseable,
    /// No extended key usage extension: the certificate was not issued for client
    /// authentication.
    #[error("the certificate has no extended key usage extension; clientAuth is required")]
    NoExtendedKeyUsage,
    /// The extended key usage extension does not list clientAuth.
    #[error("the certificate's extended key usage does not include clientAuth")]
    NotForClientAuth,
    /// No SAN of the configured type names a principal.
    #[error("the certificate has no {0} subject alternative name naming a principal")]
    NoIdentity(&'static str),
    /// Several SANs of the configured type: ambiguous.
    #[error("the certificate has {count} {kind} subject alternative names naming a principal; exactly one is accepted")]
    AmbiguousIdentity {
        /// The SAN type.
        kind: &'static str,
        /// How many there are.
        count: usize,
    },
    /// The SAN names something that is not a valid principal name.
    #[error("the principal name in the {kind} subject alternative name is invalid: {reason}")]
    InvalidPrincipal {
        /// The SAN type.
        kind: &'static str,
        /// Why the name is invalid.
        reason: String,
    },
}

fn san_kind(identity: IdentitySan) -> &'static str {
    match identity {
        IdentitySan::Uri => "URI (custodian:principal:<name>)",
        IdentitySan::Dns => "DNS",
    }
}

/// The principal a client certificate (already verified against the client CA) names.
///
/// Rules, in order: the certificate must carry an extended key usage extension that lists
/// clientAuth; exactly one subject alternative name of the configured type must name a
/// principal (URI: those starting with `custodian:principal:`, other URIs are ignored; DNS:
/// every DNS name); the name must be a valid principal name (the rules of [`KeyName`]). The
/// subject common name is never used.
///
/// # Errors
/// [`CertificateRefused`] saying which rule failed.
pub fn client_identity(
    cert: &CertificateDer<'_>,
    identity: IdentitySan,
) -> Result<ClientIdentity, CertificateRefused> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| CertificateRefused::Unparseable)?;
    let eku = parsed
        .extended_key_usage()
        .map_err(|_| CertificateRefused::Unparseable)?
        .ok_or(CertificateRefused::NoExtendedKeyUsage)?;
    if !eku.value.client_auth {
        return Err(CertificateRefused::NotForClientAuth);
    }
    let kind = san_kind(identity);
    let names: Vec<&str> = parsed
        .subject_alternative_name()
        .map_err(|_| CertificateRefused::Unparseable)?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match (identity, n) {
                    (IdentitySan::Uri, GeneralName::URI(u)) => u.strip_prefix(PRINCIPAL_URI_PREFIX),
                    (IdentitySan::Dns, GeneralName::DNSName(d)) => Some(*d),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let name = match names.as_slice() {
        [] => return Err(CertificateRefused::NoIdentity(kind)),
        [one] => *one,
        many => {
            return Err(CertificateRefused::AmbiguousIdentity {
                kind,
                count: many.len(),
            })
        }
    };
    let principal = KeyName::try_from(name.to_owned())
        .map_err(|e| CertificateRefused::InvalidPrincipal {
            kind,
            reason: e.to_string(),
        })?
        .as_str()
        .to_owned();
    let fingerprint = hex::encode(&Sha256::digest(cert.as_ref())[..8]);
    Ok(ClientIdentity {
        principal,
        fingerprint,
    })
}
