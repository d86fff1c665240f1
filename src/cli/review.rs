//! `safety-gate review`: would these manifests be denied, and why — before
//! `kubectl apply`. Each manifest becomes the AdmissionReview kube-apiserver
//! would send (CREATE, UPDATE over the live object, or DELETE) and goes through
//! the same engine as the webhook.

use super::apply_merge::merge_over_live;
use super::cluster_source::ClusterSource;
use super::load_policies;
use super::manifest_reader::{Manifest, is_cluster_scoped, read_all};
use super::report::{self, Format, ObjectResult};
use super::{EXIT_FINDINGS, EXIT_OK, EXIT_UNDECIDED, EXIT_USAGE};
use crate::admission::synthetic::{RequestSpec, build_request};
use crate::cluster::Snapshot;
use crate::policy::{ClusterState, LookupError, NamespaceInfo};
use crate::policy::{EvalOptions, PolicySet};
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use std::path::PathBuf;

/// `-o` of `review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReviewFormat {
    /// One line per object, the messages below (default).
    Table,
    /// The table with a MESSAGE column.
    Wide,
    Json,
    Yaml,
    /// SARIF 2.1.0, for code-scanning annotations.
    Sarif,
    /// JUnit XML, one test case per object.
    Junit,
}

impl From<ReviewFormat> for Format {
    fn from(f: ReviewFormat) -> Self {
        match f {
            ReviewFormat::Table => Format::Table,
            ReviewFormat::Wide => Format::Wide,
            ReviewFormat::Json => Format::Json,
            ReviewFormat::Yaml => Format::Yaml,
            ReviewFormat::Sarif => Format::Sarif,
            ReviewFormat::Junit => Format::Junit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReviewOperation {
    /// CREATE, or UPDATE when a live object of that identity exists.
    Apply,
    Create,
    Update,
    Delete,
}

#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// Manifest files or directories (recursively); `-` reads stdin.
    #[arg(required_unless_present = "filename")]
    pub manifests: Vec<PathBuf>,
    /// A manifest file or directory, as `kubectl apply -f` (repeatable); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Vec<PathBuf>,
    /// A snapshot of the live objects (YAML/JSON files, `kubectl get -A -o yaml` output);
    /// `-` reads stdin.
    #[arg(long, conflicts_with = "cluster")]
    pub live: Option<PathBuf>,
    /// Read live objects from the cluster (read-only): --kubeconfig, $KUBECONFIG,
    /// ~/.kube/config or the Pod's service account, as kubectl finds them.
    #[arg(long)]
    pub cluster: bool,
    /// Kubeconfig for --cluster; default as kubectl: $KUBECONFIG, then ~/.kube/config.
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context for --cluster (default: its current context).
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// The request kube-apiserver would receive: apply is CREATE, or UPDATE over
    /// the live object when one exists (needs --live or --cluster).
    #[arg(long, value_enum, default_value = "apply")]
    pub operation: ReviewOperation,
    /// Policy directory (searched recursively) or file; `-` reads stdin.
    #[arg(long, default_value = "policies", env = "SAFETY_GATE_POLICIES")]
    pub policies: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "format",
        value_enum,
        default_value = "table"
    )]
    pub format: ReviewFormat,
    /// request.userInfo.username of the simulated requests.
    #[arg(long, default_value = "safety-gate-review")]
    pub user: String,
    /// request.userInfo.groups (repeatable).
    #[arg(long = "group", default_values = ["system:authenticated"])]
    pub groups: Vec<String>,
    /// Namespace for namespaced objects that do not name one (as `kubectl apply -n`).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Also list objects that pass.
    #[arg(long)]
    pub show_passing: bool,
}

pub fn run(args: &ReviewArgs) -> u8 {
    let Some(policies) = load_policies(&args.policies) else {
        return EXIT_USAGE;
    };
    run_with_policies(args, &policies)
}

