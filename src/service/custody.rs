//! The custody report: for every key version, the device's own description and the root key's
//! attributes read back from the device now, the mode, dates, state and how many stored data
//! keys it wraps, with every anomaly flagged; signed by the device-resident audit key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

use super::{KeyService, ServiceError};
use crate::audit::custody::{SignedReport, FORMAT};
use crate::audit::record::format_time;
use crate::audit::signature::ALGORITHM;
use crate::backend::{BackendError, DeviceDescription, ObjectFacts};
use crate::domain::{Key, KeyVersionRecord, RootKeyRef, VersionState};
use crate::policy::{Action, Principal, Resource};

/// Keys read per store page while building the report.
const PAGE: u32 = 200;

/// The report payload (format [`FORMAT`]).
#[derive(Debug, Serialize)]
pub struct CustodyReport {
    /// [`FORMAT`].
    pub format: &'static str,
    /// When the attributes were read.
    pub generated_at: String,
    /// The node that read them.
    pub node: String,
    /// Every configured device, as it describes itself now.
    pub devices: Vec<DeviceDescription>,
    /// The audit signing key that signs this report, read back from the device.
    pub signing_key: SigningKeyFacts,
    /// Every key.
    pub keys: Vec<KeyCustody>,
    /// Totals.
    pub summary: Summary,
}

/// The signing key's entry.
#[derive(Debug, Serialize)]
pub struct SigningKeyFacts {
    /// [`ALGORITHM`].
    pub algorithm: &'static str,
    /// Fingerprint (hex SHA-256 of the DER public key).
    pub fingerprint: String,
    /// PEM public key.
    pub public_key: String,
    /// Its private half as the device reports it.
    pub device_object: Option<ObjectFacts>,
    /// Anomalies.
    pub anomalies: Vec<String>,
}

/// One key.
#[derive(Debug, Serialize)]
pub struct KeyCustody {
    /// Id.
    pub key_id: String,
    /// Name.
    pub name: String,
    /// State.
    pub state: crate::domain::KeyState,
    /// Device kind.
    pub backend: crate::domain::BackendKind,
    /// Wrapping mode.
    pub mode: crate::domain::WrapMode,
    /// Creation time.
    pub created_at: String,
    /// Rotation period, if scheduled.
    pub rotation_period: Option<crate::domain::secret::HumanDuration>,
    /// Every version.
    pub versions: Vec<VersionCustody>,
}

/// One key version.
#[derive(Debug, Serialize)]
pub struct VersionCustody {
    /// Number.
    pub version: u32,
    /// State.
    pub state: VersionState,
    /// Algorithm of blobs it makes.
    pub algorithm: crate::domain::Algorithm,
    /// When its root key was generated (the rotation that created it).
    pub created_at: String,
    /// When it was destroyed.
    pub destroyed_at: Option<String>,
    /// The device object's label.
    pub device_label: String,
    /// The root key as the device reports it now; `None` when absent.
    pub device_object: Option<ObjectFacts>,
    /// Stored data keys (secret versions) it wraps.
    pub stored_data_keys: u64,
    /// Wraps reserved under it so far (an upper bound of the wraps done).
    pub wraps_reserved: u64,
    /// Everything wrong, in words. Empty when custody is as it must be.
    pub anomalies: Vec<String>,
}

/// Totals.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Keys.
    pub keys: u64,
    /// Versions.
    pub versions: u64,
    /// Versions (and the signing key) with at least one anomaly.
    pub anomalies: u64,
}

