//! Registration of KV servers, their liveness, and `statusreq`.

use crate::proto::{
    ClientResponse, ErrorCode, ErrorReply, ParticipantRequest, Register, RegisterResponse,
    ServerStatus,
};
use crate::ring::ServerId;
use crate::Ts;

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

    pub(super) fn on_register(&mut self, from: crate::ReplyTo, msg: Register) {
        let Register { id, addr } = msg;
        let answer = if let Err(why) = check_addr(&addr) {
            refused(format!("bad address {addr:?}: {why}"))
        } else if let Some(state) = self.servers.get_mut(&id) {
            state.last_heard = self.now;
            // The same address again is a refresh: nothing was lost in between.
            if state.addr != addr {
                state.addr = addr.clone();
                self.outputs
                    .push_back(CoordinatorOutput::ServerAddr { server: id, addr });
                // A restarted server lost what was in flight to it: send it again now.
                self.driver.resend_to(self.now, id);
                self.drain_driver();
            }
            RegisterResponse::Ack
        } else if self.ring.len() >= self.config.expected_servers {
            refused(format!(
                "the ring is complete: {} of {} servers registered",
                self.ring.len(),
                self.config.expected_servers
            ))
        } else {
            self.ring.insert(id);
            self.servers.insert(
                id,
                ServerState {
                    addr: addr.clone(),
                    last_heard: self.now,
                },
            );
            self.outputs
                .push_back(CoordinatorOutput::ServerAddr { server: id, addr });
            if self.timers.deadline(&Timer::Heartbeat).is_none() {
                let at = self.now + self.config.heartbeat_interval_ms;
                self.timers.set(Timer::Heartbeat, at);
            }
            RegisterResponse::Ack
        };
        self.outputs.push_back(CoordinatorOutput::RegisterReply {
            to: from,
            msg: answer,
        });
    }

    pub(super) fn on_heartbeat(&mut self) {
        let ids: Vec<ServerId> = self.servers.keys().copied().collect();
        for id in ids {
            self.send(id, None, ParticipantRequest::Ping);
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
