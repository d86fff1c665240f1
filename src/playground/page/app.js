// The playground page: three panes (policies, request, decision) over the JSON
// API of `safety-gate playground` (README "Playground"). Every decision shown
// comes from POST /api/evaluate, which runs the engine `serve` runs; this file
// only edits text and draws answers.
"use strict";

const $ = (id) => document.getElementById(id);

// An editor: a textarea with a line-number gutter whose lines can be marked.
function makeEditor(container, onChange) {
  const gutter = document.createElement("div");
  gutter.className = "gutter";
  const area = document.createElement("textarea");
  area.spellcheck = false;
  area.wrap = "off";
  area.setAttribute("autocomplete", "off");
  area.setAttribute("aria-label", container.id.replace(/-editor$/, ""));
  container.append(gutter, area);
  let marks = new Map();
  function renderGutter() {
    const lines = area.value.split("\n").length;
    const parts = [];
    for (let i = 1; i <= lines; i++) {
      const mark = marks.get(i);
      parts.push(mark === undefined
        ? `<div>${i}</div>`
        : `<div class="error" data-line="${i}" title="${escapeHtml(mark)}">${i}</div>`);
    }
    gutter.innerHTML = parts.join("");
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  area.addEventListener("input", () => { renderGutter(); onChange(); });
  area.addEventListener("keydown", (e) => {
    if (e.key === "Tab") {
      e.preventDefault();
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
      renderGutter();
      onChange();
    }
  });
  renderGutter();
  return {
    area,
    get: () => area.value,
    set: (text) => { area.value = text || ""; area.scrollTop = 0; renderGutter(); },
    // lines: [{line, message}]; scrolls the first marked line into view.
    mark: (lines) => {
      marks = new Map();
      for (const l of lines) if (l.line > 0) marks.set(l.line, (marks.has(l.line) ? marks.get(l.line) + "\n" : "") + l.message);
      renderGutter();
      const first = Math.min(...marks.keys());
      if (Number.isFinite(first)) {
        const top = (first - 3) * 18;
        if (top < area.scrollTop || top > area.scrollTop + area.clientHeight - 36) {
          area.scrollTop = Math.max(0, top);
          gutter.scrollTop = area.scrollTop;
        }
      }
    },
  };
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

const state = {
  policies: [{ name: "policy.yaml", text: "" }],
  active: 0,
  library: [],
  examples: [],
  // An imported PolicyTest file: {file, suites: [{name, policies, clusterState,
  // unresolved, cases}], suite, index} (suite and index count from 0).
  suite: null,
  // The panes hold edits the user made since an example, case or saved work
  // was put in them (choosing another one asks before replacing them).
  edited: false,
  caseName: "",
  expect: null,
  lastAnswer: null,
  seq: 0,
};

let timer = null;
function scheduleEvaluate() {
  clearTimeout(timer);
  timer = setTimeout(evaluate, 300);
}

// A user's edit: remembered as edited, kept in localStorage, evaluated.
function edited() {
  state.edited = true;
  storeWork();
  scheduleEvaluate();
}

// The page's work in localStorage, so that a reload (or a closed tab) loses
// nothing: the policy tabs, the request form, the cluster state and the
// loaded PolicyTest with the case on show.
const STORE = "safety-gate-playground/v1";

function storeWork() {
  saveActivePolicy();
  const work = {
    policies: state.policies,
    active: state.active,
    request: currentRequest(),
    clusterState: editors.cluster.get(),
    caseName: state.caseName,
    expect: state.expect,
    suite: state.suite,
    edited: state.edited,
  };
  try {
    localStorage.setItem(STORE, JSON.stringify(work));
  } catch (e) {
    // Over the browser's quota (about 5 MB): the work stays on the page only.
    $("status").textContent = `cannot keep this work for a reload: ${e.message || e}`;
  }
}

function restoreWork() {
  let work;
  try {
    work = JSON.parse(localStorage.getItem(STORE) || "null");
  } catch (_) {
    return false;
  }
  if (!work || !Array.isArray(work.policies)) return false;
  setPolicies(work.policies);
  if (work.active > 0 && work.active < state.policies.length) selectPolicy(work.active);
  setRequest(work.request, work.clusterState);
  state.caseName = work.caseName || "";
  state.expect = work.expect || null;
  state.suite = work.suite && Array.isArray(work.suite.suites) ? work.suite : null;
  state.edited = !!work.edited;
  if (state.suite) renderCaseNav();
  return true;
}

// Asks before replacing panes the user edited; true: go ahead.
function mayReplace(what) {
  if (!state.edited) return true;
  return window.confirm(`${what} replaces the policies and the request on the page, which you have edited. Replace them?`);
}

const editors = {};

function currentRequest() {
  const groups = $("groups").value.split(",").map((g) => g.trim()).filter((g) => g);
  const r = {
    object: editors.object.get(),
    oldObject: editors.oldObject.get(),
    userInfo: { username: $("username").value, groups },
    endpoint: $("endpoint").value,
    mode: $("mode").value,
    dryRun: $("dry-run").checked,
  };
  if ($("operation").value) r.operation = $("operation").value;
  if ($("namespace").value.trim()) r.namespace = $("namespace").value.trim();
  if ($("sub-resource").value.trim()) r.subResource = $("sub-resource").value.trim();
  if (state.extra) Object.assign(r, state.extra);
  return r;
}

function body() {
  saveActivePolicy();
  const b = {
    policies: state.policies,
    request: currentRequest(),
    clusterState: editors.cluster.get(),
  };
  if (state.expect) b.expect = state.expect;
  // What the loaded case needs but the page does not hold: the API then says
  // "cannot be decided" instead of checking `expect`.
  if (state.expect && state.suite) {
    const missing = missingForCase();
    if (missing.length) b.unresolved = missing;
  }
  return b;
}

// POSTs `payload` as JSON; the answer's JSON, or an Error that says what went
// wrong in words (a network failure, an HTTP error, an answer that is not JSON).
async function post(path, payload) {
  let res;
  try {
    res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
  } catch (e) {
    throw new Error(`${path}: the playground did not answer (${e.message || e}); is safety-gate playground still running?`);
  }
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* said below */ }
  if (!res.ok) {
    const why = json && json.error ? json.error : text.trim().slice(0, 300) || res.statusText;
    throw new Error(`${path}: HTTP ${res.status}: ${why}`);
  }
  if (json === null) throw new Error(`${path}: the answer is not JSON: ${text.trim().slice(0, 300)}`);
  return json;
}

async function evaluate() {
  const seq = ++state.seq;
  $("status").textContent = "evaluating…";
  try {
    const payload = body();
    storeWork();
    const answer = await post("/api/evaluate", payload);
    if (seq !== state.seq) return; // a newer edit is on its way
    state.lastAnswer = answer;
    render(answer);
    $("status").textContent = "";
  } catch (e) {
    if (seq !== state.seq) return;
    state.lastAnswer = null;
    showFailure(String(e.message || e));
  }
}

// Empties the Decision pane (no verdict from an earlier edit may stay on show).
function clearDecision() {
  for (const id of ["kubectl", "patch", "diff", "response"]) $(id).textContent = "";
  $("warnings").innerHTML = "";
  $("annotations").innerHTML = "";
  $("trace").innerHTML = "";
  $("patch-box").hidden = true;
  $("elapsed").textContent = "";
}

// An evaluation that got no answer: the old decision goes, the error shows.
function showFailure(message) {
  clearDecision();
  const v = $("verdict");
  v.className = "verdict problem";
  v.textContent = "No decision: the evaluation failed";
  $("errors").innerHTML = `<li class="problem failure">${escapeHtml(message)}</li>`;
  $("status").textContent = "evaluation failed";
  if (state.suite) {
    $("case-expect").className = "fail";
    $("case-expect").textContent = "cannot be decided";
  }
}

// The verdict in words (decision.verdict is the engine's: allowed, warned,
// error, would_deny, denied).
function verdictText(d) {
  if (!d.allowed) return `Denied: ${d.code} ${d.reason || ""}`.trim();
  switch (d.verdict) {
    case "warned": return "Allowed, with warnings";
    case "would_deny": return "Allowed in dry-run mode (would be denied)";
    case "error": return "Allowed (a policy failed with an error that its failurePolicy ignores)";
    default: return "Allowed";
  }
}

function render(a) {
  const problems = [...(a.loadErrors || []), ...(a.requestErrors || [])];
  // Marks: policy errors in their policy's editor, request errors in theirs.
  const byPolicy = new Map();
  for (const p of a.loadErrors || []) {
    if (!byPolicy.has(p.file)) byPolicy.set(p.file, []);
    byPolicy.get(p.file).push(p);
  }
  state.policyErrors = byPolicy;
  editors.policy.mark(byPolicy.get(state.policies[state.active].name) || []);
  const pane = (name) => (a.requestErrors || []).filter((p) => p.pane === name);
  editors.object.mark(pane("object"));
  editors.oldObject.mark(pane("oldObject"));
  editors.cluster.mark(pane("clusterState"));
  renderTabs();

  $("errors").innerHTML = problems.map((p) => {
    const where = p.line > 0 ? `${p.file}:${p.line}${p.column ? ":" + p.column : ""}` : p.file;
    const extra = [p.policy && `policy ${p.policy}`, p.field].filter((x) => x).join(": ");
    return `<li class="problem" data-pane="${escapeHtml(p.pane)}" data-line="${p.line}">${escapeHtml(where)}: ${escapeHtml(extra ? extra + ": " : "")}${escapeHtml(p.message)}</li>`;
  }).join("") + (a.notes || []).map((n) => `<li class="note">${escapeHtml(n)}</li>`).join("");

  const v = $("verdict");
  const d = a.decision;
  if (!d) {
    v.className = "verdict problem";
    v.textContent = a.loadErrors && a.loadErrors.length ? "The policies do not load" : "The request cannot be built";
    clearDecision();
    renderExpectation(a);
    return;
  }
  v.className = "verdict " + (d.allowed ? "allowed" : "denied");
  v.textContent = verdictText(d);
  $("elapsed").textContent = `${d.path}, ${d.elapsedMicros} µs`;
  $("kubectl").textContent = d.kubectl.length ? d.kubectl.join("\n") : "(nothing: the request goes through)";
  $("warnings").innerHTML = d.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("") || "<li><small>none</small></li>";
  const ann = Object.entries(d.auditAnnotations);
  $("annotations").innerHTML = ann.length
    ? ann.map(([k, val]) => `<tr><th>${escapeHtml(k)}</th><td><div class="value">${escapeHtml(val)}</div></td></tr>`).join("")
    : "<tr><td><small>none</small></td></tr>";
  $("patch-box").hidden = !d.patch;
  if (d.patch) {
    $("patch").textContent = JSON.stringify(d.patch, null, 2);
    // The server's object (the pane's YAML or JSON, parsed) and the same
    // object with the patch applied.
    $("diff").innerHTML = lineDiff(yamlLines(d.object), yamlLines(d.patchedObject));
  }
  $("trace").innerHTML = d.policies.map(renderPolicy).join("") || "<small>no policy matched this request</small>";
  $("response").textContent = JSON.stringify(d.response, null, 2);
  renderExpectation(a);
}

function renderPolicy(p) {
  const rows = p.trace.map((t) => {
    const ok = t.error === undefined;
    const cls = !ok ? "err" : (t.value === false ? "false" : "");
    const result = ok ? JSON.stringify(t.value) : `error: ${t.error}`;
    const where = `${t.phase}[${t.index}]${t.name ? " " + t.name : ""}`;
    return `<tr class="${cls}"><td>${escapeHtml(where)}</td><td class="expr"><div class="value">${escapeHtml(t.expression)}</div></td><td class="result"><div class="value">${escapeHtml(result)}</div></td><td>${t.cost}</td><td>${t.micros} µs</td></tr>`;
  }).join("");
  const messages = [...p.messages, ...p.errors.map((e) => "ignored error: " + e)];
  return `<div class="policy ${escapeHtml(p.outcome)}" data-policy="${escapeHtml(p.policy)}">
    <div>${escapeHtml(p.policy)}: ${escapeHtml(p.outcome)}${p.denies ? " (denies)" : ""}${p.exemptedBy ? ` (exempted by ${escapeHtml(p.exemptedBy)})` : ""}</div>
    ${messages.length ? `<ul>${messages.map((m) => `<li>${escapeHtml(m)}</li>`).join("")}</ul>` : ""}
    ${rows ? `<table><tr><th>where</th><th>expression</th><th>result</th><th>cost</th><th>time</th></tr>${rows}</table>` : ""}
  </div>`;
}

// A value as YAML lines, one key or item per line, so that a diff of two
// objects shows only the lines that changed (JSON's trailing commas would
// make a line look changed when only its neighbour was added). Strings are
// written as JSON strings, which YAML reads the same.
function yamlLines(value) {
  const out = [];
  // A string YAML would read back as this string is written plain; others
  // (numbers, booleans, null and their look-alikes, ": ", " #") as JSON.
  const plain = (v) => /^[A-Za-z_/.][A-Za-z0-9_./@=+-]*(:[A-Za-z0-9_./@=+-]+)*$/.test(v)
    && !/^(true|false|null|yes|no|on|off|y|n)$/i.test(v);
  const scalar = (v) => (v === null ? "null" : typeof v === "string" ? (plain(v) ? v : JSON.stringify(v)) : String(v));
  const key = (k) => (/^[A-Za-z0-9_.\/-]+$/.test(k) && !/^[-.]/.test(k) ? k : JSON.stringify(k));
  const isEmpty = (v) => (Array.isArray(v) ? v.length === 0 : v !== null && typeof v === "object" && Object.keys(v).length === 0);
  const inline = (v) => (Array.isArray(v) ? "[]" : v !== null && typeof v === "object" ? "{}" : scalar(v));
  const nested = (v) => v !== null && typeof v === "object" && !isEmpty(v);
  function walk(v, indent, first) {
    // first: the prefix of the first line ("- " for a list item).
    const pad = " ".repeat(indent);
    if (Array.isArray(v)) {
      v.forEach((item, i) => {
        const lead = i === 0 && first !== undefined ? first : pad;
        if (nested(item)) walk(item, indent + 2, lead + "- ");
        else out.push(`${lead}- ${inline(item)}`);
      });
    } else {
      Object.entries(v).forEach(([k, item], i) => {
        const lead = i === 0 && first !== undefined ? first : pad;
        if (nested(item)) {
          out.push(`${lead}${key(k)}:`);
          walk(item, Array.isArray(item) ? indent : indent + 2);
        } else out.push(`${lead}${key(k)}: ${inline(item)}`);
      });
    }
  }
  if (nested(value)) walk(value, 0);
  else out.push(inline(value));
  return out;
}

// A line diff (longest common subsequence) of two lists of lines, as HTML:
// one block per line, so no newline characters go between them.
function lineDiff(x, y) {
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(`<span class="same">  ${escapeHtml(x[i])}</span>`); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { out.push(`<span class="add">+ ${escapeHtml(y[j])}</span>`); j++; }
    else { out.push(`<span class="del">− ${escapeHtml(x[i])}</span>`); i++; }
  }
  return out.join("");
}

