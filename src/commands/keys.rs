//! `custodian keys …`: create, list, show, rotate, update, disable/enable, schedule or cancel
//! deletion, versions and re-wrap of keys. Every subcommand prints the API's answer as JSON.

use clap::{ArgGroup, Subcommand};

use custodian::cli::client::{KeyAction, KeyChange, KeyPlacementArgs, VersionAction};
use custodian::domain::{BackendKind, WrapMode};

use super::progress::{fail_if_failed, follow, Stream};
use super::{print_json, Conn, KEY_HELP};

/// `keys create --backend`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// A PKCS#11 token (the HSM).
    Pkcs11,
    /// The TPM 2.0 configured in [tpm].
    Tpm,
}

/// `keys create --mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// The device wraps and unwraps every data key.
    Direct,
    /// The device wraps a version-KEK; data keys are wrapped under it in software.
    Cached,
}

impl From<BackendArg> for BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Pkcs11 => Self::Pkcs11,
            BackendArg::Tpm => Self::Tpm,
        }
    }
}

impl From<ModeArg> for WrapMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Direct => Self::Direct,
            ModeArg::Cached => Self::Cached,
        }
    }
}

/// `keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its version-1 root key is generated inside the device.
    Create {
        /// Unique name: letters, digits, '-', '_', '.'.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// The device that holds the key's root keys (server default: pkcs11). tpm needs a
        /// [tpm] section on the server.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// How data keys are wrapped: direct (the device wraps each one) or cached (the device
        /// wraps a version-KEK that wraps data keys in software for at most the KEK cache TTL).
        /// Server default: direct on pkcs11, cached on tpm.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List keys by name.
    List {
        /// Page size (1 to 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this key name (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one key as JSON.
    Show {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rotate now: a new root key in the device becomes the primary version; older versions
    /// still decrypt. Starts a re-wrap job unless the server's keys.rewrap_after_rotation is
    /// off. Prints the key as JSON.
    ///
    /// With --rewrap, also asks for the re-wrap job to the new version (the one the server
    /// started, if it did) and prints {"key": …, "job": …}; with --wait, follows that job
    /// until it ends (a progress bar with rate and ETA on stderr when it is a terminal, plain
    /// lines otherwise) and prints the finished job; a failed job makes the command fail.
    Rotate {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Start (or find) the re-wrap job of stored data keys to the new version.
        #[arg(long)]
        rewrap: bool,
        /// Follow the re-wrap job until it completes or fails.
        #[arg(long, requires = "rewrap")]
        wait: bool,
        /// Milliseconds between polls with --wait (100 to 60000).
        #[arg(
            long,
            value_name = "MS",
            default_value_t = 1000,
            requires = "wait",
            value_parser = clap::value_parser!(u64).range(100..=60_000)
        )]
        interval_ms: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a key's description, rotation period or minimum decryption version; options left
    /// out stay as they are. Prints the key as JSON.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        #[arg(help = KEY_HELP)]
        key: String,
        /// New description (at most 1024 bytes).
        #[arg(long, group = "change")]
        description: Option<String>,
        /// Rotate automatically this often, e.g. 90d, 12h (at least the server's
        /// keys.min_rotation_period, 1h by default).
        #[arg(
            long,
            value_name = "DURATION",
            group = "change",
            conflicts_with = "no_rotation"
        )]
        rotation_period: Option<String>,
        /// Turn scheduled rotation off.
        #[arg(long, group = "change")]
        no_rotation: bool,
        /// Versions below N no longer decrypt (1 to the primary version).
        #[arg(long, value_name = "N", group = "change")]
        min_decryption_version: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Disable a key: it neither wraps nor unwraps until enabled. Disabling a disabled key
    /// changes nothing. Prints the key as JSON.
    Disable {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Enable a disabled key. Enabling an enabled key changes nothing. Prints the key as JSON.
    Enable {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Schedule an enabled or disabled key for destruction after a waiting period; it is
    /// unusable meanwhile. Prints the key (with deletion_date) as JSON.
    ScheduleDeletion {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Days until destruction: 7 to 30 (default 30).
        #[arg(long, value_name = "N")]
        pending_days: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a scheduled deletion; the key becomes disabled (enable it to use it again).
    /// Prints the key as JSON.
    CancelDeletion {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a key's versions with their states and the stored data keys each still wraps, as
    /// JSON.
    Versions {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Disable, enable or destroy one version of a key.
    #[command(subcommand)]
    Version(VersionCommand),
    /// Start a job that re-wraps every stored data key of the key under its primary version
    /// (or return the one already running); prints the job as JSON.
    Rewrap {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `keys version …`.
#[derive(Subcommand)]
pub enum VersionCommand {
    /// Disable an active version: data it wrapped no longer decrypts until it is enabled.
    /// Prints the key as JSON.
    Disable {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Version number (not the primary version).
        version: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Enable a disabled version again. Prints the key as JSON.
    Enable {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Version number.
        version: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Destroy a version's root key in the device, for good: data it wrapped can never be
    /// decrypted again. Refused while stored data keys still use it (re-wrap them first) and
    /// for the primary version. Prints the key as JSON.
    Destroy {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Version number (not the primary version).
        version: u32,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `keys …`: every subcommand prints the API's answer as JSON.
pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    let answer = match command {
        KeysCommand::Create {
            name,
            description,
            backend,
            mode,
            conn,
        } => {
            let placement = KeyPlacementArgs {
                backend: backend.map(Into::into),
                mode: mode.map(Into::into),
            };
            conn.client()?
                .create_key(&name, &description, &placement)
                .await?
        }
        KeysCommand::List { limit, after, conn } => {
            conn.client()?.list_keys(limit, after.as_deref()).await?
        }
        KeysCommand::Show { key, conn } => conn.client()?.show_key(&key).await?,
        KeysCommand::Rotate {
            key,
            rewrap,
            wait,
            interval_ms,
            conn,
        } => {
            let client = conn.client()?;
            let rotated = client.key_action(&key, KeyAction::Rotate).await?;
            if !rewrap {
                rotated
            } else {
                // By id: the name could be given to another key meanwhile.
                let id = rotated["id"].as_str().unwrap_or(key.as_str()).to_owned();
                let job = client.key_action(&id, KeyAction::Rewrap).await?;
                if !wait {
                    serde_json::json!({ "key": rotated, "job": job })
                } else {
                    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
                    let interval = std::time::Duration::from_millis(interval_ms);
                    let finished = follow(&client, &job_id, interval, Stream::Stderr).await?;
                    // The rotation stands whatever became of the job: print both, then fail.
                    print_json(&serde_json::json!({ "key": rotated, "job": finished }))?;
                    return fail_if_failed(&finished);
                }
            }
        }
        KeysCommand::Update {
            key,
            description,
            rotation_period,
            no_rotation,
            min_decryption_version,
            conn,
        } => {
            let change = KeyChange {
                description,
                // clap keeps --rotation-period and --no-rotation apart.
                rotation_period: match (rotation_period, no_rotation) {
                    (Some(p), _) => Some(Some(p)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                min_decryption_version,
            };
            conn.client()?.update_key(&key, &change).await?
        }
        KeysCommand::Disable { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Disable).await?
        }
        KeysCommand::Enable { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Enable).await?
        }
        KeysCommand::ScheduleDeletion {
            key,
            pending_days,
            conn,
        } => {
            conn.client()?
                .schedule_key_deletion(&key, pending_days)
                .await?
        }
        KeysCommand::CancelDeletion { key, conn } => {
            conn.client()?
                .key_action(&key, KeyAction::CancelDeletion)
                .await?
        }
        KeysCommand::Versions { key, conn } => conn.client()?.key_versions(&key).await?,
        KeysCommand::Version(command) => {
            let (key, version, action, conn) = match command {
                VersionCommand::Disable { key, version, conn } => {
                    (key, version, VersionAction::Disable, conn)
                }
                VersionCommand::Enable { key, version, conn } => {
                    (key, version, VersionAction::Enable, conn)
                }
                VersionCommand::Destroy { key, version, conn } => {
                    (key, version, VersionAction::Destroy, conn)
                }
            };
            conn.client()?.version_action(&key, version, action).await?
        }
        KeysCommand::Rewrap { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Rewrap).await?
        }
    };
    print_json(&answer)
}
