//! Audit reads for auditors: events with filters, the export (ending on a checkpoint: a fresh
//! one at most once per `audit.export_checkpoint_interval`), the signing public key, and the
//! policy-gated archive operation.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::{KeyService, ServiceError};
use crate::audit::export::{Header, Line, FORMAT};
use crate::audit::record::GENESIS;
use crate::audit::{AuditArchive, AuditFilter, AuditRecord};
use crate::policy::{Action, Principal, Resource};

/// Most records one events page returns.
pub const MAX_EVENTS_PAGE: u32 = 1000;
/// Records read per export page.
const EXPORT_PAGE: u32 = 1000;

/// The audit log as a policy resource.
fn audit_resource() -> Resource {
    Resource {
        kind: "audit",
        names: vec!["log".to_owned()],
    }
}

/// What an export covers: its header and the last sequence it includes.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// The header line.
    pub header: Header,
    /// The last sequence included (a checkpoint's, or `header.after` for an empty export).
    pub until: u64,
}

impl KeyService {
    /// Records matching `filter`.
    ///
    /// # Errors
    /// `Forbidden`, `InvalidAuditQuery`, `Store`.
    pub async fn audit_events(
        &self,
        p: &Principal,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        self.authorize(p, Action::AuditRead, &audit_resource(), None)
            .await?;
        if filter.limit == 0 || filter.limit > MAX_EVENTS_PAGE {
            return Err(ServiceError::InvalidAuditQuery("limit must be 1 to 1000"));
        }
        Ok(self.store.audit_search(filter).await?)
    }

    /// The signing public key (PEM).
    ///
    /// # Errors
    /// `Forbidden`, `Audit`.
    pub async fn audit_public_key(&self, p: &Principal) -> Result<String, ServiceError> {
        self.authorize(p, Action::AuditRead, &audit_resource(), None)
            .await?;
        let key = self.audit.public_key()?;
        Ok(key
            .to_pem()
            .map_err(|_| crate::audit::AuditError::CheckpointFailed)?)
    }

    /// Plans an export of the records after `after` (default: where the stored log starts),
    /// up to the last checkpoint at or before `until` — or, without `until`, up to the
    /// checkpoint [`crate::audit::AuditLog::checkpoint_now`] returns: one signed now over
    /// everything written so far, or the latest one when an export had one signed within
    /// `audit.export_checkpoint_interval` (records after it are not in this export).
    ///
    /// # Errors
    /// `Forbidden`, `AuditArchived` (asked for archived records), `Audit`, `Store`.
    pub async fn audit_export_plan(
        &self,
        p: &Principal,
        after: Option<u64>,
        until: Option<u64>,
    ) -> Result<ExportPlan, ServiceError> {
        self.authorize(p, Action::AuditRead, &audit_resource(), None)
            .await?;
        self.export_plan(after, until).await
    }

    async fn export_plan(
        &self,
        after: Option<u64>,
        until: Option<u64>,
    ) -> Result<ExportPlan, ServiceError> {
        let tail = self.store.audit_tail().await?;
        let floor = tail.archive.as_ref().map_or(0, |a| a.through);
        let after = after.unwrap_or(floor);
        if after < floor {
            return Err(ServiceError::AuditArchived { through: floor });
        }
        let last_checkpoint = match until {
            None => self.audit.checkpoint_now().await?.map_or(0, |c| c.sequence),
            Some(u) => self
                .store
                .audit_checkpoints(after, u)
                .await?
                .last()
                .map_or(0, |c| c.sequence),
        };
        let until = last_checkpoint.max(after);
        let prev_hash = if after == 0 {
            hex::encode(GENESIS)
        } else if after == floor {
            tail.archive.map(|a| a.head).unwrap_or_default()
        } else {
            self.store
                .audit_range(after - 1, after, 1)
                .await?
                .pop()
                .map(|r| r.hash)
                .ok_or(ServiceError::InvalidAuditQuery("no record at `after`"))?
        };
        let key_fingerprint = self.audit.public_key()?.fingerprint();
        Ok(ExportPlan {
            header: Header {
                format: FORMAT.to_owned(),
                after,
                prev_hash,
                key_fingerprint,
            },
            until,
        })
    }

