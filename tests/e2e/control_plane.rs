//! A real control plane on 127.0.0.1: etcd, kube-apiserver and
//! kube-controller-manager built by `e2e/build.sh` at the pinned release,
//! with certificates, service-account keys, an audit log and kubeconfigs
//! made here for each run.

use super::procs::{Proc, free_port, tail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a component may take to become ready before the run fails.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// Audit policy: every write at Metadata level (where admission annotations
/// are recorded); reads and the control plane's own lease traffic are left
/// out so the log stays small.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: None
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
      - group: ""
        resources: ["events"]
  - level: Metadata
"#;

/// A user of the cluster, with a client certificate and a kubeconfig.
pub struct User {
    pub name: String,
    pub kubeconfig: PathBuf,
}

/// The running control plane and everything needed to talk to it.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub url: String,
    pub ca_file: PathBuf,
    /// `system:masters`: can do and impersonate anything.
    pub admin: User,
    /// An ordinary user (`alice`, group `devs`) with no permissions of its own.
    pub alice: User,
    pub audit_log: PathBuf,
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    controller_manager: Option<Proc>,
    apiserver_args: Vec<String>,
    pidfile: PathBuf,
    /// Seconds from the first process start to a ready kube-apiserver.
    pub start_seconds: f64,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params
        .distinguished_name
        .push(DnType::CommonName, "safety-gate e2e cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("ca cert");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate signed by `ca`: serving (`sans`) or client (`cn`, `orgs`).
fn leaf(ca: &Ca, cn: &str, orgs: &[&str], sans: &[&str], server: bool) -> (String, String) {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *o);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn kubeconfig(dir: &Path, name: &str, url: &str, ca: &Path, cert: &str, key: &str) -> PathBuf {
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    write(&cert_file, cert);
    write(&key_file, key);
    let path = dir.join(format!("{name}.kubeconfig"));
    write(
        &path,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {name}@e2e\n  context:\n    cluster: e2e\n    user: {name}\ncurrent-context: {name}@e2e\n",
            ca = ca.display(),
            cert = cert_file.display(),
            key = key_file.display(),
        ),
    );
    path
}

/// GETs `path` on `url` with the admin credentials; `Ok(body)` on HTTP 200.
fn probe(bin: &Path, kubeconfig: &Path, path: &str) -> Result<String, String> {
    let out = Command::new(bin.join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", path, "--request-timeout=2s"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver from `bin` in the fresh folder `dir`,
    /// waits until `/readyz` answers ok, then starts kube-controller-manager.
    /// Panics with the last log lines when a component fails to start within
    /// [`START_DEADLINE`].
    pub fn start(bin: &Path, dir: &Path, pidfile: &Path) -> ControlPlane {
        std::fs::create_dir_all(dir).expect("e2e dir");
        let started = Instant::now();
        let ca = ca();
        let ca_file = dir.join("ca.crt");
        write(&ca_file, &ca.pem);

        let etcd_port = free_port();
        let peer_port = free_port();
        let api_port = free_port();
        let url = format!("https://127.0.0.1:{api_port}");

        let (serving, serving_key) = leaf(
            &ca,
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "10.0.0.1",
            ],
            true,
        );
        write(&dir.join("apiserver.crt"), &serving);
        write(&dir.join("apiserver.key"), &serving_key);
        // Service-account tokens: one ECDSA key signs (kube-apiserver, the
        // token controller) and verifies.
        let sa_key = KeyPair::generate().expect("sa key");
        write(&dir.join("sa.key"), &sa_key.serialize_pem());
        write(&dir.join("sa.pub"), &sa_key.public_key_pem());
        write(&dir.join("audit-policy.yaml"), AUDIT_POLICY);
        let audit_log = dir.join("audit.jsonl");

        let (admin_crt, admin_key) = leaf(&ca, "e2e-admin", &["system:masters"], &[], false);
        let admin = User {
            name: "e2e-admin".into(),
            kubeconfig: kubeconfig(dir, "admin", &url, &ca_file, &admin_crt, &admin_key),
        };
        let (alice_crt, alice_key) = leaf(&ca, "alice", &["devs"], &[], false);
        let alice = User {
            name: "alice".into(),
            kubeconfig: kubeconfig(dir, "alice", &url, &ca_file, &alice_crt, &alice_key),
        };
        let (kcm_crt, kcm_key) = leaf(&ca, "system:kube-controller-manager", &[], &[], false);
        let kcm_kubeconfig = kubeconfig(
            dir,
            "controller-manager",
            &url,
            &ca_file,
            &kcm_crt,
            &kcm_key,
        );

        let mut etcd = Command::new(bin.join("etcd"));
        etcd.args([
            "--name=e2e",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"),
            // A test cluster: losing it on power loss costs nothing, and
            // fsync on a shared CI disk costs seconds.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        let etcd = Proc::spawn("etcd", etcd, &dir.join("etcd.log"), pidfile);

        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", dir.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                dir.join("apiserver.key").display()
            ),
            format!("--client-ca-file={}", ca_file.display()),
            format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=Node,RBAC".into(),
            format!(
                "--audit-policy-file={}",
                dir.join("audit-policy.yaml").display()
            ),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
            // The `kubernetes` Service's endpoints would be 127.0.0.1, which
            // EndpointSlice validation refuses; nothing here needs them.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            "--profiling=false".into(),
        ];
        let mut cp = ControlPlane {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            url,
            ca_file,
            admin,
            alice,
            audit_log,
            etcd: Some(etcd),
            apiserver: None,
            controller_manager: None,
            apiserver_args,
            pidfile: pidfile.to_path_buf(),
            start_seconds: 0.0,
        };
        cp.start_apiserver();
        cp.start_seconds = started.elapsed().as_secs_f64();

        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.args([
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            "--leader-elect=false".into(),
            // Every controller as its own service account, as kubeadm runs
            // it: the bootstrap roles of incident 1 are what they run on.
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                dir.join("sa.key").display()
            ),
            format!("--root-ca-file={}", cp.ca_file.display()),
            "--controllers=*".into(),
        ]);
        cp.controller_manager = Some(Proc::spawn(
            "kube-controller-manager",
            kcm,
            &dir.join("kube-controller-manager.log"),
            pidfile,
        ));
        cp
    }

    /// Starts kube-apiserver with the same flags as before and waits for
    /// `/readyz`.
    pub fn start_apiserver(&mut self) {
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.args(&self.apiserver_args);
        self.apiserver = Some(Proc::spawn(
            "kube-apiserver",
            cmd,
            &self.dir.join("kube-apiserver.log"),
            &self.pidfile,
        ));
        self.wait_ready(START_DEADLINE);
    }

    /// Restarts kube-apiserver with `extra` flags added for good (a crash-like
    /// stop: SIGTERM, SIGKILL after 1 s) and waits for `/readyz`.
    pub fn restart_apiserver_with(&mut self, extra: &[String]) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(1));
        }
        self.apiserver_args.extend_from_slice(extra);
        self.start_apiserver();
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 20 s).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(20));
        }
    }

    /// Waits until `/readyz` answers ok; panics with the logs after `deadline`.
    pub fn wait_ready(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            for p in [self.etcd.as_mut(), self.apiserver.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(status) = p.exited() {
                    panic!(
                        "{} exited ({status}) while the control plane started; last lines of {}:\n{}",
                        p.name,
                        p.log.display(),
                        p.tail(40)
                    );
                }
            }
            match probe(&self.bin, &self.admin.kubeconfig, "/readyz") {
                Ok(body) if body.trim() == "ok" => return,
                Ok(body) => last = body,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "kube-apiserver was not ready within {deadline:?} (last answer: {last}); etcd log:\n{}\nkube-apiserver log:\n{}",
            tail(&self.dir.join("etcd.log"), 20),
            tail(&self.dir.join("kube-apiserver.log"), 40)
        );
    }

    /// Stops every component, newest first.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.controller_manager.take() {
            p.stop(Duration::from_secs(5));
        }
        self.stop_apiserver();
        if let Some(mut p) = self.etcd.take() {
            p.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
