// Verification of Custodian's audit evidence in the browser, with WebCrypto only: the audit
// export's hash chain and checkpoint signatures (ECDSA P-256 over SHA-256) and the custody
// report's signature. It follows `custodian audit verify` (src/audit/export.rs) and the record
// hash of docs/audit.md ("The record and its hash") step by step, so the page reports the same
// first bad or missing sequence the offline verifier names.

const RECORD_DOMAIN = new TextEncoder().encode("custodian-audit-record/v1\0");
const EXPORT_FORMAT = "custodian-audit-export/v1";
const ALGORITHM = "ecdsa-p256-sha256";
const ZERO_HASH = "0".repeat(64);
// The fields of a record in hash order (docs/audit.md, fields 1 to 17).
const FIELDS = ["sequence", "time", "node", "request_id", "method", "route", "principal",
  "credential", "source", "action", "resource", "key_id", "key_version", "outcome", "status",
  "error_code", "context_digest"];

const utf8 = new TextEncoder();

/** Lower-case hex of bytes. */
export function toHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** 32 bytes from 64 hex digits, or null. */
function fromHex32(s) {
  if (typeof s !== "string" || !/^[0-9a-f]{64}$/.test(s)) return null;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function base64Bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The DER bytes of a PEM SubjectPublicKeyInfo. */
function pemToDer(pem) {
  const body = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
  return base64Bytes(body);
}

/** The public key's fingerprint: hex SHA-256 of its DER SubjectPublicKeyInfo. */
export async function fingerprint(pem) {
  return toHex(await crypto.subtle.digest("SHA-256", pemToDer(pem)));
}

/** Imports a PEM P-256 public key for ECDSA verification. */
export async function importPublicKey(pem) {
  return crypto.subtle.importKey("spki", pemToDer(pem), { name: "ECDSA", namedCurve: "P-256" },
    false, ["verify"]);
}

/**
 * A DER ECDSA signature (SEQUENCE of two INTEGERs) as WebCrypto wants it: r ‖ s, 32 bytes each.
 * Returns null for anything that is not exactly that structure.
 */
export function derToRaw(der) {
  let i = 0;
  const byte = () => (i < der.length ? der[i++] : -1);
  const length = () => {
    const first = byte();
    if (first < 0x80) return first;
    if (first === 0x81) return byte();
    return -1;
  };
  if (byte() !== 0x30) return null;
  const seqLen = length();
  if (seqLen < 0 || i + seqLen !== der.length) return null;
  const out = new Uint8Array(64);
  for (const offset of [0, 32]) {
    if (byte() !== 0x02) return null;
    const n = length();
    if (n < 1 || n > 33 || i + n > der.length) return null;
    let int = der.slice(i, i + n);
    i += n;
    while (int.length > 32 && int[0] === 0) int = int.slice(1);
    if (int.length > 32) return null;
    out.set(int, offset + 32 - int.length);
  }
  return i === der.length ? out : null;
}

async function verifySignature(key, signatureB64, messageBytes) {
  let der;
  try {
    der = base64Bytes(signatureB64);
  } catch {
    return false;
  }
  const raw = derToRaw(der);
  if (!raw) return false;
  return crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, raw, messageBytes);
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/** The chain hash of a record as the export carries it (docs/audit.md), as hex. */
export async function recordHash(r, prevBytes) {
  const parts = [RECORD_DOMAIN, prevBytes];
  const put = (v) => {
    const len = new Uint8Array(4);
    if (v === null || v === undefined) {
      len.fill(0xff);
      parts.push(len);
      return;
    }
    const bytes = utf8.encode(String(v));
    new DataView(len.buffer).setUint32(0, bytes.length);
    parts.push(len, bytes);
  };
  const count = (n) => {
    const c = new Uint8Array(4);
    new DataView(c.buffer).setUint32(0, n);
    parts.push(c);
  };
  for (const f of FIELDS) put(r[f]);
  for (const list of [r.context_keys || [], r.other_keys || []]) {
    count(list.length);
    list.forEach(put);
  }
  const details = r.details || {};
  const names = Object.keys(details);
  if (names.length > 0) {
    count(names.length);
    names
      .map((n) => [utf8.encode(n), n])
      .sort((a, b) => compareBytes(a[0], b[0]))
      .forEach(([, n]) => {
        put(n);
        put(details[n]);
      });
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return toHex(await crypto.subtle.digest("SHA-256", buf));
}

/** The message a checkpoint signs (Checkpoint::message in src/audit/export.rs). */
export function checkpointMessage(c) {
  return utf8.encode(
    `custodian-audit-checkpoint/v1\nsequence: ${c.sequence}\nhead: ${c.head}\n` +
      `time: ${c.time}\nnode: ${c.node}\n`);
}

/**
 * Verifies an export (its text) against a PEM public key. Resolves to
 * `{ intact: true, first, through, records, checkpoints }` or
 * `{ intact: false, sequence, reason }` (sequence null when the file is not an export at all),
 * naming the first bad or missing sequence as `custodian audit verify` does.
 * `progress(done)` is called every few hundred records.
 */
export async function verifyExport(text, pem, progress = () => {}) {
  const key = await importPublicKey(pem);
  const keyFingerprint = await fingerprint(pem);
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const unreadable = (line, reason) => ({ intact: false, sequence: null, reason: `line ${line}: ${reason}` });
  const at = (sequence, reason) => ({ intact: false, sequence, reason });
  if (lines.length === 0) return unreadable(1, "empty file");
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch {
    return unreadable(1, "the first line is not an export header");
  }
  if (!header || header.type !== "header") return unreadable(1, "the first line is not an export header");
  if (header.format !== EXPORT_FORMAT) return unreadable(1, `unknown format ${JSON.stringify(header.format)}`);
  if (header.after === 0 && header.prev_hash !== ZERO_HASH) {
    return unreadable(1, "prev_hash of a log's start must be zero");
  }
  let head = header.after === 0 ? ZERO_HASH : header.prev_hash;
  if (!fromHex32(head)) return unreadable(1, "bad prev_hash");
  let next = header.after + 1;
  let covered = header.after;
  let records = 0;
  let checkpoints = 0;
  for (let i = 1; i < lines.length; i++) {
    const n = i + 1;
    let l;
    try {
      l = JSON.parse(lines[i]);
    } catch {
      return at(next, `line ${n} is not a record or checkpoint`);
    }
    if (l.type === "header") return at(next, `line ${n}: a second header`);
    if (l.type === "record") {
      if (l.sequence > next) return at(next, `missing (line ${n} has ${l.sequence})`);
      if (l.sequence < next) {
        return at(Math.min(l.sequence, next), `out of order or repeated (line ${n}, expected ${next})`);
      }
      const prev = fromHex32(l.prev_hash);
      if (!prev || l.prev_hash !== head) return at(next, "does not link to the previous record");
      if (!fromHex32(l.hash) || (await recordHash(l, prev)) !== l.hash) {
        return at(next, "its hash does not match its contents");
      }
      head = l.hash;
      records += 1;
      next += 1;
      if (records % 250 === 0) progress(records);
    } else if (l.type === "checkpoint") {
      const last = next - 1;
      if (l.sequence !== last || last === header.after) {
        return at(Math.max(l.sequence, covered + 1),
          `checkpoint for ${l.sequence} at line ${n} does not follow its record`);
      }
      if (l.head !== head) {
        return at(covered + 1,
          `checkpoint ${l.sequence} signs a different chain head: records after ${covered} were altered`);
      }
      if (l.key_fingerprint !== keyFingerprint) return at(l.sequence, "checkpoint names another signing key");
      if (l.algorithm !== ALGORITHM) return at(l.sequence, `checkpoint signature: algorithm ${l.algorithm}`);
      if (!(await verifySignature(key, l.signature, checkpointMessage(l)))) {
        return at(l.sequence, "checkpoint signature: the signature does not verify");
      }
      covered = l.sequence;
      checkpoints += 1;
    } else {
      return at(next, `line ${n} is not a record or checkpoint`);
    }
  }
  if (covered !== next - 1) {
    return at(covered + 1,
      `records ${covered + 1}..=${next - 1} are not covered by a checkpoint (truncated export?)`);
  }
  progress(records);
  return { intact: true, first: header.after + 1, through: covered, records, checkpoints };
}

/**
 * Verifies a signed custody report envelope (its JSON text) against a PEM public key. Resolves
 * to `{ valid, reason, report }`: the parsed payload when the signature holds.
 */
export async function verifyReport(envelopeText, pem) {
  let envelope;
  try {
    envelope = JSON.parse(envelopeText);
  } catch {
    return { valid: false, reason: "the envelope is not JSON" };
  }
  if (envelope.algorithm !== ALGORITHM) return { valid: false, reason: `algorithm ${envelope.algorithm}` };
  if (envelope.key_fingerprint !== (await fingerprint(pem))) {
    return { valid: false, reason: "the report names another signing key" };
  }
  const key = await importPublicKey(pem);
  if (!(await verifySignature(key, envelope.signature, utf8.encode(envelope.payload)))) {
    return { valid: false, reason: "the signature does not verify" };
  }
  let report;
  try {
    report = JSON.parse(envelope.payload);
  } catch {
    return { valid: false, reason: "the payload is not JSON" };
  }
  if (report.format !== "custodian-custody-report/v1") {
    return { valid: false, reason: "the payload is not a custody report" };
  }
  return { valid: true, reason: null, report };
}
