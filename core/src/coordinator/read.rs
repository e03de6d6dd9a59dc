//! GETs: answered from a deciding transaction, the cache, or else a replica (the primary
//! first, then the secondary if the primary does not answer in time).

use crate::proto::{ClientResponse, ErrorCode, ErrorReply, ParticipantRequest, RequestId, TxOp};
use crate::ring::ServerId;
use crate::ReplyTo;

use super::{Coordinator, Timer};

/// A GET waiting for a replica.
#[derive(Clone, Debug)]
pub(super) struct Read {
    client: ReplyTo,
    key: String,
    /// The key's commit count when the read went out: the answer is cached only if no
    /// commit of the key was decided meanwhile.
    generation: u64,
    /// The replicas in the order they are asked.
    order: [ServerId; 2],
    /// How many of `order` were asked so far (1 or 2).
    attempt: u8,
}

impl Coordinator {
    pub(super) fn on_get(&mut self, client: ReplyTo, key: String) {
        if let Some(answer) = self.deciding_value(&key) {
            self.reply(client, answer);
            return;
        }
        if let Some(value) = self.cache.get(&key) {
            let value = value.clone();
            self.reply(client, ClientResponse::Value { key, value });
            return;
        }
        if self.reads.len() >= self.config.max_reads {
            self.reply(client, ClientResponse::error(ErrorCode::Overloaded));
            return;
        }
        let Some(pair) = self.ring.replicas_for_key(&key) else {
            self.reply(client, ClientResponse::error(ErrorCode::Unavailable));
            return;
        };
        // A server known to be down is asked last.
        let order = if !self.is_up(pair.primary) && self.is_up(pair.secondary) {
            [pair.secondary, pair.primary]
        } else {
            [pair.primary, pair.secondary]
        };
        let state = self.keys.entry(key.clone()).or_default();
        state.reads += 1;
        let read = Read {
            client,
            generation: state.generation,
            key,
            order,
            attempt: 0,
        };
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(id, read);
        self.ask_next_replica(id);
    }

    /// The answer a transaction gives while its commit is decided and not yet
    /// acknowledged by both replicas.
    fn deciding_value(&self, key: &str) -> Option<ClientResponse> {
        let tx = self.txs.get(&self.keys.get(key)?.active?)?;
        if tx.committed() != Some(true) {
            return None;
        }
        Some(match &tx.op {
            TxOp::Put { value } => ClientResponse::Value {
                key: key.to_owned(),
                value: value.clone(),
            },
            TxOp::Del => ClientResponse::error(ErrorCode::NotFound),
        })
    }

    /// Asks the next replica in the read's order, or answers `unavailable` if both were
    /// asked.
    fn ask_next_replica(&mut self, id: u64) {
        let Some(read) = self.reads.get_mut(&id) else {
            return;
        };
        let Some(&server) = read.order.get(read.attempt as usize) else {
            self.finish_read(
                id,
                ClientResponse::Error(ErrorReply::with_message(
                    ErrorCode::Unavailable,
                    "Unavailable: neither replica answered in time",
                )),
            );
            return;
        };
        read.attempt += 1;
        let attempt = read.attempt;
        let key = read.key.clone();
        self.send(server, Some(id), ParticipantRequest::Get { key });
        let at = self.now + self.config.timeout_ms;
        self.set_timer(at, Timer::ReadDeadline { read: id, attempt });
    }

    pub(super) fn on_read_deadline(&mut self, id: u64, attempt: u8) {
        if self.reads.get(&id).is_some_and(|r| r.attempt == attempt) {
            self.ask_next_replica(id);
        }
    }

    pub(super) fn on_read_answer(
        &mut self,
        server: ServerId,
        id: Option<RequestId>,
        answer: Result<(String, String), ErrorReply>,
    ) {
        let Some(RequestId::Unsigned(id)) = id else {
            return;
        };
        let Some(read) = self.reads.get(&id) else {
            return;
        };
        let asked = read.order.iter().take(read.attempt as usize);
        if !asked.clone().any(|&s| s == server) {
            return;
        }
        match answer {
            Ok((key, value)) if key == read.key => {
                let fresh = self
                    .keys
                    .get(&key)
                    .is_some_and(|state| state.generation == read.generation);
                if fresh {
                    self.cache.put(&key, value.clone());
                }
                self.finish_read(id, ClientResponse::Value { key, value });
            }
            Err(reply) if reply.code == ErrorCode::NotFound => {
                self.finish_read(id, ClientResponse::Error(reply));
            }
            // A replica that cannot answer (overloaded, a failed read, a confused answer):
            // try the other one at once.
            _ => {
                let both_asked = read.attempt as usize >= read.order.len();
                if both_asked {
                    self.finish_read(id, ClientResponse::error(ErrorCode::Unavailable));
                } else {
                    self.ask_next_replica(id);
                }
            }
        }
    }

    fn finish_read(&mut self, id: u64, answer: ClientResponse) {
        let Some(read) = self.reads.remove(&id) else {
            return;
        };
        if let Some(state) = self.keys.get_mut(&read.key) {
            state.reads -= 1;
        }
        self.forget_key_if_idle(&read.key);
        self.reply(read.client, answer);
    }
}
