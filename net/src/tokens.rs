//! mio tokens that say which part of a loop an event belongs to.
//!
//! A token is `serial << KIND_BITS | kind`. Serials are never reused within a loop, so a
//! late event for a closed connection finds nothing instead of a stranger.

use mio::Token;

const KIND_BITS: u32 = 3;
const KIND_MASK: usize = (1 << KIND_BITS) - 1;

/// Which part of a loop owns a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The loop's waker (shutdown).
    Waker = 0,
    /// The first listening port and its connections.
    PortA = 1,
    /// The second listening port and its connections.
    PortB = 2,
    /// Outgoing connections.
    Link = 3,
    /// The third listening port (the RESP port of a coordinator or a node) and its
    /// connections.
    PortC = 4,
}

impl Kind {
    fn from_bits(bits: usize) -> Option<Kind> {
        match bits {
            0 => Some(Kind::Waker),
            1 => Some(Kind::PortA),
            2 => Some(Kind::PortB),
            3 => Some(Kind::Link),
            4 => Some(Kind::PortC),
            _ => None,
        }
    }
}

/// Hands out tokens of one kind.
#[derive(Debug)]
pub(crate) struct TokenSource {
    kind: Kind,
    next_serial: usize,
}

impl TokenSource {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            next_serial: 0,
        }
    }

    /// A token never handed out before by this source.
    pub(crate) fn next(&mut self) -> Token {
        let serial = self.next_serial;
        // 2^61 tokens would take centuries at a million connections a second.
        self.next_serial = self.next_serial.wrapping_add(1);
        Token((serial << KIND_BITS) | self.kind as usize)
    }
}

/// The kind that owns `token`, if it is one of ours.
pub(crate) fn kind_of(token: Token) -> Option<Kind> {
    Kind::from_bits(token.0 & KIND_MASK)
}

/// The waker's token.
pub(crate) const WAKER: Token = Token(Kind::Waker as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_kind_and_are_distinct() {
        let mut a = TokenSource::new(Kind::PortA);
        let mut l = TokenSource::new(Kind::Link);
        let (t1, t2, t3) = (a.next(), a.next(), l.next());
        assert_ne!(t1, t2);
        assert_eq!(kind_of(t1), Some(Kind::PortA));
        assert_eq!(kind_of(t3), Some(Kind::Link));
        assert_eq!(kind_of(WAKER), Some(Kind::Waker));
        assert_eq!(kind_of(Token(7)), None);
    }
}
