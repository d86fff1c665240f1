//! The cluster objects that follow from a policy set, rendered so that
//! `deploy/` can commit them and a test can prove they are current:
//! the Validating- and MutatingWebhookConfiguration (what kube-apiserver
//! sends to the gate), the ClusterRole (what the gate may read) and the
//! policies ConfigMap (what the gate evaluates).
//!
//! The webhook configurations are where a gate can take a cluster down
//! (`landscape.md` §4), so the choices are made here once, in code, and the
//! renderer refuses a policy set that would break them:
//! - one webhook per failurePolicy: the policies that must fail closed get a
//!   narrow `Fail` webhook, everything else a fail-open one;
//! - rules are the union of the policies' own rules, nothing broader;
//! - `kube-system` and the gate's namespace are never sent, so neither the
//!   control plane nor the gate's own Pods can wait on the gate;
//! - small timeouts (see [`VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS`]).

pub mod native;
pub mod native_static;
pub mod rbac;
pub mod rules;

use crate::policy::{FailurePolicy, Policy, PolicySet};
use rules::{Atom, Rule};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The gate's namespace in `deploy/`.
pub const DEFAULT_NAMESPACE: &str = "safety-gate";
/// The webhook Service in `deploy/`.
pub const DEFAULT_SERVICE: &str = "safety-gate";
/// The Service port kube-apiserver connects to (the Service maps it to 8443).
pub const DEFAULT_PORT: u16 = 443;
/// Name of both webhook configurations, the ClusterRole and its binding.
pub const OBJECT_NAME: &str = "safety-gate";
/// The ConfigMap the Deployment mounts as `--policies`.
pub const POLICIES_CONFIGMAP: &str = "safety-gate-policies";
/// Namespaces every webhook excludes besides the gate's own.
pub const EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];

/// Fail-closed validation: long enough that a healthy gate (sub-millisecond
/// evaluations, lookups from watch caches) never hits it even behind a busy
/// kube-proxy or a new TLS handshake, short enough that a write denied
/// because the gate is unreachable fails in seconds, not the API default 10.
pub const VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS: u8 = 5;
/// Fail-open validation: on timeout the write proceeds anyway, so waiting
/// longer buys nothing; 3 s bounds the delay every matching write pays while
/// the gate is unreachable.
pub const VALIDATE_FAIL_OPEN_TIMEOUT_SECONDS: u8 = 3;
/// Mutation: mutating webhooks run one after another and may be called
/// twice (`reinvocationPolicy: IfNeeded`), so theirs is the timeout that
/// adds up; the gate only adds two annotations.
pub const MUTATE_TIMEOUT_SECONDS: u8 = 2;
/// Upper bound the tests hold the rendered timeouts to: the worst-case delay
/// the gate may add to one write (mutations twice, then validations in
/// parallel). Other webhooks add their own; kube-apiserver's request
/// deadline is 60 s by default.
pub const MAX_ADDED_LATENCY_SECONDS: u32 = 10;

/// Resources a fail-closed webhook must never match: the control plane,
/// kubelets and the gate's own Pods write them to keep running or to
/// recover, so failing closed on them is how admission webhooks deadlock
/// clusters.
pub const FAIL_CLOSED_FORBIDDEN_RESOURCES: [&str; 14] = [
    "pods",
    "nodes",
    "leases",
    "events",
    "endpoints",
    "endpointslices",
    "certificatesigningrequests",
    "tokenreviews",
    "subjectaccessreviews",
    "selfsubjectaccessreviews",
    "selfsubjectreviews",
    "selfsubjectrulesreviews",
    "localsubjectaccessreviews",
    "serviceaccounts/token",
];

/// File names `safety-gate manifests --out DIR` writes.
pub const WEBHOOKS_FILE: &str = "webhooks.yaml";
pub const CLUSTER_ROLE_FILE: &str = "clusterrole.yaml";
pub const POLICIES_FILE: &str = "policies.yaml";

/// Largest ConfigMap kube-apiserver stores (etcd's default request limit).
const CONFIGMAP_MAX_BYTES: usize = 1024 * 1024;

