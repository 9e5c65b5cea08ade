//! Fixtures: a deployment (token directory, config, PIN files) and a running server; the
//! process-wide in-process PKCS#11 context.

pub mod cli;
pub mod db;
pub mod inproc;
pub mod postgres;
pub mod server;
pub mod swtpm;

pub use server::{Deployment, Server};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The PKCS#11 module under test.
pub fn module() -> String {
    std::env::var("CUSTODIAN_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".to_owned())
}

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64.
pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD.decode(text).expect("valid base64 from the server")
}

/// A name unique within this test process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}