impl KeyService {
    /// Builds and signs the custody report.
    ///
    /// # Errors
    /// `Forbidden`, `Backend` (device down: no report rather than a report without readings),
    /// `Store`, `Audit` (no signer).
    pub async fn custody_report(&self, p: &Principal) -> Result<SignedReport, ServiceError> {
        let resource = Resource {
            kind: "custody",
            names: vec!["report".to_owned()],
        };
        self.authorize(p, Action::CustodyRead, &resource, None)
            .await?;
        let signer = self
            .audit
            .signer()
            .ok_or(crate::audit::AuditError::Stopped)?
            .clone();
        let mut devices = Vec::new();
        for d in self.backends.devices() {
            devices.push(d.describe().await?);
        }
        let signing_object = signer.inspect().await?;
        let mut signing_anomalies = Vec::new();
        match &signing_object {
            None => signing_anomalies.push("signing key missing from the device".to_owned()),
            Some(f) => signing_anomalies.extend(f.weaknesses.iter().cloned()),
        }
        let mut summary = Summary::default();
        if !signing_anomalies.is_empty() {
            summary.anomalies += 1;
        }
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list_keys(after.as_ref(), PAGE).await?;
            let Some(last) = page.last().map(|k| k.name.clone()) else {
                break;
            };
            for key in page {
                let entry = self.key_custody(&key).await?;
                summary.keys += 1;
                summary.versions += entry.versions.len() as u64;
                summary.anomalies += entry
                    .versions
                    .iter()
                    .filter(|v| !v.anomalies.is_empty())
                    .count() as u64;
                keys.push(entry);
            }
            after = Some(last);
        }
        if summary.anomalies > 0 {
            tracing::error!(
                anomalies = summary.anomalies,
                "custody report found anomalies; an operator must look"
            );
        }
        let public = signer.public_key();
        let report = CustodyReport {
            format: FORMAT,
            generated_at: format_time(crate::clock::now()),
            node: self.audit.node().to_owned(),
            devices,
            signing_key: SigningKeyFacts {
                algorithm: ALGORITHM,
                fingerprint: public.fingerprint(),
                public_key: public
                    .to_pem()
                    .map_err(|e| BackendError::Device(Box::new(e)))?,
                device_object: signing_object,
                anomalies: signing_anomalies,
            },
            keys,
            summary,
        };
        let payload =
            serde_json::to_string_pretty(&report).map_err(|e| BackendError::Device(Box::new(e)))?;
        let signature = signer.sign(payload.clone().into_bytes()).await?;
        Ok(SignedReport {
            payload,
            algorithm: ALGORITHM.to_owned(),
            key_fingerprint: public.fingerprint(),
            signature: STANDARD.encode(signature),
        })
    }

    async fn key_custody(&self, key: &Key) -> Result<KeyCustody, ServiceError> {
        let stored = self.store.references(key.id).await?;
        let mut versions = Vec::with_capacity(key.versions.len());
        let backend = self.backend_of(key)?;
        for v in &key.versions {
            let root = key.root(v.version);
            let object = backend.inspect_root_key(&root).await?;
            let count = stored
                .iter()
                .find(|(ver, _)| *ver == v.version)
                .map_or(0, |(_, n)| *n);
            versions.push(version_custody(&root, v, object, count));
        }
        Ok(KeyCustody {
            key_id: key.id.to_string(),
            name: key.name.to_string(),
            state: key.state,
            backend: key.backend,
            mode: key.mode,
            created_at: format_time(key.created_at),
            rotation_period: key.rotation_period,
            versions,
        })
    }
}

/// Judges one version: what the device holds against what the store says it must.
fn version_custody(
    root: &RootKeyRef,
    v: &KeyVersionRecord,
    object: Option<ObjectFacts>,
    stored_data_keys: u64,
) -> VersionCustody {
    let mut anomalies = Vec::new();
    let destroyed = v.state == VersionState::Destroyed;
    match (&object, destroyed) {
        (None, false) => anomalies.push("root key missing from the device".to_owned()),
        (Some(_), true) if v.destroyed_at.is_some() => {
            anomalies.push("destroyed version's root key is still in the device".to_owned())
        }
        (Some(_), true) => anomalies.push(
            "destroyed version's root key is still in the device (destruction pending)".to_owned(),
        ),
        (Some(f), false) => anomalies.extend(f.weaknesses.iter().cloned()),
        (None, true) => {}
    }
    if destroyed && stored_data_keys > 0 {
        anomalies.push(format!(
            "{stored_data_keys} stored data keys still reference a destroyed version"
        ));
    }
    VersionCustody {
        version: v.version.get(),
        state: v.state,
        algorithm: v.algorithm,
        created_at: format_time(v.created_at),
        destroyed_at: v.destroyed_at.map(format_time),
        device_label: root.label(),
        device_object: object,
        stored_data_keys,
        wraps_reserved: v.wraps_reserved,
        anomalies,
    }
}
