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
import { execFileSync } from "node:child_process";
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
  viewport: { width: 1600, height: 1000 },
});
const page = context.pages()[0] || await context.newPage();
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));

async function shot(name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  console.log(`screenshot: ${file}`);
}

async function open() {
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
}

const scenarios = [];
function scenario(name, fn) { scenarios.push([name, fn]); }

scenario("type a policy and see the denial", async () => {
  await open();
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

scenario("incident 5 on /mutate shows the JSON Patch and the object diff", async () => {
  await open();
  await page.selectOption("#example", "incident-5");
  await page.locator("#verdict", { hasText: "Allowed" }).waitFor();
  await page.locator("#patch-box:not([hidden])").waitFor();
  assert.match(await page.locator("#patch").textContent(), /last-changed-by/);
  assert.match(await page.locator("#diff .add").first().textContent(), /^\+ /);
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
