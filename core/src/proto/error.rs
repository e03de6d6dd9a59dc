//! Error codes, error answers, and the typed error of decoding a line.

use std::fmt;

use super::RequestId;

/// A machine-readable error code, as the protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// GET or DEL of a key that does not exist.
    NotFound,
    /// The key is the empty string.
    EmptyKey,
    /// The key is over 256 bytes.
    KeyTooLong,
    /// The value is over 256 KiB.
    ValueTooLarge,
    /// Not JSON, not an object, unknown type, missing or mistyped field.
    Malformed,
    /// The line was over the frame limit.
    FrameTooLarge,
    /// The update could not reach both replicas in time, a GET reached neither, or the
    /// ring is not complete.
    Unavailable,
    /// A replica voted abort.
    Aborted,
    /// A registration was refused.
    Refused,
    /// Too much in flight; retry later.
    Overloaded,
    /// A bug; nothing was changed.
    Internal,
    /// A replica's vote: the key is prepared by another transaction.
    Locked,
}

impl ErrorCode {
    /// Every code, for tests and for parsing.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::NotFound,
        ErrorCode::EmptyKey,
        ErrorCode::KeyTooLong,
        ErrorCode::ValueTooLarge,
        ErrorCode::Malformed,
        ErrorCode::FrameTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Aborted,
        ErrorCode::Refused,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
        ErrorCode::Locked,
    ];

    /// The code as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::EmptyKey => "empty_key",
            ErrorCode::KeyTooLong => "key_too_long",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::Malformed => "malformed",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Refused => "refused",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::Locked => "locked",
        }
    }

    /// Parses a code as it is spelled on the wire.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }

    /// The message CS162 clients expect for the data errors; a plain phrase otherwise.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "Data Error: Key does not exist",
            ErrorCode::EmptyKey => "Data Error: Null or empty key",
            ErrorCode::KeyTooLong => "Data Error: Oversized key",
            ErrorCode::ValueTooLarge => "Data Error: Oversized value",
            ErrorCode::Malformed => "Malformed request",
            ErrorCode::FrameTooLarge => "Line over the frame limit",
            ErrorCode::Unavailable => "Unavailable: the replicas could not be reached in time",
            ErrorCode::Aborted => "Aborted by a replica",
            ErrorCode::Refused => "Registration refused",
            ErrorCode::Overloaded => "Overloaded: too much in flight, retry later",
            ErrorCode::Internal => "Internal error",
            ErrorCode::Locked => "Key is locked by another transaction",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a code for programs and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error answer with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: code.default_message().to_owned(),
        }
    }

    /// An error answer with its own message.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Why a line could not be decoded, with the request's id when the line carried a valid
/// one, so that the error answer can echo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The line's `"id"`, if the line was a JSON object with a valid id.
    pub id: Option<RequestId>,
    /// The code to answer.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn malformed(id: Option<RequestId>, message: impl Into<String>) -> Self {
        Self {
            id,
            code: ErrorCode::Malformed,
            message: message.into(),
        }
    }

    pub(crate) fn limit(id: Option<RequestId>, code: ErrorCode) -> Self {
        Self {
            id,
            code,
            message: code.default_message().to_owned(),
        }
    }

    /// The error as an answer.
    pub fn reply(&self) -> ErrorReply {
        ErrorReply::with_message(self.code, self.message.clone())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DecodeError {}
