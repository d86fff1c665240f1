//! `safety-gate manifests --native --static DIR`: the native policies in the
//! manifest-based form kube-apiserver loads from files at start-up
//! (KEP-5793, `ManifestBasedAdmissionControlConfig`: alpha in 1.36, beta and
//! on by default in 1.37), plus a policy that protects the gate's webhook
//! configurations and its API-applied native policies from deletion and
//! weakening. Objects loaded this way cannot be seen, changed or deleted
//! through the API, and apply to admission configuration objects too, which
//! webhooks and API-created policies never see.

use super::native::{NAME_SUFFIX, NativeRender};
use crate::deploy::OBJECT_NAME;
use serde_json::{Value as Json, json};
use std::path::Path;

/// The suffix kube-apiserver requires of every manifest-based object's name.
pub const STATIC_SUFFIX: &str = ".safety-gate.static.k8s.io";
/// Where, under the install folder, the ValidatingAdmissionPolicy plugin's
/// `staticManifestsDir` points.
pub const POLICIES_SUBDIR: &str = "validating-policies";
/// The AdmissionConfiguration file, under the install folder.
pub const ADMISSION_CONFIGURATION_FILE: &str = "admission-configuration.yaml";
/// The self-protection policy's GatePolicy-style name.
pub const PROTECT_ADMISSION_CONFIG: &str = "protect-safety-gate-admission";

/// One file to write, relative to the output folder.
#[derive(Debug, Clone)]
pub struct StaticFile {
    pub path: String,
    pub text: String,
}

/// The files of the static form. `install_dir` is the absolute path the
/// files will have on the control-plane node (kube-apiserver requires an
/// absolute `staticManifestsDir`). `Err` when it is not absolute.
pub fn render_static(render: &NativeRender, install_dir: &Path) -> Result<Vec<StaticFile>, String> {
    if !install_dir.is_absolute() {
        return Err(format!(
            "--static {}: kube-apiserver needs an absolute staticManifestsDir",
            install_dir.display()
        ));
    }
    let mut files = Vec::new();
    let mut protected: std::collections::BTreeSet<String> =
        std::collections::BTreeSet::from([OBJECT_NAME.to_string()]);
    for r in &render.rendered {
        let mut yaml = format!(
            "# Rendered by `safety-gate manifests --native --static` from GatePolicy {}: loaded by\n\
             # kube-apiserver from {} at start-up; not visible or changeable through the API.\n",
            r.policy,
            install_dir.join(POLICIES_SUBDIR).display()
        );
        for (i, o) in r.objects.iter().enumerate() {
            if let Some(name) = o["metadata"]["name"].as_str() {
                protected.insert(name.to_string());
            }
            yaml.push_str(separator(i));
            yaml.push_str(&to_yaml(&static_object(o))?);
        }
        files.push(StaticFile {
            path: format!("{POLICIES_SUBDIR}/{}", r.file_name),
            text: yaml,
        });
    }
    let mut yaml = String::from(
        "# Rendered by `safety-gate manifests --native --static`: keeps the gate's webhook\n\
         # configurations and its API-applied native policies from being deleted or weakened\n\
         # (members of group safety-gate:break-glass excepted, with an audit annotation).\n",
    );
    let protected: Vec<String> = protected.into_iter().collect();
    for (i, o) in protection(&protected).iter().enumerate() {
        yaml.push_str(separator(i));
        yaml.push_str(&to_yaml(o)?);
    }
    files.push(StaticFile {
        path: format!("{POLICIES_SUBDIR}/{PROTECT_ADMISSION_CONFIG}.yaml"),
        text: yaml,
    });
    let config = json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "ValidatingAdmissionPolicy",
            "configuration": {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyConfiguration",
                "staticManifestsDir": install_dir.join(POLICIES_SUBDIR).display().to_string(),
            }
        }]
    });
    files.push(StaticFile {
        path: ADMISSION_CONFIGURATION_FILE.to_string(),
        text: format!(
            "# kube-apiserver --admission-control-config-file={}\n\
             # (Kubernetes 1.37: on by default; 1.36: also --feature-gates=ManifestBasedAdmissionControlConfig=true).\n\
             # Merge the plugins entry into an AdmissionConfiguration you already pass.\n{}",
            install_dir.join(ADMISSION_CONFIGURATION_FILE).display(),
            to_yaml(&config)?
        ),
    });
    Ok(files)
}

