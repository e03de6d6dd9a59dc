//! The eventual-mode core in the shared node loop: its lines, its start from the data
//! directory (the log, and the incarnation that keeps its clock entries unique), and
//! [`ringkv_core::eventual::Node`] fed through [`NodeCore`].

use ringkv_core::eventual::{CompactedLog, Node, NodeInput, NodeOutput};
use ringkv_core::proto::{
    Envelope, ErrorCode, ErrorReply, EventualRequest, EventualResponse, NodeMessage, PeerMessage,
};
use ringkv_core::session::Access;
use ringkv_core::storage::PersistToken;
use ringkv_core::Role;

use crate::datadir::{read_number, write_number, DataDir};
use crate::error::NetError;
use crate::logfile::{refuse_damage_or_cut_tail, FileLogReader, LogFile};
use ringkv_core::log::AfterPrefix;

use super::shell::{Compacted, CoreInput, CoreOutput, DecodedLine, NodeCore};
use super::wire::{sender_of, Inbound, PeerEncoder};
use super::{NodeInfo, NodeOptions};

/// The file that keeps which life of the data directory this is.
const INCARNATION_FILE: &str = "incarnation";

/// An eventual-mode node as the shell drives it.
pub(crate) struct EventualCore {
    node: Node<FileLogReader>,
    /// The compacted log built last, until the shell installed or dropped it.
    compacted: Option<CompactedLog>,
}

impl EventualCore {
    /// The shell's core around `node`.
    pub(crate) fn new(node: Node<FileLogReader>) -> Self {
        Self {
            node,
            compacted: None,
        }
    }
}

impl NodeCore for EventualCore {
    type Request = EventualRequest;
    type Message = PeerMessage;
    type Reply = EventualResponse;

    fn decode(line: &[u8]) -> DecodedLine<Self> {
        let sender = sender_of(line);
        match Envelope::<NodeMessage>::decode(line) {
            Ok(envelope) => match (envelope.msg, sender) {
                (NodeMessage::Client(msg), _) => {
                    Ok(Envelope::with_id(envelope.id, Inbound::Client(msg)))
                }
                (NodeMessage::Peer(msg), Some((from, _))) => {
                    Ok(Envelope::with_id(envelope.id, Inbound::Peer(from, msg)))
                }
                (NodeMessage::Peer(_), None) => Err(Envelope::with_id(
                    envelope.id,
                    EventualResponse::Error(ErrorReply::with_message(
                        ErrorCode::Malformed,
                        "a node's message must start with {\"from\":ID, naming its sender",
                    )),
                )
                .encode()),
            },
            Err(err) => Err(Envelope::with_id(
                err.id.clone(),
                EventualResponse::Error(err.reply()),
            )
            .encode()),
        }
    }

    fn access(request: &EventualRequest) -> Option<(&str, Access)> {
        match request {
            EventualRequest::Get { key, .. } | EventualRequest::Local { key } => {
                Some((key, Access::Read))
            }
            EventualRequest::Write { key, .. } => Some((key, Access::Write)),
            EventualRequest::Status => None,
        }
    }

    fn error_line(code: ErrorCode) -> Vec<u8> {
        Envelope::bare(EventualResponse::error(code)).encode()
    }

    fn handle(&mut self, now_ms: u64, input: CoreInput<EventualRequest, PeerMessage>) {
        let input = match input {
            CoreInput::Client { from, msg } => NodeInput::Client { from, msg },
            CoreInput::Peer { from, msg } => NodeInput::Peer { from, msg },
            CoreInput::NodeUp(node) => NodeInput::NodeUp(node),
            CoreInput::NodeDown(node) => NodeInput::NodeDown(node),
            CoreInput::Persisted { token } => NodeInput::Persisted { token },
            CoreInput::Tick => NodeInput::Tick,
        };
        self.node.handle(now_ms, input);
    }

    fn poll_output(&mut self) -> Option<CoreOutput<EventualResponse, PeerMessage>> {
        Some(match self.node.poll_output()? {
            NodeOutput::Reply { to, msg } => CoreOutput::Reply { to, msg },
            NodeOutput::Send { to, msg } => CoreOutput::Send { to, msg },
            NodeOutput::Persist { token, bytes } => CoreOutput::Persist { token, bytes },
        })
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.node.poll_timeout()
    }

    fn encode(&mut self, encoder: &mut PeerEncoder, msg: PeerMessage) -> Vec<u8> {
        encoder.encode(msg)
    }

    fn compact_log(&mut self) -> Option<Result<Compacted<'_>, String>> {
        let compacted = match self.node.compaction_log() {
            Ok(compacted) => self.compacted.insert(compacted),
            Err(err) => return Some(Err(err)),
        };
        Some(Ok(Compacted {
            bytes: &compacted.bytes,
            keys: compacted.keys,
        }))
    }

    fn install_compacted(&mut self, covered: Option<PersistToken>) {
        let compacted = self
            .compacted
            .take()
            .expect("a compacted log installed that was never built");
        self.node.install_compaction(compacted, covered);
    }

    fn drop_compacted(&mut self) {
        self.compacted = None;
    }
}

