//! The audit and custody side of the `custodian` binary: offline verification of an export and
//! of a signed custody report (no server, no token, no database), the export writer that hashes
//! the exact bytes it writes, the archive procedure, and the Markdown rendering of a report.
//!
//! Verification trusts only the public key the auditor passes (`--public-key`), obtained
//! out-of-band; the key fingerprints inside the files are checked against it, never trusted.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::attest::{attestation_keys, check_attestations, tally, AttestationCheck, AK_TRUST_NOTE};
use super::client::{Client, ClientError};
use crate::audit::custody::{ReportError, SignedReport};
use crate::audit::export::{self, Broken, Intact, MAX_LINE};
use crate::audit::signature::{PublicKey, SignatureError};

/// The largest custody report file `custody verify` and `custody report --format md` read. A
/// report is a few KiB per key; this leaves room for hundreds of thousands of versions.
pub const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

/// The largest public key file read: a PEM P-256 key is under 200 bytes.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// Why an audit or custody command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The `--public-key` file is not a P-256 public key in PEM.
    #[error("{path}: {problem}")]
    PublicKey {
        /// The file.
        path: String,
        /// What is wrong (in the message, not a `source`: the chain would print it twice).
        problem: SignatureError,
    },
    /// The file is not a signed custody report envelope.
    #[error("{path} is not a signed custody report: {reason}")]
    NotAReport {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The custody report's signature (or payload) does not verify. (Not a `source`: the
    /// message already holds it, and the error chain would print it twice.)
    #[error("the custody report does not verify: {0}")]
    Report(ReportError),
    /// The export does not verify: names the first bad or missing sequence number.
    #[error("the export is not intact: {0}")]
    Broken(Broken),
    /// The server answered something that is not an export.
    #[error("the server sent a malformed export: {0}")]
    Malformed(String),
    /// No checkpoint beyond the archived part: nothing to archive.
    #[error("nothing to archive: the log holds no checkpointed records beyond the last archive")]
    NothingToArchive,
    /// `--through` is not a checkpoint's sequence.
    #[error(
        "not_a_checkpoint: {asked} is not the sequence of a checkpoint after the last archive; \
         the last such checkpoint at or before it is {last} (0: none); omit --through to \
         archive up to a checkpoint signed now"
    )]
    NotACheckpoint {
        /// What was asked.
        asked: u64,
        /// The last checkpoint the export reached (0: none).
        last: u64,
    },
    /// An archive file is never overwritten.
    #[error("{path} already exists; an archive file is never overwritten")]
    Exists {
        /// The file.
        path: String,
    },
    /// The API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Reads a PEM `PUBLIC KEY` (P-256) from `path`.
///
/// # Errors
/// `Read`, `PublicKey`.
pub fn read_public_key(path: &Path) -> Result<PublicKey, AuditCliError> {
    let text = read_limited(path, MAX_PEM_BYTES)?;
    let pem = String::from_utf8(text).map_err(|_| AuditCliError::PublicKey {
        path: path.display().to_string(),
        problem: SignatureError::PublicKey,
    })?;
    PublicKey::from_pem(&pem).map_err(|problem| AuditCliError::PublicKey {
        path: path.display().to_string(),
        problem,
    })
}

/// `custodian audit verify`: checks every hash link and checkpoint signature of the export in
/// `file`, streaming it, under `key`.
///
/// # Errors
/// `Read` when the file cannot be opened; `Broken` naming the first bad or missing sequence.
pub fn verify_export_file(file: &Path, key: &PublicKey) -> Result<Intact, AuditCliError> {
    let f = File::open(file).map_err(|source| AuditCliError::Read {
        path: file.display().to_string(),
        source,
    })?;
    export::verify(BufReader::new(f), key).map_err(AuditCliError::Broken)
}

