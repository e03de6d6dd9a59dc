//! Two-phase commit as two components any role can embed: the [`Participant`] (durable
//! vote before `ready`, key locks, remembered decisions, presumed abort, in-doubt
//! recovery) and the [`Driver`] (one transaction over any number of participants: a vote
//! tally, a phase-1 deadline, phase-2 resends with backoff, aborts of stray votes).
//!
//! Neither sends anything or touches the log itself: the role that embeds them turns
//! their events into its own wire messages and log records.

mod driver;
mod outcome;
mod participant;
mod tally;

pub use driver::{Driver, DriverConfig, DriverEvent};
pub use outcome::Outcome;
pub use participant::{DecisionCheck, Finished, Participant, PrepareCheck};
pub use tally::VoteTally;

use crate::proto::ErrorCode;

/// The node a participant runs on, as the role names it (a server's ring ID).
pub type NodeId = u64;

/// A participant's phase-1 vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    /// Ready to commit: the prepare is durable.
    Ready,
    /// A vote to abort, with its code and its reason for people.
    Refuse(ErrorCode, String),
}