/// `review` with the policies already loaded (`args.policies` is not read):
/// reads the manifests and the live state, reviews each object, prints the
/// report and returns the exit code. The fuzz target of the manifest reader
/// drives this with the shipped policies loaded once.
pub fn run_with_policies(args: &ReviewArgs, policies: &PolicySet) -> u8 {
    let format = Format::from(args.format);
    let live = match (&args.live, args.cluster) {
        (Some(dir), _) => match Snapshot::load_dir(dir) {
            Ok(s) => ClusterSource::Snapshot(s),
            Err(e) => {
                eprintln!(
                    "{e}\nerror: the live snapshot {} cannot be read",
                    dir.display()
                );
                return EXIT_USAGE;
            }
        },
        (None, true) => {
            match ClusterSource::connect(
                args.kubeconfig.as_deref(),
                args.context.as_deref(),
                &policies.cluster_needs(),
            ) {
                Ok(source) => source,
                Err(e) => {
                    eprintln!("error: --cluster: {e}");
                    return EXIT_USAGE;
                }
            }
        }
        (None, false) => ClusterSource::Snapshot(Snapshot::empty()),
    };
    let inputs: Vec<PathBuf> = args
        .manifests
        .iter()
        .chain(&args.filename)
        .cloned()
        .collect();
    let manifests = match read_all(&inputs) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if manifests.is_empty() {
        // As `kubectl apply` with nothing to apply: a wrong path in CI must
        // not pass as "clean".
        eprintln!(
            "error: no objects passed to review in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return EXIT_USAGE;
    }
    // Namespaces the input creates are known to namespaceSelectors, as they
    // will be by the time kube-apiserver admits the objects in them.
    let input_namespaces = Snapshot::from_objects(
        manifests
            .iter()
            .filter(|m| m.kind() == "Namespace" && m.api_version() == "v1")
            .map(|m| {
                // kube-apiserver sets kubernetes.io/metadata.name to the name,
                // whatever the manifest says (seen on 1.37.2).
                let mut ns = m.object.clone();
                let name = m.name().to_string();
                if let Some(meta) = ns.get_mut("metadata").and_then(|v| v.as_object_mut()) {
                    let labels = meta
                        .entry("labels")
                        .or_insert_with(|| serde_json::json!({}));
                    if let Some(labels) = labels.as_object_mut() {
                        labels.insert("kubernetes.io/metadata.name".into(), name.into());
                    }
                }
                ns
            })
            .collect(),
    );
    let state = WithInputNamespaces {
        base: live.state(),
        input: &input_namespaces,
    };
    let user = UserInfo {
        username: Some(args.user.clone()),
        groups: Some(args.groups.clone()),
        ..Default::default()
    };
    let mut results = Vec::with_capacity(manifests.len());
    for (index, manifest) in manifests.iter().enumerate() {
        match review_one(index, manifest, args, &live, &state, policies, &user) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {}: {e}", manifest.location());
                return EXIT_USAGE;
            }
        }
    }
    let output = match format {
        Format::Table | Format::Wide => {
            let style = if format == Format::Wide {
                report::TableStyle::Wide
            } else {
                report::TableStyle::Plain
            };
            let table = report::table(&results, args.show_passing, style);
            format!(
                "{table}{}{}",
                if table.is_empty() { "" } else { "\n" },
                report::summary_line(&results)
            )
        }
        Format::Json => report::json(&results),
        Format::Yaml => report::yaml(&results),
        Format::Sarif => report::sarif(&results, policies),
        Format::Junit => report::junit(&results, "safety-gate review"),
        // Not a value of `review -o`.
        Format::Policyreport => String::new(),
    };
    println!("{output}");
    let undecided = report::undecided_count(&results);
    if report::any_violation(&results) {
        EXIT_FINDINGS
    } else if undecided > 0 {
        eprintln!(
            "{undecided} object(s) undecided: a policy needs cluster state (namespace labels or lookups) \
             that was not given; pass --live DIR (a snapshot of the cluster) or --cluster"
        );
        EXIT_UNDECIDED
    } else {
        EXIT_OK
    }
}

