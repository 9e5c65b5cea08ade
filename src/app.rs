//! Application assembly: open the device (refusing to start when it or the configured mechanism
//! is missing), open and migrate the store, mint the bootstrap token on a fresh install, serve
//! (through [`crate::api::serve`]: connection caps and timeouts) until SIGINT/SIGTERM, then
//! drain in-flight requests.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState, Limits};
use crate::audit::{AuditError, AuditLog};
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::tpm::backend::TpmBackend;
use crate::backend::tpm::{TpmConfig, TpmDevice};
use crate::backend::{BackendError, Backends, KeyBackend};
use crate::config::{BackendConfig, Config, StoreConfig};
use crate::service::{FrontDoor, Internal, KeyService, ServiceError};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The device could not be opened.
    #[error("key device: {0}")]
    Backend(#[from] BackendError),
    /// The TPM could not be opened.
    #[error("TPM: {0}")]
    Tpm(BackendError),
    /// The database could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Bootstrapping failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ServiceError),
    /// The TLS configuration is unusable.
    #[error("tls: {0}")]
    Tls(#[from] crate::api::tls::TlsError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// A setting read at start-up (the database password) is unusable.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// Binding or serving failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Drops expired version-KEKs at least every half TTL (at most every 30 s, at least every
/// 100 ms), so a KEK never stays in memory much past its TTL when idle.
async fn sweep_keks(internal: Internal, ttl: std::time::Duration) {
    let period = (ttl / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(30),
    );
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        internal.service().maintain_backends().await;
    }
}

/// Opens the PKCS#11 token, trying again for a few seconds while no token matches or the token
/// list cannot be read: SoftHSM2 rewrites a token's file at every `C_Login`, so a node starting
/// while other nodes log in to a shared token can briefly find none, or read a half-written
/// file (`CKR_GENERAL_ERROR`, from the token list or `C_Login`). Nothing else is retried (a
/// wrong PIN tried again could lock the token).
async fn start_pkcs11(
    p: &crate::config::Pkcs11Config,
) -> Result<Pkcs11Backend, crate::backend::BackendError> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 1;
    loop {
        match Pkcs11Backend::start(p.clone()).await {
            Ok(b) => return Ok(b),
            Err(crate::backend::BackendError::Open(m))
                if attempt < ATTEMPTS
                    && (m.starts_with(crate::backend::pkcs11::NO_TOKEN)
                        || m.starts_with(crate::backend::pkcs11::TOKEN_UNREADABLE)) =>
            {
                let e = crate::backend::BackendError::Open(m);
                tracing::warn!(attempt, error = %e, "opening the PKCS#11 token failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens the TPM (blocking: it connects and creates the storage primary) on the blocking pool.
async fn open_tpm(t: &crate::config::TpmSettings) -> Result<Arc<dyn KeyBackend>, StartError> {
    let owner_auth = t
        .owner_auth
        .as_ref()
        .map(|source| source.read())
        .transpose()
        .map_err(|e| StartError::Tpm(BackendError::Open(format!("owner auth: {e}"))))?;
    let config = TpmConfig {
        tcti: t.tcti.clone(),
        owner_auth,
        primary_persistent_handle: t.primary_handle,
    };
    let device = crate::telemetry::run_blocking(move || TpmDevice::open(&config))
        .await
        .map_err(|e| BackendError::Device(Box::new(e)))
        .and_then(|opened| opened)
        .map_err(StartError::Tpm)?;
    Ok(Arc::new(TpmBackend::new(device)))
}

/// Opens the configured key device.
async fn open_backend(config: &Config) -> Result<Arc<dyn KeyBackend>, StartError> {
    Ok(match &config.backend {
        BackendConfig::Pkcs11(p) => Arc::new(start_pkcs11(p).await?),
    })
}

/// Opens (and migrates) the configured store, its calls timed into `metrics`.
async fn open_store(
    config: &Config,
    metrics: &crate::metrics::Metrics,
) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &config.store {
        StoreConfig::Sqlite {
            path,
            secret_cache_bytes,
        } => Arc::new(
            SqliteStore::open(path)
                .await?
                .with_read_cache(*secret_cache_bytes)
                .with_timer(metrics.store_timer("sqlite")),
        ),
        StoreConfig::Postgres { settings, password } => {
            let mut settings = settings.clone();
            settings.password = password
                .as_ref()
                .map(|p| p.read("store.password_file"))
                .transpose()?;
            Arc::new(
                PostgresStore::open(&settings)
                    .await?
                    .with_timer(metrics.store_timer("postgres")),
            )
        }
    })
}

/// Whether audit records are written (always, outside benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auditing {
    On,
    DiscardForBenchmarks,
}

/// A built application, bound to its address, not yet serving.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    /// Connection caps, timeouts and HTTPS.
    serve: crate::api::serve::ServeSettings,
    /// The lifecycle and re-wrap workers, stopped when serving ends.
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// For the last aggregate records of throttled requests, written at shutdown.
    door: FrontDoor,
    /// The unauthenticated-request throttle whose counts those records hold.
    anonymous: Arc<api::throttle::AnonymousThrottle>,
}

impl App {
    /// Opens the backend and the store, bootstraps, binds the listener.
    ///
    /// # Errors
    /// [`StartError`] naming the dependency that failed.
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        Self::build_with(config, Auditing::On).await
    }

    /// [`App::build`] with every audit record discarded. **Benchmarks only**: it lets a
    /// benchmark measure what auditing costs in the same run. No configuration or flag of the
    /// `custodian` binary reaches it.
    ///
    /// # Errors
    /// As [`App::build`].
    #[doc(hidden)]
    pub async fn dangerous_build_unaudited_for_benchmarks(
        config: &Config,
    ) -> Result<Self, StartError> {
        Self::build_with(config, Auditing::DiscardForBenchmarks).await
    }

    async fn build_with(config: &Config, auditing: Auditing) -> Result<Self, StartError> {
        crate::clock::follow_test_offset();
        // One registry for the process: the backends, the store and the audit writer record
        // into it, and `GET /metrics` renders it.
        let metrics = Arc::new(crate::metrics::Metrics::new());
        // The token, the store and the TPM open side by side, each on the blocking pool:
        // start-up waits for the slowest, not their sum (issue 23, target 7). None of them does
        // the one-time set-up that the start-up guard below serialises. A failure is reported in
        // a fixed order (token, store, TPM), whichever of them failed first; a start refused for
        // the token has still opened (and migrated) the store.
        let (backend, store, tpm) =
            tokio::join!(open_backend(config), open_store(config, &metrics), async {
                match &config.tpm {
                    None => Ok(None),
                    Some(t) => open_tpm(t).await.map(Some),
                }
            });
        let (backend, store, tpm) = (backend?, store?, tpm?);
        // Nodes starting at once on a shared database and HSM do the one-time set-up (the
        // signing key, the bootstrap principal) one after another: held until bootstrap is done.
        let startup = store.startup_guard().await?;
        // The signing key is found or generated in the device before anything is served: no
        // request is answered while checkpoints could not be signed.
        let signer = backend.audit_signer().await?;
        let backends =
            Backends::new(backend, tpm, &config.keys.kek_cache).metered(&metrics.device());
        let audit = match auditing {
            Auditing::On => {
                AuditLog::start(
                    Arc::clone(&store),
                    signer,
                    config.audit.clone(),
                    metrics.audit(),
                )
                .await?
            }
            Auditing::DiscardForBenchmarks => {
                AuditLog::dangerous_discarding_for_benchmarks(&config.audit.node)
            }
        };
        let service = Arc::new(
            KeyService::new(
                backends,
                store,
                Arc::new(audit),
                config.secrets.clone(),
                config.keys.clone(),
            )
            .with_access_key_default(config.aws.access_key_key.clone())
            .with_metrics(Arc::clone(&metrics)),
        );
        if let Some(token) = service.bootstrap().await? {
            // Shown once, on stdout (never through tracing): the operator stores it.
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "bootstrap admin token (shown once; store it now): {}",
                token.expose_secret()
            )?;
            out.flush()?;
        }
        drop(startup);
        // Read the certificates before binding: a bad TLS setup refuses to start.
        let tls = config
            .server
            .tls
            .as_ref()
            .map(|t| {
                crate::api::tls::server_config(t).map(|c| crate::api::serve::TlsSettings {
                    config: c,
                    identity: t.identity,
                })
            })
            .transpose()?;
        let (max_connections, max_connections_per_source) = crate::api::serve::effective_caps(
            config.server.max_connections.get(),
            config.server.max_connections_per_source.get(),
            crate::process::nofile_soft_limit(),
        );
        if max_connections < config.server.max_connections.get() {
            tracing::warn!(
                configured = config.server.max_connections.get(),
                in_force = max_connections,
                "server.max_connections lowered to fit the open-file limit (RLIMIT_NOFILE)"
            );
        }
        let serve = crate::api::serve::ServeSettings {
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            max_connections,
            max_connections_per_source,
            // No request legitimately outlives its deadline; a second for the answer to leave.
            drain_timeout: config.server.request_timeout + std::time::Duration::from_secs(1),
            tls,
        };
        let listener = TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let limits = Limits {
            max_body_bytes: config.server.max_body_bytes.get(),
            request_timeout: config.server.request_timeout,
            secret_body_bytes: config.secrets.max_value_bytes.div_ceil(3) * 4
                + config.server.max_body_bytes.get(),
        };
        let anonymous = Arc::new(api::throttle::AnonymousThrottle::new(
            config.server.anonymous,
        ));
        // The front door's only handle on the service; the workers get theirs.
        let door = FrontDoor::new(Arc::clone(&service));
        let internal = Internal::new(Arc::clone(&service));
        let router = api::router(
            AppState {
                door: door.clone(),
                max_secret_bytes: config.secrets.max_value_bytes,
                throttle: Arc::new(api::throttle::AuthThrottle::new(
                    config.server.auth_failures_per_minute.get(),
                )),
                anonymous: Arc::clone(&anonymous),
                vault: config.vault.clone().map(Arc::new),
                aws: Arc::new(config.aws.clone()),
                metrics,
            },
            limits,
        );
        let workers = vec![
            tokio::spawn(crate::rotation::run(
                internal.clone(),
                config.secrets.rotation_check_interval,
                config.keys.lifecycle_check_interval,
            )),
            tokio::spawn(crate::rotation::run_rewrap(
                internal.clone(),
                config.keys.rewrap_pause,
                config.keys.lifecycle_check_interval,
            )),
            tokio::spawn(crate::rotation::run_database(
                internal.clone(),
                config.secrets.rotation_check_interval,
            )),
            tokio::spawn(sweep_keks(internal, config.keys.kek_cache.ttl)),
            tokio::spawn(crate::service::coherence::follow(Arc::clone(&service))),
            tokio::spawn(api::audit::flush_aggregates(
                door.clone(),
                Arc::clone(&anonymous),
            )),
        ];
        Ok(Self {
            listener,
            router,
            addr,
            workers,
            serve,
            door,
            anonymous,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGINT or SIGTERM, then lets in-flight requests finish and writes the
    /// aggregate records of throttled unauthenticated requests not yet written.
    ///
    /// # Errors
    /// I/O errors writing the "listening" line.
    pub async fn run(self) -> Result<(), StartError> {
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "custodian listening on {}", self.addr)?;
            out.flush()?;
        }
        tracing::info!(addr = %self.addr, "serving");
        crate::api::serve::serve(self.listener, self.router, self.serve, shutdown_signal()).await;
        for w in &self.workers {
            w.abort();
        }
        // Nothing is dropped silently: counts not yet written get their records now.
        api::audit::write_aggregates(&self.door, &self.anonymous).await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
