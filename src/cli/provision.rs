//! `custodian token init`: initialise a development or staging token from the configuration,
//! generating PIN files (mode 0600, in directories created 0700) when they do not exist yet. An
//! existing PIN file that group or others may read or write is refused. PINs never pass through
//! argv.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::backend::pkcs11::provision::{init_token, Provisioned};
use crate::backend::BackendError;
use crate::config::{PinSource, Pkcs11Config, TokenSelector};
use crate::secret::Pin;

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Tokens are initialised by label.
    #[error("token init needs backend.token_label in the configuration")]
    NeedsLabel,
    /// A PIN file could not be written or read.
    #[error("PIN file {path}: {source}")]
    PinFile {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The configured PIN source could not be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The module refused.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(#[from] getrandom::Error),
}

/// Reads the PIN in `path`, or generates one and writes it there with mode 0600. Missing
/// parent directories are created with mode 0700 (whatever the umask); existing ones are left
/// as they are. An existing file that group or others may read or write is refused (by
/// [`PinSource::read`]), with its mode and the `chmod 600` fix in the message.
fn pin_file(path: &Path) -> Result<Pin, ProvisionError> {
    let err = |source| ProvisionError::PinFile {
        path: path.display().to_string(),
        source,
    };
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut raw = Zeroizing::new([0u8; 24]);
        getrandom::getrandom(&mut raw[..])?;
        let pin = Zeroizing::new(URL_SAFE_NO_PAD.encode(&raw[..]));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(pin.as_bytes()).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
    }
    Ok(PinSource::File(path.to_owned()).read()?)
}

/// Initialises the configured token if no token has its label; returns what happened.
///
/// # Errors
/// [`ProvisionError`].
pub fn run(config: &Pkcs11Config, so_pin_file: &Path) -> Result<Provisioned, ProvisionError> {
    let TokenSelector::Label(label) = &config.token else {
        return Err(ProvisionError::NeedsLabel);
    };
    let user_pin = match &config.pin {
        PinSource::File(path) => pin_file(path)?,
        env @ PinSource::Env(_) => env.read()?,
    };
    let so_pin = pin_file(so_pin_file)?;
    Ok(init_token(&config.module, label, &so_pin, &user_pin)?)
}