/// Parses a signed custody report envelope (as `GET /v1/custody/report` sends it).
///
/// # Errors
/// `NotAReport`.
pub fn parse_report(bytes: &[u8], path: &str) -> Result<SignedReport, AuditCliError> {
    serde_json::from_slice(bytes).map_err(|e| AuditCliError::NotAReport {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads the signed custody report in `file`.
///
/// # Errors
/// `Read`, `NotAReport`.
pub fn read_report(file: &Path) -> Result<SignedReport, AuditCliError> {
    let bytes = read_limited(file, MAX_REPORT_BYTES)?;
    parse_report(&bytes, &file.display().to_string())
}

/// What `custody verify` found in a report whose signature verified.
#[derive(Debug)]
pub struct ReportVerdict {
    /// The lines to print.
    pub text: String,
    /// TPM attestations that verified.
    pub attestations_verified: usize,
    /// The key versions whose TPM attestation failed, each with the reason.
    pub attestation_failures: Vec<String>,
}

/// `custodian custody verify`: checks the report's signature under `key`, then every TPM
/// attestation in it offline (pinned to `attestation_key` when given; see [`super::attest`]),
/// and returns the lines to print: the signature, the devices, the totals, every anomaly, each
/// attestation's result and a summary line.
///
/// # Errors
/// `Read`, `NotAReport`, `Report` (a bad signature, another key, not a custody report). A
/// failed attestation is not an error here: it is in the verdict, for the caller to print first.
pub fn verify_report_file(
    file: &Path,
    key: &PublicKey,
    attestation_key: Option<&PublicKey>,
) -> Result<ReportVerdict, AuditCliError> {
    let report = read_report(file)?;
    let payload = report.verify(key).map_err(AuditCliError::Report)?;
    let checks = check_attestations(&payload, attestation_key);
    let mut text = report_summary(&report, &payload);
    text.push_str(&attestation_summary(
        &payload,
        &checks,
        attestation_key.is_some(),
    ));
    Ok(ReportVerdict {
        text,
        attestations_verified: tally(&checks).verified,
        attestation_failures: checks
            .iter()
            .filter(|c| c.outcome.is_err())
            .map(ToString::to_string)
            .collect(),
    })
}

/// The attestation part of `custody verify`'s output: one line per attestation, the AK
/// fingerprints with the trust note, and the closing summary line
/// (`signature valid; N TPM attestations verified; M anomalies`).
pub fn attestation_summary(payload: &Value, checks: &[AttestationCheck], pinned: bool) -> String {
    let mut out = String::new();
    if !checks.is_empty() {
        out.push_str("TPM attestations (TPM2_Certify, checked offline):\n");
        for c in checks {
            out.push_str(&format!("  {c}\n"));
        }
        let keys = attestation_keys(checks);
        if pinned {
            out.push_str("attestation key pinned with --attestation-key; ");
            out.push_str(
                "the TPM's endorsement key certificate chain is not checked (out of scope)\n",
            );
        } else if !keys.is_empty() {
            out.push_str(&format!(
                "attestation key{} {}: {AK_TRUST_NOTE}\n",
                if keys.len() == 1 { "" } else { "s" },
                keys.join(", ")
            ));
        }
    }
    let t = tally(checks);
    let failed = if t.failed > 0 {
        format!(", {} FAILED", t.failed)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "signature valid; {} TPM attestation{} verified{failed}; {} anomal{}\n",
        t.verified,
        if t.verified == 1 { "" } else { "s" },
        number(&payload["summary"]["anomalies"]),
        if payload["summary"]["anomalies"].as_u64() == Some(1) {
            "y"
        } else {
            "ies"
        },
    ));
    out
}

/// The text `custody verify` prints for a verified report, before the attestations.
pub fn report_summary(report: &SignedReport, payload: &Value) -> String {
    let mut out = format!(
        "signature valid ({}, key {})\n",
        report.algorithm, report.key_fingerprint
    );
    out.push_str(&format!(
        "report generated {} by node {}\n",
        text(&payload["generated_at"]),
        text(&payload["node"]),
    ));
    for device in devices(payload) {
        out.push_str(&format!("device: {}\n", device_line(device)));
    }
    let summary = &payload["summary"];
    out.push_str(&format!(
        "{} keys, {} versions, {} anomalies\n",
        number(&summary["keys"]),
        number(&summary["versions"]),
        number(&summary["anomalies"]),
    ));
    for line in anomaly_lines(payload) {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The devices a report describes: `devices` (one per configured device), or the single
/// `device` of reports made before TPMs were supported.
fn devices(payload: &Value) -> Vec<&Value> {
    match payload["devices"].as_array() {
        Some(all) => all.iter().collect(),
        None if !payload["device"].is_null() => vec![&payload["device"]],
        None => Vec::new(),
    }
}

/// `pkcs11 token "label" (manufacturer model, serial S, firmware F)`.
fn device_line(d: &Value) -> String {
    format!(
        "{} token \"{}\" ({} {}, serial {}, firmware {}, hardware {})",
        text(&d["backend"]),
        text(&d["label"]),
        text(&d["manufacturer"]),
        text(&d["model"]),
        text(&d["serial"]),
        text(&d["firmware"]),
        text(&d["hardware"]),
    )
}

/// Every anomaly of a report payload, one line each: `signing key: …`,
/// `key NAME (ID) vN: …`.
pub fn anomaly_lines(payload: &Value) -> Vec<String> {
    let mut lines: Vec<String> = strings(&payload["signing_key"]["anomalies"])
        .map(|a| format!("signing key: {a}"))
        .collect();
    for key in payload["keys"].as_array().into_iter().flatten() {
        for v in key["versions"].as_array().into_iter().flatten() {
            for a in strings(&v["anomalies"]) {
                lines.push(format!(
                    "key {} ({}) v{}: {a}",
                    text(&key["name"]),
                    text(&key["key_id"]),
                    number(&v["version"]),
                ));
            }
        }
    }
    lines
}

/// Renders a signed custody report as Markdown: the device, the signing key, a table of keys, a
/// table of versions with their device attributes, the anomalies, and the signature block. The
/// rendering itself is not signed; the envelope is the evidence.
///
/// # Errors
/// `NotAReport` when the payload is not JSON.
pub fn render_markdown(report: &SignedReport) -> Result<String, AuditCliError> {
    let p: Value =
        serde_json::from_str(&report.payload).map_err(|e| AuditCliError::NotAReport {
            path: "the envelope's payload".to_owned(),
            reason: e.to_string(),
        })?;
    let mut md = String::from("# Custody report\n\n");
    let s = &p["summary"];
    let checks = check_attestations(&p, None);
    md.push_str("| | |\n|---|---|\n");
    for (name, value) in [
        ("Format", text(&p["format"])),
        ("Generated at", text(&p["generated_at"])),
        ("Node", text(&p["node"])),
        (
            if devices(&p).len() == 1 {
                "Device"
            } else {
                "Devices"
            },
            devices(&p)
                .into_iter()
                .map(device_line)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            "Summary",
            format!(
                "{} keys, {} versions, {} with anomalies",
                number(&s["keys"]),
                number(&s["versions"]),
                number(&s["anomalies"]),
            ),
        ),
    ] {
        md.push_str(&format!("| {name} | {} |\n", cell(&value)));
    }

    let sk = &p["signing_key"];
    md.push_str("\n## Audit signing key\n\n| | |\n|---|---|\n");
    for (name, value) in [
        ("Algorithm", text(&sk["algorithm"])),
        ("Fingerprint", text(&sk["fingerprint"])),
        ("Device object", object_summary(&sk["device_object"])),
        ("Attributes", attributes(&sk["device_object"])),
        ("Anomalies", joined(&sk["anomalies"])),
    ] {
        md.push_str(&format!("| {name} | {} |\n", cell(&value)));
    }

    let keys = p["keys"].as_array().map(Vec::as_slice).unwrap_or_default();
    md.push_str("\n## Keys\n\n");
    if keys.is_empty() {
        md.push_str("No keys.\n");
    } else {
        md.push_str("| Name | Id | State | Backend | Mode | Created | Rotation period |\n");
        md.push_str("|---|---|---|---|---|---|---|\n");
        for k in keys {
            md.push_str(&row(&[
                text(&k["name"]),
                text(&k["key_id"]),
                text(&k["state"]),
                text(&k["backend"]),
                text(&k["mode"]),
                text(&k["created_at"]),
                text(&k["rotation_period"]),
            ]));
        }
        md.push_str("\n## Versions\n\n");
        md.push_str(
            "| Key | Backend/mode | Version | State | Algorithm | Created | Destroyed | \
             Device label | Device object | Attributes | Attestation | Stored data keys | \
             Wraps reserved | Anomalies |\n",
        );
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for k in keys {
            for v in k["versions"].as_array().into_iter().flatten() {
                md.push_str(&row(&[
                    text(&k["name"]),
                    format!("{}/{}", text(&k["backend"]), text(&k["mode"])),
                    number(&v["version"]),
                    text(&v["state"]),
                    text(&v["algorithm"]),
                    text(&v["created_at"]),
                    text(&v["destroyed_at"]),
                    text(&v["device_label"]),
                    object_summary(&v["device_object"]),
                    attributes(&v["device_object"]),
                    attestation_cell(&checks, k, v),
                    number(&v["stored_data_keys"]),
                    number(&v["wraps_reserved"]),
                    joined(&v["anomalies"]),
                ]));
            }
        }
    }

    if !checks.is_empty() {
        let t = tally(&checks);
        md.push_str(&format!(
            "\nTPM attestations (TPM2_Certify, checked offline while rendering): {} verified, \
             {} failed. Attestation key{} {}: {AK_TRUST_NOTE}.\n",
            t.verified,
            t.failed,
            if attestation_keys(&checks).len() == 1 {
                ""
            } else {
                "s"
            },
            attestation_keys(&checks).join(", "),
        ));
        for c in checks.iter().filter(|c| c.outcome.is_err()) {
            md.push_str(&format!("\n- {}", cell(&c.to_string())));
        }
        if t.failed > 0 {
            md.push('\n');
        }
    }

    md.push_str("\n## Anomalies\n\n");
    let anomalies = anomaly_lines(&p);
    if anomalies.is_empty() {
        md.push_str("None.\n");
    } else {
        for a in anomalies {
            md.push_str(&format!("- {}\n", cell(&a)));
        }
    }

    md.push_str("\n## Signature\n\n");
    md.push_str(&format!("- Algorithm: `{}`\n", report.algorithm));
    md.push_str(&format!(
        "- Key fingerprint: `{}`\n",
        report.key_fingerprint
    ));
    md.push_str("- Signature (base64 DER, over the UTF-8 bytes of the envelope's `payload`):\n\n");
    md.push_str(&format!("      {}\n\n", report.signature));
    md.push_str(
        "This rendering is not itself signed. Keep the JSON envelope \
         (`custodian custody report --format json`) as the evidence and check it with \
         `custodian custody verify FILE --public-key PEM` or with OpenSSL (docs/audit.md).\n",
    );
    Ok(md)
}

/// The attestation status of version `v` of key `k`: `verified`, `FAILED: …`, or `—` when the
/// device offers none (PKCS#11) or the version has no device object.
fn attestation_cell(checks: &[AttestationCheck], k: &Value, v: &Value) -> String {
    let found = checks.iter().find(|c| {
        Some(c.key_id.as_str()) == k["key_id"].as_str() && Some(c.version) == v["version"].as_u64()
    });
    match found.map(|c| &c.outcome) {
        Some(Ok(())) => "verified".to_owned(),
        Some(Err(e)) => format!("FAILED: {e}"),
        None => "—".to_owned(),
    }
}

/// A JSON value as table text: strings as they are, absent or null as `—`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A number, or `?` when the field is missing.
fn number(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), |n| n.to_string())
}

/// The strings of a JSON array (nothing for anything else).
fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// The strings of a JSON array joined with `; `, or `none`.
fn joined(v: &Value) -> String {
    let all: Vec<&str> = strings(v).collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join("; ")
    }
}

/// `CKK_AES, 256 bits, 1 object`, or `absent` when the device has no such object.
fn object_summary(o: &Value) -> String {
    if o.is_null() {
        return "absent".to_owned();
    }
    format!(
        "{}, {} bits, {} object{}",
        text(&o["key_type"]),
        number(&o["key_bits"]),
        number(&o["objects"]),
        if o["objects"].as_u64() == Some(1) {
            ""
        } else {
            "s"
        }
    )
}

/// The boolean attributes as read back: `CKA_SENSITIVE` when true, `not CKA_EXTRACTABLE` when
/// false; other values as `NAME=value`.
fn attributes(o: &Value) -> String {
    let Some(attrs) = o["attributes"].as_object() else {
        return "—".to_owned();
    };
    let list: Vec<String> = attrs
        .iter()
        .filter(|(k, _)| k.as_str() != "CKA_KEY_TYPE")
        .map(|(k, v)| match v {
            Value::Bool(true) => k.clone(),
            Value::Bool(false) => format!("not {k}"),
            other => format!("{k}={}", text(other)),
        })
        .collect();
    list.join(", ")
}

/// Text safe inside a Markdown table cell: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn row(cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    format!("| {} |\n", cells.join(" | "))
}