    /// The export lines after `after` up to `until`, at most one page of records with the
    /// checkpoints among them. Empty when `after >= until`.
    ///
    /// # Errors
    /// `Store`.
    pub async fn audit_export_page(
        &self,
        after: u64,
        until: u64,
    ) -> Result<Vec<Line>, ServiceError> {
        if after >= until {
            return Ok(Vec::new());
        }
        let records = self.store.audit_range(after, until, EXPORT_PAGE).await?;
        let Some(last) = records.last().map(|r| r.sequence) else {
            // Records the plan counted on are gone: the table was edited under us.
            return Err(ServiceError::Audit(crate::audit::AuditError::ChainBroken(
                after + 1,
            )));
        };
        let mut checkpoints = self
            .store
            .audit_checkpoints(after, last)
            .await?
            .into_iter()
            .peekable();
        let mut lines = Vec::with_capacity(records.len() + 1);
        for r in records {
            let seq = r.sequence;
            lines.push(Line::Record(Box::new(r)));
            while let Some(c) = checkpoints.next_if(|c| c.sequence <= seq) {
                lines.push(Line::Checkpoint(c));
            }
        }
        Ok(lines)
    }

    /// Archives the records up to `through` (a checkpoint's sequence): checks that the caller
    /// holds the exact export of them (`export_sha256` is the SHA-256 of the export file that
    /// `GET /v1/audit/export?until={through}` returns), then removes them and records the chain
    /// head, in one transaction. The request's own audit record names the archive.
    ///
    /// # Errors
    /// `Forbidden`, `NotACheckpoint`, `ExportMismatch`, `Audit`, `Store`.
    pub async fn audit_archive(
        &self,
        p: &Principal,
        through: u64,
        export_sha256: &str,
        request_id: &str,
    ) -> Result<AuditArchive, ServiceError> {
        self.authorize(p, Action::AuditArchive, &audit_resource(), None)
            .await?;
        let checkpoint = self
            .store
            .audit_checkpoints(through.saturating_sub(1), through)
            .await?
            .pop()
            .filter(|c| c.sequence == through)
            .ok_or(ServiceError::NotACheckpoint(through))?;
        let plan = self.export_plan(None, Some(through)).await?;
        if plan.until != through {
            return Err(ServiceError::NotACheckpoint(through));
        }
        let mut digest = Sha256::new();
        digest.update(export_line(&Line::Header(plan.header.clone()))?);
        let mut after = plan.header.after;
        loop {
            let page = self.audit_export_page(after, plan.until).await?;
            let Some(last) = page.iter().rev().find_map(|l| match l {
                Line::Record(r) => Some(r.sequence),
                _ => None,
            }) else {
                break;
            };
            for line in &page {
                digest.update(export_line(line)?);
            }
            after = last;
        }
        let computed = hex::encode(digest.finalize());
        if !bool::from(computed.as_bytes().ct_eq(export_sha256.as_bytes())) {
            return Err(ServiceError::ExportMismatch);
        }
        let archive = AuditArchive {
            through,
            head: checkpoint.head,
            export_sha256: computed,
            archived_at: crate::audit::record::format_time(crate::clock::now()),
            principal: p.name.clone(),
            request_id: request_id.to_owned(),
        };
        self.changing().await?;
        let removed = self.store.archive_audit(&archive).await?;
        tracing::info!(
            through,
            removed,
            principal = %p.name,
            "audit records archived"
        );
        Ok(archive)
    }
}

/// One export line as the export endpoint writes it: compact JSON and a newline.
///
/// # Errors
/// `InvalidAuditQuery` if serialisation fails (it does not for these types).
pub fn export_line(line: &Line) -> Result<Vec<u8>, ServiceError> {
    let mut v = serde_json::to_vec(line)
        .map_err(|_| ServiceError::InvalidAuditQuery("unserialisable line"))?;
    v.push(b'\n');
    Ok(v)
}
