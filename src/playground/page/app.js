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
  suite: null, // an imported PolicyTest: {name, cases, index}
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
  return b;
}

async function post(path, payload) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
  const json = await res.json();
  if (!res.ok) throw new Error(json.error || `${path}: HTTP ${res.status}`);
  return json;
}

async function evaluate() {
  const seq = ++state.seq;
  $("status").textContent = "evaluating…";
  try {
    const answer = await post("/api/evaluate", body());
    if (seq !== state.seq) return; // a newer edit is on its way
    state.lastAnswer = answer;
    render(answer);
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = String(e.message || e);
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
    for (const id of ["kubectl", "patch", "diff", "response"]) $(id).textContent = "";
    $("warnings").innerHTML = "";
    $("annotations").innerHTML = "";
    $("trace").innerHTML = "";
    $("patch-box").hidden = true;
    $("elapsed").textContent = "";
    renderExpectation(a);
    return;
  }
  v.className = "verdict " + (d.allowed ? "allowed" : "denied");
  v.textContent = d.allowed
    ? `Allowed (${d.verdict})`
    : `Denied: ${d.code} ${d.reason || ""}`;
  $("elapsed").textContent = `${d.path}, ${d.elapsedMicros} µs`;
  $("kubectl").textContent = d.kubectl.length ? d.kubectl.join("\n") : "(nothing: the request goes through)";
  $("warnings").innerHTML = d.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("") || "<li><small>none</small></li>";
  const ann = Object.entries(d.auditAnnotations);
  $("annotations").innerHTML = ann.length
    ? ann.map(([k, val]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(val)}</td></tr>`).join("")
    : "<tr><td><small>none</small></td></tr>";
  $("patch-box").hidden = !d.patch;
  if (d.patch) {
    $("patch").textContent = JSON.stringify(d.patch, null, 2);
    // The server's object (the pane's YAML or JSON, parsed) and the same
    // object with the patch applied.
    $("diff").innerHTML = lineDiff(JSON.stringify(d.object, null, 2), JSON.stringify(d.patchedObject, null, 2));
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
    return `<tr class="${cls}"><td>${escapeHtml(where)}</td><td class="expr">${escapeHtml(t.expression)}</td><td class="result">${escapeHtml(result)}</td><td>${t.cost}</td><td>${t.micros} µs</td></tr>`;
  }).join("");
  const messages = [...p.messages, ...p.errors.map((e) => "ignored error: " + e)];
  return `<div class="policy ${escapeHtml(p.outcome)}" data-policy="${escapeHtml(p.policy)}">
    <div>${escapeHtml(p.policy)}: ${escapeHtml(p.outcome)}${p.denies ? " (denies)" : ""}${p.exemptedBy ? ` (exempted by ${escapeHtml(p.exemptedBy)})` : ""}</div>
    ${messages.length ? `<ul>${messages.map((m) => `<li>${escapeHtml(m)}</li>`).join("")}</ul>` : ""}
    ${rows ? `<table><tr><th>where</th><th>expression</th><th>result</th><th>cost</th><th>time</th></tr>${rows}</table>` : ""}
  </div>`;
}

// A line diff (longest common subsequence) of two texts, as HTML.
function lineDiff(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(`<span>  ${escapeHtml(x[i])}</span>`); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { out.push(`<span class="add">+ ${escapeHtml(y[j])}</span>`); j++; }
    else { out.push(`<span class="del">− ${escapeHtml(x[i])}</span>`); i++; }
  }
  return out.join("\n");
}

function renderExpectation(a) {
  const nav = $("case-nav");
  if (!state.suite) { nav.hidden = true; return; }
  nav.hidden = false;
  const s = state.suite;
  $("case-label").textContent = `${s.name}: case ${s.index + 1} of ${s.cases.length}: ${s.cases[s.index].name}`;
  const e = a.expectation;
  const el = $("case-expect");
  if (!e) { el.className = "fail"; el.textContent = "cannot be decided"; $("case-problems").innerHTML = ""; return; }
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
  state.suite = null;
  state.expect = null;
  state.caseName = ex.name;
  setPolicies(ex.policies);
  setRequest(ex.request, ex.clusterState);
  $("status").textContent = ex.description;
  evaluate();
}

async function saveTest() {
  const b = body();
  delete b.expect;
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
  const text = await file.text();
  try {
    const answer = await post("/api/test/import", { text, name: file.name });
    const suite = answer.suites[0];
    state.suite = { name: suite.name, cases: suite.cases, index: 0 };
    setPolicies(suite.policies);
    editors.cluster.set(suite.clusterState);
    const missing = suite.unresolved.length ? ` (not in the file, add them by hand: ${suite.unresolved.join(", ")})` : "";
    $("status").textContent = `loaded ${suite.name}: ${suite.cases.length} case(s)${missing}`;
    showCase(0);
  } catch (e) {
    $("status").textContent = String(e.message || e);
  }
}

function showCase(i) {
  const s = state.suite;
  if (!s || i < 0 || i >= s.cases.length) return;
  s.index = i;
  const c = s.cases[i];
  state.caseName = c.name;
  state.expect = c.expect;
  setRequest(c.request, editors.cluster.get());
  $("case-prev").disabled = i === 0;
  $("case-next").disabled = i === s.cases.length - 1;
  evaluate();
}

async function start() {
  editors.policy = makeEditor($("policy-editor"), scheduleEvaluate);
  editors.object = makeEditor($("object-editor"), scheduleEvaluate);
  editors.oldObject = makeEditor($("old-object-editor"), scheduleEvaluate);
  editors.cluster = makeEditor($("cluster-editor"), scheduleEvaluate);
  for (const id of ["operation", "endpoint", "mode", "username", "groups", "namespace", "sub-resource", "dry-run"]) {
    $(id).addEventListener("input", scheduleEvaluate);
    $(id).addEventListener("change", scheduleEvaluate);
  }
  $("policy-name").addEventListener("change", () => { saveActivePolicy(); renderTabs(); scheduleEvaluate(); });
  $("policy-new").addEventListener("click", () => {
    saveActivePolicy();
    state.policies.push({ name: `policy-${state.policies.length + 1}.yaml`, text: "" });
    selectPolicy(state.policies.length - 1);
  });
  $("policy-remove").addEventListener("click", () => {
    state.policies.splice(state.active, 1);
    if (!state.policies.length) state.policies.push({ name: "policy.yaml", text: "" });
    state.active = 0;
    editors.policy.set(state.policies[0].text);
    $("policy-name").value = state.policies[0].name;
    renderTabs();
    scheduleEvaluate();
  });
  $("example").addEventListener("change", (e) => loadExample(e.target.value));
  $("library").addEventListener("change", (e) => {
    const p = state.library.find((l) => l.name === e.target.value);
    e.target.value = "";
    if (!p) return;
    saveActivePolicy();
    const empty = state.policies.length === 1 && !state.policies[0].text.trim();
    if (empty) state.policies = [];
    state.policies.push({ name: p.name, text: p.text });
    selectPolicy(state.policies.length - 1);
    scheduleEvaluate();
  });
  $("save-test").addEventListener("click", saveTest);
  $("load-test").addEventListener("change", (e) => { if (e.target.files[0]) loadTest(e.target.files[0]); e.target.value = ""; });
  $("case-prev").addEventListener("click", () => showCase(state.suite.index - 1));
  $("case-next").addEventListener("click", () => showCase(state.suite.index + 1));

  const [library, examples] = await Promise.all([
    fetch("/api/library").then((r) => r.json()),
    fetch("/api/examples").then((r) => r.json()),
  ]);
  state.library = library.policies || [];
  state.examples = examples.examples || [];
  for (const p of state.library) $("library").append(new Option(p.name, p.name));
  for (const e of state.examples) $("example").append(new Option(e.title, e.id));
  setPolicies([]);
  renderTabs();
  document.body.dataset.ready = "true";
}

start();
