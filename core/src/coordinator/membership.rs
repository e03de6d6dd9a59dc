//! Registration of KV servers, their liveness, and `statusreq`.

use crate::proto::{
    ClientResponse, ErrorCode, ErrorReply, ParticipantRequest, Register, RegisterResponse,
    ServerStatus,
};
use crate::ring::ServerId;
use crate::Ts;

use super::durable::Deferred;
use super::record::CoordinatorRecord;
use super::{Coordinator, CoordinatorOutput, Timer};

/// The longest address a server may register.
const MAX_ADDR_BYTES: usize = 256;

/// What the coordinator knows of one registered server.
#[derive(Clone, Debug)]
pub(super) struct ServerState {
    pub(super) addr: String,
    /// When it last sent anything.
    pub(super) last_heard: Ts,
}

impl Coordinator {
    /// Whether `server` sent anything within the down time.
    pub(super) fn is_up(&self, server: ServerId) -> bool {
        self.servers
            .get(&server)
            .is_some_and(|s| self.now.saturating_sub(s.last_heard) < self.config.down_after_ms)
    }

    pub(super) fn heard_from(&mut self, server: ServerId) {
        if let Some(state) = self.servers.get_mut(&server) {
            state.last_heard = self.now;
        }
    }

    /// A registration: a new member or a new address is written to the log and
    /// acknowledged once durable; a refresh at the same address at once.
    pub(super) fn on_register(&mut self, from: crate::ReplyTo, msg: Register) {
        let Register { id, addr } = msg;
        if let Err(why) = check_addr(&addr) {
            return self.answer_register(from, refused(format!("bad address {addr:?}: {why}")));
        }
        let known = self.servers.get(&id).map(|state| state.addr == addr);
        if known.is_none() && self.ring.len() >= self.config.expected_servers {
            let why = format!(
                "the ring is complete: {} of {} servers registered",
                self.ring.len(),
                self.config.expected_servers
            );
            return self.answer_register(from, refused(why));
        }
        if known == Some(true) {
            self.heard_from(id);
            return self.answer_register(from, RegisterResponse::Ack);
        }
        if !self.has_room_to_defer(1) {
            let busy = RegisterResponse::Error(ErrorReply::new(ErrorCode::Overloaded));
            return self.answer_register(from, busy);
        }
        let record = CoordinatorRecord::Member {
            id,
            addr: addr.clone(),
        };
        let token = self.append(&record);
        self.admit(id, addr);
        self.defer(token, Deferred::RegisterAck(from));
    }

    /// Puts `id` on the ring at `addr`, or moves it there if it restarted elsewhere.
    fn admit(&mut self, id: ServerId, addr: String) {
        let state = ServerState {
            addr: addr.clone(),
            last_heard: self.now,
        };
        let restarted = self.servers.insert(id, state).is_some();
        self.ring.insert(id);
        self.outputs
            .push_back(CoordinatorOutput::ServerAddr { server: id, addr });
        if restarted {
            // A restarted server lost what was in flight to it: send it again now. And
            // what it holds in doubt keeps keys locked: ask now, not at the next
            // heartbeat (a question sent meanwhile went to its old address).
            self.driver.resend_to(self.now, id);
            self.drain_driver();
            self.send(id, None, ParticipantRequest::InDoubt);
        }
        if self.timers.deadline(&Timer::Heartbeat).is_none() {
            let at = self.now + self.config.heartbeat_interval_ms;
            self.timers.set(Timer::Heartbeat, at);
        }
    }

    fn answer_register(&mut self, to: crate::ReplyTo, msg: RegisterResponse) {
        self.outputs
            .push_back(CoordinatorOutput::RegisterReply { to, msg });
    }

    pub(super) fn on_heartbeat(&mut self) {
        let ids: Vec<ServerId> = self.servers.keys().copied().collect();
        for id in ids {
            // Asking what a server holds in doubt is also how its life is checked.
            self.send(id, None, ParticipantRequest::InDoubt);
        }
        let at = self.now + self.config.heartbeat_interval_ms;
        self.timers.set(Timer::Heartbeat, at);
    }

    pub(super) fn status(&self) -> ClientResponse {
        let servers = self
            .servers
            .iter()
            .map(|(&id, state)| ServerStatus {
                id,
                addr: state.addr.clone(),
                up: self.is_up(id),
            })
            .collect();
        ClientResponse::Status {
            servers,
            expected: self.config.expected_servers as u64,
        }
    }
}

fn refused(message: String) -> RegisterResponse {
    RegisterResponse::Error(ErrorReply::with_message(ErrorCode::Refused, message))
}

/// A registered address must look like `host:port`: the coordinator will connect there.
fn check_addr(addr: &str) -> Result<(), &'static str> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err("longer than 256 bytes");
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains white space or control characters");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() {
        return Err("empty host");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be 1..65535"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_addr;

    #[test]
    fn addresses_must_be_host_and_port() {
        assert!(check_addr("127.0.0.1:4000").is_ok());
        assert!(check_addr("[::1]:4000").is_ok());
        assert!(check_addr("node-3.local:65535").is_ok());
        for bad in ["", "host", ":80", "h:0", "h:70000", "h:x", "a b:1", "h:1\n"] {
            assert!(check_addr(bad).is_err(), "{bad:?}");
        }
        assert!(check_addr(&format!("{}:1", "h".repeat(300))).is_err());
    }
}
