//! The export format (JSON Lines) and its offline verification.
//!
//! An export is one `header` line, then records and checkpoints in sequence order; a checkpoint
//! follows the record whose sequence it signs. [`verify`] needs only the file and the public
//! key: it checks every hash link, every record hash, every checkpoint signature, and that the
//! file ends on a checkpoint (so a truncated tail cannot pass).

use std::io::BufRead;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::record::{decode_hash, AuditRecord, GENESIS};
use super::signature::{PublicKey, ALGORITHM};

/// The format name in the header line.
pub const FORMAT: &str = "custodian-audit-export/v1";

/// Largest line [`verify`] reads, in bytes: far above any record, so a longer one is damage.
pub const MAX_LINE: usize = 64 * 1024;

/// A signed statement that the chain up to `sequence` ends in `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last record covered.
    pub sequence: u64,
    /// Hex hash of that record.
    pub head: String,
    /// When it was signed (record time format).
    pub time: String,
    /// The node that signed it.
    pub node: String,
    /// Signature algorithm ([`ALGORITHM`]).
    pub algorithm: String,
    /// Fingerprint of the signing public key.
    pub key_fingerprint: String,
    /// Base64 DER signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed: plain text, so an auditor can rebuild them with
    /// `printf` and check the signature with OpenSSL alone (`docs/audit.md`).
    pub fn message(sequence: u64, head: &str, time: &str, node: &str) -> Vec<u8> {
        format!(
            "custodian-audit-checkpoint/v1\nsequence: {sequence}\nhead: {head}\ntime: {time}\nnode: {node}\n"
        )
        .into_bytes()
    }

    /// Checks the signature under `key`.
    ///
    /// # Errors
    /// Why it does not verify.
    pub fn verify(&self, key: &PublicKey) -> Result<(), super::signature::SignatureError> {
        if self.algorithm != ALGORITHM {
            return Err(super::signature::SignatureError::Algorithm(
                self.algorithm.clone(),
            ));
        }
        let sig = STANDARD
            .decode(&self.signature)
            .map_err(|_| super::signature::SignatureError::Encoding)?;
        key.verify(
            &Self::message(self.sequence, &self.head, &self.time, &self.node),
            &sig,
        )
    }
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// Records before this sequence are not in the file (archived or asked to be skipped).
    pub after: u64,
    /// Hex hash of record `after` (the chain value the first record links to).
    pub prev_hash: String,
    /// Fingerprint of the signing key the checkpoints use.
    pub key_fingerprint: String,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The header.
    Header(Header),
    /// A record (boxed: records are much larger than the other lines).
    Record(Box<AuditRecord>),
    /// A checkpoint.
    Checkpoint(Checkpoint),
}

/// What an intact export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    /// First sequence in the file (`after + 1`).
    pub first: u64,
    /// Records checked.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
}

impl std::fmt::Display for Intact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, {} checkpoints, intact",
            self.records, self.checkpoints
        )
    }
}

/// Where and why an export failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// The file is not an export (no header, unreadable, wrong format).
    #[error("line {line}: {reason}")]
    Unreadable {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The first bad or missing sequence number, and why.
    #[error("sequence {sequence}: {reason}")]
    At {
        /// The first sequence that does not verify.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Broken {
    /// The first bad sequence, when the failure is about one.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            Self::At { sequence, .. } => Some(*sequence),
            Self::Unreadable { .. } => None,
        }
    }
}