// The loaded PolicyTest's bar: which suite and case, and what the file names
// but does not hold (the page cannot read those files).
function renderCaseNav() {
  const nav = $("case-nav");
  const t = state.suite;
  if (!t) { nav.hidden = true; return; }
  nav.hidden = false;
  const s = t.suites[t.suite];
  $("case-label").textContent =
    `${t.file}: suite ${t.suite + 1} of ${t.suites.length} (${s.name}), case ${t.index + 1} of ${s.cases.length}: ${s.cases[t.index].name}`;
  $("case-prev").disabled = t.suite === 0 && t.index === 0;
  $("case-next").disabled = t.suite === t.suites.length - 1 && t.index === s.cases.length - 1;
  $("case-unresolved").innerHTML = s.unresolved.length
    ? `<li>Not in the file, paste them in by hand (the page cannot read files):<ul>${s.unresolved.map((u) => `<li>${escapeHtml(u)}</li>`).join("")}</ul></li>`
    : "";
}

// What the case on show lacks: the suite's policy files not pasted in (a tab
// of that file name), its cluster state or params files while the pane is as
// imported, the case's object files while their pane is blank.
function missingForCase() {
  const t = state.suite;
  const s = t.suites[t.suite];
  const c = s.cases[t.index];
  const names = new Set(state.policies.map((p) => p.name));
  // The import names each case's own needs (`unresolved` of the case).
  return (c.unresolved || s.unresolved).filter((u) => {
    const [field, ...rest] = u.split(": ");
    const file = rest.join(": ");
    if (field === "policies") return !names.has(file.split("/").pop());
    if (field === "clusterState" || field === "params") return editors.cluster.get() === s.clusterState;
    const m = /^cases\[(.*)\]\.(object|oldObject)$/.exec(field);
    if (!m || m[1] !== c.name) return false;
    return !(m[2] === "object" ? editors.object : editors.oldObject).get().trim();
  });
}

