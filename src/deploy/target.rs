//! Where kube-apiserver reaches the gate: the Service (or an outside URL),
//! its CA bundle, and the namespaces no webhook may send.

/// The gate's namespace in `deploy/`.
pub const DEFAULT_NAMESPACE: &str = "safety-gate";
/// The webhook Service in `deploy/`.
pub const DEFAULT_SERVICE: &str = "safety-gate";
/// The Service port kube-apiserver connects to (the Service maps it to 8443).
pub const DEFAULT_PORT: u16 = 443;
/// Namespaces every webhook excludes besides the gate's own.
pub const EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];

/// Where kube-apiserver reaches the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Namespace of the gate's Service; never sent to any webhook.
    pub namespace: String,
    /// Name of the gate's Service.
    pub service: String,
    /// Service port kube-apiserver connects to.
    pub port: u16,
    /// base64 (standard alphabet, padded) of the PEM CA bundle; `None`
    /// leaves `caBundle` out, for cert-manager's CA injector or a kustomize
    /// replacement to fill in. Anything else is a
    /// [`RenderError::CaBundle`](super::RenderError::CaBundle).
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