/// Where kube-apiserver reaches the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub service: String,
    pub port: u16,
    /// base64 of the PEM CA bundle; `None` leaves `caBundle` out, for
    /// cert-manager's CA injector or a kustomize replacement to fill in.
    pub ca_bundle: Option<String>,
    /// `https://host:port` of a gate running outside the cluster: the
    /// webhooks then use `clientConfig.url` (base + `/validate` or
    /// `/mutate`) instead of the Service. Checked by [`check_url`].
    pub url: Option<String>,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            namespace: DEFAULT_NAMESPACE.to_string(),
            service: DEFAULT_SERVICE.to_string(),
            port: DEFAULT_PORT,
            ca_bundle: None,
            url: None,
        }
    }
}

impl Target {
    /// `kube-system` and the gate's namespace, sorted.
    pub fn excluded_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = EXCLUDED_NAMESPACES.iter().map(|s| s.to_string()).collect();
        if !out.contains(&self.namespace) {
            out.push(self.namespace.clone());
        }
        out.sort();
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A fail-closed policy matches more than a fail-closed webhook may.
    #[error(
        "policy {policy} ({file}): failurePolicy Fail on {what}: {why}. A fail-closed webhook must stay narrow; \
         name the resources and operations, or set failurePolicy: Ignore"
    )]
    BroadFailClosed {
        policy: String,
        file: String,
        what: String,
        why: &'static str,
    },
    #[error("cannot read the policy files in {}: {source}", path.display())]
    PolicyFiles {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    ConfigMapKey { path: PathBuf, reason: String },
    #[error("the policy files add up to {0} bytes; a ConfigMap holds at most 1 MiB")]
    ConfigMapTooLarge(usize),
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser::Error),
}

/// Which endpoint a webhook calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Validate => "/validate",
            Endpoint::Mutate => "/mutate",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Endpoint::Validate => "ValidatingWebhookConfiguration",
            Endpoint::Mutate => "MutatingWebhookConfiguration",
        }
    }

    fn runs(self, p: &Policy) -> bool {
        match self {
            Endpoint::Validate => p.validates(),
            Endpoint::Mutate => p.mutates(),
        }
    }

    /// The name that appears in denials (`admission webhook "<name>" denied
    /// the request`) and prefixes audit annotations. Each endpoint's usual
    /// failurePolicy (validation fails closed, mutation fails open) gets the
    /// plain name; the other one is named for how it differs.
    pub fn webhook_name(self, failure_policy: FailurePolicy) -> String {
        let stem = match (self, failure_policy) {
            (Endpoint::Validate, FailurePolicy::Fail) => "validate",
            (Endpoint::Validate, FailurePolicy::Ignore) => "validate-fail-open",
            (Endpoint::Mutate, FailurePolicy::Ignore) => "mutate",
            (Endpoint::Mutate, FailurePolicy::Fail) => "mutate-fail-closed",
        };
        format!("{stem}.safety-gate.dev")
    }

    pub fn timeout_seconds(self, failure_policy: FailurePolicy) -> u8 {
        match (self, failure_policy) {
            (Endpoint::Validate, FailurePolicy::Fail) => VALIDATE_FAIL_CLOSED_TIMEOUT_SECONDS,
            (Endpoint::Validate, FailurePolicy::Ignore) => VALIDATE_FAIL_OPEN_TIMEOUT_SECONDS,
            (Endpoint::Mutate, _) => MUTATE_TIMEOUT_SECONDS,
        }
    }
}

fn failure_policy_text(fp: FailurePolicy) -> &'static str {
    match fp {
        FailurePolicy::Fail => "Fail",
        FailurePolicy::Ignore => "Ignore",
    }
}

/// `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration or
/// MutatingWebhookConfiguration; fields in the order a reviewer reads them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfiguration {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: Metadata,
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Metadata {
    fn new(name: &str, namespace: Option<&str>) -> Self {
        Metadata {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "safety-gate".to_string(),
            )]),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub name: String,
    pub failure_policy: &'static str,
    pub timeout_seconds: u8,
    pub side_effects: &'static str,
    pub admission_review_versions: Vec<&'static str>,
    pub match_policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reinvocation_policy: Option<&'static str>,
    pub namespace_selector: NamespaceSelector,
    pub client_config: ClientConfig,
    pub rules: Vec<Rule>,
    /// The policies routed through this webhook (for the file header).
    #[serde(skip)]
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectorRequirement {
    pub key: &'static str,
    pub operator: &'static str,
    pub values: Vec<String>,
}

/// Exactly one of `service` and `url` is set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceReference {
    pub namespace: String,
    pub name: String,
    pub path: &'static str,
    pub port: u16,
}

