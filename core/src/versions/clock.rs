//! Clocks as answers show them (PROTOCOL.md section 2): a JSON object from actor to
//! counter in siblings mode, `{"ts":MS,"node":ID}` in last-write-wins mode.

use std::fmt;

use serde_json::{Map, Value};

use super::actor::{Actor, MAX_COUNTER};
use super::container::{Payload, Version};
use super::vv::VersionVector;
use super::MAX_ACTORS;

/// The CLOCK object of `vv`: actor (as `"17"` or `"17.2"`) to its highest counter. Keys
/// come out in one fixed order, so the same state always gives the same bytes.
pub fn clock_json(vv: &VersionVector) -> Value {
    let map: Map<String, Value> = vv
        .to_clock()
        .iter()
        .map(|(actor, counter)| (actor.to_string(), Value::from(counter)))
        .collect();
    Value::Object(map)
}

/// Why a JSON value is not a CLOCK object, for checkers that read clocks from answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockJsonError {
    /// Not a JSON object.
    NotAnObject,
    /// More than [`MAX_ACTORS`] entries.
    TooManyActors,
    /// A key is not a canonical actor.
    BadActor,
    /// A counter is not an integer from 1 to [`MAX_COUNTER`].
    BadCounter,
}

impl fmt::Display for ClockJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAnObject => "clock is not a JSON object",
            Self::TooManyActors => "clock has too many actors",
            Self::BadActor => "clock key is not an actor",
            Self::BadCounter => "clock counter is not an integer from 1 to 2^53 - 1",
        })
    }
}

impl std::error::Error for ClockJsonError {}

/// Reads a CLOCK object back into a vector, so checkers can compare the clocks that
/// answers showed. The inverse of [`clock_json`]; strict and bounded.
pub fn parse_clock_json(value: &Value) -> Result<VersionVector, ClockJsonError> {
    let map = value.as_object().ok_or(ClockJsonError::NotAnObject)?;
    if map.len() > MAX_ACTORS {
        return Err(ClockJsonError::TooManyActors);
    }
    let mut vv = VersionVector::new();
    for (key, counter) in map {
        let actor: Actor = key.parse().map_err(|_| ClockJsonError::BadActor)?;
        match counter.as_u64() {
            Some(c) if (1..=MAX_COUNTER).contains(&c) => vv.raise(actor, c),
            _ => return Err(ClockJsonError::BadCounter),
        }
    }
    Ok(vv)
}

impl Version {
    /// The VERSION object of an answer: `{"value":V,"clock":CLOCK}`, or
    /// `{"deleted":true,"clock":CLOCK}` for a deletion.
    pub fn answer_json(&self) -> Value {
        let mut map = Map::new();
        match self.payload() {
            Payload::Value(value) => map.insert("value".to_owned(), Value::from(value.as_str())),
            Payload::Deleted => map.insert("deleted".to_owned(), Value::Bool(true)),
        };
        map.insert("clock".to_owned(), clock_json(&self.clock()));
        Value::Object(map)
    }
}

/// A last-write-wins stamp (`--conflicts lww`): the coordinator's clock time and its node
/// ID. Ordered by time, then node, so two stamps from different nodes never tie, and every
/// replica keeps the same write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The coordinator's `now` when it stamped the write, in milliseconds.
    pub ts_ms: u64,
    /// The coordinator's node ID, which breaks ties between nodes.
    pub node: u64,
}

impl Stamp {
    /// The stamp for a write coordinated by `node` at `now_ms`, kept strictly above
    /// `previous` (this node's last stamp) so two writes through one node within one
    /// millisecond, or across a clock step back, still have distinct, ordered stamps.
    pub fn next(now_ms: u64, node: u64, previous: Option<Stamp>) -> Stamp {
        let floor = previous.map_or(0, |p| p.ts_ms.saturating_add(1));
        Stamp {
            ts_ms: now_ms.max(floor),
            node,
        }
    }

    /// The CLOCK object of a last-write-wins answer: `{"ts":MS,"node":ID}`.
    pub fn clock_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("ts".to_owned(), Value::from(self.ts_ms));
        map.insert("node".to_owned(), Value::from(self.node));
        Value::Object(map)
    }
}

/// A key's state in last-write-wins mode: the write with the highest stamp.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LwwVersion {
    /// When and where the write was stamped.
    pub stamp: Stamp,
    /// What it wrote.
    pub payload: Payload,
}

impl LwwVersion {
    /// Keeps the higher of the two writes, comparing the payload only if a stamp was ever
    /// reused, so the merge is a join (commutative, associative, idempotent) in every case.
    /// Returns whether this side changed.
    pub fn merge(&mut self, other: &LwwVersion) -> bool {
        if *other > *self {
            *self = other.clone();
            true
        } else {
            false
        }
    }

    /// The VERSION object of an answer in last-write-wins mode.
    pub fn answer_json(&self) -> Value {
        let mut map = Map::new();
        match &self.payload {
            Payload::Value(value) => map.insert("value".to_owned(), Value::from(value.as_str())),
            Payload::Deleted => map.insert("deleted".to_owned(), Value::Bool(true)),
        };
        map.insert("clock".to_owned(), self.stamp.clock_json());
        Value::Object(map)
    }
}
