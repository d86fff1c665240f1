//! The playground in a real browser: headless Chromium (Debian's
//! `/usr/bin/chromium`, or `$CHROMIUM`) driven by playwright-core from
//! `e2e/playground/playground.test.mjs`, against the real `safety-gate
//! playground` process. Scenarios: the first load shows incident 1 decided and
//! no trace widens the page; edits survive a reload and are not replaced
//! without asking; an evaluation with no answer clears the old decision; type
//! a policy and see the denial; break the YAML and see the error at its line;
//! incident 1 → "Save as test" → `safety-gate test` passes; "Load test" and
//! step through the cases, across the suites of a file, with the files it
//! names listed; the `/mutate` patch and diff. A screenshot of each state goes
//! into the cargo target directory (the paths are printed).
//!
//! `npm ci` installs the pinned playwright-core into the git-ignored
//! `e2e/playground/node_modules` when it is missing (never a browser). Without
//! Node.js 20, npm or Chromium the test is reported as ignored, with the reason;
//! under `CI=true` it fails instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use libtest_mimic::{Arguments, Failed, Trial};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const NAME: &str = "playground_in_headless_chromium";
/// The scenarios of `playground.test.mjs`; each prints `ok NAME` when it passes.
const SCENARIOS: usize = 9;

/// A missing prerequisite, said in words.
fn prerequisites(e2e: &Path) -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install -y chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    for tool in ["node", "npm"] {
        let version = Command::new(tool)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let Some(version) = version else {
            return Err(format!("`{tool}` is not on the PATH (Node.js 20 or later)"));
        };
        // playwright-core 1.65 needs Node.js 20.
        let major: u32 = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if tool == "node" && major < 20 {
            return Err(format!(
                "node {version}: playwright-core needs Node.js 20 or later"
            ));
        }
    }
    if !e2e.join("package-lock.json").exists() {
        return Err(format!("{}: no package-lock.json", e2e.display()));
    }
    Ok(chromium)
}

/// `npm ci` when playwright-core is not installed at the locked version.
fn install(e2e: &Path) -> Result<(), String> {
    let lock = std::fs::read_to_string(e2e.join("package-lock.json")).map_err(|e| e.to_string())?;
    let installed = std::fs::read_to_string(e2e.join("node_modules/playwright-core/package.json"))
        .unwrap_or_default();
    let version = |text: &str| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        v.pointer("/packages/node_modules~1playwright-core/version")
            .or_else(|| v.get("version"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    if version(&installed).is_some() && version(&installed) == version(&lock) {
        return Ok(());
    }
    eprintln!("playground_browser: npm ci in {}", e2e.display());
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(e2e)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .map_err(|e| format!("npm ci: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(repo: &Path, chromium: &Path) -> Result<(), Failed> {
    let e2e = repo.join("e2e/playground");
    install(&e2e)?;
    let bin = env!("CARGO_BIN_EXE_safety-gate");
    let mut child = Command::new(bin)
        .args(["playground", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start safety-gate playground: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let _playground = Running(child);
    let url = line
        .trim()
        .strip_prefix("playground: ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_string();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).map_err(|e| e.to_string())?;
    let out = Command::new("node")
        .arg("playground.test.mjs")
        .current_dir(&e2e)
        .env("PLAYGROUND_URL", &url)
        .env("SAFETY_GATE_BIN", bin)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", chromium)
        .env("FIXTURES", e2e.join("fixtures"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .map_err(|e| format!("node: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The screenshot paths and each scenario's line, in the test output.
    println!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!(
            "the browser scenarios failed (screenshots in {})",
            shots.display()
        )
        .into());
    }
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    if passed != SCENARIOS {
        return Err(format!("expected {SCENARIOS} scenarios to pass, {passed} did").into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let trial = match prerequisites(&repo.join("e2e/playground")) {
        Ok(chromium) => Trial::test(NAME, move || run(&repo, &chromium)),
        Err(why) if ci => Trial::test(NAME, move || Err(Failed::from(why))),
        Err(why) => {
            eprintln!("playground_browser: ignored: {why}");
            Trial::test(NAME, || Ok(())).with_ignored_flag(true)
        }
    };
    libtest_mimic::run(&args, vec![trial]).exit();
}