/// Checks a `--url` base as kube-apiserver checks `clientConfig.url`
/// (admissionregistration validation): an `https` URL with a host and no user
/// info, query or fragment. A path is allowed (a gate behind a path prefix);
/// the gate's `/validate` and `/mutate` are appended to it. A port that can
/// never be reached (0, or not a number) is refused too. `Err` says what is
/// wrong.
pub fn check_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text}: not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "{text}: the scheme must be https (kube-apiserver calls webhooks over TLS only)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text}: no host"));
    }
    if url.port() == Some(0) {
        return Err(format!("{text}: port 0 can never be reached"));
    }
    for (present, what) in [
        (
            !url.username().is_empty() || url.password().is_some(),
            "user info",
        ),
        (url.query().is_some(), "a query"),
        (url.fragment().is_some(), "a fragment"),
    ] {
        if present {
            return Err(format!(
                "{text}: kube-apiserver does not accept {what} in a webhook URL"
            ));
        }
    }
    Ok(())
}

/// Is a fail-closed atom narrow enough? `Err` says why not.
fn check_fail_closed(atom: &Atom) -> Result<(), &'static str> {
    if atom.operation == "*" || atom.operation == "CONNECT" {
        return Err("wildcard and CONNECT operations include exec, port-forward and proxy");
    }
    if atom.resource.contains('*') {
        return Err("wildcard resources include the objects the control plane needs to recover");
    }
    let base = atom.resource.split('/').next().unwrap_or_default();
    if FAIL_CLOSED_FORBIDDEN_RESOURCES.contains(&atom.resource.as_str())
        || FAIL_CLOSED_FORBIDDEN_RESOURCES.contains(&base)
    {
        return Err("kubelets, controllers and the gate's own Pods write these to keep running");
    }
    if atom.group == "*" {
        return Err("wildcard API groups match the same resource name in every CRD group");
    }
    Ok(())
}

/// What one webhook routes for one policy (a GatePolicy, a VAP unit or a
/// MutatingAdmissionPolicy unit).
struct Routed {
    name: String,
    failure_policy: FailurePolicy,
    rules: Vec<crate::policy::model::ResourceRule>,
    file: std::path::PathBuf,
    line: usize,
}

/// The webhooks of one endpoint: one per failurePolicy that some policy
/// running there has, fail-closed first. A request both would match is
/// routed only through the fail-closed one: the gate evaluates every
/// matching policy on each call, and each policy's own failurePolicy still
/// decides its errors and deadlines, so a second call would only repeat
/// warnings and audit annotations.
pub fn webhooks(
    set: &PolicySet,
    endpoint: Endpoint,
    target: &Target,
) -> Result<Vec<Webhook>, RenderError> {
    let mut running: Vec<Routed> = set
        .policies()
        .iter()
        .filter(|p| endpoint.runs(p))
        .map(|p| Routed {
            name: p.name.clone(),
            failure_policy: p.failure_policy,
            rules: p.webhook_rules(),
            file: p.file.clone(),
            line: p.line,
        })
        .collect();
    // MutatingAdmissionPolicies run on `/mutate`, under their own failurePolicy.
    if endpoint == Endpoint::Mutate {
        running.extend(set.mutating_policies().iter().map(|p| Routed {
            name: p.name.clone(),
            failure_policy: p.failure_policy,
            rules: p.webhook_rules(),
            file: p.file.clone(),
            line: p.line,
        }));
    }
    let group = |fp: FailurePolicy| -> (BTreeSet<Atom>, Vec<String>) {
        let members: Vec<&Routed> = running.iter().filter(|p| p.failure_policy == fp).collect();
        let atoms = rules::atoms(
            members
                .iter()
                .flat_map(|p| p.rules.iter().cloned())
                .collect::<Vec<_>>()
                .iter(),
        );
        let mut names: Vec<String> = members.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        (rules::minimize(&atoms), names)
    };

    for p in running
        .iter()
        .filter(|p| p.failure_policy == FailurePolicy::Fail)
    {
        for atom in rules::atoms(p.rules.iter()) {
            if let Err(why) = check_fail_closed(&atom) {
                return Err(RenderError::BroadFailClosed {
                    policy: p.name.clone(),
                    file: format!("{}:{}", p.file.display(), p.line),
                    what: format!(
                        "{} {}/{} {}",
                        atom.operation,
                        if atom.group.is_empty() {
                            "core"
                        } else {
                            &atom.group
                        },
                        atom.version,
                        atom.resource
                    ),
                    why,
                });
            }
        }
    }

    let (fail, fail_names) = group(FailurePolicy::Fail);
    let (ignore, ignore_names) = group(FailurePolicy::Ignore);
    let ignore = rules::subtract(&ignore, &fail);

    let mut out = Vec::new();
    for (fp, atoms, names) in [
        (FailurePolicy::Fail, fail, fail_names),
        (FailurePolicy::Ignore, ignore, ignore_names),
    ] {
        if atoms.is_empty() {
            continue;
        }
        out.push(Webhook {
            name: endpoint.webhook_name(fp),
            failure_policy: failure_policy_text(fp),
            timeout_seconds: endpoint.timeout_seconds(fp),
            side_effects: "None",
            admission_review_versions: vec!["v1"],
            match_policy: "Equivalent",
            reinvocation_policy: (endpoint == Endpoint::Mutate).then_some("IfNeeded"),
            namespace_selector: NamespaceSelector {
                match_expressions: vec![SelectorRequirement {
                    key: "kubernetes.io/metadata.name",
                    operator: "NotIn",
                    values: target.excluded_namespaces(),
                }],
            },
            client_config: ClientConfig {
                service: target.url.is_none().then(|| ServiceReference {
                    namespace: target.namespace.clone(),
                    name: target.service.clone(),
                    path: endpoint.path(),
                    port: target.port,
                }),
                url: target
                    .url
                    .as_ref()
                    .map(|base| format!("{}{}", base.trim_end_matches('/'), endpoint.path())),
                ca_bundle: target.ca_bundle.clone(),
            },
            rules: rules::compress(&atoms),
            policies: names,
        });
    }
    Ok(out)
}