/// Verifies an export read from `input` against `key`.
///
/// # Errors
/// [`Broken`] naming the first bad or missing sequence number.
pub fn verify(input: impl BufRead, key: &PublicKey) -> Result<Intact, Broken> {
    let mut lines = BoundedLines::new(input);
    let unreadable = |line: u64, reason: &str| Broken::Unreadable {
        line,
        reason: reason.to_owned(),
    };
    let header = match lines.next_line()? {
        Some((n, text)) => match serde_json::from_str::<Line>(&text) {
            Ok(Line::Header(h)) if h.format == FORMAT => h,
            Ok(Line::Header(h)) => {
                return Err(unreadable(n, &format!("unknown format {:?}", h.format)))
            }
            _ => return Err(unreadable(n, "the first line is not an export header")),
        },
        None => return Err(unreadable(1, "empty file")),
    };
    let mut head = if header.after == 0 {
        GENESIS
    } else {
        decode_hash(&header.prev_hash).ok_or_else(|| unreadable(1, "bad prev_hash"))?
    };
    if header.after == 0 && header.prev_hash != hex::encode(GENESIS) {
        return Err(unreadable(1, "prev_hash of a log's start must be zero"));
    }
    let fingerprint = key.fingerprint();
    let mut next = header.after + 1;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    // The last sequence covered by a verified checkpoint.
    let mut covered = header.after;
    let at = |sequence: u64, reason: String| Broken::At { sequence, reason };
    while let Some((n, text)) = lines.next_line()? {
        let line: Line = serde_json::from_str(&text)
            .map_err(|_| at(next, format!("line {n} is not a record or checkpoint")))?;
        match line {
            Line::Header(_) => return Err(at(next, format!("line {n}: a second header"))),
            Line::Record(r) => {
                if r.sequence > next {
                    return Err(at(next, format!("missing (line {n} has {})", r.sequence)));
                }
                if r.sequence < next {
                    return Err(at(
                        r.sequence.min(next),
                        format!("out of order or repeated (line {n}, expected {next})"),
                    ));
                }
                if decode_hash(&r.prev_hash) != Some(head) {
                    return Err(at(next, "does not link to the previous record".into()));
                }
                let hash = r.hash_bytes();
                if hash.is_none() || r.recompute() != hash {
                    return Err(at(next, "its hash does not match its contents".into()));
                }
                head = hash.unwrap_or(GENESIS);
                records += 1;
                next += 1;
            }
            Line::Checkpoint(c) => {
                let last = next - 1;
                if c.sequence != last || last == header.after {
                    return Err(at(
                        c.sequence.max(covered + 1),
                        format!(
                            "checkpoint for {} at line {n} does not follow its record",
                            c.sequence
                        ),
                    ));
                }
                if decode_hash(&c.head) != Some(head) {
                    return Err(at(
                        covered + 1,
                        format!(
                            "checkpoint {} signs a different chain head: records after {covered} were altered",
                            c.sequence
                        ),
                    ));
                }
                if c.key_fingerprint != fingerprint {
                    return Err(at(
                        c.sequence,
                        "checkpoint names another signing key".into(),
                    ));
                }
                c.verify(key)
                    .map_err(|e| at(c.sequence, format!("checkpoint signature: {e}")))?;
                covered = c.sequence;
                checkpoints += 1;
            }
        }
    }
    if covered != next - 1 {
        return Err(at(
            covered + 1,
            format!(
                "records {}..={} are not covered by a checkpoint (truncated export?)",
                covered + 1,
                next - 1
            ),
        ));
    }
    Ok(Intact {
        first: header.after + 1,
        records,
        checkpoints,
    })
}

/// Reads lines of at most [`MAX_LINE`] bytes, skipping none.
struct BoundedLines<R> {
    input: R,
    number: u64,
}

impl<R: BufRead> BoundedLines<R> {
    fn new(input: R) -> Self {
        Self { input, number: 0 }
    }