/// Recovers the node from its log, or starts it on an empty directory with a fresh
/// incarnation, stored durably before anything is served.
pub(crate) fn start_node(
    opts: &NodeOptions,
    dir: &DataDir,
) -> Result<(Node<FileLogReader>, LogFile, NodeInfo), NetError> {
    let (mut log, bytes) = LogFile::open(dir.path())?;
    let reader = log.reader()?;
    let mut config = opts.config.clone();
    config.seed = crate::seed::seed_from_os();
    let stored = read_number(dir.path(), INCARNATION_FILE, "an incarnation")?;
    let info = |incarnation, recovery| NodeInfo {
        id: opts.config.id,
        listen: opts.listen,
        resp: opts.resp_listen.map(|listen| listen.addr),
        incarnation,
        recovery,
    };
    if bytes.iter().all(|&b| b == 0) {
        // Nothing of an earlier life survives (a new node, a lost disk, or a log of
        // which no write became durable): a fresh incarnation, so that no clock entry
        // this node hands out can be one it handed out before (Riak's kv679).
        log.start_appending(0, AfterPrefix::Zeros)?;
        config.incarnation = fresh_incarnation(stored);
        write_number(dir.path(), INCARNATION_FILE, config.incarnation)?;
        tracing::info!(
            id = config.id,
            incarnation = config.incarnation,
            "empty data directory: a new incarnation; catching up from the other nodes"
        );
        let node = Node::new(config.clone(), reader).map_err(NetError::Config)?;
        return Ok((node, log, info(config.incarnation, None)));
    }
    let Some(incarnation) = stored else {
        return Err(NetError::Config(format!(
            "{} holds a log but no {INCARNATION_FILE} file: the directory is damaged; restore the file, or empty the directory to start this node afresh",
            dir.path().display()
        )));
    };
    config.incarnation = incarnation;
    let (node, report) = Node::recover(config, &bytes, reader).map_err(NetError::Config)?;
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
        keys = report.keys,
        hints = report.hints,
        "log recovered"
    );
    for anomaly in &report.anomalies {
        tracing::warn!(anomaly = %anomaly, "log anomaly skipped");
    }
    Ok((node, log, info(incarnation, Some(report))))
}

/// A new incarnation from OS randomness: at least 1 (0 is the form without one), below
/// 2^31 so clocks stay readable, and never the one stored before.
fn fresh_incarnation(previous: Option<u64>) -> u64 {
    loop {
        let drawn = crate::seed::seed_from_os() % (1 << 31) + 1;
        if Some(drawn) != previous {
            return drawn;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::Decoded;
    use crate::node::shell::tests_support::decode_line;

    fn stored_incarnation(dir: &std::path::Path) -> Option<u64> {
        read_number(dir, INCARNATION_FILE, "an incarnation")
            .ok()
            .flatten()
    }

    #[test]
    fn a_fresh_incarnation_is_never_zero_nor_the_previous_one() {
        for _ in 0..100 {
            let drawn = fresh_incarnation(Some(5));
            assert!((1..=1 << 31).contains(&drawn) && drawn != 5);
        }
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(stored_incarnation(tmp.path()), None);
        write_number(tmp.path(), INCARNATION_FILE, 9).unwrap();
        assert_eq!(stored_incarnation(tmp.path()), Some(9));
    }

    type Line = Inbound<EventualRequest, PeerMessage>;

    fn one(decoded: Decoded<Line>) -> Line {
        match decoded {
            Decoded::One { msg, .. } => msg,
            other => panic!("not one request: {other:?}"),
        }
    }

    #[test]
    fn a_node_line_names_its_sender_and_round_trips() {
        let mut enc = PeerEncoder::new(42);
        let line = enc.encode(PeerMessage::Stored { req: 7 });
        assert!(
            line.starts_with(b"{\"from\":42,\"type\":\"ev_stored\""),
            "{line:?}"
        );
        let body = line.strip_suffix(b"\n").unwrap().to_vec();
        match one(decode_line::<EventualCore>(body)) {
            Inbound::Peer(42, PeerMessage::Stored { req: 7 }) => {}
            other => panic!("{other:?}"),
        }
        let ping = enc.ping();
        match one(decode_line::<EventualCore>(
            ping.strip_suffix(b"\n").unwrap().to_vec(),
        )) {
            Inbound::Ping(42) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_node_message_without_sender_is_malformed_and_clients_need_none() {
        match decode_line::<EventualCore>(b"{\"type\":\"ev_stored\",\"req\":1}".to_vec()) {
            Decoded::Answer(answer) => {
                let text = String::from_utf8(answer).unwrap();
                assert!(text.contains("\"error\":\"malformed\""), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one(decode_line::<EventualCore>(
                b"{\"type\":\"statusreq\"}".to_vec()
            )),
            Inbound::Client(EventualRequest::Status)
        ));
        for bad in [
            &b"{\"from\":,\"type\":\"ev_ping\"}"[..],
            b"{\"from\":99999999999999999999,\"type\":\"ev_ping\"}",
        ] {
            assert!(
                matches!(
                    decode_line::<EventualCore>(bad.to_vec()),
                    Decoded::Answer(_)
                ),
                "{bad:?}"
            );
        }
    }
}