function renderExpectation(a) {
  renderCaseNav();
  if (!state.suite) return;
  const e = a.expectation;
  const el = $("case-expect");
  const missing = missingForCase();
  if (missing.length) {
    // A case whose policies or objects are missing says nothing about the
    // test: neither ok nor FAIL.
    el.className = "fail";
    el.textContent = "cannot be decided";
    $("case-problems").innerHTML = `<li>this case needs what the file does not hold: ${missing.map(escapeHtml).join(", ")}</li>`;
    return;
  }
  if (!e || e.decided === false) {
    el.className = "fail";
    el.textContent = "cannot be decided";
    $("case-problems").innerHTML = ((e && e.problems) || []).map((p) => `<li>${escapeHtml(p)}</li>`).join("");
    return;
  }
  el.className = e.passed ? "pass" : "fail";
  el.textContent = e.passed ? "expect: ok" : "expect: FAIL";
  $("case-problems").innerHTML = e.problems.map((p) => `<li>${escapeHtml(p)}</li>`).join("");
}

function saveActivePolicy() {
  const p = state.policies[state.active];
  if (!p) return;
  p.text = editors.policy.get();
  const name = $("policy-name").value.trim();
  if (name) p.name = name;
}

function renderTabs() {
  const tabs = $("policy-tabs");
  tabs.innerHTML = "";
  state.policies.forEach((p, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.role = "tab";
    b.textContent = p.name;
    b.className = (i === state.active ? "active " : "") + (state.policyErrors && state.policyErrors.has(p.name) ? "has-error" : "");
    b.addEventListener("click", () => selectPolicy(i));
    tabs.append(b);
  });
}

