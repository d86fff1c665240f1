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

/// Decodes the envelope, checks kind and version, and decodes the request
/// fields; `object` and `oldObject` stay raw until policies ask for them.
pub fn decode_review(body: &[u8]) -> Result<Request, ReviewError> {
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
