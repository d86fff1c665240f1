//! README.md cannot drift: every command in its `sh` and `console` blocks runs
//! here (`safety-gate …`, `curl` against the webhook it starts, `kubectl
//! safety-gate …` through the plugin link), or is listed in [`ELSEWHERE`] with
//! the test that runs its equivalent or the reason it cannot run on a test
//! machine. A new command in the README that is in neither fails this test.
//! The example files the README shows are compared with the files themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the test failing"
)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_safety-gate")
}

/// Commands that do not run here: (command prefix, file that runs the same
/// thing, text that file must contain, or why nothing can run it here).
const ELSEWHERE: &[(&str, &str, &str)] = &[
    ("cargo test --locked", "", "the command that runs this test"),
    (
        "cargo install --locked --path .",
        "",
        "not run by the tests: a release build of minutes; the tests build the same crate",
    ),
    (
        "docker build",
        "",
        "not run: no container runtime on the test machine",
    ),
    (
        "docker push",
        "",
        "not run: no container runtime or registry on the test machine",
    ),
    ("(cd deploy/base", "", "the folder of the next command"),
    (
        "bash fuzz/run.sh short",
        ".ci/run",
        "bash fuzz/run.sh short",
    ),
    (
        "bash fuzz/run.sh long",
        "",
        "not run by the tests: about an hour per target on this machine; CI runs the short form",
    ),
    (
        "kustomize edit set image",
        "",
        "not run: it edits the committed deploy/base; every overlay is built in tests/deploy.rs",
    ),
    (
        "kubectl apply -k deploy/",
        "tests/e2e/deploy_overlays.rs",
        "\"apply\", \"--dry-run=server\", \"-k\"",
    ),
    (
        "kubectl -n safety-gate rollout status",
        "",
        "not run: tests/e2e has no kubelet, the gate's Pods stay Pending",
    ),
    (
        "kubectl delete clusterrole system:kube-controller-manager",
        "tests/e2e/incidents.rs",
        "\"delete\", \"clusterrole\", \"system:kube-controller-manager\"",
    ),
    ("kubectl apply -f -", "tests/e2e/gate.rs", "render_webhooks"),
    (
        "kubectl delete validatingadmissionpolicybindings,validatingadmissionpolicies",
        "tests/e2e/failure_modes.rs",
        "validatingadmissionpolic",
    ),
    (
        "kubectl delete validatingwebhookconfiguration",
        "tests/e2e/failure_modes.rs",
        "\"delete\", \"validatingwebhookconfiguration\", \"safety-gate\"",
    ),
    (
        "kubectl delete mutatingwebhookconfiguration",
        "tests/e2e/deploy_overlays.rs",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
    ),
    (
        "kubectl delete -k deploy/",
        "",
        "not run: deleting an overlay also deletes the namespace tests/e2e keeps using",
    ),
    (
        "safety-gate playground",
        "tests/playground_api.rs",
        ".args([\"playground\", \"--listen\", listen])",
    ),
    (
        "safety-gate serve --tls-cert gate-tls/tls.crt --tls-key gate-tls/tls.key --kubeconfig",
        "tests/e2e/gate.rs",
        ".arg(\"--tls-cert\")",
    ),
];

/// One command of a README block, and the block that shows its answer.
#[derive(Debug)]
struct ReadmeCommand {
    text: String,
    background: bool,
    /// The next `json` block, for a `curl`.
    answer: Option<String>,
}

/// The commands of every `sh` and `console` block, in order; compound lines are
/// split at `&&` and `|`.
fn commands(readme: &str) -> Vec<ReadmeCommand> {
    let mut out = Vec::new();
    let mut lines = readme.lines().peekable();
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut body = Vec::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push(l.to_string());
            }
            blocks.push((lang.trim().to_string(), body));
        }
    }
    for (i, (lang, body)) in blocks.iter().enumerate() {
        let raw: Vec<String> = match lang.as_str() {
            "sh" => {
                let mut joined = Vec::new();
                let mut current = String::new();
                for l in body {
                    let l = l.trim_end();
                    if let Some(start) = l.strip_suffix('\\') {
                        current.push_str(start.trim_end());
                        current.push(' ');
                        continue;
                    }
                    current.push_str(l.trim_start());
                    joined.push(std::mem::take(&mut current));
                }
                joined
            }
            "console" => body
                .iter()
                .filter_map(|l| l.strip_prefix("$ ").map(str::to_string))
                .collect(),
            _ => continue,
        };
        let answer = blocks
            .get(i + 1)
            .filter(|(l, _)| l == "json")
            .map(|(_, b)| b.join("\n"));
        for line in raw {
            // Comments: a line of its own, or after two spaces.
            let line = match line.find("  #") {
                Some(at) => line[..at].trim().to_string(),
                None => line.trim().to_string(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (line, background) = match line.strip_suffix(" &") {
                Some(l) => (l.trim().to_string(), true),
                None => (line, false),
            };
            for part in line.split(" && ").flat_map(|p| p.split(" | ")) {
                out.push(ReadmeCommand {
                    text: part.trim().to_string(),
                    background,
                    answer: answer.clone(),
                });
            }
        }
    }
    out
}

/// A folder like a checkout: the repository's inputs linked, `deploy/` copied
/// (commands write into it).
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["policies", "tests", "examples", "Cargo.toml"] {
        std::os::unix::fs::symlink(repo().join(name), dir.path().join(name)).expect("link");
    }
    copy_dir(&repo().join("deploy"), &dir.path().join("deploy"));
    std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The command's words; single and double quotes group (no other shell syntax is used).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if any {
                    out.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            (_, c) => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(current);
    }
    out
}