/// Reads at most `limit` bytes of `path`; a longer file is refused.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, AuditCliError> {
    let err = |source| AuditCliError::Read {
        path: path.display().to_string(),
        source,
    };
    let f = File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > limit {
        return Err(err(std::io::Error::other(format!(
            "larger than {limit} bytes"
        ))));
    }
    Ok(bytes)
}

/// What an export written through an [`ExportSink`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Bytes written.
    pub bytes: u64,
    /// Hex SHA-256 of exactly those bytes: what `POST /v1/audit/archive` compares.
    pub sha256: String,
    /// Record lines.
    pub records: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
    /// The sequence of the last line when it is a checkpoint (an export ends on one); `None`
    /// for an export without records.
    pub last_checkpoint: Option<u64>,
}

/// The parts of an export line the sink looks at.
#[derive(Deserialize)]
struct LineKind {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sequence: Option<u64>,
}

/// A writer for an export as it streams in: passes every byte on, hashes exactly what it
/// passed on, and notes the kind of each line, holding at most one line in memory.
pub struct ExportSink<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
    line: Vec<u8>,
    lines: u64,
    records: u64,
    checkpoints: u64,
    last: Option<LastLine>,
    malformed: Option<String>,
}

/// The kind of the last complete line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastLine {
    Header,
    Record,
    Checkpoint(u64),
}

