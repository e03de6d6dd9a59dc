//! What a key holds on a node: a container of sibling versions (`--conflicts siblings`)
//! or the one write with the highest stamp (`--conflicts lww`), with its encoding for
//! the log and the wire, its merge, and the client answer it gives.

use crate::proto::EventualResponse;
use crate::storage::Stored;
use crate::versions::{
    container_to_bytes, decode_container, decode_lww, encode_context, encode_lww, Container,
    LwwVersion, Payload, CONTAINER_FORMAT, LWW_FORMAT,
};

/// One key's state. Its encoding starts with the versions component's format byte, so a
/// state of one mode is never read as the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Sibling versions and what the key has seen.
    Siblings(Container),
    /// The last write.
    Lww(LwwVersion),
}

impl KeyState {
    /// The bytes of the log record and of `ev_store`.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KeyState::Siblings(container) => container_to_bytes(container),
            KeyState::Lww(version) => {
                let mut out = Vec::new();
                encode_lww(version, &mut out);
                out
            }
        }
    }

    /// Decodes bytes of either mode; an error names what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyState, String> {
        match bytes.first() {
            Some(&CONTAINER_FORMAT) => decode_container(bytes)
                .map(KeyState::Siblings)
                .map_err(|err| err.to_string()),
            Some(&LWW_FORMAT) => decode_lww(bytes)
                .map(KeyState::Lww)
                .map_err(|err| err.to_string()),
            Some(other) => Err(format!("unknown state format {other}")),
            None => Err("empty state".to_owned()),
        }
    }

    /// Joins `other` into this state; whether anything changed, and how many dots were
    /// found reused (a bug the caller counts). States of different modes never meet in
    /// one cluster; if they do, this side is kept and the other is reported unmerged.
    pub fn merge(&mut self, other: &KeyState) -> Merged {
        match (self, other) {
            (KeyState::Siblings(mine), KeyState::Siblings(theirs)) => {
                let report = mine.merge(theirs);
                Merged {
                    changed: report.changed,
                    reused_dots: report.reused_dots,
                    mismatched: false,
                }
            }
            (KeyState::Lww(mine), KeyState::Lww(theirs)) => Merged {
                changed: mine.merge(theirs),
                reused_dots: 0,
                mismatched: false,
            },
            _ => Merged {
                changed: false,
                reused_dots: 0,
                mismatched: true,
            },
        }
    }

    /// Whether merging `other` in would change nothing.
    pub fn includes(&self, other: &KeyState) -> bool {
        match (self, other) {
            (KeyState::Siblings(mine), KeyState::Siblings(theirs)) => mine.includes(theirs),
            (KeyState::Lww(mine), KeyState::Lww(theirs)) => mine >= theirs,
            _ => false,
        }
    }

    /// Whether the key holds no value: no version, or only deletions.
    pub fn all_deleted(&self) -> bool {
        match self {
            KeyState::Siblings(container) => container.all_deleted(),
            KeyState::Lww(version) => version.payload.is_deleted(),
        }
    }

    /// How many versions the key holds.
    pub fn versions_len(&self) -> usize {
        match self {
            KeyState::Siblings(container) => container.len(),
            KeyState::Lww(_) => 1,
        }
    }

    /// The client answer of a read of `key` that found this state (`None`: nothing).
    pub fn answer(key: &str, state: Option<&KeyState>) -> EventualResponse {
        match state {
            None => EventualResponse::NotFound { context: None },
            Some(KeyState::Siblings(container)) => siblings_answer(key, container),
            Some(KeyState::Lww(version)) => match &version.payload {
                // Contexts mean nothing in this mode: a deletion answers no context.
                Payload::Deleted => EventualResponse::NotFound { context: None },
                Payload::Value(value) => EventualResponse::Read {
                    key: key.to_owned(),
                    versions: vec![version.answer_json()],
                    value: Some(value.clone()),
                    context: String::new(),
                },
            },
        }
    }
}

fn siblings_answer(key: &str, container: &Container) -> EventualResponse {
    let context = encode_context(container.context());
    if container.all_deleted() {
        return EventualResponse::NotFound {
            context: (!context.is_empty()).then_some(context),
        };
    }
    let versions: Vec<_> = container.versions().map(|v| v.answer_json()).collect();
    let value = match container.versions().collect::<Vec<_>>().as_slice() {
        [only] => match only.payload() {
            Payload::Value(value) => Some(value.clone()),
            Payload::Deleted => None,
        },
        _ => None,
    };
    EventualResponse::Read {
        key: key.to_owned(),
        versions,
        value,
        context,
    }
}

/// What one merge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The state changed (so it must be logged).
    pub changed: bool,
    /// Dots handed out twice (riak_kv issue 679), counted by the node.
    pub reused_dots: usize,
    /// The other state was of the other mode and was not merged.
    pub mismatched: bool,
}

impl Stored for KeyState {
    fn from_log_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        KeyState::from_bytes(&bytes)
    }
}