/// kube-apiserver's manifest loader takes a document holding only comments
/// for an object without a kind and refuses the whole directory (seen on
/// 1.37.2): the header comment shares the first object's document.
fn separator(index: usize) -> &'static str {
    if index == 0 { "" } else { "---\n" }
}

fn to_yaml(o: &Json) -> Result<String, String> {
    serde_saphyr::to_string(o).map_err(|e| format!("cannot write YAML: {e}"))
}

/// The static name of a native object: `<x>.safety-gate.dev` becomes
/// `<x>.safety-gate.static.k8s.io`.
pub fn static_name(name: &str) -> String {
    match name.strip_suffix(NAME_SUFFIX) {
        Some(stem) => format!("{stem}{STATIC_SUFFIX}"),
        None => format!("{name}{STATIC_SUFFIX}"),
    }
}

/// A native object under its static name (a binding's `policyName` too).
fn static_object(o: &Json) -> Json {
    let mut o = o.clone();
    for pointer in ["/metadata/name", "/spec/policyName"] {
        if let Some(v) = o.pointer_mut(pointer)
            && let Some(name) = v.as_str()
        {
            *v = Json::String(static_name(name));
        }
    }
    o
}

/// The policy that protects `names` (webhook configurations and API-applied
/// native policies) from DELETE and from updates that change what they
/// enforce or where they send requests. A webhook configuration may still
/// change its `caBundle` (cert rotation, cert-manager's CA injector); a
/// policy or binding only its metadata.
fn protection(names: &[String]) -> Vec<Json> {
    let name = format!("{PROTECT_ADMISSION_CONFIG}{STATIC_SUFFIX}");
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // Everything but `clientConfig.caBundle`: redirecting the webhook
    // (`service`, `url`) is as much a bypass as switching it to Ignore.
    let fields = "w.name, w.rules, w.failurePolicy, w.namespaceSelector, w.objectSelector, \
                  w.matchPolicy, w.timeoutSeconds, w.sideEffects, \
                  has(w.matchConditions) ? w.matchConditions : [], \
                  has(w.clientConfig.service) ? w.clientConfig.service : {}, \
                  has(w.clientConfig.url) ? w.clientConfig.url : ''";
    let enforced = format!(
        "object.webhooks.map(w, dyn([{fields}])) == oldObject.webhooks.map(w, dyn([{fields}]))"
    );
    let ask = "' This switches safety-gate\\'s protection off. If it must happen, a member of group \
               safety-gate:break-glass can do it (audited).'";
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "safety-gate"}},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["admissionregistration.k8s.io"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE", "DELETE"],
                    "resources": [
                        "validatingwebhookconfigurations",
                        "mutatingwebhookconfigurations",
                        "validatingadmissionpolicies",
                        "validatingadmissionpolicybindings",
                    ],
                }]},
                "matchConditions": [{
                    "name": "protected-object",
                    "expression": format!("oldObject.metadata.name in [{list}]"),
                }],
                "variables": [
                    {"name": "breakGlass", "expression": "'safety-gate:break-glass' in request.userInfo.groups"},
                    {"name": "what", "expression": "request.resource.resource + ' ' + oldObject.metadata.name"},
                ],
                "validations": [
                    {
                        "expression": "variables.breakGlass || request.operation != 'DELETE'",
                        "messageExpression": format!("'deleting ' + variables.what + ' is refused.' + {ask}"),
                        "reason": "Forbidden",
                    },
                    {
                        "expression": format!(
                            "variables.breakGlass || request.operation != 'UPDATE' || \
                             (request.resource.resource.endsWith('webhookconfigurations') ? {enforced} : object.spec == oldObject.spec)"
                        ),
                        "messageExpression": format!(
                            "'this update changes what ' + variables.what + ' enforces or where it sends requests (only a webhook\\'s caBundle may change).' + {ask}"
                        ),
                        "reason": "Forbidden",
                    },
                ],
                "auditAnnotations": [{
                    "key": "break-glass",
                    "valueExpression": "variables.breakGlass ? request.operation + ' of ' + variables.what + ' by ' + request.userInfo.username : ''",
                }],
            }
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "safety-gate"}},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        }),
    ]
}