/// Both webhook configurations for `set`.
pub fn webhook_configurations(
    set: &PolicySet,
    target: &Target,
) -> Result<[WebhookConfiguration; 2], RenderError> {
    let config = |endpoint: Endpoint| -> Result<WebhookConfiguration, RenderError> {
        Ok(WebhookConfiguration {
            api_version: "admissionregistration.k8s.io/v1",
            kind: endpoint.kind(),
            metadata: Metadata::new(OBJECT_NAME, None),
            webhooks: webhooks(set, endpoint, target)?,
        })
    };
    Ok([config(Endpoint::Validate)?, config(Endpoint::Mutate)?])
}

const GENERATED: &str = "\
# Rendered by `safety-gate manifests` from the policy files. Do not edit: change
# the policies, then run `safety-gate manifests --out deploy/base`
# (tests/deploy.rs fails while a committed copy is stale).
";

/// The two webhook configurations as one YAML stream, with a header that
/// says what each webhook carries and why its settings are what they are.
pub fn render_webhooks(set: &PolicySet, target: &Target) -> Result<String, RenderError> {
    let configs = webhook_configurations(set, target)?;
    let all: Vec<&Webhook> = configs.iter().flat_map(|c| &c.webhooks).collect();
    let mut out = String::from(GENERATED);
    out.push_str("#\n# One webhook per failurePolicy; each routes only what its policies match:\n");
    let width = all.iter().map(|w| w.name.len()).max().unwrap_or(0);
    for w in &all {
        out.push_str(&format!(
            "#   {:width$}  {:6}  {}s  {}\n",
            w.name,
            w.failure_policy,
            w.timeout_seconds,
            w.policies.join(", "),
        ));
    }
    let max_validate = configs[0]
        .webhooks
        .iter()
        .map(|w| u32::from(w.timeout_seconds))
        .max()
        .unwrap_or(0);
    let sum_mutate: u32 = configs[1]
        .webhooks
        .iter()
        .map(|w| u32::from(w.timeout_seconds))
        .sum();
    out.push_str(&format!(
        "\
# A request both validating webhooks would match is sent to the fail-closed one
# only; the gate evaluates every matching policy per call, and each policy's own
# failurePolicy still decides its errors and deadlines.
# timeoutSeconds only matter while the gate is unreachable (it answers in
# milliseconds). Mutating webhooks run in sequence and may be called again
# (reinvocationPolicy IfNeeded); validating webhooks run in parallel. Worst case
# the gate adds 2 x {sum_mutate}s + {max_validate}s = {}s to a write; other webhooks add
# theirs, and the total must stay under kube-apiserver's request deadline (60s).
# namespaceSelector: nothing in {} is ever sent, so the
# control plane and the gate's own Pods can be re-created while the gate is down.
# Webhook configurations are never sent to any webhook: deleting these two is
# the break-glass when the gate is down (deploy/README.md).
",
        2 * sum_mutate + max_validate,
        target.excluded_namespaces().join(" and "),
    ));
    for config in &configs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(config)?);
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRole {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    rules: Vec<serde_json::Value>,
}

