//! The answers are built from the wire types (`api_types`), no longer serialised straight from
//! the domain's, the service's, the policy engine's or the audit log's records. These tests pin
//! the move: each wire value serialises to the same bytes as the record it is built from (or as
//! the generic answer type it replaced), with every optional member present and absent, and
//! reads back into itself (what the client does).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::macros::datetime;
use time::OffsetDateTime;

use crate::api_types::health::Ready;
use crate::api_types::identity::{Policy, Principal, TokenCreated, TokenInfo};
use crate::api_types::keys::Key;
use crate::api_types::lifecycle::{Alias, JobEvent};
use crate::api_types::secrets::SecretRecord;
use crate::domain::job::{self, JobKind, JobState};
use crate::domain::secret::{
    self, Charset, GenerateSpec, HumanDuration, SecretPath, SecretVersionInfo, SecretVersionState,
};
use crate::domain::{
    self, Algorithm, BackendKind, KeyId, KeyName, KeyState, KeyVersion, KeyVersionRecord,
    PolicyRecord, PrincipalRecord, VersionState, WrapMode,
};
use crate::policy::document::Effect;
use crate::policy::{DecidedBy, Decision};
use crate::service::lifecycle::VersionUsage;
use crate::service::rewrap::{JobStatus, VersionCount};
use crate::service::DeviceHealth;

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

/// `wire` serialises as `old` did, and reads back into itself.
fn same<O: Serialize, W: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    old: &O,
    wire: &W,
) -> Result {
    let old = serde_json::to_string(old)?;
    let new = serde_json::to_string(wire)?;
    assert_eq!(old, new);
    let back: W = serde_json::from_str(&new)?;
    assert_eq!(&back, wire);
    Ok(())
}

const T1: OffsetDateTime = datetime!(2026-01-02 03:04:05.123456 UTC);
const T2: OffsetDateTime = datetime!(2026-02-03 04:05:06 UTC);

fn name(s: &str) -> std::result::Result<KeyName, domain::InvalidKeyName> {
    KeyName::try_from(s.to_owned())
}

fn version(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap_or(KeyVersion::FIRST)
}

fn key_version(n: u32, destroyed: bool) -> KeyVersionRecord {
    KeyVersionRecord {
        version: version(n),
        state: if destroyed {
            VersionState::Destroyed
        } else {
            VersionState::Primary
        },
        algorithm: Algorithm::Aes256KwpCached,
        created_at: T1,
        destroyed_at: destroyed.then_some(T2),
        wraps_reserved: 7,
        material: domain::RootMaterial::default(),
    }
}

#[test]
fn keys_and_versions() -> Result {
    let full = domain::Key {
        id: KeyId::generate(),
        name: name("billing")?,
        description: "d \"quoted\"".into(),
        state: KeyState::PendingDeletion,
        backend: BackendKind::Tpm,
        mode: WrapMode::Cached,
        created_at: T1,
        primary_version: version(2),
        min_decryption_version: version(1),
        rotation_period: Some(HumanDuration::parse("90s")?),
        next_rotation_at: Some(T2),
        deletion_date: Some(T2),
        deletion_blocked: Some("stored data".into()),
        updated_at: T2,
        versions: vec![key_version(1, true), key_version(2, false)],
    };
    same(&full, &Key::from(&full))?;
    let bare = domain::Key {
        rotation_period: None,
        next_rotation_at: None,
        deletion_date: None,
        deletion_blocked: None,
        versions: vec![key_version(1, false)],
        ..full
    };
    same(&bare, &Key::from(&bare))?;
    for destroyed in [false, true] {
        let usage = VersionUsage {
            record: key_version(3, destroyed),
            stored_data_keys: 12,
        };
        same(&usage, &super::lifecycle::version_usage(&usage))?;
    }
    Ok(())
}