/// A free port on 127.0.0.1 (the README's 8443 may be taken on a shared machine).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The README's background servers, stopped even when an assertion fails.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_until_listening(child: &mut Child, command: &str) {
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening") {
            // Keep reading: a closed pipe would fail the server's later log writes.
            std::thread::spawn(move || lines.for_each(drop));
            return;
        }
    }
    panic!("{command} did not start:\n{log}");
}

#[test]
fn every_readme_command_runs_or_names_where_it_runs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let all = commands(&readme);
    assert!(all.len() > 10, "{all:#?}");
    let ws = workspace();
    let bin_dir = ws.path().join("bin");
    let port = free_port().to_string();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::os::unix::fs::symlink(binary(), bin_dir.join("safety-gate")).expect("link");
    let mut servers = Servers(Vec::new());
    let mut ran = Vec::new();
    let mut elsewhere = Vec::new();
    for command in &all {
        let text = command
            .text
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"));
        if let Some((prefix, file, needle)) = ELSEWHERE
            .iter()
            .find(|(p, _, _)| command.text.starts_with(p))
        {
            if !file.is_empty() {
                let source = std::fs::read_to_string(repo().join(file)).expect(file);
                assert!(
                    source.contains(needle),
                    "README `{}`: {file} no longer contains {needle:?}",
                    command.text
                );
            }
            elsewhere.push(format!("{prefix} → {file} {needle}"));
            continue;
        }
        let argv = words(&text);
        let mut cmd = match argv.first().map(String::as_str) {
            Some("safety-gate" | "curl" | "kubectl" | "ln") => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            _ => panic!(
                "README command `{}` is neither run here nor listed in ELSEWHERE",
                command.text
            ),
        };
        if argv[0] == "kubectl" && argv.get(1).map(String::as_str) != Some("safety-gate") {
            panic!(
                "README command `{}` is neither run here nor listed in ELSEWHERE",
                command.text
            );
        }
        if argv[0] == "ln" {
            // `ln -s "$(command -v safety-gate)" ~/.cargo/bin/kubectl-safety_gate`,
            // with this build and a PATH folder of the test's own.
            cmd = Command::new("ln");
            cmd.args(["-s", binary()]).arg(
                bin_dir.join(
                    Path::new(argv.last().expect("target"))
                        .file_name()
                        .expect("name"),
                ),
            );
        }
        cmd.current_dir(ws.path())
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env_remove("SAFETY_GATE_POLICIES");
        if command.background {
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            wait_until_listening(&mut child, &text);
            servers.0.push(child);
            ran.push(text);
            continue;
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{text}: {e} (is it installed?)"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let code = out.status.code().unwrap_or(-1);
        // 0 clean, 1 findings (the review example is a denial); 2 means the
        // README's command line is wrong.
        assert!(
            code == 0 || (code == 1 && argv.iter().any(|a| a == "review")),
            "README `{text}` exited {code}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if argv[0] == "curl" {
            let expected: serde_json::Value = serde_json::from_str(
                command
                    .answer
                    .as_deref()
                    .expect("a json block after the curl"),
            )
            .expect("the README's answer is JSON");
            let got: serde_json::Value =
                serde_json::from_str(&stdout).expect("the webhook answers JSON");
            assert_eq!(
                got, expected,
                "the README shows another answer than the webhook gives"
            );
        }
        ran.push(text);
    }
    drop(servers);
    eprintln!("ran {} README commands:\n  {}", ran.len(), ran.join("\n  "));
    eprintln!("elsewhere:\n  {}", elsewhere.join("\n  "));
    assert!(ran.iter().any(|c| c.starts_with("curl")), "{ran:?}");
    assert!(
        ran.iter().any(|c| c.starts_with("kubectl safety-gate")),
        "{ran:?}"
    );
}

#[test]
fn the_readme_shows_the_example_files_as_they_are() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    for file in [
        "examples/policies/require-pinned-images.yaml",
        "examples/require-pinned-images.test.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        assert!(
            readme.contains(&format!("```yaml\n{text}```")),
            "README.md does not show {file} as it is"
        );
    }
}

/// Every field of the PolicyTest types (src/cli/policytest/spec.rs) is in the README's reference.
#[test]
fn the_policytest_reference_names_every_field() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let start = readme
        .find("### PolicyTest reference")
        .expect("the reference section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let source = std::fs::read_to_string(repo().join("src/cli/policytest/spec.rs"))
        .expect("policytest/spec.rs");
    // A field may carry a visibility, `pub(super)` included.
    let field = regex::Regex::new(r"^\s+(?:pub(?:\([a-z]+\))? )?([a-z_]+): ").expect("regex");
    let mut missing = Vec::new();
    for ty in ["struct PolicyTestSpec", "struct Case", "struct Expect"] {
        let body = source
            .split(&format!("{ty} {{"))
            .nth(1)
            .and_then(|b| b.split("\n}").next())
            .unwrap_or_else(|| panic!("{ty} in src/cli/policytest/spec.rs"));
        for line in body.lines() {
            if let Some(c) = field.captures(line) {
                let camel: String = c[1]
                    .split('_')
                    .enumerate()
                    .map(|(i, w)| {
                        if i == 0 {
                            w.to_string()
                        } else {
                            w[..1].to_uppercase() + &w[1..]
                        }
                    })
                    .collect();
                let documented = [
                    format!("`{camel}`"),
                    format!("`expect.{camel}`"),
                    format!("`spec.{camel}`"),
                    format!("`spec.{camel}[]`"),
                    format!("`{camel}."),
                ]
                .iter()
                .any(|form| section.contains(form.as_str()));
                if !documented {
                    missing.push(format!("{ty}.{camel}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the README's PolicyTest reference: {missing:?}"
    );
}