impl<W: Write> ExportSink<W> {
    /// A sink writing to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            bytes: 0,
            line: Vec::new(),
            lines: 0,
            records: 0,
            checkpoints: 0,
            last: None,
            malformed: None,
        }
    }

    fn note(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if self.line.len() + chunk.len() <= MAX_LINE + 1 {
                self.line.extend_from_slice(chunk);
            } else if self.malformed.is_none() {
                self.malformed = Some(format!("line {} is too long", self.lines + 1));
            }
            if chunk.last() == Some(&b'\n') {
                self.lines += 1;
                let line = std::mem::take(&mut self.line);
                self.classify(&line);
            }
        }
    }

    fn classify(&mut self, line: &[u8]) {
        if self.malformed.is_some() {
            return;
        }
        let kind = match serde_json::from_slice::<LineKind>(line) {
            Ok(k) => k,
            Err(_) => {
                self.malformed = Some(format!("line {} is not JSON", self.lines));
                return;
            }
        };
        if (self.lines == 1) != (kind.kind == "header") {
            self.malformed = Some(format!(
                "line {} is {:?}; an export starts with one header line",
                self.lines, kind.kind
            ));
            return;
        }
        let last = match (kind.kind.as_str(), kind.sequence) {
            ("header", _) => LastLine::Header,
            ("record", _) => {
                self.records += 1;
                LastLine::Record
            }
            ("checkpoint", Some(s)) => {
                self.checkpoints += 1;
                LastLine::Checkpoint(s)
            }
            (other, _) => {
                self.malformed = Some(format!("line {}: unexpected {other:?}", self.lines));
                return;
            }
        };
        self.last = Some(last);
    }

    /// Ends the export: what was written, and the inner writer back.
    ///
    /// # Errors
    /// `Malformed` when the bytes are not a complete export (no header, an unfinished last
    /// line, a line that is not an export line, or records after the last checkpoint).
    pub fn finish(self) -> Result<(W, ExportSummary), AuditCliError> {
        if let Some(m) = self.malformed {
            return Err(AuditCliError::Malformed(m));
        }
        if !self.line.is_empty() {
            return Err(AuditCliError::Malformed(
                "the last line is unfinished (the download was cut short)".to_owned(),
            ));
        }
        let last_checkpoint = match self.last {
            None => return Err(AuditCliError::Malformed("empty export".to_owned())),
            Some(LastLine::Header) => None,
            Some(LastLine::Checkpoint(s)) => Some(s),
            Some(LastLine::Record) => {
                return Err(AuditCliError::Malformed(
                    "the export does not end on a checkpoint (the download was cut short?)"
                        .to_owned(),
                ))
            }
        };
        Ok((
            self.inner,
            ExportSummary {
                bytes: self.bytes,
                sha256: hex::encode(self.hash.finalize()),
                records: self.records,
                checkpoints: self.checkpoints,
                last_checkpoint,
            },
        ))
    }
}

