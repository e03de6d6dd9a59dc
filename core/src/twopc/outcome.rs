//! How a transaction ended, and the client's answer for it (PROTOCOL.md sections 1 and
//! 3 share the precedence: `unavailable`, then `aborted`, then `not_found`).

use crate::proto::{ClientResponse, ErrorCode, ErrorReply};

use super::{NodeId, Vote, VoteTally};

/// The decision of phase 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every participant voted ready.
    Committed,
    /// Not every participant voted ready in time.
    Aborted {
        /// Participants that did not vote in time.
        missing: Vec<NodeId>,
        /// Participants that refused, with their code and reason, in participant order.
        refusals: Vec<(NodeId, ErrorCode, String)>,
    },
}

impl Outcome {
    /// The decision a tally gives when phase 1 ends (all votes in, or the deadline).
    pub fn of(tally: &VoteTally) -> Self {
        if tally.unanimous_ready() {
            return Outcome::Committed;
        }
        let refusals = tally
            .participants()
            .iter()
            .filter_map(|&node| match tally.vote(node) {
                Some(Vote::Refuse(code, message)) => Some((node, *code, message.clone())),
                _ => None,
            })
            .collect();
        Outcome::Aborted {
            missing: tally.missing(),
            refusals,
        }
    }

    /// Whether the decision is to commit.
    pub fn is_commit(&self) -> bool {
        matches!(self, Outcome::Committed)
    }

    /// The client's answer, by the protocol's precedence.
    pub fn client_answer(&self) -> ClientResponse {
        let (missing, refusals) = match self {
            Outcome::Committed => return ClientResponse::Success,
            Outcome::Aborted { missing, refusals } => (missing, refusals),
        };
        if !missing.is_empty() {
            return ClientResponse::Error(ErrorReply::with_message(
                ErrorCode::Unavailable,
                "Unavailable: a replica did not answer in time; nothing was changed",
            ));
        }
        if refusals
            .iter()
            .all(|(_, code, _)| *code == ErrorCode::NotFound)
        {
            return ClientResponse::error(ErrorCode::NotFound);
        }
        let lines: Vec<String> = refusals
            .iter()
            .map(|(node, _, message)| format!("@{node}:={message}"))
            .collect();
        ClientResponse::Error(ErrorReply::with_message(
            ErrorCode::Aborted,
            lines.join("\n"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(votes: &[(NodeId, Option<Vote>)]) -> ClientResponse {
        let mut tally = VoteTally::new(votes.iter().map(|(n, _)| *n).collect());
        for (node, vote) in votes {
            if let Some(vote) = vote {
                tally.record(*node, vote.clone());
            }
        }
        Outcome::of(&tally).client_answer()
    }

    fn code(r: ClientResponse) -> ErrorCode {
        match r {
            ClientResponse::Error(e) => e.code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn precedence_is_unavailable_then_aborted_then_not_found() {
        let nf = || Some(Vote::Refuse(ErrorCode::NotFound, "gone".into()));
        let locked = || Some(Vote::Refuse(ErrorCode::Locked, "busy".into()));
        assert_eq!(
            answer(&[(1, Some(Vote::Ready)), (2, Some(Vote::Ready))]),
            ClientResponse::Success
        );
        assert_eq!(
            code(answer(&[(1, None), (2, locked())])),
            ErrorCode::Unavailable
        );
        assert_eq!(
            code(answer(&[(1, nf()), (2, locked())])),
            ErrorCode::Aborted
        );
        assert_eq!(
            code(answer(&[(1, nf()), (2, Some(Vote::Ready))])),
            ErrorCode::NotFound
        );
        let ClientResponse::Error(reply) =
            answer(&[(7, locked()), (9, locked()), (8, Some(Vote::Ready))])
        else {
            panic!("an error");
        };
        assert_eq!(reply.message, "@7:=busy\n@9:=busy");
    }
}