#[test]
fn jobs_events_and_aliases() -> Result {
    let stored = job::Job {
        id: "j1".into(),
        kind: JobKind::Rewrap,
        key_id: KeyId::generate(),
        target_version: version(3),
        state: JobState::Failed,
        done: 10,
        failed_items: 2,
        last_error: Some("boom".into()),
        created_at: T1,
        updated_at: T2,
        finished_at: Some(T2),
    };
    for (job, rate) in [
        (stored.clone(), 1.25),
        (
            job::Job {
                state: JobState::Running,
                last_error: None,
                finished_at: None,
                ..stored
            },
            0.0,
        ),
    ] {
        let status = JobStatus {
            job,
            versions: vec![VersionCount {
                version: version(2),
                stored_data_keys: 4,
            }],
            remaining: 4,
            rate_per_second: rate,
        };
        same(&status, &super::lifecycle::job_status(&status))?;
    }
    for detail in [Some("v1".to_owned()), None] {
        let event = job::JobEvent {
            seq: 1,
            at: T1,
            kind: "batch".into(),
            moved: 3,
            failed: 0,
            detail,
        };
        same(&event, &JobEvent::from(&event))?;
    }
    let alias = domain::Alias {
        name: name("current")?,
        key_id: KeyId::generate(),
        created_at: T1,
        updated_at: T2,
    };
    same(&alias, &Alias::from(&alias))?;
    Ok(())
}

#[test]
fn secret_records() -> Result {
    let full = secret::SecretRecord {
        path: SecretPath::try_from("team/app/db".to_owned())?,
        key_id: KeyId::generate(),
        current_version: 2,
        max_versions: 0,
        expires_after: Some(HumanDuration::parse("1d")?),
        custom: BTreeMap::from([("owner".to_owned(), "ops".to_owned())]),
        generate: Some(GenerateSpec {
            length: 32,
            charset: Charset::Printable,
            rotate_every: HumanDuration::parse("3600s")?,
        }),
        next_rotation_at: Some(T2),
        created_at: T1,
        updated_at: T2,
        versions: vec![
            SecretVersionInfo {
                version: 1,
                state: SecretVersionState::Destroyed,
                created_at: T1,
                deleted_at: Some(T1),
                destroyed_at: Some(T2),
                key_id: None,
                key_version: None,
            },
            SecretVersionInfo {
                version: 2,
                state: SecretVersionState::Live,
                created_at: T2,
                deleted_at: None,
                destroyed_at: None,
                key_id: Some(KeyId::generate()),
                key_version: Some(version(1)),
            },
        ],
    };
    same(&full, &SecretRecord::from(&full))?;
    let bare = secret::SecretRecord {
        expires_after: None,
        custom: BTreeMap::new(),
        generate: None,
        next_rotation_at: None,
        versions: Vec::new(),
        ..full
    };
    same(&bare, &SecretRecord::from(&bare))?;
    Ok(())
}

#[test]
fn principals_policies_tokens_and_decisions() -> Result {
    let principal = PrincipalRecord {
        name: name("app")?,
        attributes: BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]),
        policies: vec![name("billing")?, name("read")?],
        created_at: T1,
        updated_at: T2,
    };
    same(&principal, &Principal::from(&principal))?;
    let policy = PolicyRecord {
        name: name("billing")?,
        version: 3,
        document: serde_json::json!({"statements": [{"effect": "allow", "actions": ["*"],
            "resources": ["*"]}]}),
        created_at: T1,
        updated_at: T2,
    };
    same(&policy, &Policy::from(&policy))?;

    let info = domain::TokenInfo {
        id: "0123456789abcdef".into(),
        principal: "app".into(),
        description: "ci".into(),
        created_at: T1,
        expires_at: Some(T2),
        revoked_at: Some(T2),
    };
    same(&info, &TokenInfo::from(&info))?;
    let bare = domain::TokenInfo {
        expires_at: None,
        revoked_at: None,
        ..info.clone()
    };
    same(&bare, &TokenInfo::from(&bare))?;

    /// The answer of `POST /v1/tokens` as it was: the token, then the metadata flattened.
    #[derive(Serialize)]
    struct OldCreated<'a> {
        token: &'a str,
        #[serde(flatten)]
        info: &'a domain::TokenInfo,
    }
    let text = "cst_0123456789abcdef_secret";
    for minted in [
        domain::TokenInfo {
            revoked_at: None,
            ..info
        },
        bare,
    ] {
        let wire = TokenCreated::new(zeroize::Zeroizing::new(text.to_owned()), &minted);
        let old = OldCreated {
            token: text,
            info: &minted,
        };
        assert_eq!(serde_json::to_string(&old)?, serde_json::to_string(&wire)?);
        assert_eq!(wire.info(), TokenInfo::from(&minted));
    }

    /// The answer of explain as it was: the decision flattened, then action and resource.
    #[derive(Serialize)]
    struct OldExplain<'a> {
        #[serde(flatten)]
        decision: &'a Decision,
        action: &'a str,
        resource: &'a str,
    }
    for decision in [
        Decision {
            effect: Effect::Allow,
            decided_by: Some(DecidedBy {
                policy: "billing".into(),
                statement: 2,
                sid: Some("s".into()),
            }),
        },
        Decision {
            effect: Effect::Deny,
            decided_by: Some(DecidedBy {
                policy: "billing".into(),
                statement: 0,
                sid: None,
            }),
        },
        Decision {
            effect: Effect::Deny,
            decided_by: None,
        },
    ] {
        let old = OldExplain {
            decision: &decision,
            action: "decrypt",
            resource: "key/x",
        };
        let wire = super::identity::explained(decision.clone(), "decrypt".into(), "key/x".into());
        same(&old, &wire)?;
    }
    Ok(())
}

