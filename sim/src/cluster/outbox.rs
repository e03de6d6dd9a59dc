//! What a role asks the world to do after it handled one input. Roles never touch the
//! network, the event queue or the world's randomness themselves: they fill an
//! [`Outbox`], and the driver carries it out, so a role stays a thin adapter between the
//! core and the simulated machine.

use ringkv_core::proto::{ClientResponse, RequestId};

use crate::network::Message;

/// A step in the life of a client request at the node serving it, recorded for the
/// checks of program order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServedStep {
    /// The request, with this id, was handed to the role's core.
    Dispatched(Option<RequestId>),
    /// The core answered the request with this id.
    Answered(Option<RequestId>, ClientResponse),
}

/// The effects of one step of one node.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to hand to the network, in order.
    pub sends: Vec<Message>,
    /// A sync of the node's disk started; the driver decides how long it takes.
    pub sync_started: bool,
    /// Client requests held behind earlier ones of their connection, for the counters.
    pub held_requests: u64,
    /// The node rewrote its log in this step, for the counters.
    pub log_compactions: u64,
    /// A KV server installed a merge of its sealed segments in this step.
    pub segment_merges: u64,
    /// PUTs the coordinator (or a peer node) absorbed into another PUT of the same key
    /// in this step.
    pub absorbed_updates: u64,
    /// Client requests handed to the core and answered by it, in the order it happened.
    pub served: Vec<ServedStep>,
    /// Things worth a line in the trace.
    pub notes: Vec<String>,
    /// Bugs noticed: undecodable lines, answers to nobody, refused registrations.
    pub anomalies: Vec<String>,
    /// A commit the role coordinates became durable (a peer node), or was answered or
    /// sent its phase 2 (the coordinator) in this step: a moment the fault schedule may
    /// crash it at, midway through sending.
    pub decided: bool,
}

impl Outbox {
    /// Queues a message.
    pub fn send(&mut self, msg: Message) {
        self.sends.push(msg);
    }

    /// Records a bug the world noticed.
    pub fn anomaly(&mut self, text: String) {
        self.anomalies.push(text);
    }

    /// Records something for the trace.
    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }
}
