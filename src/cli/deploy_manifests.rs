//! `safety-gate manifests`: the webhook configurations (and, with `--out`,
//! the ClusterRole and policies ConfigMap) that the loaded policies need, so
//! kube-apiserver calls the gate only for what its policies match.

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};
use crate::deploy::{self, Target};
use crate::policy::PolicySet;
use base64::Engine as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct ManifestsArgs {
    /// Directory (searched recursively) or file of policies.
    #[arg(long, default_value = "policies", env = "SAFETY_GATE_POLICIES")]
    pub policies: PathBuf,

    /// PEM file of the CA that signed the serving certificate (e.g. ca.crt from `safety-gate certs`).
    #[arg(long, conflicts_with = "ca_bundle_base64")]
    pub ca_bundle: Option<PathBuf>,

    /// The caBundle as base64 of the PEM, as `safety-gate certs` prints it.
    #[arg(long)]
    pub ca_bundle_base64: Option<String>,

    /// Namespace of the gate's Service; always excluded from the webhooks, like kube-system.
    #[arg(long, default_value = deploy::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Name of the gate's Service.
    #[arg(long, default_value = deploy::DEFAULT_SERVICE)]
    pub service: String,

    /// Port of the gate's Service.
    #[arg(long, default_value_t = deploy::DEFAULT_PORT)]
    pub port: u16,

    /// Print webhooks without a caBundle anyway (for cert-manager's CA injector or a
    /// kustomize overlay that fills it in). Without it, printing needs --ca-bundle:
    /// applied as is, such webhooks cannot reach the gate and the fail-closed one denies.
    #[arg(long, conflicts_with_all = ["ca_bundle", "ca_bundle_base64"])]
    pub without_ca_bundle: bool,

    /// `https://host:port` of a gate that runs outside the cluster: the webhooks call
    /// `<URL>/validate` and `<URL>/mutate` (`clientConfig.url`) instead of the Service.
    /// The serving certificate must name that host (`safety-gate certs --host`).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Write webhooks.yaml, clusterrole.yaml and policies.yaml into DIR instead of
    /// printing the webhook configurations (`--out deploy/base` refreshes the committed copy).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// With --out: write nothing; exit 1 if a file in DIR differs from what would be written.
    #[arg(long, requires = "out")]
    pub check: bool,

    /// Render the GatePolicies kube-apiserver can enforce itself as
    /// ValidatingAdmissionPolicy + binding documents (one file per policy with
    /// --out DIR, else a YAML stream on stdout). Each policy that cannot be
    /// rendered is named on stderr with the reason.
    #[arg(long, conflicts_with_all = ["check", "url", "ca_bundle", "ca_bundle_base64"])]
    pub native: bool,

    /// With --native: the gate's global mode the native policies reproduce
    /// (dry-run, alias audit: a denial becomes a warning and an audit record).
    #[arg(long, value_enum, default_value = "enforce", requires = "native")]
    pub mode: super::mode::ModeArg,

    /// With --native: exit 1 when some policy cannot be rendered.
    #[arg(long, requires = "native")]
    pub strict: bool,

    /// With --native and --out: the manifest-based form (KEP-5793) that kube-apiserver
    /// loads from files at start-up, for installation at the absolute path DIR on the
    /// control-plane nodes: DIR/validating-policies/ (the policies, plus one that keeps
    /// the gate's webhook configurations and native policies from being deleted or
    /// weakened) and DIR/admission-configuration.yaml (pass it with
    /// --admission-control-config-file).
    #[arg(long = "static", value_name = "DIR", requires_all = ["native", "out"])]
    pub static_dir: Option<PathBuf>,
}

