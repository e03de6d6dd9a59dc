//! GETs, linearizable without a leader: a replica answers from its committed copy, and
//! while the key is prepared there it waits for the decision (at most the timeout, then
//! `unavailable`). This is enough because a commit needs every replica's `ready`: until
//! a replica has prepared, the write is visible nowhere; from then until its decision
//! reaches that replica, the replica holds the key locked and answers nothing.
//!
//! A node that is not a replica asks one, then the next if the first does not answer in
//! time (at most two, so the client hears within two timeouts).

use crate::proto::peer::{PeerBody, PeerReply, ReadResult};
use crate::proto::{ClientResponse, ErrorCode, ErrorReply};
use crate::{ReplyTo, Ts};

use super::{LogReader, Peer, Timer};

/// Replicas a non-replica asks before it answers `unavailable`.
const MAX_READ_ATTEMPTS: usize = 2;

/// Who waits for a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    /// A client of this node.
    Client(ReplyTo),
    /// Another node's read `rid`.
    Peer(u64, u64),
}

/// A read waiting.
#[derive(Clone, Debug)]
pub(super) struct Read {
    pub(super) reader: Reader,
    pub(super) key: String,
    /// `None`: waiting here for the key's decision; else the replicas to ask, in order,
    /// and how many were asked.
    pub(super) remote: Option<(Vec<u64>, usize)>,
}

impl<R: LogReader> Peer<R> {
    pub(super) fn on_get(&mut self, from: ReplyTo, key: String) {
        if self.reads.len() >= self.config.max_reads {
            let answer = ClientResponse::error(ErrorCode::Overloaded);
            return self.reply(from, PeerReply::Client(answer));
        }
        if self.is_replica(&key) {
            return self.read_here(Reader::Client(from), key);
        }
        let replicas = self.replicas(&key);
        let id = self.new_read(Reader::Client(from), key, Some((replicas, 0)));
        self.ask_next_replica(id);
    }

    pub(super) fn on_peer_read(&mut self, from: u64, rid: u64, key: String) {
        if !self.is_replica(&key) {
            let result = ReadResult::Error(ErrorCode::Unavailable);
            return self.send(from, PeerBody::ReadAnswer { rid, result });
        }
        // Without room the asker hears nothing and asks another replica.
        if self.reads.len() < self.config.max_reads {
            self.read_here(Reader::Peer(from, rid), key);
        }
    }

    /// Answers from the committed copy now, or waits for the key's decision.
    fn read_here(&mut self, reader: Reader, key: String) {
        if self.participant.lock_holder(&key).is_none() {
            let result = self.committed(&key);
            return self.answer_read(reader, &key, result);
        }
        let id = self.new_read(reader, key, None);
        let at = self.now + self.config.timeout_ms;
        self.timers.set(Timer::Read(id), at);
    }

    fn new_read(&mut self, reader: Reader, key: String, remote: Option<(Vec<u64>, usize)>) -> u64 {
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(
            id,
            Read {
                reader,
                key,
                remote,
            },
        );
        id
    }

    /// This node's committed copy of `key`.
    fn committed(&mut self, key: &str) -> ReadResult {
        match self.store.get(key) {
            Ok(Some(value)) => ReadResult::Value(value),
            Ok(None) => ReadResult::NotFound,
            Err(_) => ReadResult::Error(ErrorCode::Internal),
        }
    }

    /// `localreq`: this node's committed copy, never waiting; `unavailable` off replicas.
    pub(super) fn local_copy(&mut self, key: &str) -> ClientResponse {
        if !self.is_replica(key) {
            return ClientResponse::Error(ErrorReply::with_message(
                ErrorCode::Unavailable,
                format!(
                    "Unavailable: node {} is not a replica of this key",
                    self.config.id
                ),
            ));
        }
        let result = self.committed(key);
        client_answer(key, result)
    }

    /// A key's decision is durable here: the reads waiting for it are answered.
    pub(super) fn wake_reads(&mut self, key: &str) {
        if self.participant.lock_holder(key).is_some() {
            return;
        }
        let waiting: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.remote.is_none() && r.key == key)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(read) = self.reads.remove(&id) {
                self.timers.cancel(&Timer::Read(id));
                let result = self.committed(key);
                self.answer_read(read.reader, key, result);
            }
        }
    }

    fn ask_next_replica(&mut self, id: u64) {
        let Some(read) = self.reads.get_mut(&id) else {
            return;
        };
        let Some((replicas, asked)) = read.remote.as_mut() else {
            return;
        };
        let next = replicas.get(*asked).copied();
        match next.filter(|_| *asked < MAX_READ_ATTEMPTS) {
            Some(node) => {
                *asked += 1;
                let key = read.key.clone();
                self.send(node, PeerBody::Read { rid: id, key });
                let at: Ts = self.now + self.config.timeout_ms + self.config.resend.wait_ms_min;
                self.timers.set(Timer::Read(id), at);
            }
            None => self.give_up_read(id),
        }
    }

    pub(super) fn on_read_deadline(&mut self, id: u64) {
        match self.reads.get(&id).map(|r| r.remote.is_some()) {
            Some(true) => self.ask_next_replica(id),
            Some(false) => self.give_up_read(id),
            None => {}
        }
    }

    fn give_up_read(&mut self, id: u64) {
        if let Some(read) = self.reads.remove(&id) {
            self.timers.cancel(&Timer::Read(id));
            let result = ReadResult::Error(ErrorCode::Unavailable);
            self.answer_read(read.reader, &read.key, result);
        }
    }

    pub(super) fn on_read_answer(&mut self, from: u64, rid: u64, result: ReadResult) {
        let Some(read) = self.reads.get(&rid) else {
            return;
        };
        let asked_there = read
            .remote
            .as_ref()
            .is_some_and(|(replicas, asked)| replicas.iter().take(*asked).any(|&n| n == from));
        if !asked_there {
            return;
        }
        if let ReadResult::Error(_) = result {
            return self.ask_next_replica(rid);
        }
        if let Some(read) = self.reads.remove(&rid) {
            self.timers.cancel(&Timer::Read(rid));
            self.answer_read(read.reader, &read.key, result);
        }
    }

    fn answer_read(&mut self, reader: Reader, key: &str, result: ReadResult) {
        match reader {
            Reader::Client(to) => {
                let answer = client_answer(key, result);
                self.reply(to, PeerReply::Client(answer));
            }
            Reader::Peer(node, rid) => self.send(node, PeerBody::ReadAnswer { rid, result }),
        }
    }
}

fn client_answer(key: &str, result: ReadResult) -> ClientResponse {
    match result {
        ReadResult::Value(value) => ClientResponse::Value {
            key: key.to_owned(),
            value,
        },
        ReadResult::NotFound => ClientResponse::error(ErrorCode::NotFound),
        ReadResult::Error(ErrorCode::Unavailable) => {
            ClientResponse::Error(ErrorReply::with_message(
                ErrorCode::Unavailable,
                "Unavailable: no replica answered in time",
            ))
        }
        ReadResult::Error(code) => ClientResponse::error(code),
    }
}