fn review_one(
    index: usize,
    manifest: &Manifest,
    args: &ReviewArgs,
    live: &ClusterSource,
    state: &dyn ClusterState,
    policies: &PolicySet,
    user: &UserInfo,
) -> Result<ObjectResult, String> {
    let mut object = manifest.object.clone();
    let namespaced = !is_cluster_scoped(manifest.kind());
    let namespace = if namespaced {
        manifest.namespace().unwrap_or(&args.namespace).to_string()
    } else {
        String::new()
    };
    if namespaced && manifest.namespace().is_none() {
        object["metadata"]["namespace"] = serde_json::json!(namespace);
    }
    let existing = if manifest.name().is_empty() {
        None // generateName: always a CREATE
    } else {
        live.get(
            manifest.api_version(),
            manifest.kind(),
            &namespace,
            manifest.name(),
        )?
    };
    let (operation, new, old) = match (args.operation, existing) {
        (ReviewOperation::Delete, live_object) => {
            (Operation::Delete, None, Some(live_object.unwrap_or(object)))
        }
        (ReviewOperation::Create, _) | (ReviewOperation::Apply, None) => {
            (Operation::Create, Some(object), None)
        }
        // Without the live object an UPDATE has nothing to compare with: the
        // manifest over itself would always look clean.
        (ReviewOperation::Update, None) => {
            return Err(format!(
                "--operation update needs the live {} {}: {}",
                manifest.kind(),
                manifest.name(),
                if args.live.is_some() || args.cluster {
                    "it does not exist (kube-apiserver would answer NotFound); use --operation create or apply"
                } else {
                    "pass --live DIR (a snapshot) or --cluster"
                }
            ));
        }
        (ReviewOperation::Update | ReviewOperation::Apply, Some(live_object)) => (
            Operation::Update,
            Some(merge_over_live(&live_object, &object)),
            Some(live_object),
        ),
    };
    let reported = new.clone().or_else(|| old.clone()).unwrap_or_default();
    let request = build_request(RequestSpec {
        uid: format!("review-{index}"),
        operation: Some(operation.clone()),
        object: new,
        old_object: old,
        user_info: user.clone(),
        namespace: if namespaced { Some(namespace) } else { None },
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let location = Some((manifest.file.display().to_string(), manifest.line));
    let operation_name = request.operation_str();
    // kube-apiserver runs MutatingAdmissionPolicies before validation: the
    // validations see the mutated object.
    let (request, mutation) = match mutate_first(policies, request, state)? {
        Mutated::Refused(decision) => {
            return Ok(ObjectResult::new(
                &reported,
                operation_name,
                &decision,
                location,
            ));
        }
        Mutated::Done(request, mutation) => (*request, mutation),
    };
    let decision = policies
        .evaluate(&request, state, &EvalOptions::default())
        .map_err(|e| e.to_string())?;
    let mut result = ObjectResult::new(&reported, request.operation_str(), &decision, location);
    if let Some((names, patch)) = mutation {
        result.mutated_by = names;
        result.patch = Some(patch);
    }
    Ok(result)
}

enum Mutated {
    /// A MutatingAdmissionPolicy refused the request (failurePolicy: Fail).
    Refused(crate::policy::Decision),
    /// The request to validate, and who changed its object and how.
    Done(
        Box<crate::policy::Request>,
        Option<(Vec<String>, serde_json::Value)>,
    ),
}

fn mutate_first(
    policies: &PolicySet,
    request: crate::policy::Request,
    state: &dyn ClusterState,
) -> Result<Mutated, String> {
    if policies.mutating_policies().is_empty() {
        return Ok(Mutated::Done(Box::new(request), None));
    }
    let decision = policies
        .apply_mutating_admission_policies(&request, state, &EvalOptions::default())
        .map_err(|e| e.to_string())?;
    if !decision.allowed {
        return Ok(Mutated::Refused(decision));
    }
    let (Some(patch), Some(raw)) = (&decision.patch, &request.object) else {
        return Ok(Mutated::Done(Box::new(request), None));
    };
    let mut object: serde_json::Value =
        serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    json_patch::patch(&mut object, patch).map_err(|e| e.to_string())?;
    let mut request = request;
    request.object = Some(serde_json::value::to_raw_value(&object).map_err(|e| e.to_string())?);
    let names = decision
        .policies
        .iter()
        .filter(|p| p.outcome == crate::policy::PolicyOutcome::Passed)
        .map(|p| p.policy.clone())
        .collect();
    let patch = serde_json::to_value(patch).map_err(|e| e.to_string())?;
    Ok(Mutated::Done(Box::new(request), Some((names, patch))))
}

/// The cluster state, with the Namespaces the reviewed input creates added
/// where the state does not know them. Only namespace labels: the input's
/// objects are never taken for live ones.
struct WithInputNamespaces<'a> {
    base: &'a dyn ClusterState,
    input: &'a Snapshot,
}

impl crate::policy::ParamSource for WithInputNamespaces<'_> {
    fn param_scope(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<crate::policy::ParamScope>, LookupError> {
        self.base.param_scope(api_version, kind)
    }
}

impl ClusterState for WithInputNamespaces<'_> {
    fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, LookupError> {
        match self.base.namespace(name) {
            Ok(Some(ns)) => Ok(Some(ns)),
            unknown => match self.input.namespace(name) {
                Ok(Some(ns)) => Ok(Some(ns)),
                _ => unknown,
            },
        }
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<kube_cel::cel::Value, LookupError> {
        self.base.list(api_version, kind, namespace)
    }

    fn authorizer(&self) -> Result<std::sync::Arc<dyn crate::policy::authz::Authorizer>, String> {
        self.base.authorizer()
    }
}
