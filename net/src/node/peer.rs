//! The peer (two-phase commit) core in the shared node loop: its lines, its start from
//! the data directory, and [`ringkv_core::peer::Peer`] fed through [`NodeCore`].
//!
//! Transaction IDs must never repeat (participants remember decided IDs), so each start
//! begins a new epoch above every epoch in the log. A node whose log is lost has no such
//! record: its epoch floor comes from the wall clock in minutes (epochs are 24 bits, so
//! milliseconds do not fit), which grows between two starts at least a minute apart.

use ringkv_core::peer::{Peer, PeerCompaction, PeerInput, PeerOutput, PeerRecovery};
use ringkv_core::proto::peer::{PeerClientRequest, PeerMessage, PeerReply, PortMessage};
use ringkv_core::proto::{ClientResponse, Envelope, ErrorCode, ErrorReply};
use ringkv_core::session::Access;
use ringkv_core::storage::PersistToken;
use ringkv_core::Role;

use crate::datadir::DataDir;
use crate::error::NetError;
use crate::logfile::{refuse_damage_or_cut_tail, FileLogReader, LogFile};

use super::shell::{Compacted, CoreInput, CoreOutput, DecodedLine, NodeCore};
use super::wire::{Inbound, PeerEncoder};
use super::PeerNodeOptions;

/// Milliseconds from the Unix epoch to 2025-01-01T00:00:00Z, where epoch floors start.
const FLOOR_ORIGIN_MS: u64 = 1_735_689_600_000;
/// One epoch floor step.
const FLOOR_STEP_MS: u64 = 60_000;

/// A peer node as the shell drives it.
pub(crate) struct PeerCore {
    peer: Peer<FileLogReader>,
    /// The compacted log built last, until the shell installed or dropped it.
    compacted: Option<PeerCompaction>,
}

impl PeerCore {
    /// The shell's core around `peer`.
    pub(crate) fn new(peer: Peer<FileLogReader>) -> Self {
        Self {
            peer,
            compacted: None,
        }
    }
}

fn error_reply(code: ErrorCode, message: String) -> PeerReply {
    PeerReply::Client(ClientResponse::Error(ErrorReply::with_message(
        code, message,
    )))
}

impl NodeCore for PeerCore {
    type Request = PeerClientRequest;
    type Message = PeerMessage;
    type Reply = PeerReply;

    /// A `peer_*` line is another node's and must name its sender in `"from"` (the
    /// core's decoder refuses one without it: `malformed`); anything else is a client's.
    fn decode(line: &[u8]) -> DecodedLine<Self> {
        match PortMessage::decode(line) {
            Ok(PortMessage::Client(envelope)) => Ok(Envelope::with_id(
                envelope.id,
                Inbound::Client(envelope.msg),
            )),
            Ok(PortMessage::Peer(msg)) => Ok(Envelope::bare(Inbound::Peer(msg.from, msg))),
            Err(err) => {
                let reply = error_reply(err.code, err.message.clone());
                Err(Envelope::with_id(err.id, reply).encode())
            }
        }
    }

    fn access(request: &PeerClientRequest) -> Option<(&str, Access)> {
        request.access()
    }

    fn error_line(code: ErrorCode) -> Vec<u8> {
        Envelope::bare(error_reply(code, code.default_message().to_owned())).encode()
    }

    fn handle(&mut self, now_ms: u64, input: CoreInput<PeerClientRequest, PeerMessage>) {
        let input = match input {
            CoreInput::Client { from, msg } => PeerInput::Client { from, msg },
            CoreInput::Peer { msg, .. } => PeerInput::Peer(msg),
            CoreInput::Persisted { token } => PeerInput::Persisted { token },
            // The core keeps its own heartbeat for `statusreq`, and times out what a
            // silent node does not answer; the shell's view only spares it sends.
            CoreInput::NodeUp(_) | CoreInput::NodeDown(_) | CoreInput::Tick => PeerInput::Tick,
        };
        self.peer.handle(now_ms, input);
    }

    fn poll_output(&mut self) -> Option<CoreOutput<PeerReply, PeerMessage>> {
        Some(match self.peer.poll_output()? {
            PeerOutput::Reply { to, msg } => CoreOutput::Reply { to, msg },
            PeerOutput::Send { to, msg } => CoreOutput::Send { to, msg },
            PeerOutput::Persist { token, bytes } => CoreOutput::Persist { token, bytes },
        })
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.peer.poll_timeout()
    }

    fn encode(&mut self, _: &mut PeerEncoder, msg: PeerMessage) -> Vec<u8> {
        msg.encode()
    }

