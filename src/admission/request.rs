//! Decoding an AdmissionReview request body.

use crate::policy::Request;
use serde::Deserialize;
use std::fmt;

const SUPPORTED_API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body is not a usable AdmissionReview; answered with HTTP 400.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewError {
    NotJson(String),
    NotAdmissionReview(String),
    UnsupportedVersion(String),
    MissingRequest,
    InvalidRequest(String),
}

impl fmt::Display for ReviewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReviewError::NotJson(e) => write!(f, "the body is not valid JSON: {e}"),
            ReviewError::NotAdmissionReview(found) => {
                write!(
                    f,
                    "expected kind AdmissionReview ({SUPPORTED_API_VERSION}), got {found}"
                )
            }
            ReviewError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "AdmissionReview apiVersion '{v}' is not supported; use {SUPPORTED_API_VERSION} (admissionReviewVersions: [v1])"
                )
            }
            ReviewError::MissingRequest => f.write_str("the AdmissionReview has no request"),
            ReviewError::InvalidRequest(e) => {
                write!(f, "the AdmissionReview request is invalid: {e}")
            }
        }
    }
}

impl std::error::Error for ReviewError {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    request: Option<&'a serde_json::value::RawValue>,
}

/// The envelope with the request decoded in the same pass.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecodedEnvelope {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    request: Option<Request>,
}

/// Decodes the envelope, checks kind and version, and decodes the request
/// fields; `object` and `oldObject` stay raw until policies ask for them.
///
/// A well-formed review is decoded in one pass over the body. Anything else
/// (not JSON, another kind or version, no request, an invalid request) is
/// decoded again by [`decode_review_checked`], which checks in order and
/// words the error; for a body the one pass accepts, both give the same
/// request.
pub fn decode_review(body: &[u8]) -> Result<Request, ReviewError> {
    if let Ok(DecodedEnvelope {
        api_version: Some(version),
        kind: Some(kind),
        request: Some(request),
    }) = serde_json::from_slice::<DecodedEnvelope>(body)
        && kind == "AdmissionReview"
        && version == SUPPORTED_API_VERSION
    {
        return Ok(request);
    }
    decode_review_checked(body)
}

/// [`decode_review`] in two passes: the envelope (kind, version, the request
/// still raw), then the request.
fn decode_review_checked(body: &[u8]) -> Result<Request, ReviewError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ReviewError::NotAdmissionReview(format!("a JSON document that is not one ({e})"))
        } else {
            ReviewError::NotJson(e.to_string())
        }
    })?;
    match (envelope.kind.as_deref(), envelope.api_version.as_deref()) {
        (Some("AdmissionReview"), Some(SUPPORTED_API_VERSION)) => {}
        (Some("AdmissionReview"), Some(other)) => {
            return Err(ReviewError::UnsupportedVersion(other.to_string()));
        }
        (kind, version) => {
            return Err(ReviewError::NotAdmissionReview(format!(
                "kind {:?}, apiVersion {:?}",
                kind.unwrap_or(""),
                version.unwrap_or("")
            )));
        }
    }
    let raw = envelope.request.ok_or(ReviewError::MissingRequest)?;
    if raw.get() == "null" {
        return Err(ReviewError::MissingRequest);
    }
    serde_json::from_str::<Request>(raw.get())
        .map_err(|e| ReviewError::InvalidRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass decoding accepts exactly what the checked one accepts,
    /// with the same request, and leaves every error to it.
    #[test]
    fn one_pass_and_checked_decoding_agree() {
        let request = r#"{"uid":"u1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"resource":{"group":"apps","version":"v1","resource":"deployments"},"name":"web","namespace":"default","operation":"UPDATE","userInfo":{"username":"alice","groups":["g"]},"object":{"metadata":{"name":"web"},"spec":{"replicas":2}},"oldObject":{"metadata":{"name":"web"}},"dryRun":false,"options":null}"#;
        let bodies = [
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#),
            format!(r#"{{"request":{request},"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","extra":[1,{{"a":null}}]}}"#),
            format!(r#"{{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{request}}}"#),
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"Other","request":{request}}}"#),
            format!(r#"{{"kind":"AdmissionReview","request":{request}}}"#),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}"#.to_string(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_string(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_string(),
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request},"request":{request}}}"#),
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}} x"#),
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}"#),
            "[1,2]".to_string(),
            "not json".to_string(),
        ];
        for body in &bodies {
            let one = decode_review(body.as_bytes()).map(|r| format!("{r:?}"));
            let checked = decode_review_checked(body.as_bytes()).map(|r| format!("{r:?}"));
            assert_eq!(one, checked, "{body}");
        }
        assert!(decode_review(bodies[0].as_bytes()).is_ok());
        assert!(decode_review(bodies[1].as_bytes()).is_ok());
    }
}