pub fn run(args: &ManifestsArgs) -> u8 {
    if !args.policies.exists() {
        eprintln!(
            "error: {}: no such file or directory",
            args.policies.display()
        );
        return EXIT_USAGE;
    }
    let set = match PolicySet::load_dir(&args.policies) {
        Ok(set) => set,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{} problem(s); nothing rendered (run `safety-gate check` for details)",
                errors.0.len()
            );
            return EXIT_USAGE;
        }
    };
    if args.native {
        return native(args, &set);
    }
    let ca_bundle = match ca_bundle(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if ca_bundle.is_none() && args.out.is_none() && !args.without_ca_bundle {
        eprintln!(
            "error: no --ca-bundle: kube-apiserver could not verify the gate, every call would fail, \
             and the fail-closed webhook would deny namespace deletes and RBAC updates. Pass \
             --ca-bundle FILE (ca.crt from `safety-gate certs`), or --without-ca-bundle when \
             cert-manager or a kustomize overlay fills it in (`--out DIR` writes such a base)"
        );
        return EXIT_USAGE;
    }
    if let Some(url) = &args.url
        && let Err(e) = deploy::check_url(url)
    {
        eprintln!("error: --url {e}");
        return EXIT_USAGE;
    }
    let target = Target {
        namespace: args.namespace.clone(),
        service: args.service.clone(),
        port: args.port,
        ca_bundle,
        url: args.url.clone(),
    };
    match &args.out {
        None => match deploy::render_webhooks(&set, &target) {
            Ok(text) => {
                print!("{text}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
        Some(dir) => match deploy::render_all(&args.policies, &set, &target) {
            Ok(files) if args.check => check(dir, &files),
            Ok(files) => write(dir, &files),
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
    }
}

fn native(args: &ManifestsArgs, set: &PolicySet) -> u8 {
    let render = deploy::native::render_native(set, args.mode.into());
    for n in &render.not_rendered {
        eprintln!("{n}");
    }
    match &args.out {
        None => {
            for r in &render.rendered {
                print!("{}", r.yaml);
            }
        }
        Some(dir) if args.static_dir.is_some() => {
            let install = args.static_dir.as_deref().unwrap_or(dir);
            let files = match deploy::native_static::render_static(&render, install) {
                Ok(files) => files,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_USAGE;
                }
            };
            let mut written = Vec::new();
            for f in &files {
                let path = dir.join(&f.path);
                written.push(path.clone());
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&path, &f.text));
                if let Err(e) = written {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return EXIT_USAGE;
                }
                println!("wrote {}", path.display());
            }
            warn_stale(&dir.join(deploy::native_static::POLICIES_SUBDIR), &written);
            eprintln!(
                "copy {} to {} on every control-plane node and start kube-apiserver with \
                 --admission-control-config-file={}",
                dir.display(),
                install.display(),
                install
                    .join(deploy::native_static::ADMISSION_CONFIGURATION_FILE)
                    .display()
            );
        }
        Some(dir) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("error: cannot create {}: {e}", dir.display());
                return EXIT_USAGE;
            }
            let written: Vec<PathBuf> = render
                .rendered
                .iter()
                .map(|r| dir.join(&r.file_name))
                .collect();
            warn_stale(dir, &written);
            for r in &render.rendered {
                let path = dir.join(&r.file_name);
                if let Err(e) = std::fs::write(&path, &r.yaml) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return EXIT_USAGE;
                }
                println!("wrote {}", path.display());
            }
        }
    }
    eprintln!(
        "{} policy(ies) rendered natively, {} not rendered",
        render.rendered.len(),
        render.not_rendered.len()
    );
    if args.strict && !render.not_rendered.is_empty() {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// Warns about YAML files in `dir` this run did not write: kept from an
/// earlier render (a policy since removed or renamed), `kubectl apply -f DIR`
/// or kube-apiserver's static loader would still take them. Never deletes.
fn warn_stale(dir: &Path, written: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let yaml = path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        if yaml && !written.contains(&path) {
            eprintln!(
                "warning: {} was not written by this render (a policy removed or renamed?); \
                 delete it, or kubectl apply -f / kube-apiserver will still load it",
                path.display()
            );
        }
    }
}

/// The caBundle as the API wants it: base64 of PEM certificates.
fn ca_bundle(args: &ManifestsArgs) -> Result<Option<String>, String> {
    let pem = match (&args.ca_bundle, &args.ca_bundle_base64) {
        (Some(path), _) => std::fs::read(path)
            .map_err(|e| format!("cannot read --ca-bundle {}: {e}", path.display()))?,
        (None, Some(text)) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("--ca-bundle-base64 is not base64: {e}"))?,
        (None, None) => return Ok(None),
    };
    // A bundle kube-apiserver cannot use fails every call, and the
    // fail-closed webhook then denies: refuse it here instead.
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(
            "the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        );
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(
            "the CA bundle contains a private key; pass the CA certificate (ca.crt) only"
                .to_string(),
        );
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(&pem)))
}

fn write(dir: &Path, files: &[deploy::RenderedFile]) -> u8 {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return EXIT_USAGE;
    }
    for f in files {
        let path = dir.join(f.name);
        if let Err(e) = std::fs::write(&path, &f.contents) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_USAGE;
        }
        println!("wrote {}", path.display());
    }
    EXIT_OK
}

fn check(dir: &Path, files: &[deploy::RenderedFile]) -> u8 {
    let mut stale = 0;
    for f in files {
        let path = dir.join(f.name);
        match std::fs::read_to_string(&path) {
            Ok(text) if text == f.contents => println!("ok     {}", path.display()),
            Ok(_) => {
                stale += 1;
                println!("stale  {}", path.display());
            }
            Err(e) => {
                stale += 1;
                println!("stale  {} ({e})", path.display());
            }
        }
    }
    if stale > 0 {
        eprintln!(
            "{stale} file(s) differ from what the policies render; run `safety-gate manifests --out {}`",
            dir.display()
        );
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}