#[test]
fn readiness() -> Result {
    /// The readiness answer as it was: the generic type over the device's and the audit log's
    /// records.
    #[derive(Serialize)]
    struct OldReady<'a> {
        audit: &'a crate::audit::AuditStatus,
        device: &'a DeviceHealth,
        rejected_key_blobs: &'a [String],
        status: &'a str,
        store_writable: bool,
        tpm: Option<&'a DeviceHealth>,
    }
    let up = DeviceHealth {
        reason: None,
        reinitialisations: 0,
        usable: true,
    };
    let down = DeviceHealth {
        reason: Some("tpm_busy"),
        reinitialisations: 2,
        usable: false,
    };
    for (audit, tpm, rejected) in [
        (
            crate::audit::AuditStatus {
                chain_broken_at: None,
                checkpoint: 4,
                head: 9,
                writable: true,
            },
            None,
            vec![],
        ),
        (
            crate::audit::AuditStatus {
                chain_broken_at: Some(5),
                checkpoint: 4,
                head: 9,
                writable: false,
            },
            Some(&down),
            vec!["custodian:k:v1".to_owned()],
        ),
    ] {
        let old = OldReady {
            audit: &audit,
            device: &up,
            rejected_key_blobs: &rejected,
            status: "not_ready",
            store_writable: true,
            tpm,
        };
        let wire = Ready {
            audit: super::health::audit_status(&audit),
            device: super::health::device(&up),
            rejected_key_blobs: rejected.clone(),
            status: "not_ready".into(),
            store_writable: true,
            tpm: tpm.map(super::health::device),
            tpm_keys: None,
        };
        same(&old, &wire)?;
    }
    Ok(())
}

#[test]
fn audit_records_and_archives() -> Result {
    let hash = "ab".repeat(32);
    let full = serde_json::json!({
        "sequence": 7, "time": "2026-01-02T03:04:05.123456Z", "node": "n1",
        "request_id": "r1", "method": "POST", "route": "/v1/keys/{key}/datakey",
        "principal": "app", "credential": "0123456789abcdef", "source": "10.0.0.1",
        "action": "datakey:generate", "resource": "key/billing", "key_id": "k",
        "key_version": 2, "other_keys": ["k2/v1"], "outcome": "pending", "status": 200,
        "error_code": null, "context_digest": hash, "context_keys": ["tenant"],
        "details": {"count": "3"}, "prev_hash": hash, "hash": hash
    });
    let mut bare = full.clone();
    for (k, v) in [
        ("principal", serde_json::Value::Null),
        ("key_version", serde_json::Value::Null),
        ("outcome", "denied".into()),
        ("error_code", "forbidden".into()),
        ("other_keys", serde_json::json!([])),
    ] {
        bare[k] = v;
    }
    if let Some(o) = bare.as_object_mut() {
        o.remove("details");
    }
    for json in [full, bare] {
        let stored: crate::audit::AuditRecord = serde_json::from_value(json)?;
        same(&stored, &super::audit::record(stored.clone()))?;
    }
    let archive = crate::audit::AuditArchive {
        through: 9,
        head: hash.clone(),
        export_sha256: hash,
        archived_at: "2026-01-02T03:04:05.123456Z".into(),
        principal: "admin".into(),
        request_id: "r2".into(),
    };
    same(&archive, &super::audit::archive_record(archive.clone()))?;
    Ok(())
}
