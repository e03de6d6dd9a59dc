//! GETs: answered from a deciding transaction, the cache, or else a replica (the primary
//! first, then the secondary if the primary does not answer in time).

use crate::buggify::FaultSite;
use crate::proto::{ClientResponse, ErrorCode, ErrorReply, ParticipantRequest, RequestId, TxOp};
use crate::ring::ServerId;
use crate::ReplyTo;

use super::txn::REPLICAS_PER_KEY;
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
    order: Vec<ServerId>,
    /// How many of `order` were asked so far.
    attempt: usize,
}

impl Read {
    pub(super) fn key(&self) -> &str {
        &self.key
    }
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
        let mut order = self.ring.preference_list(&key, REPLICAS_PER_KEY);
        if order.len() < REPLICAS_PER_KEY {
            self.reply(client, ClientResponse::error(ErrorCode::Unavailable));
            return;
        }
        // A server known to be down is asked last; any replica holds every decided
        // commit once both acknowledged it, so the order is free.
        let secondary_first = self.buggify.fires(self.now, FaultSite::SecondaryFirst);
        let swap = match order.as_slice() {
            [first, second, ..] => secondary_first || (!self.is_up(*first) && self.is_up(*second)),
            _ => false,
        };
        if swap {
            order.swap(0, 1);
        }
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

    /// The answer a transaction gives while its commit is final and not yet
    /// acknowledged by both replicas; or, while a transaction staged before a restart is
    /// being decided again, `unavailable` (its client may have heard `Success`, so
    /// neither the old value nor the new one may be shown yet).
    fn deciding_value(&self, key: &str) -> Option<ClientResponse> {
        let txid = self.keys.get(key)?.active?;
        let update = self.driver.payload(txid)?;
        if update.resolving {
            return Some(ClientResponse::Error(ErrorReply::with_message(
                ErrorCode::Unavailable,
                "Unavailable: the key's last update before the coordinator restarted is \
                 still being decided; retry",
            )));
        }
        if !update.visible {
            return None;
        }
        Some(match &update.op {
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
        let Some(&server) = read.order.get(read.attempt) else {
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
        let key = read.key.clone();
        self.send(server, Some(id), ParticipantRequest::Get { key });
        let at = self.now.saturating_add(self.config.timeout_ms);
        self.timers.set(Timer::Read(id), at);
    }

    pub(super) fn on_read_deadline(&mut self, id: u64) {
        self.ask_next_replica(id);
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
        let asked = read.order.iter().take(read.attempt);
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
                let all_asked = read.attempt >= read.order.len();
                if all_asked {
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
        self.timers.cancel(&Timer::Read(id));
        if let Some(state) = self.keys.get_mut(&read.key) {
            state.reads -= 1;
        }
        self.forget_key_if_idle(&read.key);
        self.reply(read.client, answer);
    }
}