/// The ClusterRole of the gate's ServiceAccount: `get`/`list`/`watch` on
/// exactly the kinds the policies look up (and Namespaces when they read
/// namespace labels), nothing else.
pub fn render_cluster_role(set: &PolicySet) -> Result<String, RenderError> {
    let needs = set.cluster_needs();
    let mut out = String::from(GENERATED);
    out.push_str("#\n# Least privilege: read-only access to what the policies look up");
    if needs.kinds.is_empty() && !needs.namespaces {
        out.push_str(" (nothing).\n");
    } else {
        let mut what: Vec<String> = needs
            .kinds
            .iter()
            .map(|(a, k)| format!("{k} ({a})"))
            .collect();
        if needs.namespaces {
            what.push("Namespace (v1, for namespace labels)".to_string());
        }
        out.push_str(":\n");
        for w in what {
            out.push_str(&format!("#   {w}\n"));
        }
    }
    out.push_str("---\n");
    out.push_str(&serde_saphyr::to_string(&ClusterRole {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRole",
        metadata: Metadata::new(OBJECT_NAME, None),
        rules: rbac::rbac_rules(&needs),
    })?);
    Ok(out)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMap {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    data: BTreeMap<String, String>,
}

/// The policy files as `(ConfigMap key, contents)`: every file the loader
/// reads, keyed by file name. ConfigMap keys cannot hold `/`, so two files
/// of the same name in different subdirectories are an error, not a silent
/// overwrite.
pub fn policy_files(dir: &Path) -> Result<BTreeMap<String, String>, RenderError> {
    let files = if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        crate::policy::documents::files_in(dir).map_err(|source| RenderError::PolicyFiles {
            path: dir.to_path_buf(),
            source,
        })?
    };
    let mut out = BTreeMap::new();
    for path in files {
        let key = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(RenderError::ConfigMapKey {
                path,
                reason: "a ConfigMap key may only hold letters, digits, '-', '_' and '.'"
                    .to_string(),
            });
        }
        if out.contains_key(&key) {
            return Err(RenderError::ConfigMapKey {
                path,
                reason: format!(
                    "another policy file is also named {key}; ConfigMap keys are file names"
                ),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| RenderError::PolicyFiles {
            path: path.clone(),
            source,
        })?;
        out.insert(key, text);
    }
    Ok(out)
}

/// The ConfigMap the Deployment mounts as its policy directory. Mounted as a
/// directory (not `subPath`), so kubelet swaps in new contents and the
/// server's reload picks them up without a restart.
pub fn render_policies_configmap(dir: &Path, target: &Target) -> Result<String, RenderError> {
    let data = policy_files(dir)?;
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > CONFIGMAP_MAX_BYTES {
        return Err(RenderError::ConfigMapTooLarge(size));
    }
    let mut out = String::from(GENERATED);
    out.push_str(
        "#\n# The policy files, one key per file; mounted at the Deployment's --policies\n# directory.\n---\n",
    );
    out.push_str(&serde_saphyr::to_string(&ConfigMap {
        api_version: "v1",
        kind: "ConfigMap",
        metadata: Metadata::new(POLICIES_CONFIGMAP, Some(&target.namespace)),
        data,
    })?);
    Ok(out)
}

/// A file of `deploy/base` and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub name: &'static str,
    pub contents: String,
}

/// Everything `safety-gate manifests --out DIR` writes, for the policy set
/// loaded from `dir`.
pub fn render_all(
    dir: &Path,
    set: &PolicySet,
    target: &Target,
) -> Result<Vec<RenderedFile>, RenderError> {
    Ok(vec![
        RenderedFile {
            name: WEBHOOKS_FILE,
            contents: render_webhooks(set, target)?,
        },
        RenderedFile {
            name: CLUSTER_ROLE_FILE,
            contents: render_cluster_role(set)?,
        },
        RenderedFile {
            name: POLICIES_FILE,
            contents: render_policies_configmap(dir, target)?,
        },
    ])
}
