//! Configuration errors. Each names the field path it is about.

use std::path::PathBuf;

/// Why the configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file or an environment override could not be read or has the wrong shape.
    #[error("configuration could not be loaded")]
    Load(#[from] Box<figment::Error>),
    /// A field holds a value that is well-formed but not allowed.
    #[error("configuration: {field}: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `backend.sessions`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret (PIN) could not be read from where the configuration says it is.
    #[error("configuration: {field}: cannot read secret from {source_desc}: {reason}")]
    Secret {
        /// Dotted path of the field that names the source.
        field: &'static str,
        /// The file or environment variable, never the value.
        source_desc: String,
        /// What went wrong.
        reason: String,
    },
    /// The configuration file does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
}
