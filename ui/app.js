// The auditor's page: signs in with a bearer token kept in this module's memory only (never in
// storage or cookies), reads the custody report, the audit log and its export through the API,
// and verifies the evidence in the browser (verify.js). Everything shown is written with
// textContent: no value from the server is ever parsed as HTML.

import { fingerprint, verifyExport, verifyReport } from "./verify.js";

/** The bearer token, in memory only. */
let token = null;
/** The last signed custody report envelope, as received (downloaded byte for byte). */
let reportText = null;
/** Key names to ids, from the last custody report (the log filter accepts either). */
let keyIds = new Map();
/** Audit log paging: the `after` of each page shown so far. */
let pages = [0];

const $ = (id) => document.getElementById(id);

function status(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** A call to the API with the token; resolves to the Response, or throws ApiError. */
async function api(path) {
  const res = await fetch(path, {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
    credentials: "omit",
  });
  if (!res.ok) {
    let code = "error";
    let message = res.statusText;
    try {
      // The API's error body: {"error": {"code", "message", "request_id"}}.
      const body = (await res.json()).error || {};
      code = body.code || code;
      message = body.message || message;
      if (body.request_id) message += ` (request id ${body.request_id})`;
    } catch {
      // Not a JSON error body: keep the status text.
    }
    if (res.status === 401) signOut(`Signed out: ${message}`);
    throw new ApiError(res.status, code, message);
  }
  return res;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) tr.append(c instanceof Node ? wrap(c) : el("td", c));
  return tr;
}

function wrap(node) {
  const td = el("td");
  td.append(node);
  return td;
}

function table(headers, rows, cls) {
  const t = el("table", null, cls);
  const head = el("tr");
  headers.forEach((h) => head.append(el("th", h)));
  const thead = el("thead");
  thead.append(head);
  t.append(thead);
  const body = el("tbody");
  rows.forEach((r) => body.append(r));
  t.append(body);
  return t;
}

// --- signing in and out -----------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  token = input.value.trim();
  input.value = "";
  if (!token) return;
  status("Signing in…");
  try {
    // The public key needs `audit:read`: a token that reads it is an auditor's.
    await api("/v1/audit/public-key");
  } catch (e) {
    token = null;
    status(`Sign-in failed: ${e.message}`, "bad");
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  status("Signed in.", "good");
  show("keys");
}

function signOut(message = "Signed out.") {
  token = null;
  reportText = null;
  keyIds = new Map();
  pages = [0];
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  $("report").replaceChildren();
  $("events").tBodies[0].replaceChildren();
  $("report-verdict").textContent = "";
  $("verify-verdict").textContent = "";
  $("fingerprint").textContent = "not fetched yet";
  $("nav").hidden = true;
  $("login").hidden = false;
  status(message);
}

function show(view) {
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== `view-${view}`));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  if (view === "keys" && reportText === null) loadReport();
  if (view === "log" && $("events").tBodies[0].rows.length === 0) loadEvents(0);
}

// --- keys and custody -------------------------------------------------------------------

function attributes(obj) {
  if (!obj) return "missing from the device";
  const attrs = Object.entries(obj.attributes || {})
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" ");
  return `${obj.key_type} ${obj.key_bits} bits; ${attrs}`;
}

function attestation(v) {
  if (!v.device_object) return "—";
  if (v.device_object.attestation) return "TPM2_Certify statement present (check offline)";
  return "none (not a TPM key)";
}

async function loadReport() {
  $("report-verdict").textContent = "Reading the devices…";
  $("report-verdict").className = "verdict";
  $("report-download").disabled = true;
  try {
    const [pem, text] = await Promise.all([
      api("/v1/audit/public-key").then((r) => r.text()),
      api("/v1/custody/report").then((r) => r.text()),
    ]);
    reportText = text;
    $("report-download").disabled = false;
    const verdict = await verifyReport(text, pem);
    if (!verdict.valid) {
      $("report-verdict").textContent = `Report signature INVALID: ${verdict.reason}`;
      $("report-verdict").className = "verdict bad";
      $("report").replaceChildren();
      return;
    }
    renderReport(verdict.report);
  } catch (e) {
    $("report-verdict").textContent = `No report: ${e.message}`;
    $("report-verdict").className = "verdict bad";
  }
}

