//! Process hardening at start-up of `custodian serve` and `custodian token init`: core dumps off
//! (`PR_SET_DUMPABLE=0`, `RLIMIT_CORE=0`) unless the configuration dangerously allows them, and
//! the soft `RLIMIT_NOFILE` raised to the hard limit. Everything goes through `rustix`'s safe
//! wrappers: `unsafe` stays forbidden in this crate.

use rustix::process::{self, DumpableBehavior, Resource, Rlimit};

/// Whether a crash may leave a core dump.
///
/// # Security
/// A core dump holds the process memory: the user PIN, cached version-KEKs, data keys and
/// plaintext in flight. [`CoreDumps::Disabled`] is the default; the other variant is for
/// debugging on a machine that holds no production keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoreDumps {
    /// `PR_SET_DUMPABLE=0` and `RLIMIT_CORE=0` (soft and hard): no core dump, no ptrace attach
    /// by other processes of the same user, `/proc/<pid>/mem` readable by root only.
    #[default]
    Disabled,
    /// Left as the environment set them (`[server] dangerous_allow_core_dumps = true`).
    DangerousAllowed,
}

/// What start-up hardening left in force, read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// `PR_GET_DUMPABLE` after hardening.
    pub dumpable: bool,
    /// `RLIMIT_CORE` after hardening.
    pub core: Limits,
    /// `RLIMIT_NOFILE` after hardening.
    pub nofile: Limits,
}

/// A resource limit's soft and hard values (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft limit, in force.
    pub soft: Option<u64>,
    /// The hard limit, the most the soft limit can be raised to.
    pub hard: Option<u64>,
}

impl From<Rlimit> for Limits {
    fn from(r: Rlimit) -> Self {
        Self {
            soft: r.current,
            hard: r.maximum,
        }
    }
}

fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

/// Why hardening failed. Start-up stops: a process that cannot turn core dumps off must not
/// load keys.
#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    /// `prctl(PR_SET_DUMPABLE, 0)` or `PR_GET_DUMPABLE` failed.
    #[error("prctl PR_SET_DUMPABLE/PR_GET_DUMPABLE: {0}")]
    Dumpable(#[source] rustix::io::Errno),
    /// `setrlimit(RLIMIT_CORE, 0)` failed.
    #[error("setrlimit(RLIMIT_CORE, 0): {0}")]
    CoreLimit(#[source] rustix::io::Errno),
}

/// Applies the start-up hardening and logs (at info) what is in force, read back.
///
/// Raising `RLIMIT_NOFILE` is best effort: a failure is logged at warn and start-up goes on
/// (the connection cap is computed from the soft limit actually in force).
///
/// # Errors
/// [`HardeningError`] when core dumps are to be disabled and the kernel refused.
pub fn harden(core_dumps: CoreDumps) -> Result<Hardening, HardeningError> {
    if core_dumps == CoreDumps::Disabled {
        process::set_dumpable_behavior(DumpableBehavior::NotDumpable)
            .map_err(HardeningError::Dumpable)?;
        process::setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .map_err(HardeningError::CoreLimit)?;
    }
    let nofile = process::getrlimit(Resource::Nofile);
    if nofile.current != nofile.maximum {
        let raised = Rlimit {
            current: nofile.maximum,
            maximum: nofile.maximum,
        };
        if let Err(e) = process::setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, soft = %show(nofile.current), hard = %show(nofile.maximum), "could not raise the soft RLIMIT_NOFILE to the hard limit");
        }
    }
    let hardening = Hardening {
        dumpable: process::dumpable_behavior().map_err(HardeningError::Dumpable)?
            != DumpableBehavior::NotDumpable,
        core: process::getrlimit(Resource::Core).into(),
        nofile: process::getrlimit(Resource::Nofile).into(),
    };
    if core_dumps == CoreDumps::DangerousAllowed {
        tracing::warn!("server.dangerous_allow_core_dumps is set: a crash may write PINs and key material to disk");
    }
    tracing::info!(
        dumpable = u8::from(hardening.dumpable),
        core_limit_soft = %show(hardening.core.soft),
        core_limit_hard = %show(hardening.core.hard),
        nofile_soft = %show(hardening.nofile.soft),
        nofile_hard = %show(hardening.nofile.hard),
        "process hardening in force"
    );
    Ok(hardening)
}

/// The soft `RLIMIT_NOFILE` in force now (`None`: unlimited).
pub fn nofile_soft_limit() -> Option<u64> {
    process::getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_shown_as_numbers_or_unlimited() {
        assert_eq!(show(None), "unlimited");
        assert_eq!(show(Some(0)), "0");
    }
}
