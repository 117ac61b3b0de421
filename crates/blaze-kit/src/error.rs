//! The one error model (DESIGN §4.2).
//!
//! Domain errors convert into [`ApiError`]: a gRPC code, a stable machine
//! reason (`APP_NOT_FOUND`, `QUOTA_HARD_LIMIT_REACHED`, …) and a message for
//! users. It travels as a `tonic::Status` with `google.rpc.ErrorInfo` (and
//! `RetryInfo` for 429s); the edge turns it into `HTTP status + {error, code}`.
//! Internal details never go into the message: [`ApiError::internal`] logs
//! them (with the request id of the current span) and answers a generic text.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every Blaze error.
pub const ERROR_DOMAIN: &str = "blaze.dev";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub reason: Cow<'static, str>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError { code, reason: reason.into(), message: message.into(), retry_after: None }
    }

    /// 400 `INVALID_PAYLOAD`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, "INVALID_PAYLOAD", message)
    }

    /// 400 with a specific reason.
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    /// 404 with a specific reason (`APP_NOT_FOUND`, …).
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }

    /// 403 `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, "FORBIDDEN", message)
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, "UNAUTHORIZED", message)
    }

    /// 409 with a specific reason.
    pub fn conflict(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Aborted, reason, message)
    }

    /// 409 `ALREADY_EXISTS`-style conflicts (duplicate slugs).
    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    /// 400 for a state that forbids the operation (FAILED_PRECONDITION).
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    /// 429 `QUOTA_HARD_LIMIT_REACHED` with the contract's message.
    pub fn quota_exceeded(scope: &str, metric: &str) -> Self {
        Self::new(Code::ResourceExhausted, "QUOTA_HARD_LIMIT_REACHED", format!("{scope} hard quota exceeded for metric \"{metric}\""))
    }

    /// 429 `RATE_LIMITED` with a retry delay.
    pub fn rate_limited(retry_after: Duration) -> Self {
        ApiError { retry_after: Some(retry_after), ..Self::new(Code::ResourceExhausted, "RATE_LIMITED", "Too many requests") }
    }

    /// 503 `UNAVAILABLE`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, "UNAVAILABLE", message)
    }

    /// 413 is an edge concern; inside the mesh an oversized input is 400.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, "PAYLOAD_TOO_LARGE", message)
    }

    /// 500: logs the detail and answers a generic message.
    #[track_caller]
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let at = std::panic::Location::caller();
        tracing::error!(error = %detail, at = %at, "internal error");
        Self::new(Code::Internal, "INTERNAL", "Internal error")
    }

    /// Replace the machine reason (keeping code and message).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Cow::Borrowed(reason);
        self
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// Decode an error received from another service.
    pub fn from_status(status: &Status) -> Self {
        let reason =
            status.get_details_error_info().map(|i| Cow::Owned(i.reason)).unwrap_or_else(|| Cow::Borrowed(default_reason(status.code())));
        let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
        ApiError { code: status.code(), reason, message: status.message().to_string(), retry_after }
    }

    /// HTTP status the edge answers with (grpc-gateway table).
    pub fn http_status(&self) -> u16 {
        http_status(self.code)
    }
}

/// The reason used when a status carries no `ErrorInfo`.
pub fn default_reason(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::InvalidArgument | Code::OutOfRange => "INVALID_PAYLOAD",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists | Code::Aborted => "CONFLICT",
        Code::PermissionDenied => "FORBIDDEN",
        Code::Unauthenticated => "UNAUTHORIZED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::Unimplemented => "NOT_IMPLEMENTED",
        Code::Unavailable => "UNAVAILABLE",
        Code::Unknown | Code::Internal | Code::DataLoss => "INTERNAL",
    }
}

/// gRPC code → HTTP status, as grpc-gateway and Envoy map them.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}/{})", self.message, self.code, self.reason)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut details = ErrorDetails::with_error_info(e.reason.clone(), ERROR_DOMAIN, HashMap::<String, String>::new());
        if let Some(d) = e.retry_after {
            details.set_retry_info(Some(d));
        }
        Status::with_error_details(e.code, e.message, details)
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError::from_status(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_and_retry_survive_the_status_round_trip() {
        let e = ApiError::rate_limited(Duration::from_secs(3));
        let back = ApiError::from_status(&Status::from(e.clone()));
        assert_eq!(back, e);
        assert_eq!(back.http_status(), 429);
    }

    #[test]
    fn plain_statuses_get_a_default_reason() {
        let e = ApiError::from_status(&Status::not_found("gone"));
        assert_eq!(e.reason, "NOT_FOUND");
        assert_eq!(e.http_status(), 404);
        assert_eq!(http_status(Code::Cancelled), 499);
        assert_eq!(http_status(Code::Unavailable), 503);
    }

    #[test]
    fn internal_errors_hide_details() {
        let e = ApiError::internal("password=hunter2 in dsn");
        assert_eq!(e.message, "Internal error");
    }
}
