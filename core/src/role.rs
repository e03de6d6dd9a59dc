//! The contract every role of the core keeps, so that the simulator and the shells drive
//! any of them the same way (after quinn-proto: `handle_*` in, `poll_*` out).
//!
//! - `handle(now, input)` feeds one input: a message, a client request, a completion
//!   (`Persisted`), or `Tick` when `poll_timeout` was reached. Time is an argument.
//! - `poll_output()` is drained after every `handle`. Outputs speak one vocabulary:
//!   send a message to a node (`Send`), answer whoever asked (`Reply`, to an opaque
//!   [`crate::ReplyTo`] handle), and make log bytes durable (`Persist { token, bytes }`,
//!   answered by a `Persisted { token }` input once synced). A role adds only what is its
//!   own (the coordinator's `ServerAddr`).
//! - `poll_timeout()` says when to call `handle` again if nothing arrives.
//! - `check_invariants()` asserts what must hold between any two inputs; the simulator
//!   and the tests call it after every `handle`.

use crate::Ts;

/// A protocol role: a deterministic state machine driven by its caller.
pub trait Role {
    /// What the role is told.
    type Input;
    /// What the role asks its caller to do.
    type Output;

    /// Handles one input at time `now` (never earlier than the last call's).
    fn handle(&mut self, now: Ts, input: Self::Input);

    /// The next thing to do, if any; drain until `None` after every `handle`.
    #[must_use]
    fn poll_output(&mut self) -> Option<Self::Output>;

    /// When to call `handle` with a tick if nothing else arrives.
    fn poll_timeout(&self) -> Option<Ts>;

    /// Panics if the role's state breaks a rule that must hold between inputs.
    fn check_invariants(&self);
}
