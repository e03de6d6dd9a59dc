//! The register one key is, reduced to what the search needs: a small state number and,
//! per operation, the one transition it may make.
//!
//! Values are interned so that a search state is a number, cheap to copy and to put in
//! the memo. Values that no GET ever read are all interned as the same
//! [`UNOBSERVED`] state: no operation can tell them apart, so distinguishing them would
//! only multiply the states the search visits.

/// A register state: [`ABSENT`], [`UNOBSERVED`], or the number of a value some GET read.
pub(super) type State = u32;

/// The key holds nothing: the initial state, and the state after any delete.
pub(super) const ABSENT: State = 0;

/// The key holds some value that no GET of the history ever returned.
pub(super) const UNOBSERVED: State = 1;

/// The first state number given to a value some GET read.
pub(super) const FIRST_OBSERVED: State = 2;

/// What one operation requires of the register and does to it at its linearization point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    /// A PUT that may have taken effect: sets the register, whatever it held.
    Write(State),
    /// A GET: the register held this state (a value, or [`ABSENT`] for `not_found`).
    Read(State),
    /// A DEL answered `done`: the key was present, and becomes absent.
    DeletePresent,
    /// A DEL answered `not_found`: the key was absent and stays so.
    DeleteAbsent,
    /// A DEL with no answer: if it happened, the key is absent afterwards.
    Clear,
    /// An answer no register can give (a PUT answering `not_found`, ...): the operation can
    /// never be placed, so the search reports it rather than ignoring it.
    Impossible,
}

impl Effect {
    /// Whether the operation only observes the register, so that placing it as early as
    /// it can take effect never hurts.
    pub(super) fn is_pure(self) -> bool {
        matches!(self, Effect::Read(_) | Effect::DeleteAbsent)
    }

    /// The state after the operation, or `None` if the register could not have answered
    /// this way in `state`.
    pub(super) fn apply(self, state: State) -> Option<State> {
        match self {
            Effect::Write(value) => Some(value),
            Effect::Read(expected) => (state == expected).then_some(state),
            Effect::DeletePresent => (state != ABSENT).then_some(ABSENT),
            Effect::DeleteAbsent => (state == ABSENT).then_some(ABSENT),
            Effect::Clear => Some(ABSENT),
            Effect::Impossible => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_effect_accepts_exactly_the_states_its_answer_allows() {
        let observed = FIRST_OBSERVED;
        let states = [ABSENT, UNOBSERVED, observed];
        let expect = |effect: Effect, results: [Option<State>; 3]| {
            for (state, result) in states.iter().zip(results) {
                assert_eq!(effect.apply(*state), result, "{effect:?} in state {state}");
            }
        };
        expect(Effect::Write(observed), [Some(observed); 3]);
        expect(Effect::Read(observed), [None, None, Some(observed)]);
        expect(Effect::Read(ABSENT), [Some(ABSENT), None, None]);
        expect(Effect::DeletePresent, [None, Some(ABSENT), Some(ABSENT)]);
        expect(Effect::DeleteAbsent, [Some(ABSENT), None, None]);
        expect(Effect::Clear, [Some(ABSENT); 3]);
        expect(Effect::Impossible, [None; 3]);
    }
}