function selectPolicy(i) {
  saveActivePolicy();
  state.active = i;
  editors.policy.set(state.policies[i].text);
  $("policy-name").value = state.policies[i].name;
  editors.policy.mark((state.policyErrors && state.policyErrors.get(state.policies[i].name)) || []);
  renderTabs();
}

function setPolicies(list) {
  state.policies = list.length ? list.map((p) => ({ name: p.name, text: p.text })) : [{ name: "policy.yaml", text: "" }];
  state.active = 0;
  state.policyErrors = new Map();
  editors.policy.set(state.policies[0].text);
  $("policy-name").value = state.policies[0].name;
  renderTabs();
}

function setRequest(r, clusterState) {
  r = r || {};
  $("operation").value = r.operation || "";
  $("endpoint").value = r.endpoint || "validate";
  $("mode").value = r.mode || "Enforce";
  const u = r.userInfo || {};
  $("username").value = u.username || "policy-test";
  $("groups").value = (u.groups || ["system:authenticated"]).join(", ");
  $("namespace").value = r.namespace || "";
  $("sub-resource").value = r.subResource || "";
  $("dry-run").checked = !!r.dryRun;
  editors.object.set(r.object || "");
  editors.oldObject.set(r.oldObject || "");
  editors.cluster.set(clusterState || "");
  // Fields the form has no control for travel unchanged.
  const extra = {};
  for (const k of ["requestName", "kind", "resource", "options"]) if (r[k] !== undefined && r[k] !== null) extra[k] = r[k];
  state.extra = Object.keys(extra).length ? extra : null;
}