    fn compact_log(&mut self) -> Option<Result<Compacted<'_>, String>> {
        let compacted = match self.peer.compacted_log() {
            Ok(compacted) => self.compacted.insert(compacted),
            Err(err) => return Some(Err(err.to_string())),
        };
        Some(Ok(Compacted {
            bytes: &compacted.bytes,
            keys: compacted.moves.len(),
        }))
    }

    fn install_compacted(&mut self, covered: Option<PersistToken>) {
        let compacted = self
            .compacted
            .take()
            .expect("a compacted log installed that was never built");
        self.peer.install_compaction(&compacted, covered);
    }

    fn drop_compacted(&mut self) {
        self.compacted = None;
    }
}

/// The epoch floor of a start at `wall_ms`: minutes since 2025 (0 before it).
pub(crate) fn epoch_floor(wall_ms: u64) -> u32 {
    let minutes = wall_ms.saturating_sub(FLOOR_ORIGIN_MS) / FLOOR_STEP_MS;
    u32::try_from(minutes).unwrap_or(u32::MAX)
}

/// Recovers the node from its log (an empty log is a new node), refusing a log damaged
/// before its end unless asked to cut it.
pub(crate) fn start_peer(
    opts: &PeerNodeOptions,
    dir: &DataDir,
    now_ms: u64,
) -> Result<(Peer<FileLogReader>, LogFile, PeerRecovery), NetError> {
    let (mut log, bytes) = LogFile::open(dir.path())?;
    let reader = log.reader()?;
    let mut config = opts.config.clone();
    config.seed = crate::seed::seed_from_os();
    config.epoch_floor = config.epoch_floor.max(epoch_floor(now_ms));
    let (peer, report) = Peer::recover(config, now_ms, &bytes, reader)
        .map_err(|err| NetError::Config(err.to_string()))?;
    let bad_record = report.bad_record.as_ref().map(|(_, err)| err.to_string());
    refuse_damage_or_cut_tail(
        &mut log,
        &bytes,
        report.valid_len,
        bad_record,
        opts.truncate_corrupt_log,
    )?;
    tracing::info!(
        records = report.records,
        keys = report.committed_keys,
        in_doubt = report.in_doubt,
        open_commits = report.open_commits,
        epoch = report.epoch,
        "log recovered"
    );
    for anomaly in &report.anomalies {
        tracing::warn!(anomaly = %anomaly, "log anomaly skipped");
    }
    Ok((peer, log, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::Decoded;
    use crate::node::shell::tests_support::decode_line;
    use ringkv_core::proto::peer::PeerBody;
    use ringkv_core::proto::ClientRequest;

    type Line = Inbound<PeerClientRequest, PeerMessage>;

    fn one(decoded: Decoded<Line>) -> Line {
        match decoded {
            Decoded::One { msg, .. } => msg,
            other => panic!("not one request: {other:?}"),
        }
    }

    fn answer(decoded: Decoded<Line>) -> String {
        match decoded {
            Decoded::Answer(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn peer_lines_name_their_sender_and_pings_are_the_shells() {
        let msg = PeerMessage {
            from: 9,
            body: PeerBody::Ack { txid: 3 },
        };
        let line = msg.encode();
        let body = line.strip_suffix(b"\n").unwrap().to_vec();
        match one(decode_line::<PeerCore>(body)) {
            Inbound::Peer(9, back) => assert_eq!(back, msg),
            other => panic!("{other:?}"),
        }
        let ping = PeerEncoder::new(4).ping();
        let ping = ping.strip_suffix(b"\n").unwrap().to_vec();
        assert!(matches!(
            one(decode_line::<PeerCore>(ping)),
            Inbound::Ping(4)
        ));
        let get = br#"{"type":"getreq","key":"k","id":1}"#.to_vec();
        assert!(matches!(
            one(decode_line::<PeerCore>(get)),
            Inbound::Client(PeerClientRequest::Client(ClientRequest::Get { .. }))
        ));
    }

    #[test]
    fn a_peer_line_without_sender_and_garbage_are_malformed() {
        let no_from = br#"{"type":"peer_ack","txid":1,"id":7}"#.to_vec();
        let text = answer(decode_line::<PeerCore>(no_from));
        assert!(text.contains(r#""error":"malformed""#), "{text}");
        assert!(text.contains(r#""id":7"#), "{text}");
        let text = answer(decode_line::<PeerCore>(b"\x01garbage".to_vec()));
        assert!(text.contains(r#""error":"malformed""#), "{text}");
        let line = String::from_utf8(PeerCore::error_line(ErrorCode::Overloaded)).unwrap();
        assert!(line.contains(r#""error":"overloaded""#), "{line}");
    }

    #[test]
    fn the_epoch_floor_counts_minutes_since_2025_and_fits_24_bits_for_decades() {
        assert_eq!(epoch_floor(0), 0);
        assert_eq!(epoch_floor(FLOOR_ORIGIN_MS + 59_999), 0);
        assert_eq!(epoch_floor(FLOOR_ORIGIN_MS + 60_000), 1);
        let in_2050_ms = FLOOR_ORIGIN_MS + 25 * 366 * 24 * 3_600_000;
        assert!(epoch_floor(in_2050_ms) < (1 << 24) - 1);
    }
}
