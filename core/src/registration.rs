//! A KV server's side of registration: announce the ID and address to the coordinator,
//! again with doubling waits until it answers, again whenever the connection to the
//! coordinator is lost (the coordinator may have restarted and forgotten the address),
//! and again every refresh interval while registered: a registration from an earlier run
//! of the server, delayed in the network, may reach the coordinator after the current one
//! and point it at a dead address; the refresh corrects that within one interval.

use std::collections::VecDeque;

use crate::proto::{ErrorCode, Register, RegisterResponse};
use crate::rng::DetRng;
use crate::role::Role;
use crate::time::{Attempts, Backoff};
use crate::Ts;

/// How registration retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The waits between registrations while the coordinator does not answer: many
    /// servers restarted together spread out thanks to the jitter.
    pub retry: Backoff,
    /// How often a registered server registers again.
    pub refresh_ms: u64,
    /// The seed of the retry jitter.
    pub seed: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            retry: Backoff {
                wait_ms_min: 100,
                wait_ms_max: 5000,
            },
            refresh_ms: 2000,
            seed: 0,
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
    /// The coordinator acknowledged (said once, and again only after a disconnect).
    Registered,
    /// The coordinator refused for good (a new ID when the ring is complete, a bad
    /// address): the server cannot join and should stop with this message.
    Refused(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Waiting {
        next_attempt_at: Ts,
        attempts: Attempts,
    },
    Registered {
        refresh_at: Ts,
    },
    Refused,
}

/// The registration state machine of one KV server.
#[derive(Clone, Debug)]
pub struct Registrar {
    msg: Register,
    config: RegistrationConfig,
    state: State,
    /// Whether the coordinator acknowledged since the start or the last disconnect.
    registered: bool,
    now: Ts,
    rng: DetRng,
    outputs: VecDeque<RegistrationOutput>,
}

impl Registrar {
    /// A registrar that sends its first registration at `now`.
    pub fn new(now: Ts, msg: Register, config: RegistrationConfig) -> Self {
        let mut registrar = Self {
            msg,
            config,
            state: State::Refused,
            registered: false,
            now,
            rng: DetRng::new(config.seed),
            outputs: VecDeque::new(),
        };
        registrar.attempt(now, config.retry.begin());
        registrar
    }

    /// Sends the registration and waits for an answer until the next attempt.
    fn attempt(&mut self, now: Ts, mut attempts: Attempts) {
        self.outputs
            .push_back(RegistrationOutput::Send(self.msg.clone()));
        let wait_ms = self.config.retry.next_wait_ms(&mut attempts, &mut self.rng);
        self.state = State::Waiting {
            next_attempt_at: now.saturating_add(wait_ms),
            attempts,
        };
    }

    fn on_input(&mut self, now: Ts, input: RegistrationInput) {
        if self.state == State::Refused {
            return;
        }
        match input {
            RegistrationInput::Answer(RegisterResponse::Ack) => {
                if matches!(self.state, State::Waiting { .. }) {
                    self.state = State::Registered {
                        refresh_at: now + self.config.refresh_ms,
                    };
                }
                if !self.registered {
                    self.registered = true;
                    self.outputs.push_back(RegistrationOutput::Registered);
                }
            }
            RegistrationInput::Answer(RegisterResponse::Error(reply))
                if reply.code == ErrorCode::Refused =>
            {
                self.state = State::Refused;
                self.registered = false;
                self.outputs
                    .push_back(RegistrationOutput::Refused(reply.message));
            }
            RegistrationInput::Answer(RegisterResponse::Error(_)) => {
                // Any other error (overloaded, malformed from a confused peer) passes:
                // try again after the usual wait.
                if let State::Registered { .. } = self.state {
                    self.attempt(now, self.config.retry.begin());
                }
            }
            RegistrationInput::Disconnected => {
                self.registered = false;
                if matches!(self.state, State::Registered { .. }) {
                    // Register again at once: the coordinator may be back already.
                    self.attempt(now, self.config.retry.begin());
                }
            }
            RegistrationInput::Tick => match self.state {
                State::Waiting {
                    next_attempt_at,
                    attempts,
                } if now >= next_attempt_at => {
                    self.attempt(now, attempts);
                }
                State::Registered { refresh_at } if now >= refresh_at => {
                    self.attempt(now, self.config.retry.begin());
                }
                _ => {}
            },
        }
    }

    /// Whether the coordinator acknowledged since the start or the last disconnect.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// The registration this registrar sends.
    pub fn registration(&self) -> &Register {
        &self.msg
    }
}

impl Role for Registrar {
    type Input = RegistrationInput;
    type Output = RegistrationOutput;

    fn handle(&mut self, now: Ts, input: RegistrationInput) {
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
        self.on_input(now, input);
    }

    fn poll_output(&mut self) -> Option<RegistrationOutput> {
        self.outputs.pop_front()
    }

    /// When to tick next: the next attempt or the next refresh.
    fn poll_timeout(&self) -> Option<Ts> {
        match self.state {
            State::Waiting {
                next_attempt_at, ..
            } => Some(next_attempt_at),
            State::Registered { refresh_at } => Some(refresh_at),
            State::Refused => None,
        }
    }

    /// A refused registrar sends nothing more; a registered one is acknowledged.
    fn check_invariants(&self) {
        if self.state == State::Refused {
            assert!(!self.registered, "refused yet registered");
        }
        if let State::Registered { .. } = self.state {
            assert!(
                self.registered,
                "registered state without an acknowledgement"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ErrorReply;
    use crate::role::Role;

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
        // Doubling waits from 100 ms, each stretched by up to half by the jitter.
        let gaps: Vec<u64> = std::iter::once(0)
            .chain(sends.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect();
        for (gap, base) in gaps.iter().zip([100, 200, 400, 800]) {
            assert!((base..=base + base / 2).contains(gap), "{gaps:?}");
        }
        r.handle(now, RegistrationInput::Answer(RegisterResponse::Ack));
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Registered]);
        assert!(r.is_registered());
        // Registered: it refreshes the registration every interval, quietly.
        assert_eq!(r.poll_timeout(), Some(now + 2000));
        r.handle(now + 2000, RegistrationInput::Tick);
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Send(msg.clone())]);
        r.handle(now + 2001, RegistrationInput::Answer(RegisterResponse::Ack));
        assert!(drain(&mut r).is_empty());
        assert!(r.is_registered());
        r.handle(now + 2002, RegistrationInput::Disconnected);
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Send(msg)]);
        assert!(!r.is_registered());
    }

    #[test]
    fn errors_other_than_refused_are_retried() {
        let msg = Register {
            id: 5,
            addr: "h:1".into(),
        };
        let mut r = Registrar::new(0, msg.clone(), RegistrationConfig::default());
        drain(&mut r);
        let busy = ErrorReply::new(ErrorCode::Overloaded);
        r.handle(1, RegistrationInput::Answer(RegisterResponse::Error(busy)));
        assert!(drain(&mut r).is_empty());
        let retry_at = r.poll_timeout().unwrap();
        assert!((100..=150).contains(&retry_at), "{retry_at}");
        r.handle(retry_at, RegistrationInput::Tick);
        assert_eq!(drain(&mut r), vec![RegistrationOutput::Send(msg)]);
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
