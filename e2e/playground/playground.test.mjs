// Browser tests of `safety-gate playground` in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no browser is downloaded).
// Run by tests/playground_browser.rs, which starts the real binary and sets:
//   PLAYGROUND_URL   the page (http://127.0.0.1:PORT/)
//   SAFETY_GATE_BIN  the binary, to run a saved PolicyTest with `safety-gate test`
//   SCREENSHOT_DIR   where each state's screenshot goes (paths are printed)
//   CHROMIUM         the browser executable (default /usr/bin/chromium)
//   FIXTURES         e2e/playground/fixtures
// Each scenario prints `ok <name>` or throws; the process exits 1 on the first failure.
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const url = process.env.PLAYGROUND_URL;
const bin = process.env.SAFETY_GATE_BIN;
const shots = process.env.SCREENSHOT_DIR;
const fixtures = process.env.FIXTURES;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
for (const [k, v] of Object.entries({ PLAYGROUND_URL: url, SAFETY_GATE_BIN: bin, SCREENSHOT_DIR: shots, FIXTURES: fixtures })) {
  if (!v) throw new Error(`${k} is not set (run through cargo test --test playground_browser)`);
}

const POLICY = `apiVersion: safety-gate.dev/v1alpha1
kind: GatePolicy
metadata:
  name: no-latest-tag
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["pods"]
  validations:
  - expression: "object.spec.containers.all(c, !c.image.endsWith(':latest'))"
    message: "images must not use the :latest tag"
`;
const POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  containers:
  - name: web
    image: nginx:latest