function loadExample(id) {
  const ex = state.examples.find((e) => e.id === id);
  if (!ex) return;
  state.edited = false;
  state.suite = null;
  state.expect = null;
  state.caseName = ex.name;
  setPolicies(ex.policies);
  setRequest(ex.request, ex.clusterState);
  $("status").textContent = ex.description;
  return evaluate();
}

// An empty page to start from scratch: one blank policy tab, a blank request.
function loadBlank() {
  state.edited = false;
  state.suite = null;
  state.expect = null;
  state.caseName = "";
  setPolicies([]);
  setRequest({}, "");
  $("username").value = "alice@example.com";
  return evaluate();
}

async function saveTest() {
  const b = body();
  delete b.expect;
  delete b.unresolved;
  b.name = state.caseName || "playground case";
  try {
    const answer = await post("/api/test/export", b);
    if (!answer.text) { render(answer); $("status").textContent = "cannot save: fix the problems first"; return; }
    const blob = new Blob([answer.text], { type: "application/yaml" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = answer.fileName;
    document.body.append(a);
    a.click();
    a.remove();
    $("status").textContent = `saved ${answer.fileName}: run it with safety-gate test ${answer.fileName}`;
  } catch (e) {
    $("status").textContent = String(e.message || e);
  }
}

async function loadTest(file) {
  if (!mayReplace(`Loading ${file.name}`)) return;
  const text = await file.text();
  try {
    const answer = await post("/api/test/import", { text, name: file.name });
    state.suite = { file: file.name, suites: answer.suites, suite: -1, index: 0 };
    const cases = answer.suites.reduce((n, s) => n + s.cases.length, 0);
    const missing = answer.suites.reduce((n, s) => n + s.unresolved.length, 0);
    $("status").textContent = `loaded ${file.name}: ${answer.suites.length} suite(s), ${cases} case(s)` +
      (missing ? `, ${missing} file(s) it names are not in it (listed above the panes)` : "");
    showCase(0, 0);
  } catch (e) {
    $("status").textContent = String(e.message || e);
  }
}

// Shows case `i` of suite `k`; a new suite brings its policies and cluster state.
function showCase(k, i) {
  const t = state.suite;
  if (!t || k < 0 || k >= t.suites.length) return;
  const s = t.suites[k];
  if (i < 0 || i >= s.cases.length) return;
  if (k !== t.suite) {
    setPolicies(s.policies);
    editors.cluster.set(s.clusterState);
  }
  t.suite = k;
  t.index = i;
  const c = s.cases[i];
  state.caseName = c.name;
  state.expect = c.expect;
  state.edited = false;
  setRequest(c.request, editors.cluster.get());
  renderCaseNav();
  evaluate();
}

// Next/Previous across the suites of the file: after a suite's last case
// comes the next suite's first.
function stepCase(delta) {
  const t = state.suite;
  if (!t) return;
  let k = t.suite, i = t.index + delta;
  if (i >= t.suites[k].cases.length) { k += 1; i = 0; }
  if (i < 0) { k -= 1; if (k >= 0) i = t.suites[k].cases.length - 1; }
  showCase(k, i);
}

async function start() {
  editors.policy = makeEditor($("policy-editor"), edited);
  editors.object = makeEditor($("object-editor"), edited);
  editors.oldObject = makeEditor($("old-object-editor"), edited);
  editors.cluster = makeEditor($("cluster-editor"), edited);
  for (const id of ["operation", "endpoint", "mode", "username", "groups", "namespace", "sub-resource", "dry-run"]) {
    $(id).addEventListener("input", edited);
    $(id).addEventListener("change", edited);
  }
  $("policy-name").addEventListener("change", () => { saveActivePolicy(); renderTabs(); edited(); });
  $("policy-new").addEventListener("click", () => {
    saveActivePolicy();
    state.policies.push({ name: `policy-${state.policies.length + 1}.yaml`, text: "" });
    selectPolicy(state.policies.length - 1);
    edited();
  });
  $("policy-remove").addEventListener("click", () => {
    state.policies.splice(state.active, 1);
    if (!state.policies.length) state.policies.push({ name: "policy.yaml", text: "" });
    state.active = 0;
    editors.policy.set(state.policies[0].text);
    $("policy-name").value = state.policies[0].name;
    renderTabs();
    edited();
  });
  $("example").addEventListener("change", (e) => {
    const id = e.target.value;
    e.target.value = "";
    if (id === "blank") { if (mayReplace("An empty page")) loadBlank(); return; }
    const ex = state.examples.find((x) => x.id === id);
    if (ex && mayReplace(`The example "${ex.title}"`)) loadExample(id);
  });
  $("library").addEventListener("change", (e) => {
    const p = state.library.find((l) => l.name === e.target.value);
    e.target.value = "";
    if (!p) return;
    saveActivePolicy();
    // Already open: its tab, not a second copy (two files of one name would
    // load the policy twice and report it as its own duplicate).
    const open = state.policies.findIndex((x) => x.name === p.name);
    if (open >= 0) {
      selectPolicy(open);
      $("status").textContent = `${p.name} is already open`;
      return;
    }
    const empty = state.policies.length === 1 && !state.policies[0].text.trim();
    if (empty) state.policies = [];
    state.policies.push({ name: p.name, text: p.text });
    selectPolicy(state.policies.length - 1);
    edited();
  });
  $("save-test").addEventListener("click", saveTest);
  $("load-test").addEventListener("change", (e) => { if (e.target.files[0]) loadTest(e.target.files[0]); e.target.value = ""; });
  $("case-prev").addEventListener("click", () => stepCase(-1));
  $("case-next").addEventListener("click", () => stepCase(1));

  const [library, examples] = await Promise.all([
    fetch("/api/library").then((r) => r.json()),
    fetch("/api/examples").then((r) => r.json()),
  ]);
  state.library = library.policies || [];
  state.examples = examples.examples || [];
  for (const p of state.library) $("library").append(new Option(p.name, p.name));
  for (const e of state.examples) $("example").append(new Option(e.title, e.id));
  // The work of the last visit, else the incident-1 example, decided at once.
  if (restoreWork()) {
    $("status").textContent = "restored your work from the last visit";
    await evaluate();
  } else if (state.examples.length) {
    await loadExample(state.examples[0].id);
  } else {
    setPolicies([]);
  }
  document.body.dataset.ready = "true";
}

start();