impl<W: Write> Write for ExportSink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Everything or nothing is passed on, so the hash covers exactly the bytes written.
        self.inner.write_all(buf)?;
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        self.note(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A file written under a temporary name in its directory (mode 0600: an export names
/// principals, keys and source addresses) and moved into place only once complete, so a
/// download cut short never leaves a file that looks whole. Dropped uncommitted, the temporary
/// file is removed. The temporary file is `tempfile`'s: created exclusively under a random name
/// (`.NAME.partial-XXXXXX`), removed on drop, renamed into place by `persist`.
pub struct PendingFile {
    file: Option<std::io::BufWriter<NamedTempFile>>,
    dest: PathBuf,
}

impl PendingFile {
    /// Starts writing `dest`.
    ///
    /// # Errors
    /// `Write`.
    pub fn create(dest: &Path) -> Result<Self, AuditCliError> {
        let err = |source| AuditCliError::Write {
            path: dest.display().to_string(),
            source,
        };
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .ok_or_else(|| err(std::io::Error::other("the path names no file")))?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".partial-");
        // tempfile creates the file with mode 0600 (less what the umask removes).
        let file = tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(dir)
            .map_err(err)?;
        Ok(Self {
            file: Some(std::io::BufWriter::new(file)),
            dest: dest.to_owned(),
        })
    }

    /// Flushes and syncs the file, then moves it into place: replacing an existing file, or
    /// with `no_replace`, failing with `Exists` if there is one.
    ///
    /// # Errors
    /// `Write`, `Exists`.
    pub fn commit(mut self, no_replace: bool) -> Result<(), AuditCliError> {
        let err = |source| AuditCliError::Write {
            path: self.dest.display().to_string(),
            source,
        };
        let Some(file) = self.file.take() else {
            return Err(err(std::io::Error::other("file already committed")));
        };
        let file = file.into_inner().map_err(|e| err(e.into_error()))?;
        file.as_file().sync_all().map_err(err)?;
        if no_replace {
            // Fails if the name exists (RENAME_NOREPLACE, or a hard link where that is missing):
            // no window in which another file is lost.
            file.persist_noclobber(&self.dest).map_err(|e| {
                if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    AuditCliError::Exists {
                        path: self.dest.display().to_string(),
                    }
                } else {
                    err(e.error)
                }
            })?;
        } else {
            file.persist(&self.dest).map_err(|e| err(e.error))?;
        }
        // The new name is durable too (the directory entry), before anything relies on it.
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// `custodian audit export`: streams the export into `out`, returning what it held.
///
/// # Errors
/// `Client` (API error or a download cut short), `Malformed`.
pub async fn export<W: Write>(
    client: &Client,
    after: Option<u64>,
    until: Option<u64>,
    out: W,
) -> Result<(W, ExportSummary), AuditCliError> {
    let mut sink = ExportSink::new(out);
    client.audit_export(after, until, &mut sink).await?;
    sink.finish()
}

/// `custodian audit archive`: downloads the export up to `through` (default: a checkpoint the
/// server signs now over everything written) into `out` (which must not exist), checks it under
/// the server's public key, then asks the server to archive exactly those records, naming the
/// SHA-256 of the bytes written. Returns the archive record.
///
/// The file is complete and synced before the archive request is sent; if the request fails,
/// the file stays and nothing was removed.
///
/// # Errors
/// `Exists`, `Write`, `Client`, `Malformed`, `NothingToArchive`, `NotACheckpoint`, `Broken`.
pub async fn archive(
    client: &Client,
    through: Option<u64>,
    out: &Path,
) -> Result<crate::api_types::audit::AuditArchive, AuditCliError> {
    if out.exists() {
        return Err(AuditCliError::Exists {
            path: out.display().to_string(),
        });
    }
    let key = PublicKey::from_pem(&client.audit_public_key().await?).map_err(|problem| {
        AuditCliError::PublicKey {
            path: "GET /v1/audit/public-key".to_owned(),
            problem,
        }
    })?;
    let file = PendingFile::create(out)?;
    let (file, summary) = export(client, None, through, file).await?;
    match (summary.last_checkpoint, through) {
        (Some(last), Some(asked)) if last != asked => {
            return Err(AuditCliError::NotACheckpoint { asked, last })
        }
        (None, Some(asked)) => return Err(AuditCliError::NotACheckpoint { asked, last: 0 }),
        (None, None) => return Err(AuditCliError::NothingToArchive),
        _ => {}
    }
    let last = summary
        .last_checkpoint
        .ok_or(AuditCliError::NothingToArchive)?;
    file.commit(true)?;
    verify_export_file(out, &key)?;
    Ok(client.audit_archive(last, &summary.sha256).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(payload: &Value) -> SignedReport {
        SignedReport {
            payload: serde_json::to_string_pretty(payload).unwrap(),
            algorithm: "ecdsa-p256-sha256".into(),
            key_fingerprint: "ab12".into(),
            signature: "MEUCIQ==".into(),
        }
    }

    fn payload() -> Value {
        let facts = json!({
            "attributes": {
                "CKA_EXTRACTABLE": false, "CKA_KEY_TYPE": "CKK_AES", "CKA_SENSITIVE": true
            },
            "key_type": "CKK_AES", "key_bits": 256, "objects": 1, "weaknesses": []
        });
        json!({
            "format": "custodian-custody-report/v1",
            "generated_at": "2026-11-27T12:00:00.000000Z",
            "node": "n1",
            "devices": [{
                "backend": "pkcs11", "label": "custodian", "manufacturer": "SoftHSM project",
                "model": "SoftHSM v2", "serial": "1234", "firmware": "2.6", "hardware": "2.6"
            }],
            "signing_key": {
                "algorithm": "ecdsa-p256-sha256", "fingerprint": "ab12",
                "public_key": "-----BEGIN PUBLIC KEY-----\n…", "device_object": null,
                "anomalies": ["signing key missing from the device"]
            },
            "keys": [{
                "key_id": "k-1", "name": "orders|eu", "state": "enabled", "backend": "pkcs11",
                "mode": "direct", "created_at": "2026-11-01T00:00:00.000000Z",
                "rotation_period": "90d",
                "versions": [
                    {
                        "version": 1, "state": "destroyed", "algorithm": "aes-256-gcm",
                        "created_at": "2026-11-01T00:00:00.000000Z",
                        "destroyed_at": "2026-11-20T00:00:00.000000Z",
                        "device_label": "custodian:k-1:v1", "device_object": null,
                        "stored_data_keys": 0, "wraps_reserved": 10, "anomalies": []
                    },
                    {
                        "version": 2, "state": "active", "algorithm": "aes-256-gcm",
                        "created_at": "2026-11-10T00:00:00.000000Z", "destroyed_at": null,
                        "device_label": "custodian:k-1:v2", "device_object": facts,
                        "stored_data_keys": 3, "wraps_reserved": 1024,
                        "anomalies": ["CKA_EXTRACTABLE is true\nsecond line"]
                    }
                ]
            }],
            "summary": {"keys": 1, "versions": 2, "anomalies": 2}
        })
    }

    #[test]
    fn markdown_lists_keys_versions_attributes_anomalies_and_signature() {
        let md = render_markdown(&envelope(&payload())).unwrap();
        assert!(md.starts_with("# Custody report\n"));
        assert!(md.contains("| Summary | 1 keys, 2 versions, 2 with anomalies |"));
        assert!(md.contains(
            "| Device | pkcs11 token \"custodian\" (SoftHSM project SoftHSM v2, serial 1234, \
             firmware 2.6, hardware 2.6) |"
        ));
        // A pipe in a name cannot break the table.
        assert!(md.contains(
            "| orders\\|eu | k-1 | enabled | pkcs11 | direct | 2026-11-01T00:00:00.000000Z | 90d |"
        ));
        assert!(md.contains(
            "| orders\\|eu | pkcs11/direct | 2 | active | aes-256-gcm | \
             2026-11-10T00:00:00.000000Z | — | custodian:k-1:v2 | CKK_AES, 256 bits, 1 object | \
             not CKA_EXTRACTABLE, CKA_SENSITIVE | — | 3 | 1024 | \
             CKA_EXTRACTABLE is true second line |"
        ));
        assert!(md.contains("| 1 | destroyed |"));
        assert!(md.contains("| absent | — | — | 0 | 10 | none |"));
        assert!(md.contains("- signing key: signing key missing from the device\n"));
        assert!(md.contains("- key orders\\|eu (k-1) v2: CKA_EXTRACTABLE is true second line\n"));
        assert!(md.contains("- Key fingerprint: `ab12`"));
        assert!(md.contains("      MEUCIQ==\n"));
        assert!(
            !md.contains("TPM attestations"),
            "no TPM keys, no attestation note"
        );
        assert_tables_are_rectangular(&md);
    }

    fn assert_tables_are_rectangular(md: &str) {
        // Every table row has as many cells as its header.
        for table in md.split("\n\n").filter(|t| t.starts_with('|')) {
            let counts: Vec<usize> = table
                .lines()
                .map(|l| l.replace("\\|", "").matches('|').count())
                .collect();
            assert!(counts.windows(2).all(|w| w[0] == w[1]), "{table}");
        }
    }

    /// The test payload with a TPM key whose version 1 carries `attestation`.
    fn tpm_payload(attestation: &Value, name: &str) -> Value {
        let mut p = payload();
        p["devices"].as_array_mut().unwrap().push(
            json!({"backend": "tpm", "label": "TPM 2.0", "manufacturer": "IBM",
                "model": "SW   TPM", "serial": "", "firmware": "1.0", "hardware": "spec 1.59"}),
        );
        p["keys"].as_array_mut().unwrap().push(json!({
            "key_id": "k-2", "name": "vault", "state": "enabled", "backend": "tpm",
            "mode": "cached", "created_at": "2026-11-02T00:00:00.000000Z",
            "rotation_period": null,
            "versions": [{
                "version": 1, "state": "primary", "algorithm": "aes256_kwp_cached",
                "created_at": "2026-11-02T00:00:00.000000Z", "destroyed_at": null,
                "device_label": "custodian:k-2:v1",
                "device_object": {
                    "attributes": {"fixedTPM": true, "name": name},
                    "key_type": "TPM_ALG_KEYEDHASH", "key_bits": 256, "objects": 1,
                    "weaknesses": [], "attestation": attestation
                },
                "stored_data_keys": 0, "wraps_reserved": 5, "anomalies": []
            }]
        }));
        p
    }

    #[test]
    fn markdown_shows_placement_and_attestation_status_per_version() {
        let (att, name) = crate::cli::attest::tests::attestation(true);
        let md = render_markdown(&envelope(&tpm_payload(&att, &name))).unwrap();
        assert!(md.contains("| Devices | pkcs11 token"), "{md}");
        assert!(md.contains("; tpm token \"TPM 2.0\" (IBM SW   TPM"));
        assert!(md.contains("| vault | k-2 | enabled | tpm | cached |"));
        assert!(md.contains("| vault | tpm/cached | 1 | primary | aes256_kwp_cached |"));
        assert!(md.contains("| verified | 0 | 5 | none |"), "{md}");
        assert!(md.contains("1 verified, 0 failed. Attestation key "));
        assert!(md.contains("endorsement key certificate chain is not checked"));
        assert_tables_are_rectangular(&md);

        // Negative twin: a flipped attest byte shows as FAILED in the version's row and below.
        let mut bad = att.clone();
        let mut bytes = hex::decode(att["attest"].as_str().unwrap()).unwrap();
        bytes[10] ^= 1;
        bad["attest"] = json!(hex::encode(bytes));
        let md = render_markdown(&envelope(&tpm_payload(&bad, &name))).unwrap();
        assert!(md.contains(
            "| FAILED: the signature does not verify with the attestation key | 0 | 5 | none |"
        ));
        assert!(md.contains("0 verified, 1 failed."));
        assert!(md.contains("- key vault (k-2) v1 [tpm/cached]: TPM attestation FAILED"));
        assert_tables_are_rectangular(&md);
    }

    #[test]
    fn markdown_of_an_empty_report_says_so() {
        let mut p = payload();
        p["keys"] = json!([]);
        p["signing_key"]["anomalies"] = json!([]);
        let md = render_markdown(&envelope(&p)).unwrap();
        assert!(md.contains("## Keys\n\nNo keys.\n"));
        assert!(md.contains("## Anomalies\n\nNone.\n"));
        assert!(!md.contains("## Versions"));
        let mut bad = envelope(&p);
        bad.payload = "not json".into();
        assert!(matches!(
            render_markdown(&bad),
            Err(AuditCliError::NotAReport { .. })
        ));
    }

    #[test]
    fn summary_names_every_anomaly() {
        let p = payload();
        let s = report_summary(&envelope(&p), &p);
        assert_eq!(
            s,
            "signature valid (ecdsa-p256-sha256, key ab12)\n\
             report generated 2026-11-27T12:00:00.000000Z by node n1\n\
             device: pkcs11 token \"custodian\" (SoftHSM project SoftHSM v2, serial 1234, \
             firmware 2.6, hardware 2.6)\n\
             1 keys, 2 versions, 2 anomalies\n\
             \x20 signing key: signing key missing from the device\n\
             \x20 key orders|eu (k-1) v2: CKA_EXTRACTABLE is true\nsecond line\n"
        );
        // A report from before TPM support names one `device`.
        let mut old = p.clone();
        old["device"] = old["devices"][0].clone();
        old.as_object_mut().unwrap().remove("devices");
        assert_eq!(report_summary(&envelope(&old), &old), s);
        // Without TPM keys: no attestation lines, only the closing line.
        let checks = check_attestations(&p, None);
        assert_eq!(
            attestation_summary(&p, &checks, false),
            "signature valid; 0 TPM attestations verified; 2 anomalies\n"
        );
    }

    #[test]
    fn attestation_summary_counts_names_and_flags_failures() {
        let (att, name) = crate::cli::attest::tests::attestation(true);
        let p = tpm_payload(&att, &name);
        let checks = check_attestations(&p, None);
        let s = attestation_summary(&p, &checks, false);
        assert!(s.starts_with("TPM attestations (TPM2_Certify, checked offline):\n  key vault (k-2) v1 [tpm/cached]: TPM attestation verified (AK "), "{s}");
        assert!(s.contains("attestation key "));
        assert!(s.contains("trusted as given"));
        assert!(
            s.ends_with("signature valid; 1 TPM attestation verified; 2 anomalies\n"),
            "{s}"
        );

        let mut bad = att.clone();
        bad["key_name"] = json!(format!("000b{}", "11".repeat(32)));
        let p = tpm_payload(&bad, &name);
        let checks = check_attestations(&p, None);
        let s = attestation_summary(&p, &checks, true);
        assert!(s.contains("key vault (k-2) v1 [tpm/cached]: TPM attestation FAILED: the certified object is not the given key"), "{s}");
        assert!(s.contains("pinned with --attestation-key"));
        assert!(
            s.ends_with("signature valid; 0 TPM attestations verified, 1 FAILED; 2 anomalies\n"),
            "{s}"
        );
    }

    const HEADER: &str = r#"{"type":"header","format":"custodian-audit-export/v1","after":0}"#;

    fn sink_of(chunks: &[&[u8]]) -> Result<(Vec<u8>, ExportSummary), AuditCliError> {
        let mut sink = ExportSink::new(Vec::new());
        for c in chunks {
            sink.write_all(c).unwrap();
        }
        sink.finish()
    }

    #[test]
    fn sink_hashes_exact_bytes_and_finds_the_last_checkpoint_across_chunks() {
        let text = format!(
            "{HEADER}\n{{\"type\":\"record\",\"sequence\":1}}\n\
             {{\"type\":\"checkpoint\",\"sequence\":1}}\n{{\"type\":\"record\",\"sequence\":2}}\n\
             {{\"type\":\"checkpoint\",\"sequence\":2}}\n"
        );
        let bytes = text.as_bytes();
        // Chunk boundaries anywhere, including mid-line.
        for split in [1, 7, 60, 90, bytes.len() - 1] {
            let (out, s) = sink_of(&[&bytes[..split], &bytes[split..]]).unwrap();
            assert_eq!(out, bytes);
            assert_eq!(s.bytes, bytes.len() as u64);
            assert_eq!(s.sha256, hex::encode(Sha256::digest(bytes)));
            assert_eq!((s.records, s.checkpoints), (2, 2));
            assert_eq!(s.last_checkpoint, Some(2));
        }
        // An export with nothing in it: only the header.
        let (_, s) = sink_of(&[format!("{HEADER}\n").as_bytes()]).unwrap();
        assert_eq!(s.last_checkpoint, None);
    }

    #[test]
    fn sink_refuses_cut_or_malformed_exports() {
        let cut = format!("{HEADER}\n{{\"type\":\"record\",\"sequence\":1}}\n");
        assert!(matches!(
            sink_of(&[cut.as_bytes()]),
            Err(AuditCliError::Malformed(_))
        ));
        let unfinished = format!("{HEADER}\n{{\"type\":\"checkpoint\",\"sequence\":1}}");
        assert!(sink_of(&[unfinished.as_bytes()]).is_err());
        assert!(sink_of(&[b"<html>\n"]).is_err());
        assert!(sink_of(&[]).is_err());
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(sink_of(&[&long, b"\n"]).is_err());
        let second_header = format!("{HEADER}\n{HEADER}\n");
        assert!(sink_of(&[second_header.as_bytes()]).is_err());
    }

    #[test]
    fn pending_files_appear_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("export.jsonl");
        let mut f = PendingFile::create(&dest).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut f = PendingFile::create(&dest).unwrap();
        f.write_all(b"one").unwrap();
        f.commit(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&dest).unwrap().permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600);
        let mut f = PendingFile::create(&dest).unwrap();
        f.write_all(b"two").unwrap();
        f.commit(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        // An archive file is never replaced.
        let mut f = PendingFile::create(&dest).unwrap();
        f.write_all(b"three").unwrap();
        assert!(matches!(f.commit(true), Err(AuditCliError::Exists { .. })));
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn public_keys_and_reports_are_read_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pem");
        std::fs::write(&pem, "not a key").unwrap();
        assert!(matches!(
            read_public_key(&pem),
            Err(AuditCliError::PublicKey { .. })
        ));
        assert!(matches!(
            read_public_key(&dir.path().join("missing")),
            Err(AuditCliError::Read { .. })
        ));
        let report = dir.path().join("r.json");
        std::fs::write(&report, "{\"payload\": 1}").unwrap();
        assert!(matches!(
            read_report(&report),
            Err(AuditCliError::NotAReport { .. })
        ));
    }
}