function renderReport(r) {
  const s = r.summary;
  $("report-verdict").textContent =
    `Report signature valid (key ${r.signing_key.fingerprint.slice(0, 16)}…); generated ` +
    `${r.generated_at} by node ${r.node}: ${s.keys} keys, ${s.versions} versions, ` +
    `${s.anomalies} anomalies`;
  $("report-verdict").className = s.anomalies > 0 ? "verdict warn" : "verdict good";
  keyIds = new Map(r.keys.map((k) => [k.name, k.key_id]));
  const devices = table(["device", "label", "manufacturer", "model", "serial", "firmware"],
    r.devices.map((d) => row([d.backend, d.label, d.manufacturer, d.model, d.serial, d.firmware])));
  const keys = table(
    ["key", "id", "state", "device", "mode", "rotation", "version", "version state",
      "device object", "custody attributes", "stored data keys", "wraps", "attestation", "anomalies"],
    r.keys.flatMap((k) => k.versions.map((v, i) => {
      const anomalies = v.anomalies.length ? v.anomalies.join("; ") : "none";
      return row([
        i === 0 ? k.name : "", i === 0 ? k.key_id : "", i === 0 ? k.state : "",
        i === 0 ? k.backend : "", i === 0 ? k.mode : "", i === 0 ? (k.rotation_period || "—") : "",
        `v${v.version}`, v.state, v.device_label, attributes(v.device_object),
        v.stored_data_keys, v.wraps_reserved, attestation(v), anomalies,
      ], v.anomalies.length ? "anomaly" : "");
    })), "keys");
  const signing = el("p");
  signing.append(el("strong", "Audit signing key: "),
    el("span", `${r.signing_key.algorithm}, fingerprint `),
    el("span", r.signing_key.fingerprint, "mono"),
    el("span", `; ${attributes(r.signing_key.device_object)}; anomalies: ` +
      (r.signing_key.anomalies.length ? r.signing_key.anomalies.join("; ") : "none")));
  $("report").replaceChildren(el("h3", "Devices"), devices, signing, el("h3", "Keys and versions"), keys);
}

function downloadReport() {
  if (reportText === null) return;
  const url = URL.createObjectURL(new Blob([reportText], { type: "application/json" }));
  const a = el("a");
  a.href = url;
  a.download = "custody-report.json";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// --- the audit log ----------------------------------------------------------------------

function filterQuery() {
  const f = new FormData($("filter"));
  const q = new URLSearchParams();
  for (const name of ["principal", "action", "outcome"]) {
    const v = String(f.get(name) || "").trim();
    if (v) q.set(name, v);
  }
  const key = String(f.get("key") || "").trim();
  if (key) q.set("key", keyIds.get(key) || key);
  for (const name of ["since", "until"]) {
    const v = String(f.get(name) || "");
    // datetime-local is read as UTC: the records' times are UTC.
    if (v) q.set(name, `${v.length === 16 ? `${v}:00` : v}Z`);
  }
  return q;
}

async function loadEvents(page) {
  const q = filterQuery();
  q.set("after", String(pages[page]));
  q.set("limit", "50");
  try {
    const body = await (await api(`/v1/audit/events?${q}`)).json();
    const rows = body.records.map((e) => row([
      e.sequence, e.time, e.principal ?? "—", e.action ?? "—", e.resource ?? "—",
      e.key_id ? `${e.key_id}${e.key_version ? ` v${e.key_version}` : ""}` : "—",
      e.outcome, e.status, e.error_code ?? "", `${e.method} ${e.route}`,
    ], `outcome-${e.outcome}`));
    $("events").tBodies[0].replaceChildren(...rows);
    pages = pages.slice(0, page + 1);
    if (body.next_after !== null && body.next_after !== undefined) pages.push(body.next_after);
    $("page-prev").disabled = page === 0;
    $("page-next").disabled = pages.length <= page + 1;
    $("page-next").dataset.page = String(page + 1);
    $("page-prev").dataset.page = String(page - 1);
    $("page-info").textContent = body.records.length
      ? `page ${page + 1}: records ${body.records[0].sequence}–${body.records[body.records.length - 1].sequence}`
      : `page ${page + 1}: no records`;
  } catch (e) {
    status(`Audit log: ${e.message}`, "bad");
  }
}

// --- verification -----------------------------------------------------------------------

async function runVerification() {
  const verdict = $("verify-verdict");
  verdict.textContent = "";
  verdict.className = "verdict";
  $("verify-run").disabled = true;
  try {
    $("verify-progress").textContent = "Downloading the public key and the export…";
    const pem = await (await api("/v1/audit/public-key")).text();
    $("fingerprint").textContent = await fingerprint(pem);
    const text = await (await api("/v1/audit/export")).text();
    const result = await verifyExport(text, pem, (n) => {
      $("verify-progress").textContent = `Checked ${n} records…`;
    });
    if (result.intact) {
      $("verify-progress").textContent =
        `Checked ${result.records} records and ${result.checkpoints} checkpoint signatures.`;
      verdict.textContent = `Intact through sequence ${result.through}`;
      verdict.className = "verdict good";
    } else {
      $("verify-progress").textContent = "Verification stopped at the first failure.";
      verdict.textContent = result.sequence === null
        ? `NOT intact: ${result.reason}`
        : `NOT intact: first bad record is sequence ${result.sequence}: ${result.reason}`;
      verdict.className = "verdict bad";
    }
  } catch (e) {
    $("verify-progress").textContent = "";
    verdict.textContent = `Could not verify: ${e.message}`;
    verdict.className = "verdict bad";
  } finally {
    $("verify-run").disabled = false;
  }
}

// --- wiring -----------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", () => signOut());
document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
$("report-refresh").addEventListener("click", loadReport);
$("report-download").addEventListener("click", downloadReport);
$("filter").addEventListener("submit", (e) => {
  e.preventDefault();
  pages = [0];
  loadEvents(0);
});
$("page-next").addEventListener("click", (e) => loadEvents(Number(e.target.dataset.page)));
$("page-prev").addEventListener("click", (e) => loadEvents(Number(e.target.dataset.page)));
$("verify-run").addEventListener("click", runVerification);