    fn next_line(&mut self) -> Result<Option<(u64, String)>, Broken> {
        let mut buf = Vec::new();
        self.number += 1;
        let n = self.number;
        let read = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Broken::Unreadable {
                line: n,
                reason: e.to_string(),
            })?;
        if read == 0 {
            return Ok(None);
        }
        if buf.len() > MAX_LINE {
            return Err(Broken::Unreadable {
                line: n,
                reason: "line too long".into(),
            });
        }
        let text = String::from_utf8(buf).map_err(|_| Broken::Unreadable {
            line: n,
            reason: "not UTF-8".into(),
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Err(Broken::Unreadable {
                line: n,
                reason: "empty line".into(),
            });
        }
        Ok(Some((n, text.to_owned())))
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditEntry, Outcome};
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};

    fn signing() -> (SigningKey, PublicKey) {
        let sk = SigningKey::from_slice(&[5u8; 32]).expect("scalar");
        let pk = PublicKey::from_sec1(&sk.verifying_key().to_encoded_point(false).to_bytes())
            .expect("point");
        (sk, pk)
    }

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time: format!("2026-11-27T12:00:{:02}.000000Z", i % 60),
            node: "n".into(),
            request_id: format!("r{i}"),
            method: "GET".into(),
            route: "/v1/keys".into(),
            principal: Some("p".into()),
            credential: None,
            source: None,
            action: Some("key:read".into()),
            resource: Some("key/*".into()),
            key_id: None,
            key_version: None,
            other_keys: vec![],
            outcome: Outcome::Success,
            status: 200,
            error_code: None,
            context_digest: None,
            context_keys: vec![],
            details: Default::default(),
        }
    }

    fn checkpoint(sk: &SigningKey, pk: &PublicKey, seq: u64, head: &str) -> Checkpoint {
        let time = "2026-11-27T12:01:00.000000Z";
        let sig: Signature = sk.sign(&Checkpoint::message(seq, head, time, "n"));
        Checkpoint {
            sequence: seq,
            head: head.into(),
            time: time.into(),
            node: "n".into(),
            algorithm: ALGORITHM.into(),
            key_fingerprint: pk.fingerprint(),
            signature: STANDARD.encode(sig.to_der().as_bytes()),
        }
    }

    /// 10 records with checkpoints after 4 and 10.
    fn export() -> (Vec<Line>, PublicKey) {
        let (sk, pk) = signing();
        let mut lines = vec![Line::Header(Header {
            format: FORMAT.into(),
            after: 0,
            prev_hash: hex::encode(GENESIS),
            key_fingerprint: pk.fingerprint(),
        })];
        let mut head = GENESIS;
        for i in 1..=10 {
            let r = AuditRecord::chain(i, entry(i), &head);
            head = r.hash_bytes().expect("hash");
            let h = r.hash.clone();
            lines.push(Line::Record(Box::new(r)));
            if i == 4 || i == 10 {
                lines.push(Line::Checkpoint(checkpoint(&sk, &pk, i, &h)));
            }
        }
        (lines, pk)
    }

    fn run(lines: &[Line], pk: &PublicKey) -> Result<Intact, Broken> {
        let text: String = lines
            .iter()
            .map(|l| serde_json::to_string(l).expect("json") + "\n")
            .collect();
        verify(text.as_bytes(), pk)
    }

    #[test]
    fn untouched_export_is_intact() {
        let (lines, pk) = export();
        let ok = run(&lines, &pk).expect("intact");
        assert_eq!((ok.records, ok.checkpoints), (10, 2));
        assert_eq!(ok.to_string(), "10 records, 2 checkpoints, intact");
    }

    fn record_mut(lines: &mut [Line], seq: u64) -> &mut AuditRecord {
        lines
            .iter_mut()
            .find_map(|l| match l {
                Line::Record(r) if r.sequence == seq => Some(r),
                _ => None,
            })
            .expect("record present")
    }

    #[test]
    fn edited_field_names_its_sequence() {
        let (mut lines, pk) = export();
        record_mut(&mut lines, 6).entry.principal = Some("mallory".into());
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(6));
    }

    #[test]
    fn edited_and_rehashed_record_breaks_the_next_link() {
        let (mut lines, pk) = export();
        let r = record_mut(&mut lines, 6);
        r.entry.outcome = Outcome::Denied;
        r.hash = hex::encode(r.recompute().expect("hash"));
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(7));
    }

    #[test]
    fn deleted_line_names_the_missing_sequence() {
        let (mut lines, pk) = export();
        lines.retain(|l| !matches!(l, Line::Record(r) if r.sequence == 3));
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(3));
    }

    #[test]
    fn swapped_lines_are_caught() {
        let (mut lines, pk) = export();
        let a = lines
            .iter()
            .position(|l| matches!(l, Line::Record(r) if r.sequence == 7));
        let b = lines
            .iter()
            .position(|l| matches!(l, Line::Record(r) if r.sequence == 8));
        lines.swap(a.expect("7"), b.expect("8"));
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(7));
    }

    #[test]
    fn forged_checkpoint_is_caught() {
        let (mut lines, pk) = export();
        for l in &mut lines {
            if let Line::Checkpoint(c) = l {
                if c.sequence == 10 {
                    c.time = "2030-01-01T00:00:00.000000Z".into();
                }
            }
        }
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(10));
        // Signed by another key but claiming ours.
        let (mut lines, pk) = export();
        let other = SigningKey::from_slice(&[9u8; 32]).expect("scalar");
        let head = record_mut(&mut lines, 4).hash.clone();
        let mut forged = checkpoint(&other, &pk, 4, &head);
        forged.key_fingerprint = pk.fingerprint();
        for l in &mut lines {
            if matches!(l, Line::Checkpoint(c) if c.sequence == 4) {
                *l = Line::Checkpoint(forged.clone());
            }
        }
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(4));
    }

    #[test]
    fn truncated_tail_is_caught() {
        let (mut lines, pk) = export();
        lines.pop(); // the last checkpoint
        assert_eq!(run(&lines, &pk).err().and_then(|b| b.sequence()), Some(5));
        let (mut lines, pk) = export();
        // Drop record 10 but keep its checkpoint.
        lines.retain(|l| !matches!(l, Line::Record(r) if r.sequence == 10));
        assert!(run(&lines, &pk).is_err());
    }

    #[test]
    fn wrong_key_and_garbage_fail() {
        let (lines, _) = export();
        let other = SigningKey::from_slice(&[3u8; 32]).expect("scalar");
        let other = PublicKey::from_sec1(&other.verifying_key().to_encoded_point(false).to_bytes())
            .expect("point");
        assert_eq!(
            run(&lines, &other).err().and_then(|b| b.sequence()),
            Some(4)
        );
        let (_, pk) = export();
        assert!(matches!(
            verify(&b"not json\n"[..], &pk),
            Err(Broken::Unreadable { line: 1, .. })
        ));
        assert!(matches!(
            verify(&b""[..], &pk),
            Err(Broken::Unreadable { .. })
        ));
    }
}
