//! TLS to PostgreSQL with rustls (the server's TLS stack): `disable`, `require` (encrypted, the
//! server's certificate not checked — libpq's `require`) and `verify-full` (the certificate must
//! chain to the configured CA and name the host).

use std::path::PathBuf;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// `[store] sslmode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS (a database on the same host or a private network).
    Disable,
    /// TLS, without checking the server's certificate: protects against eavesdropping only.
    Require,
    /// TLS; the server's certificate must chain to `ca_file` and name the host.
    VerifyFull {
        /// PEM file of the CA(s) that issue the server's certificate.
        ca_file: PathBuf,
    },
}

impl SslMode {
    pub(crate) fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Require | Self::VerifyFull { .. } => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The connector the pool and the dedicated connections use.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

fn unusable(what: String) -> StoreError {
    StoreError::Unavailable(what.into())
}

impl Tls {
    pub(crate) fn new(mode: &SslMode) -> Result<Self, StoreError> {
        match mode {
            SslMode::Disable => Ok(Self::Plain),
            SslMode::Require => Self::with_verifier(None, "store"),
            SslMode::VerifyFull { ca_file } => {
                let shown = format!("store.ca_file {}", ca_file.display());
                let pem = std::fs::read(ca_file).map_err(|e| unusable(format!("{shown}: {e}")))?;
                Self::with_verifier(Some(&pem), &shown)
            }
        }
    }

    /// TLS that checks the server's certificate against the CA(s) in `ca_pem` (`verify-full`)
    /// or, without one, accepts any certificate (`require`). `shown` names the setting in
    /// errors. Also used for target databases (`crate::database`), whose CA comes as PEM text.
    pub(crate) fn with_verifier(ca_pem: Option<&[u8]>, shown: &str) -> Result<Self, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(format!("TLS to PostgreSQL: {e}")))?;
        let config = match ca_pem {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            Some(mut pem) => {
                let mut roots = RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut pem) {
                    let cert = cert.map_err(|e| unusable(format!("{shown}: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| unusable(format!("{shown}: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(unusable(format!("{shown}: no certificate in it")));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Self::Rustls(MakeRustlsConnect::new(config)))
    }

    /// A pool manager connecting with this TLS setting.
    pub(super) fn manager(&self, pg: tokio_postgres::Config, config: ManagerConfig) -> Manager {
        match self {
            Self::Plain => Manager::from_config(pg, NoTls, config),
            Self::Rustls(tls) => Manager::from_config(pg, tls.clone(), config),
        }
    }

    /// A connection outside the pool; its driver task runs on the current runtime.
    pub(crate) async fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        match self {
            Self::Plain => {
                let (client, connection) = pg.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            Self::Rustls(tls) => {
                let (client, connection) = pg.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }
}

impl Tls {
    /// A connection whose notifications (`LISTEN`) arrive on the returned receiver, which ends
    /// when the connection does.
    pub(super) async fn connect_listening(
        &self,
        pg: &tokio_postgres::Config,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        ),
        tokio_postgres::Error,
    > {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match self {
            Self::Plain => {
                let (client, connection) = pg.connect(NoTls).await?;
                tokio::spawn(forward(connection, tx));
                client
            }
            Self::Rustls(tls) => {
                let (client, connection) = pg.connect(tls.clone()).await?;
                tokio::spawn(forward(connection, tx));
                client
            }
        };
        Ok((client, rx))
    }
}

/// Drives `connection`, passing each notification's payload to `tx`.
async fn forward<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if tx.send(n.payload().to_owned()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL change feed connection ended");
                return;
            }
        }
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "PostgreSQL connection ended");
    }
}

/// `sslmode = "require"`: any certificate is accepted (as libpq's `require`), but the handshake
/// signatures are still checked, so the session is encrypted to whoever holds the certificate's
/// key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
