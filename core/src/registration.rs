//! A KV server's side of registration: announce the ID and address to the coordinator,
//! again with doubling waits until it answers, and again whenever the connection to the
//! coordinator is lost (the coordinator may have restarted and forgotten the address).

use std::collections::VecDeque;

use crate::proto::{Register, RegisterResponse};
use crate::Ts;

/// How registration retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The first wait before registering again without an answer.
    pub retry_min_ms: u64,
    /// The longest wait between two registrations.
    pub retry_max_ms: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            retry_min_ms: 100,
            retry_max_ms: 5000,
        }
    }
}

/// What the registrar is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationInput {
    /// The coordinator answered.
    Answer(RegisterResponse),
    /// The connection to the coordinator closed or could not be opened.
    Disconnected,
    /// Time passed.
    Tick,
}

/// What the registrar asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationOutput {
    /// Send this registration to the coordinator (opening a connection if needed).
    Send(Register),
    /// The coordinator acknowledged.
    Registered,
    /// The coordinator refused for good (a new ID when the ring is complete, a bad
    /// address): the server cannot join and should stop with this message.
    Refused(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Waiting { next_attempt_at: Ts, wait_ms: u64 },
    Registered,
    Refused,
}

/// The registration state machine of one KV server.
#[derive(Clone, Debug)]
pub struct Registrar {
    msg: Register,
    config: RegistrationConfig,
    state: State,
    outputs: VecDeque<RegistrationOutput>,
}

impl Registrar {
    /// A registrar that sends its first registration at `now`.
    pub fn new(now: Ts, msg: Register, config: RegistrationConfig) -> Self {
        let mut registrar = Self {
            msg,
            config,
            state: State::Registered,
            outputs: VecDeque::new(),
        };
        registrar.attempt(now, config.retry_min_ms);
        registrar
    }

    fn attempt(&mut self, now: Ts, wait_ms: u64) {
        self.outputs
            .push_back(RegistrationOutput::Send(self.msg.clone()));
        self.state = State::Waiting {
            next_attempt_at: now + wait_ms,
            wait_ms,
        };
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, now: Ts, input: RegistrationInput) {
        if self.state == State::Refused {
            return;
        }
        match input {
            RegistrationInput::Answer(RegisterResponse::Ack) => {
                if self.state != State::Registered {
                    self.state = State::Registered;
                    self.outputs.push_back(RegistrationOutput::Registered);
                }
            }
            RegistrationInput::Answer(RegisterResponse::Error(reply)) => {
                self.state = State::Refused;
                self.outputs
                    .push_back(RegistrationOutput::Refused(reply.message));
            }
            RegistrationInput::Disconnected => {
                if self.state == State::Registered {
                    // Register again at once: the coordinator may be back already.
                    self.attempt(now, self.config.retry_min_ms);
                }
            }
            RegistrationInput::Tick => {
                if let State::Waiting {
                    next_attempt_at,
                    wait_ms,
                } = self.state
                {
                    if now >= next_attempt_at {
                        let next_wait_ms = (wait_ms * 2).min(self.config.retry_max_ms);
                        self.attempt(now, next_wait_ms);
                    }
                }
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<RegistrationOutput> {
        self.outputs.pop_front()
    }

    /// When to tick next, while waiting for an answer.
    pub fn poll_timeout(&self) -> Option<Ts> {
        match self.state {
            State::Waiting {
                next_attempt_at, ..
            } => Some(next_attempt_at),
            _ => None,
        }
    }

    /// Whether the coordinator acknowledged the latest registration.
    pub fn is_registered(&self) -> bool {
        self.state == State::Registered
    }

    /// The registration this registrar sends.
    pub fn registration(&self) -> &Register {
        &self.msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ErrorCode, ErrorReply};

    fn drain(r: &mut Registrar) -> Vec<RegistrationOutput> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    #[test]
    fn registers_with_doubling_waits_until_acknowledged_and_again_after_a_disconnect() {
        let msg = Register {
            id: 5,
            addr: "h:1".into(),
        };
        let mut r = Registrar::new(0, msg.clone(), RegistrationConfig::default());
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Send(msg.clone())]);
        let mut sends = Vec::new();
        let mut now = 0;
        while sends.len() < 4 {
            now = r.poll_timeout().unwrap();
            r.handle(now, RegistrationInput::Tick);
            if !drain(&mut r).is_empty() {
                sends.push(now);
            }
        }
        assert_eq!(sends, vec![100, 300, 700, 1500]);
        r.handle(now, RegistrationInput::Answer(RegisterResponse::Ack));
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Registered]);
        assert!(r.is_registered());
        assert_eq!(r.poll_timeout(), None);
        r.handle(now + 1, RegistrationInput::Disconnected);
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Send(msg)]);
        assert!(!r.is_registered());
    }

    #[test]
    fn a_refusal_is_final() {
        let msg = Register {
            id: 5,
            addr: "h:1".into(),
        };
        let mut r = Registrar::new(0, msg, RegistrationConfig::default());
        drain(&mut r);
        let refusal = ErrorReply::with_message(ErrorCode::Refused, "ring complete");
        r.handle(
            1,
            RegistrationInput::Answer(RegisterResponse::Error(refusal)),
        );
        assert_eq!(
            drain(&mut r),
            vec![RegistrationOutput::Refused("ring complete".into())]
        );
        r.handle(10_000, RegistrationInput::Tick);
        r.handle(10_000, RegistrationInput::Disconnected);
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.poll_timeout(), None);
    }
}
