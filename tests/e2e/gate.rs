//! `safety-gate serve` as a local process, registered with kube-apiserver
//! through the webhook configurations `safety-gate manifests --url` renders.

use super::procs::{Proc, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn gate_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_safety-gate"))
}

/// One gate process; restartable with the same port, certificate and flags.
pub struct Gate {
    pub port: u16,
    pub admin_port: u16,
    pub certs: PathBuf,
    pub policies: PathBuf,
    pub log: PathBuf,
    kubeconfig: PathBuf,
    mode: String,
    /// Further `serve` flags (e.g. `--client-ca-file`).
    extra_args: Vec<String>,
    pidfile: PathBuf,
    proc: Option<Proc>,
}

impl Gate {
    /// Makes a certificate for 127.0.0.1 with `safety-gate certs --host`, then
    /// starts serving `policies` with live lookups through `kubeconfig`.
    pub fn start(dir: &Path, policies: &Path, kubeconfig: &Path, pidfile: &Path) -> Gate {
        Gate::start_with(dir, policies, kubeconfig, pidfile, &[])
    }

    /// [`Gate::start`] with further `serve` flags.
    pub fn start_with(
        dir: &Path,
        policies: &Path,
        kubeconfig: &Path,
        pidfile: &Path,
        extra_args: &[String],
    ) -> Gate {
        let certs = dir.join("gate-certs");
        let out = Command::new(gate_binary())
            .args(["certs", "--host", "127.0.0.1", "--out"])
            .arg(&certs)
            .output()
            .expect("run safety-gate certs");
        assert!(out.status.success(), "safety-gate certs: {out:?}");
        let mut gate = Gate {
            port: free_port(),
            admin_port: free_port(),
            certs,
            policies: policies.to_path_buf(),
            log: dir.join("safety-gate.log"),
            kubeconfig: kubeconfig.to_path_buf(),
            mode: "enforce".into(),
            extra_args: extra_args.to_vec(),
            pidfile: pidfile.to_path_buf(),
            proc: None,
        };
        gate.spawn();
        gate
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(gate_binary());
        cmd.arg("serve")
            .arg("--policies")
            .arg(&self.policies)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .arg("--tls-cert")
            .arg(self.certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(self.certs.join("tls.key"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--mode")
            .arg(&self.mode)
            .arg("--reload-interval")
            .arg("500ms")
            .arg("--log-format")
            .arg("json")
            .args(&self.extra_args);
        self.proc = Some(Proc::spawn("safety-gate", cmd, &self.log, &self.pidfile));
        self.wait_ready(Duration::from_secs(30));
    }

    /// Waits for `/readyz` on the admin port (policies loaded, caches synced).
    pub fn wait_ready(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            if let Some(p) = self.proc.as_mut()
                && let Some(status) = p.exited()
            {
                panic!("safety-gate exited ({status}):\n{}", p.tail(30));
            }
            match http_get(self.admin_port, "/readyz") {
                Ok((200, _)) => return,
                Ok((code, body)) => last = format!("{code} {body}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "safety-gate was not ready within {deadline:?}: {last}\n{}",
            super::procs::tail(&self.log, 30)
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(25));
        }
    }

    /// Stops and starts again in `mode` (`enforce` or `audit`).
    pub fn restart(&mut self, mode: &str) {
        self.stop();
        self.mode = mode.to_string();
        self.spawn();
    }

    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// CPU seconds (user + system) the gate process has used so far, from
    /// `/proc/<pid>/stat` (clock ticks of 1/100 s, Linux's USER_HZ).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.proc.as_ref()?.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the gate process.
    pub fn signal(&self, signal: &str) {
        if let Some(p) = &self.proc {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(p.pid().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal}");
        }
    }

    /// Starts the gate again after [`Gate::stop`], in the same mode.
    pub fn start_again(&mut self) {
        if self.proc.is_none() {
            self.spawn();
        }
    }

    /// The webhook configurations for this gate, rendered by the gate's own
    /// renderer in URL mode with the caBundle of its certificate.
    pub fn render_webhooks(&self) -> String {
        let out = Command::new(gate_binary())
            .arg("manifests")
            .arg("--policies")
            .arg(&self.policies)
            .arg("--url")
            .arg(self.url())
            .arg("--ca-bundle")
            .arg(self.certs.join("ca.crt"))
            .output()
            .expect("run safety-gate manifests");
        assert!(
            out.status.success(),
            "safety-gate manifests --url: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain-HTTP GET on the admin port: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text}"))?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((code, body))
}
