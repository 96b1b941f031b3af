//! The distribution spec's error codes
//! (<https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes>):
//! a failing registry answers `{"errors": [{"code", "message", "detail"}]}`.
//! Each code is a variant, shown as a sentence; the registry's own message
//! is kept beside it.

use std::fmt;

/// One error code of the distribution spec (and Docker Hub's
/// `TOOMANYREQUESTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A code the spec does not define, as the registry sent it.
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> Self {
        match code {
            "BLOB_UNKNOWN" => Self::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => Self::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => Self::BlobUploadUnknown,
            "DIGEST_INVALID" => Self::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => Self::ManifestBlobUnknown,
            "MANIFEST_INVALID" => Self::ManifestInvalid,
            "MANIFEST_UNKNOWN" => Self::ManifestUnknown,
            "NAME_INVALID" => Self::NameInvalid,
            "NAME_UNKNOWN" => Self::NameUnknown,
            "SIZE_INVALID" => Self::SizeInvalid,
            "UNAUTHORIZED" => Self::Unauthorized,
            "DENIED" => Self::Denied,
            "UNSUPPORTED" => Self::Unsupported,
            "TOOMANYREQUESTS" => Self::TooManyRequests,
            other => Self::Other(other.to_string()),
        }
    }

    /// The code as registries spell it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Other(s) => s,
        }
    }

    /// What the code means, as the middle of a sentence about an object.
    fn sentence(&self) -> &'static str {
        match self {
            Self::BlobUnknown => "is not in this repository",
            Self::BlobUploadInvalid => "was refused: the upload is invalid",
            Self::BlobUploadUnknown => "was refused: the registry forgot the upload session",
            Self::DigestInvalid => "was refused: its content does not match its digest",
            Self::ManifestBlobUnknown => {
                "was refused: it names a blob the repository does not have"
            }
            Self::ManifestInvalid => "was refused: the registry finds the manifest invalid",
            Self::ManifestUnknown => "is not in this repository",
            Self::NameInvalid => "was refused: the repository name is invalid here",
            Self::NameUnknown => "is not there: the registry has no such repository",
            Self::SizeInvalid => "was refused: its size does not match",
            Self::Unauthorized => "needs authentication",
            Self::Denied => "is denied to these credentials",
            Self::Unsupported => "was refused: the registry does not support this operation",
            Self::TooManyRequests => "was refused: too many requests, the registry's rate limit",
            Self::Other(_) => "failed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first error of a registry's JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// The registry's message (may be empty).
    pub message: String,
}

impl ApiError {
    /// The first entry of `{"errors": [...]}`; `None` for other bodies.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Body {
            errors: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            code: String,
            #[serde(default)]
            message: String,
        }
        let b: Body = serde_json::from_slice(body).ok()?;
        let e = b.errors.into_iter().next()?;
        Some(Self {
            code: ErrorCode::parse(&e.code),
            message: e.message.chars().take(200).collect(),
        })
    }

    /// "is not in this repository (MANIFEST_UNKNOWN: manifest unknown)"
    pub fn sentence(&self) -> String {
        let m = self.message.trim();
        if m.is_empty() || m.eq_ignore_ascii_case(self.code.as_str()) {
            format!("{} ({})", self.code.sentence(), self.code)
        } else {
            format!("{} ({}: {m})", self.code.sentence(), self.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let e = ApiError::from_body(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
        )
        .unwrap();
        assert_eq!(e.code, ErrorCode::ManifestUnknown);
        assert_eq!(
            e.sentence(),
            "is not in this repository (MANIFEST_UNKNOWN: manifest unknown)"
        );
        let e = ApiError::from_body(br#"{"errors":[{"code":"NEW_THING"}]}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Other("NEW_THING".into()));
        assert_eq!(e.sentence(), "failed (NEW_THING)");
        assert_eq!(ApiError::from_body(b"<html>404</html>"), None);
        assert_eq!(ApiError::from_body(br#"{"errors":[]}"#), None);
        for code in [
            "BLOB_UNKNOWN",
            "BLOB_UPLOAD_INVALID",
            "BLOB_UPLOAD_UNKNOWN",
            "DIGEST_INVALID",
            "MANIFEST_BLOB_UNKNOWN",
            "MANIFEST_INVALID",
            "MANIFEST_UNKNOWN",
            "NAME_INVALID",
            "NAME_UNKNOWN",
            "SIZE_INVALID",
            "UNAUTHORIZED",
            "DENIED",
            "UNSUPPORTED",
            "TOOMANYREQUESTS",
        ] {
            let c = ErrorCode::parse(code);
            assert!(!matches!(c, ErrorCode::Other(_)), "{code}");
            assert_eq!(c.as_str(), code);
        }
    }
}