`;

const userDataDir = mkdtempSync(path.join(tmpdir(), "playground-chromium-"));
// A fresh profile each run (Playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  acceptDownloads: true,
  // The tester's screen size, at which the trace once made the page 4-6000 px wide.
  viewport: { width: 1500, height: 1000 },
});
const page = context.pages()[0] || await context.newPage();
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
// window.confirm: each message is kept; answered as `dialogAnswer` says (a
// scenario that does not expect one leaves "dismiss", so its work stays).
const dialogs = [];
let dialogAnswer = "dismiss";
page.on("dialog", (d) => {
  dialogs.push(d.message());
  return dialogAnswer === "accept" ? d.accept() : d.dismiss();
});

async function shot(name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  console.log(`screenshot: ${file}`);
}

// A fresh page: the work an earlier scenario left in localStorage is dropped.
async function open(target = url, on = page) {
  await on.goto(target);
  await on.waitForSelector("body[data-ready=true]");
  await on.evaluate(() => localStorage.clear());
  await on.reload();
  await on.waitForSelector("body[data-ready=true]");
}

// Fails when anything makes the page wider than the window.
async function assertNotWider(what) {
  const { scroll, inner } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  assert.ok(scroll <= inner, `${what}: the page is ${scroll} px wide in a ${inner} px window`);
}

// The Example menu, answering the confirm (if one comes) as `answer` says.
async function chooseExample(id, answer = "dismiss") {
  dialogAnswer = answer;
  await page.selectOption("#example", id);
  dialogAnswer = "dismiss";
}

const scenarios = [];
function scenario(name, fn) { scenarios.push([name, fn]); }

scenario("first load: incident 1 decided; the trace stays inside its pane", async () => {
  await open();
  // Nothing chosen yet: the incident-1 example is there, already decided.
  await page.locator("#verdict", { hasText: "Denied: 403 Forbidden" }).waitFor();
  assert.match(await page.locator("#kubectl").textContent(), /protect-rbac-defaults: ClusterRole system:kube-controller-manager/);
  assert.ok(await page.locator("#trace .policy tr").count() > 1, "the trace has rows");
  await assertNotWider("incident 1");
  // The trace scrolls inside the Decision pane, and its table fits the pane.
  const pane = await page.locator("#decision-pane").boundingBox();
  for (const table of await page.locator("#trace table").all()) {
    const box = await table.boundingBox();
    assert.ok(box.x + box.width <= pane.x + pane.width + 1, `a trace table reaches ${box.x + box.width} px, the pane ends at ${pane.x + pane.width}`);
  }
  const trace = await page.locator("#trace").boundingBox();
  assert.ok(trace.y < 1000, `the trace starts below the window (${trace.y} px)`);
  await shot("0-first-load-incident-1");
  // The screenshot in the README (docs/playground.png is this file).
  await page.screenshot({ path: path.join(shots, "docs-playground.png") });
  // Every incident: no page wider than the window, no internal verdict words.
  for (const id of ["incident-2", "incident-3", "incident-4", "incident-5"]) {
    await chooseExample(id);
    await page.locator("#verdict.allowed, #verdict.denied").waitFor();
    await page.waitForFunction(() => !document.getElementById("status").textContent.startsWith("evaluating"));
    await assertNotWider(id);
    assert.doesNotMatch(await page.locator("#verdict").textContent(), /\((allowed|warned|would_deny|error)\)/);
  }
  assert.equal(dialogs.length, 0, `nothing was edited, yet the page asked: ${dialogs}`);
  // The gate in DryRun mode: the denial becomes an allowance that says so.
  await chooseExample("incident-1");
  await page.locator("#verdict", { hasText: "Denied: 403" }).waitFor();
  await page.selectOption("#mode", "DryRun");
  await page.locator("#verdict", { hasText: "Allowed in dry-run mode (would be denied)" }).waitFor();
  // A library policy that is already open: its tab, not a second one.
  await page.selectOption("#mode", "Enforce");
  const tabs = await page.locator("#policy-tabs button").allTextContents();
  const library = await page.locator("#library option").allTextContents();
  const open1 = tabs.find((t) => library.includes(t));
  assert.ok(open1, `a tab of incident 1 is a library policy (tabs ${tabs}, library ${library})`);
  await page.selectOption("#library", open1);
  assert.deepEqual(await page.locator("#policy-tabs button").allTextContents(), tabs);
  assert.equal(await page.locator("#policy-tabs button.active").textContent(), open1);
  await page.locator("#verdict", { hasText: "Denied: 403" }).waitFor();
  assert.equal(await page.locator("#errors li.problem").count(), 0);
});

scenario("edits survive a reload and are not replaced without asking", async () => {
  await open();
  await page.locator("#verdict", { hasText: "Denied: 403" }).waitFor();
  // Incident 1 is a DELETE: its object is the oldObject.
  const object = page.locator("#old-object-editor textarea");
  const mine = (await object.inputValue()) + "# my note\n";
  await object.fill(mine);
  await page.reload();
  await page.waitForSelector("body[data-ready=true]");
  assert.equal(await object.inputValue(), mine, "the edit is back after a reload");
  await page.locator("#verdict", { hasText: "Denied: 403" }).waitFor();
  // Another example: the page asks; "Cancel" keeps the work.
  await chooseExample("incident-2", "dismiss");
  assert.equal(dialogs.length, 1);
  assert.match(dialogs[0], /edited/);
  assert.equal(await object.inputValue(), mine, "Cancel keeps the edit");
  // Load test asks too.
  await page.setInputFiles("#load-test", path.join(fixtures, "configmap-cases.test.yaml"));
  assert.equal(dialogs.length, 2);
  assert.equal(await object.inputValue(), mine, "Cancel keeps the edit");
  assert.equal(await page.locator("#case-nav").isHidden(), true);
  // "OK" replaces it; an example not edited since is replaced without asking.
  await chooseExample("incident-2", "accept");
  await page.waitForFunction((t) => document.querySelector("#old-object-editor textarea").value !== t, mine);
  await page.locator("#verdict.allowed, #verdict.denied").waitFor();
  await chooseExample("incident-3");
  assert.equal(dialogs.length, 3);
  dialogs.length = 0;
});

scenario("an evaluation that fails clears the old decision and shows why", async () => {
  // A playground of its own, stopped half-way: the page's next evaluation
  // gets no answer at all.
  const child = spawn(bin, ["playground", "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] });
  const first = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once("line", resolve);
    child.once("error", reject);
  });
  const own = first.replace(/^playground: /, "").trim();
  const other = await context.newPage();
  try {
    await open(own, other);
    await other.locator("#verdict", { hasText: "Denied: 403" }).waitFor();
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    await other.locator("#object-editor textarea").fill("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: y}\n");
    await other.locator("#verdict", { hasText: "No decision" }).waitFor();
    assert.match(await other.locator("#errors li.problem").first().textContent(), /did not answer/);
    assert.equal(await other.locator("#kubectl").textContent(), "");
    assert.equal(await other.locator("#trace").textContent(), "");
    await other.screenshot({ path: path.join(shots, "8-evaluation-failed.png") });
    console.log(`screenshot: ${path.join(shots, "8-evaluation-failed.png")}`);
  } finally {
    child.kill("SIGKILL");
    await other.close();
  }
});

scenario("type a policy and see the denial", async () => {
  await open();
  await chooseExample("blank");
  assert.deepEqual(await page.locator("#policy-tabs button").allTextContents(), ["policy.yaml"]);
  const policy = page.locator("#policy-editor textarea");
  await policy.click();
  // Typed key by key into the editor, as a user would (the page re-evaluates
  // on each pause); the rest of the text is pasted.
  await policy.fill(POLICY.slice(0, -60));
  await policy.press("End");
  await policy.pressSequentially(POLICY.slice(-60), { delay: 5 });
  await page.locator("#object-editor textarea").fill(POD);
  await page.locator("#verdict", { hasText: "Denied: 403 Forbidden" }).waitFor();
  const kubectl = await page.locator("#kubectl").textContent();
  assert.equal(kubectl,
    'Error from server (Forbidden): admission webhook "validate.safety-gate.dev" denied the request: no-latest-tag: images must not use the :latest tag');
  // The trace names the validation that failed.
  const failed = page.locator('.policy[data-policy="no-latest-tag"] tr.false td.expr');
  assert.match(await failed.first().textContent(), /endsWith\(':latest'\)/);
  await shot("1-typed-policy-denied");
  // A pinned image: allowed.
  await page.locator("#object-editor textarea").fill(POD.replace("nginx:latest", "nginx:1.27"));
  await page.locator("#verdict", { hasText: "Allowed" }).waitFor();
});

scenario("break the YAML and see the error at its line", async () => {
  const policy = page.locator("#policy-editor textarea");
  const lines = POLICY.split("\n");
  lines[11] = "   validations:"; // line 12, one space too deep
  await policy.fill(lines.join("\n"));
  const marker = page.locator('#policy-editor .gutter div.error[data-line="12"]');
  await marker.waitFor();
  assert.equal(await page.locator("#policy-editor .gutter div.error").count(), 1);
  const error = await page.locator("#errors li.problem").first().textContent();
  assert.match(error, /^policy\.yaml:12:\d+: /);
  assert.equal(await page.locator("#verdict").textContent(), "The policies do not load");
  assert.match(await page.locator("#policy-tabs button.has-error").textContent(), /policy\.yaml/);
  await shot("2-broken-yaml-error-at-line-12");
  // Fixed again: the marker goes, the decision comes back.
  await policy.fill(POLICY);
  await page.locator("#verdict", { hasText: "Allowed" }).waitFor();
  assert.equal(await page.locator("#policy-editor .gutter div.error").count(), 0);
});

scenario("incident 1 example, Save as test, safety-gate test passes", async () => {
  await open();
  await page.selectOption("#example", "incident-1");
  await page.locator("#verdict", { hasText: "Denied: 403 Forbidden" }).waitFor();
  const kubectl = await page.locator("#kubectl").textContent();
  assert.ok(kubectl.startsWith(
    'Error from server (Forbidden): admission webhook "validate.safety-gate.dev" denied the request: protect-rbac-defaults: ClusterRole system:kube-controller-manager is a bootstrap RBAC object'), kubectl);
  await shot("3-incident-1-denied");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#save-test")]);
  const dir = mkdtempSync(path.join(shots, "saved-"));
  const saved = path.join(dir, download.suggestedFilename());
  await download.saveAs(saved);
  console.log(`saved test: ${saved}`);
  assert.match(readFileSync(saved, "utf8"), /kind: PolicyTest/);
  // Run from another directory: the file needs nothing beside it.
  const out = execFileSync(bin, ["test", saved], { cwd: tmpdir(), encoding: "utf8" });
  assert.match(out, /1 passed, 0 failed/, out);
  console.log(out.trim().split("\n").map((l) => `  | ${l}`).join("\n"));
  await page.locator("#status", { hasText: "saved" }).waitFor();
  await shot("4-incident-1-saved-as-test");
});

scenario("Load test and step through its cases", async () => {
  await open();
  await page.setInputFiles("#load-test", path.join(fixtures, "configmap-cases.test.yaml"));
  await page.locator("#case-label", { hasText: "case 1 of 3" }).waitFor();
  await page.locator("#case-expect", { hasText: "expect: ok" }).waitFor();
  await page.locator("#verdict", { hasText: "Denied: 403" }).waitFor();
  await shot("5-loaded-test-case-1");
  await page.click("#case-next");
  await page.locator("#case-label", { hasText: "case 2 of 3" }).waitFor();
  await page.locator("#verdict", { hasText: "Allowed" }).waitFor();
  await page.locator("#case-expect", { hasText: "expect: ok" }).waitFor();
  await page.click("#case-next");
  await page.locator("#case-label", { hasText: "case 3 of 3" }).waitFor();
  await page.locator("#case-expect", { hasText: "expect: ok" }).waitFor();
  assert.equal(await page.locator("#case-next").isDisabled(), true);
  assert.equal(await page.locator("#case-unresolved li").count(), 0);
  // Editing the request so that the case no longer holds shows it at once.
  await page.click("#case-prev");
  await page.click("#case-prev");
  await page.locator("#case-label", { hasText: "case 1 of 3" }).waitFor();
  await page.locator("#object-editor textarea").fill(
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\n  labels: {owner: me}\n");
  await page.locator("#case-expect", { hasText: "expect: FAIL" }).waitFor();
  assert.match(await page.locator("#case-problems").textContent(), /expected allowed=false, got allowed=true/);
  await shot("6-loaded-test-case-1-edited-fails");
});

scenario("Load test: every suite of the file, the files it names listed", async () => {
  await open();
  await page.setInputFiles("#load-test", path.join(fixtures, "two-suites.test.yaml"));
  await page.locator("#case-label", { hasText: "suite 1 of 2 (first-suite), case 1 of 2" }).waitFor();
  await page.locator("#case-expect", { hasText: "expect: ok" }).waitFor();
  await page.click("#case-next");
  await page.locator("#case-label", { hasText: "suite 1 of 2 (first-suite), case 2 of 2" }).waitFor();
  await page.locator("#case-expect", { hasText: "expect: ok" }).waitFor();
  // Next goes on into the second suite, with its own policies.
  await page.click("#case-next");
  await page.locator("#case-label", { hasText: "suite 2 of 2 (second-suite), case 1 of 2" }).waitFor();
  const unresolved = await page.locator("#case-unresolved").textContent();
  assert.match(unresolved, /policies: policies\/not-in-this-file\.yaml/);
  assert.match(unresolved, /cases\[object from a file\]\.object: objects\/configmap\.yaml/);
  // Its policy is missing: the case cannot be decided (not a FAIL of the test).
  await page.waitForFunction(() => !document.getElementById("status").textContent.startsWith("evaluating"));
  assert.equal(await page.locator("#case-expect").textContent(), "cannot be decided");
  assert.match(await page.locator("#case-problems").textContent(), /not-in-this-file\.yaml/);
  await shot("9-loaded-two-suites-unresolved");
  await page.click("#case-next");
  await page.locator("#case-label", { hasText: "suite 2 of 2 (second-suite), case 2 of 2" }).waitFor();
  await page.locator("#case-expect", { hasText: "cannot be decided" }).waitFor();
  assert.equal(await page.locator("#case-next").isDisabled(), true);
  // Back into the first suite: its policy and verdict return.
  await page.click("#case-prev");
  await page.click("#case-prev");
  await page.locator("#case-label", { hasText: "suite 1 of 2 (first-suite), case 2 of 2" }).waitFor();
  await page.locator("#case-expect", { hasText: "expect: ok" }).waitFor();
  assert.deepEqual(await page.locator("#policy-tabs button").allTextContents(), ["require-owner.yaml"]);
  assert.equal(await page.locator("#case-unresolved li").count(), 0);
});

scenario("incident 5 on /mutate shows the JSON Patch and the object diff", async () => {
  await open();
  await page.selectOption("#example", "incident-5");
  await page.locator("#verdict", { hasText: "Allowed" }).waitFor();
  await page.locator("#patch-box:not([hidden])").waitFor();
  assert.match(await page.locator("#patch").textContent(), /last-changed-by/);
  assert.match(await page.locator("#diff .add").first().textContent(), /^\+ /);
  // The diff is one line per key: only added lines, none removed for a
  // trailing comma, and no blank lines between them.
  assert.equal(await page.locator("#diff .del").count(), 0);
  const added = await page.locator("#diff .add").allTextContents();
  assert.ok(added.some((l) => /last-changed-by/.test(l)), added.join("\n"));
  const lines = (await page.locator("#diff").innerText()).split("\n");
  assert.ok(lines.every((l) => l.trim() !== ""), `blank lines in the diff:\n${lines.join("\n")}`);
  await shot("7-incident-5-mutate-patch");
});

let failed = false;
for (const [name, fn] of scenarios) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}: ${e.stack || e}`);
    try { await shot(`failed-${name.replace(/[^a-z0-9]+/gi, "-")}`); } catch (_) { /* the page may be gone */ }
    break;
  }
}
if (consoleErrors.length) {
  failed = true;
  console.log(`FAIL the page logged errors:\n${consoleErrors.join("\n")}`);
}
await context.close();
process.exit(failed ? 1 : 0);
