use super::record::CoordinatorRecord;
use super::*;
use crate::proto::{ErrorReply, RequestId, ServerStatus, TxId, TxOp};
use crate::ring::key_position;

/// Drives a coordinator and records what it asks for.
struct Harness {
    coord: Coordinator,
    now: Ts,
    client_replies: Vec<(ReplyTo, ClientResponse)>,
    register_replies: Vec<(ReplyTo, RegisterResponse)>,
    sent: Vec<(ServerId, Envelope<ParticipantRequest>)>,
    addrs: Vec<(ServerId, String)>,
    /// Every log write, in order.
    log: Vec<u8>,
    /// Whether log writes stay unsynced.
    hold_log: bool,
    /// The urgency of every log write, in order.
    urgencies: Vec<SyncUrgency>,
    /// Writes the coordinator asked to hasten.
    hastened: Vec<PersistToken>,
    /// The last write asked for.
    last_write: Option<PersistToken>,
}

const ALICE: ReplyTo = ReplyTo(100);
const BOB: ReplyTo = ReplyTo(200);

impl Harness {
    fn new(config: CoordinatorConfig) -> Self {
        Self {
            coord: Coordinator::new(config).unwrap(),
            now: 0,
            client_replies: Vec::new(),
            register_replies: Vec::new(),
            sent: Vec::new(),
            addrs: Vec::new(),
            log: Vec::new(),
            hold_log: false,
            urgencies: Vec::new(),
            hastened: Vec::new(),
            last_write: None,
        }
    }

    /// A coordinator with servers 10, 20 and 30 registered.
    fn with_ring() -> Self {
        let mut h = Self::new(CoordinatorConfig::new(3));
        for id in [10, 20, 30] {
            h.register(id, &format!("127.0.0.1:{}", 4000 + id));
        }
        h.take_sent();
        h.register_replies.clear();
        h.addrs.clear();
        h
    }

    /// A coordinator recovered from `log`, whose start-up outputs were taken.
    fn recovered(log: &[u8]) -> Self {
        let (coord, _) = Coordinator::recover(CoordinatorConfig::new(3), log).unwrap();
        let mut h = Self::new(CoordinatorConfig::new(3));
        h.coord = coord;
        h.input(CoordinatorInput::Tick);
        h
    }

    /// Reports every write so far durable.
    fn sync_log(&mut self) {
        if let Some(token) = self.last_write {
            self.input(CoordinatorInput::Persisted { token });
        }
    }

    /// The records written to the log so far.
    fn records(&self) -> Vec<CoordinatorRecord> {
        let mut records = Vec::new();
        let scan = crate::storage::replay_log(&self.log, |record, _| {
            records.push(record);
            Ok::<(), String>(())
        });
        assert_eq!(scan.valid_len, self.log.len() as u64, "the log is whole");
        records
    }

    fn input(&mut self, input: CoordinatorInput) {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            self.coord.handle(self.now, input);
            self.coord.check_invariants();
            let mut durable = None;
            while let Some(out) = self.coord.poll_output() {
                match out {
                    CoordinatorOutput::ClientReply { to, msg } => {
                        self.client_replies.push((to, msg))
                    }
                    CoordinatorOutput::RegisterReply { to, msg } => {
                        self.register_replies.push((to, msg))
                    }
                    CoordinatorOutput::Send { server, msg } => self.sent.push((server, msg)),
                    CoordinatorOutput::ServerAddr { server, addr } => {
                        self.addrs.push((server, addr))
                    }
                    CoordinatorOutput::Persist {
                        token,
                        bytes,
                        urgency,
                    } => {
                        self.log.extend_from_slice(&bytes);
                        self.urgencies.push(urgency);
                        self.last_write = Some(token);
                        durable = Some(token);
                    }
                    CoordinatorOutput::Hasten { token } => self.hastened.push(token),
                }
            }
            // The tests' disk syncs at once, unless a test holds it.
            if !self.hold_log {
                next = durable.map(|token| CoordinatorInput::Persisted { token });
            }
        }
    }

    fn register(&mut self, id: u64, addr: &str) -> RegisterResponse {
        self.input(CoordinatorInput::Register {
            from: ReplyTo(id),
            msg: Register {
                id,
                addr: addr.into(),
            },
        });
        self.register_replies.pop().unwrap().1
    }

    fn client(&mut self, from: ReplyTo, msg: ClientRequest) {
        self.input(CoordinatorInput::Client { from, msg });
    }

    fn server(&mut self, server: ServerId, id: Option<RequestId>, msg: ParticipantResponse) {
        self.input(CoordinatorInput::Server {
            server,
            msg: Envelope::with_id(id, msg),
        });
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.input(CoordinatorInput::Tick);
    }

    /// What was sent, heartbeats left out.
    fn take_sent(&mut self) -> Vec<(ServerId, ParticipantRequest)> {
        self.take_sent_with_ids()
            .into_iter()
            .map(|(s, e)| (s, e.msg))
            .collect()
    }

    fn take_sent_with_ids(&mut self) -> Vec<(ServerId, Envelope<ParticipantRequest>)> {
        self.sent
            .drain(..)
            .filter(|(_, e)| e.msg != ParticipantRequest::InDoubt)
            .collect()
    }

    fn replies(&mut self) -> Vec<(ReplyTo, ClientResponse)> {
        self.client_replies.drain(..).collect()
    }
}

fn put(key: &str, value: &str) -> ClientRequest {
    ClientRequest::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> ClientRequest {
    ClientRequest::Get { key: key.into() }
}

fn code(reply: &ClientResponse) -> ErrorCode {
    match reply {
        ClientResponse::Error(ErrorReply { code, .. }) => *code,
        other => panic!("not an error: {other:?}"),
    }
}

/// The replicas of `key` on the ring 10, 20, 30.
fn pair(key: &str) -> (ServerId, ServerId) {
    let p = key_position(key);
    match p {
        0..=10 => (10, 20),
        11..=20 => (20, 30),
        21..=30 => (30, 10),
        _ => (10, 20),
    }
}

fn prepare_txid(sent: &[(ServerId, ParticipantRequest)]) -> TxId {
    sent.iter()
        .find_map(|(_, m)| match m {
            ParticipantRequest::Prepare { txid, .. } => Some(*txid),
            _ => None,
        })
        .expect("a prepare was sent")
}

fn ready(txid: TxId) -> ParticipantResponse {
    ParticipantResponse::Ready { txid }
}

fn ack(txid: TxId) -> ParticipantResponse {
    ParticipantResponse::Ack { txid }
}

fn refuse(txid: TxId, code: ErrorCode, message: &str) -> ParticipantResponse {
    ParticipantResponse::Refuse {
        txid,
        code,
        message: message.into(),
    }
}

/// Runs one update through both phases with both replicas agreeing.
fn commit_update(h: &mut Harness, key: &str, msg: ClientRequest) {
    h.client(ALICE, msg);
    let sent = h.take_sent();
    let txid = prepare_txid(&sent);
    let (a, b) = pair(key);
    h.server(a, None, ready(txid));
    h.server(b, None, ready(txid));
    assert_eq!(h.replies(), vec![(ALICE, ClientResponse::Success)]);
    h.server(a, None, ack(txid));
    h.server(b, None, ack(txid));
    h.take_sent();
}

#[test]
fn requests_before_the_ring_is_complete_are_unavailable_but_status_answers() {
    let mut h = Harness::new(CoordinatorConfig::new(2));
    assert_eq!(h.register(7, "h:1"), RegisterResponse::Ack);
    h.client(ALICE, get("k"));
    h.client(ALICE, put("k", "v"));
    h.client(ALICE, ClientRequest::Del { key: "k".into() });
    let replies = h.replies();
    assert!(replies
        .iter()
        .all(|(_, r)| code(r) == ErrorCode::Unavailable));
    assert!(h.take_sent().is_empty());
    h.client(ALICE, ClientRequest::Status);
    assert_eq!(
        h.replies(),
        vec![(
            ALICE,
            ClientResponse::Status {
                servers: vec![ServerStatus {
                    id: 7,
                    addr: "h:1".into(),
                    up: true
                }],
                expected: 2
            }
        )]
    );
}

#[test]
fn registration_refuses_new_ids_beyond_the_ring_and_bad_addresses() {
    let mut h = Harness::new(CoordinatorConfig::new(2));
    assert_eq!(h.register(u64::MAX, "h:1"), RegisterResponse::Ack);
    assert!(matches!(
        h.register(3, "nonsense"),
        RegisterResponse::Error(ErrorReply {
            code: ErrorCode::Refused,
            ..
        })
    ));
    assert_eq!(h.register(0, "h:2"), RegisterResponse::Ack);
    assert!(matches!(
        h.register(5, "h:3"),
        RegisterResponse::Error(ErrorReply {
            code: ErrorCode::Refused,
            ..
        })
    ));
    // A restarted server comes back with the same ID and a new address, and is asked at
    // once what it holds in doubt.
    h.sent.clear();
    assert_eq!(h.register(0, "h:9"), RegisterResponse::Ack);
    assert_eq!(h.addrs.last(), Some(&(0, "h:9".to_string())));
    let sent: Vec<_> = h.sent.drain(..).map(|(s, e)| (s, e.msg)).collect();
    assert_eq!(sent, vec![(0, ParticipantRequest::InDoubt)]);
    // A refresh at the same address changes nothing.
    h.addrs.clear();
    assert_eq!(h.register(0, "h:9"), RegisterResponse::Ack);
    assert!(h.addrs.is_empty());
    assert_eq!(h.coord.ring().ids().collect::<Vec<_>>(), vec![0, u64::MAX]);
}

#[test]
fn a_put_commits_on_two_ready_votes_and_reads_see_it_during_phase_two() {
    let mut h = Harness::with_ring();
    h.client(ALICE, put("k", "v"));
    let sent = h.take_sent();
    let (a, b) = pair("k");
    let txid = prepare_txid(&sent);
    let targets: Vec<ServerId> = sent.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        targets,
        vec![a, b],
        "prepare goes to both replicas in parallel"
    );
    h.server(a, None, ready(txid));
    assert!(h.replies().is_empty(), "one vote is not enough");
    h.server(b, None, ready(txid));
    assert_eq!(h.replies(), vec![(ALICE, ClientResponse::Success)]);
    let sent = h.take_sent();
    assert_eq!(
        sent,
        vec![
            (a, ParticipantRequest::Commit { txid }),
            (b, ParticipantRequest::Commit { txid })
        ]
    );
    // Phase 2 unacknowledged: the GET is answered by the coordinator, not a replica.
    h.client(BOB, get("k"));
    assert_eq!(
        h.replies(),
        vec![(
            BOB,
            ClientResponse::Value {
                key: "k".into(),
                value: "v".into()
            }
        )]
    );
    assert!(h.take_sent().is_empty());
    let writes = h.urgencies.len();
    assert_eq!(
        h.urgencies[writes - 2..],
        [SyncUrgency::Now, SyncUrgency::Deferrable],
        "the staged record is synced at once; the commit decision only holds up phase 2"
    );
    h.server(a, None, ack(txid));
    h.server(b, None, ack(txid));
    assert_eq!(h.coord.open_transactions(), 0);
    assert_eq!(
        h.urgencies[writes..],
        [SyncUrgency::Never],
        "nothing waits for the finished record"
    );
}

#[test]
fn an_update_queued_behind_phase_two_sends_the_decision_again_at_once() {
    let mut h = Harness::with_ring();
    h.client(ALICE, put("k", "v1"));
    let txid = prepare_txid(&h.take_sent());
    let (a, b) = pair("k");
    h.server(a, None, ready(txid));
    h.server(b, None, ready(txid));
    assert_eq!(h.replies(), vec![(ALICE, ClientResponse::Success)]);
    let commits = vec![
        (a, ParticipantRequest::Commit { txid }),
        (b, ParticipantRequest::Commit { txid }),
    ];
    assert_eq!(h.take_sent(), commits);
    // The replicas sync decision records lazily: a repeated decision says someone waits.
    h.client(BOB, put("k", "v2"));
    assert_eq!(h.take_sent(), commits);
    h.client(ALICE, put("k", "v3"));
    assert!(h.take_sent().is_empty(), "only the first waiter asks");
    h.server(a, None, ack(txid));
    h.server(b, None, ack(txid));
    let next = h.take_sent();
    assert_eq!(next.len(), 2, "the next update starts: {next:?}");
    assert_ne!(prepare_txid(&next), txid);
}

#[test]
fn phase_one_timeout_aborts_with_unavailable_and_phase_two_is_resent_until_acked() {
    let mut h = Harness::with_ring();
    h.client(ALICE, put("k", "v"));
    let txid = prepare_txid(&h.take_sent());
    let (a, b) = pair("k");
    h.server(a, None, ready(txid));
    h.advance(2999);
    assert!(h.replies().is_empty());
    // Prepares to the silent replica were resent meanwhile (and only those).
    let resent = h.take_sent();
    assert!(
        !resent.is_empty(),
        "the silent replica's prepare goes again"
    );
    assert!(resent
        .iter()
        .all(|(s, m)| *s == b && matches!(m, ParticipantRequest::Prepare { .. })));
    h.advance(1);
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(code(&replies[0].1), ErrorCode::Unavailable);
    let aborts = h.take_sent();
    assert_eq!(
        aborts,
        vec![
            (a, ParticipantRequest::Abort { txid }),
            (b, ParticipantRequest::Abort { txid })
        ]
    );
    h.server(a, None, ack(txid));
    // The abort goes again to the replica that has not acknowledged, with growing waits.
    let mut resend_times = Vec::new();
    for _ in 0..3000 {
        h.advance(1);
        for (s, m) in h.take_sent() {
            if matches!(m, ParticipantRequest::Abort { .. }) {
                assert_eq!(s, b);
                resend_times.push(h.now);
            }
        }
    }
    assert!(resend_times.len() >= 3, "{resend_times:?}");
    let gaps: Vec<u64> = resend_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]),
        "waits never shrink: {gaps:?}"
    );
    // Registration again resends at once and the ack ends it.
    h.register(b, "127.0.0.1:9999");
    assert_eq!(h.take_sent(), vec![(b, ParticipantRequest::Abort { txid })]);
    h.server(b, None, ack(txid));
    assert_eq!(h.coord.open_transactions(), 0);
}

#[test]
fn votes_are_combined_by_precedence() {
    let mut h = Harness::with_ring();
    let (a, b) = pair("k");
    commit_update(&mut h, "k", put("k", "v"));

    // not_found from both: not_found.
    h.client(ALICE, ClientRequest::Del { key: "gone".into() });
    let txid = prepare_txid(&h.take_sent());
    let (ga, gb) = pair("gone");
    h.server(
        ga,
        None,
        refuse(txid, ErrorCode::NotFound, "Data Error: Key does not exist"),
    );
    h.server(
        gb,
        None,
        refuse(txid, ErrorCode::NotFound, "Data Error: Key does not exist"),
    );
    let replies = h.replies();
    assert_eq!(code(&replies[0].1), ErrorCode::NotFound);
    // Refusing replicas hold nothing: no phase 2 needed.
    assert!(h.take_sent().is_empty());
    assert_eq!(h.coord.open_transactions(), 0);

    // A lock on one replica beats not_found on the other: aborted, naming the reasons.
    h.client(ALICE, put("k", "w"));
    let txid = prepare_txid(&h.take_sent());
    h.server(
        a,
        None,
        refuse(txid, ErrorCode::Locked, "key is locked by transaction 3"),
    );
    h.server(b, None, ready(txid));
    let replies = h.replies();
    match &replies[0].1 {
        ClientResponse::Error(ErrorReply { code, message }) => {
            assert_eq!(*code, ErrorCode::Aborted);
            assert_eq!(message, &format!("@{a}:=key is locked by transaction 3"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.take_sent(), vec![(b, ParticipantRequest::Abort { txid })]);
    h.server(b, None, ack(txid));
    // The old value stands.
    h.client(BOB, get("k"));
    assert_eq!(
        h.replies(),
        vec![(
            BOB,
            ClientResponse::Value {
                key: "k".into(),
                value: "v".into()
            }
        )]
    );

    // A silent replica beats an abort vote: unavailable.
    h.client(ALICE, put("k", "x"));
    let txid = prepare_txid(&h.take_sent());
    h.server(a, None, refuse(txid, ErrorCode::Overloaded, "busy"));
    h.advance(3000);
    assert_eq!(code(&h.replies()[0].1), ErrorCode::Unavailable);
}

#[test]
fn gets_fall_back_to_the_secondary_and_then_give_up() {
    let mut h = Harness::with_ring();
    let (a, b) = pair("k");
    h.client(ALICE, get("k"));
    let sent = h.take_sent_with_ids();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, a);
    h.advance(3000);
    let sent = h.take_sent_with_ids();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, b);
    let id = sent[0].1.id.clone();
    h.server(
        b,
        id,
        ParticipantResponse::Value {
            key: "k".into(),
            value: "v".into(),
        },
    );
    assert_eq!(
        h.replies(),
        vec![(
            ALICE,
            ClientResponse::Value {
                key: "k".into(),
                value: "v".into()
            }
        )]
    );
    // Cached now: the next GET needs no replica.
    h.client(ALICE, get("k"));
    assert_eq!(h.replies().len(), 1);
    assert!(h.take_sent().is_empty());

    h.client(ALICE, get("other"));
    h.advance(3000);
    h.advance(3000);
    let replies = h.replies();
    assert_eq!(code(&replies[0].1), ErrorCode::Unavailable);
}

#[test]
fn a_server_known_down_is_read_from_last() {
    let mut h = Harness::with_ring();
    let (a, b) = pair("k");
    // Everyone but the primary answers heartbeats for a while.
    for _ in 0..7 {
        h.advance(1000);
        let pings: Vec<_> = h.sent.drain(..).collect();
        assert!(pings
            .iter()
            .all(|(_, e)| e.msg == ParticipantRequest::InDoubt));
        for (s, _) in pings {
            if s != a {
                h.server(s, None, ParticipantResponse::Pong);
            }
        }
    }
    h.client(ALICE, ClientRequest::Status);
    let ClientResponse::Status { servers, .. } = h.replies().remove(0).1 else {
        panic!("status")
    };
    for s in &servers {
        assert_eq!(s.up, s.id != a, "{s:?}");
    }
    h.client(ALICE, get("k"));
    let sent = h.take_sent();
    assert_eq!(sent, vec![(b, ParticipantRequest::Get { key: "k".into() })]);
}

#[test]
fn updates_of_one_key_run_one_at_a_time_and_other_keys_are_not_held_up() {
    let mut h = Harness::with_ring();
    let (a, b) = pair("k");
    h.client(ALICE, put("k", "1"));
    let first = prepare_txid(&h.take_sent());
    h.client(BOB, put("k", "2"));
    assert!(h.take_sent().is_empty(), "the second update waits");
    // A GET of another key goes out at once.
    h.client(BOB, get("elsewhere"));
    assert_eq!(h.take_sent().len(), 1);
    h.server(a, None, ready(first));
    h.server(b, None, ready(first));
    h.take_sent();
    h.server(a, None, ack(first));
    assert!(
        h.take_sent().is_empty(),
        "still waits for phase 2 to finish"
    );
    h.server(b, None, ack(first));
    let second = prepare_txid(&h.take_sent());
    assert!(second > first);
}

const CAROL: ReplyTo = ReplyTo(300);
const DAVE: ReplyTo = ReplyTo(400);

/// The prepares sent, as (replica, txid, op).
fn prepares(sent: &[(ServerId, ParticipantRequest)]) -> Vec<(ServerId, TxId, TxOp)> {
    sent.iter()
        .filter_map(|(to, m)| match m {
            ParticipantRequest::Prepare { txid, op, .. } => Some((*to, *txid, op.clone())),
            _ => None,
        })
        .collect()
}

/// Both replicas of `key` vote ready for `txid` and acknowledge its commit.
fn vote_and_ack(h: &mut Harness, key: &str, txid: TxId) {
    let (a, b) = pair(key);
    h.server(a, None, ready(txid));
    h.server(b, None, ready(txid));
    h.server(a, None, ack(txid));
    h.server(b, None, ack(txid));
}

/// ALICE's PUT of "k" runs while `queued` arrive behind it; it commits, ALICE hears
/// `Success`, and both replicas acknowledge. Returns the prepares sent next.
fn behind_a_first_put(
    h: &mut Harness,
    queued: Vec<(ReplyTo, ClientRequest)>,
) -> Vec<(ServerId, TxId, TxOp)> {
    h.client(ALICE, put("k", "1"));
    let first = prepare_txid(&h.take_sent());
    for (who, msg) in queued {
        h.client(who, msg);
    }
    assert!(h.take_sent().is_empty(), "the later updates wait");
    vote_and_ack(h, "k", first);
    assert_eq!(h.replies(), vec![(ALICE, ClientResponse::Success)]);
    prepares(&h.take_sent())
}

/// A GET of `key` is answered at once (from the cache) with `value`.
fn assert_answers_at_once(h: &mut Harness, key: &str, value: &str, why: &str) {
    h.client(ALICE, get(key));
    let expected = ClientResponse::Value {
        key: key.into(),
        value: value.into(),
    };
    assert_eq!(h.replies(), vec![(ALICE, expected)], "{why}");
}

#[test]
fn puts_queued_back_to_back_run_as_one_transaction_of_the_last_and_all_hear_its_answer() {
    let mut h = Harness::with_ring();
    let queued = vec![
        (BOB, put("k", "2")),
        (CAROL, put("k", "3")),
        (DAVE, put("k", "4")),
    ];
    // One transaction, with the last value, to both replicas.
    let sent = behind_a_first_put(&mut h, queued);
    let (a, b) = pair("k");
    let second = sent.first().map(|(_, txid, _)| *txid).unwrap();
    let last = TxOp::Put { value: "4".into() };
    assert_eq!(
        sent,
        vec![(a, second, last.clone()), (b, second, last)],
        "the absorbed values are never prepared"
    );
    assert_eq!(h.coord.absorbed_updates(), 2);
    assert!(h.replies().is_empty(), "nobody hears before the votes");
    h.server(a, None, ready(second));
    h.server(b, None, ready(second));
    let mut replies = h.replies();
    replies.sort_by_key(|(to, _)| to.0);
    assert_eq!(
        replies,
        vec![
            (BOB, ClientResponse::Success),
            (CAROL, ClientResponse::Success),
            (DAVE, ClientResponse::Success)
        ]
    );
    assert_answers_at_once(&mut h, "k", "4", "the cache holds the last value");
}

#[test]
fn absorbed_puts_share_their_transactions_error_and_none_is_applied() {
    let mut h = Harness::with_ring();
    let sent = behind_a_first_put(&mut h, vec![(BOB, put("k", "2")), (CAROL, put("k", "3"))]);
    let second = sent[0].1;
    let (a, b) = pair("k");
    h.server(a, None, ready(second));
    h.server(b, None, refuse(second, ErrorCode::Locked, "held"));
    let replies = h.replies();
    assert_eq!(replies.len(), 2, "{replies:?}");
    for (who, reply) in &replies {
        assert!([BOB, CAROL].contains(who));
        assert_eq!(code(reply), ErrorCode::Aborted);
    }
    assert_eq!(replies[0].1, replies[1].1, "one answer for both");
    assert_answers_at_once(&mut h, "k", "1", "neither absorbed value was applied");
}

#[test]
fn a_del_in_the_queue_ends_absorption_and_keeps_its_place() {
    let mut h = Harness::with_ring();
    let queued = vec![
        (BOB, put("k", "2")),
        (CAROL, ClientRequest::Del { key: "k".into() }),
        (DAVE, put("k", "4")),
    ];
    // BOB's PUT runs alone: the DEL behind it is not a PUT.
    let sent = behind_a_first_put(&mut h, queued);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].2, TxOp::Put { value: "2".into() });
    vote_and_ack(&mut h, "k", sent[0].1);
    assert_eq!(h.replies(), vec![(BOB, ClientResponse::Success)]);
    let sent = prepares(&h.take_sent());
    assert_eq!(sent[0].2, TxOp::Del, "the DEL runs in its turn");
    vote_and_ack(&mut h, "k", sent[0].1);
    assert_eq!(h.replies(), vec![(CAROL, ClientResponse::Success)]);
    let sent = prepares(&h.take_sent());
    assert_eq!(sent[0].2, TxOp::Put { value: "4".into() });
    assert_eq!(h.coord.absorbed_updates(), 0, "nothing was absorbed");
}

#[test]
fn absorbed_puts_count_against_the_update_limit() {
    let mut config = CoordinatorConfig::new(3);
    config.max_updates = 3;
    let mut h = Harness::new(config);
    for id in [10, 20, 30] {
        h.register(id, &format!("h:{id}"));
    }
    behind_a_first_put(&mut h, vec![(BOB, put("k", "2")), (CAROL, put("k", "3"))]);
    // BOB waits absorbed into CAROL's transaction: two of the three places.
    h.client(DAVE, put("other", "x"));
    assert!(h.replies().is_empty(), "a third update still fits");
    h.client(DAVE, put("third", "y"));
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(code(&replies[0].1), ErrorCode::Overloaded);
}

#[test]
fn a_queued_update_behind_a_stuck_one_answers_unavailable_in_time() {
    let mut h = Harness::with_ring();
    let (a, b) = pair("k");
    h.client(ALICE, put("k", "1"));
    let first = prepare_txid(&h.take_sent());
    h.server(a, None, ready(first));
    h.server(b, None, ready(first));
    h.server(a, None, ack(first));
    // b never acknowledges the commit.
    h.client(BOB, put("k", "2"));
    h.replies();
    h.advance(3000);
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, BOB);
    assert_eq!(code(&replies[0].1), ErrorCode::Unavailable);
}

#[test]
fn a_read_that_raced_a_commit_is_answered_but_not_cached() {
    let mut h = Harness::with_ring();
    let (a, b) = pair("k");
    h.client(BOB, get("k"));
    let read = h.take_sent_with_ids().remove(0);
    commit_update(&mut h, "k", put("k", "new"));
    // The replica answers the old value it had when the read reached it.
    h.server(
        read.0,
        read.1.id,
        ParticipantResponse::Value {
            key: "k".into(),
            value: "old".into(),
        },
    );
    assert_eq!(
        h.replies(),
        vec![(
            BOB,
            ClientResponse::Value {
                key: "k".into(),
                value: "old".into()
            }
        )]
    );
    h.client(BOB, get("k"));
    assert_eq!(
        h.replies(),
        vec![(
            BOB,
            ClientResponse::Value {
                key: "k".into(),
                value: "new".into()
            }
        )]
    );
    let _ = (a, b);
}

#[test]
fn a_stray_ready_vote_is_answered_with_an_abort() {
    let mut h = Harness::with_ring();
    h.server(20, None, ready(999));
    assert_eq!(
        h.take_sent(),
        vec![(20, ParticipantRequest::Abort { txid: 999 })]
    );
}

#[test]
fn limits_answer_overloaded() {
    let mut config = CoordinatorConfig::new(2);
    config.max_updates = 1;
    config.max_reads = 1;
    let mut h = Harness::new(config);
    h.register(1, "h:1");
    h.register(2, "h:2");
    h.client(ALICE, put("a", "v"));
    h.client(BOB, put("b", "v"));
    h.client(ALICE, get("c"));
    h.client(BOB, get("d"));
    let replies = h.replies();
    assert_eq!(replies.len(), 2);
    assert!(replies
        .iter()
        .all(|(_, r)| code(r) == ErrorCode::Overloaded));
    let sent = h.take_sent();
    assert!(sent.iter().any(|(_, m)| matches!(
        m,
        ParticipantRequest::Prepare {
            op: TxOp::Put { .. },
            ..
        }
    )));
}

#[test]
fn invalid_configurations_are_refused() {
    assert!(Coordinator::new(CoordinatorConfig::new(1)).is_err());
    let mut config = CoordinatorConfig::new(2);
    config.cache.ways = 0;
    assert!(Coordinator::new(config).is_err());
}

#[test]
fn a_dead_server_does_not_pin_update_slots_for_good() {
    let mut config = CoordinatorConfig::new(3);
    config.max_updates = 2;
    let mut h = Harness::new(config);
    let ids = [u64::MAX / 3, u64::MAX / 3 * 2, u64::MAX];
    for id in ids {
        h.register(id, &format!("127.0.0.1:{}", 4000 + id % 1000));
    }
    let dead = ids[0];
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    let with_dead: Vec<&String> = keys
        .iter()
        .filter(|k| h.coord.ring().preference_list(k, 2).contains(&dead))
        .take(2)
        .collect();
    let live_key = keys
        .iter()
        .find(|k| !h.coord.ring().preference_list(k, 2).contains(&dead))
        .unwrap();
    // Two updates of keys the dead server replicates fill every slot and time out.
    for key in &with_dead {
        h.client(ALICE, put(key, "v"));
    }
    h.take_sent();
    for _ in 0..3 {
        // The live replica answers everything it is asked.
        h.advance(1000);
        for (server, msg) in h.take_sent() {
            let answer = match msg {
                ParticipantRequest::Prepare { txid, .. } => ready(txid),
                ParticipantRequest::Commit { txid } | ParticipantRequest::Abort { txid } => {
                    ack(txid)
                }
                _ => continue,
            };
            if server != dead {
                h.server(server, None, answer);
            }
        }
    }
    let replies = h.replies();
    assert_eq!(replies.len(), 2);
    assert!(replies
        .iter()
        .all(|(_, r)| code(r) == ErrorCode::Unavailable));
    // Within one more timeout the aborts nobody acknowledges stop holding the slots.
    h.advance(3000);
    h.client(BOB, put(live_key, "v"));
    assert!(
        h.replies().is_empty(),
        "the update is under way, not refused"
    );
    assert!(!h.take_sent().is_empty());
    assert_eq!(
        h.coord.open_transactions(),
        3,
        "one update, two aborts still resent"
    );
}

#[test]
fn a_timeout_that_could_overflow_a_deadline_is_refused() {
    let mut config = CoordinatorConfig::new(2);
    config.timeout_ms = u64::MAX;
    assert!(Coordinator::new(config).is_err());
    config.timeout_ms = crate::limits::MAX_TIMEOUT_MS;
    assert!(Coordinator::new(config).is_ok());
}

#[test]
fn success_waits_for_both_votes_and_the_staged_record_which_sync_side_by_side() {
    let mut h = Harness::with_ring();
    h.hold_log = true;
    h.client(ALICE, put("k", "v"));
    let (a, b) = pair("k");
    let sent = h.take_sent();
    let txid = prepare_txid(&sent);
    assert_eq!(
        sent.len(),
        2,
        "the prepares go out before the record is durable"
    );
    assert!(
        matches!(h.records().last(), Some(CoordinatorRecord::Staged { txid: t, participants, .. }) if *t == txid && *participants == vec![a, b]),
        "{:?}",
        h.records()
    );
    h.server(a, None, ready(txid));
    h.server(b, None, ready(txid));
    assert!(
        h.replies().is_empty(),
        "the staged record is not durable yet"
    );
    h.client(BOB, get("k"));
    assert!(
        h.replies().is_empty(),
        "a GET before the commit is final reads a replica"
    );
    h.take_sent();
    // The staged record and the decision reach the disk together here.
    h.sync_log();
    assert_eq!(h.replies(), vec![(ALICE, ClientResponse::Success)]);
    assert_eq!(
        h.take_sent(),
        vec![
            (a, ParticipantRequest::Commit { txid }),
            (b, ParticipantRequest::Commit { txid })
        ]
    );
    assert_eq!(
        h.records().last(),
        Some(&CoordinatorRecord::Decided { txid, commit: true })
    );
}

#[test]
fn phase_two_waits_for_the_commit_decision_and_a_waiting_update_hastens_it() {
    let mut h = Harness::with_ring();
    h.hold_log = true;
    h.client(ALICE, put("k", "v1"));
    let txid = prepare_txid(&h.take_sent());
    let (a, b) = pair("k");
    h.sync_log();
    h.server(a, None, ready(txid));
    h.server(b, None, ready(txid));
    assert_eq!(
        h.replies(),
        vec![(ALICE, ClientResponse::Success)],
        "the staged record was durable: the votes answer at once"
    );
    assert!(
        h.take_sent().is_empty(),
        "phase 2 waits for the decision record"
    );
    h.client(BOB, get("k"));
    assert_eq!(
        h.replies(),
        vec![(
            BOB,
            ClientResponse::Value {
                key: "k".into(),
                value: "v1".into()
            }
        )],
        "the commit is final: GETs show it"
    );
    assert!(h.hastened.is_empty(), "nothing waits for phase 2 yet");
    h.client(BOB, put("k", "v2"));
    assert_eq!(
        h.hastened.len(),
        1,
        "an update of the key waits for phase 2"
    );
    h.sync_log();
    let commits = vec![
        (a, ParticipantRequest::Commit { txid }),
        (b, ParticipantRequest::Commit { txid }),
    ];
    let twice: Vec<_> = commits.iter().chain(&commits).cloned().collect();
    assert_eq!(
        h.take_sent(),
        twice,
        "the decision goes twice: the replicas learn that an update waits"
    );
}

#[test]
fn an_abort_is_answered_once_its_decision_is_durable() {
    let mut h = Harness::with_ring();
    h.hold_log = true;
    h.client(ALICE, ClientRequest::Del { key: "k".into() });
    let txid = prepare_txid(&h.take_sent());
    let (a, b) = pair("k");
    h.sync_log();
    h.server(a, None, refuse(txid, ErrorCode::NotFound, "no such key"));
    h.server(b, None, refuse(txid, ErrorCode::NotFound, "no such key"));
    assert!(h.replies().is_empty(), "the abort is not durable yet");
    assert_eq!(
        h.records().last(),
        Some(&CoordinatorRecord::Decided {
            txid,
            commit: false
        })
    );
    assert_eq!(h.urgencies.last(), Some(&SyncUrgency::Now));
    h.sync_log();
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(code(&replies[0].1), ErrorCode::NotFound);
}

/// The log of a coordinator that staged a PUT of "k" and crashed before any vote.
fn log_with_a_staged_put() -> (Vec<u8>, TxId) {
    let mut h = Harness::with_ring();
    h.hold_log = true;
    h.client(ALICE, put("k", "v"));
    let txid = prepare_txid(&h.take_sent());
    (h.log.clone(), txid)
}

#[test]
fn a_staged_transaction_commits_after_a_restart_if_every_replica_holds_it() {
    let (log, txid) = log_with_a_staged_put();
    let mut h = Harness::recovered(&log);
    let (a, b) = pair("k");
    let prepares: Vec<ServerId> = h
        .take_sent()
        .into_iter()
        .filter(|(_, m)| matches!(m, ParticipantRequest::Prepare { txid: t, .. } if *t == txid))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(prepares, vec![a, b], "phase 1 runs again");
    // Neither value may be shown: the client may have heard Success, or not.
    h.client(BOB, get("k"));
    let replies = h.replies();
    assert_eq!(code(&replies[0].1), ErrorCode::Unavailable, "{replies:?}");
    // No deadline: a silent replica may hold a vote an answer was given on.
    h.server(a, None, ready(txid));
    h.advance(10 * 3000);
    let resent = h.take_sent();
    assert!(
        !resent.is_empty(),
        "the prepare to the silent replica goes again"
    );
    assert!(
        resent
            .iter()
            .all(|(s, m)| *s == b && matches!(m, ParticipantRequest::Prepare { .. })),
        "only the prepare to the silent replica goes again"
    );
    h.server(b, None, ready(txid));
    h.client(BOB, get("k"));
    assert_eq!(
        h.replies(),
        vec![(
            BOB,
            ClientResponse::Value {
                key: "k".into(),
                value: "v".into()
            }
        )]
    );
    assert_eq!(
        h.take_sent(),
        vec![
            (a, ParticipantRequest::Commit { txid }),
            (b, ParticipantRequest::Commit { txid })
        ]
    );
    assert!(h
        .records()
        .contains(&CoordinatorRecord::Decided { txid, commit: true }));
}

#[test]
fn a_staged_transaction_a_replica_refuses_after_a_restart_aborts_at_once() {
    let (log, txid) = log_with_a_staged_put();
    let mut h = Harness::recovered(&log);
    let (a, b) = pair("k");
    h.take_sent();
    h.server(b, None, refuse(txid, ErrorCode::Locked, "held by another"));
    assert_eq!(
        h.take_sent(),
        vec![(a, ParticipantRequest::Abort { txid })],
        "a refusal shows no Success was given: no wait for the other vote"
    );
    assert!(h.records().contains(&CoordinatorRecord::Decided {
        txid,
        commit: false
    }));
    h.server(a, None, ack(txid));
    assert_eq!(h.coord.open_transactions(), 0);
    h.client(BOB, get("k"));
    assert!(
        h.take_sent()
            .iter()
            .any(|(_, m)| matches!(m, ParticipantRequest::Get { .. })),
        "the key reads from its replicas again"
    );
}

#[test]
fn a_compacted_log_keeps_a_staged_transaction_staged() {
    let mut h = Harness::with_ring();
    h.hold_log = true;
    h.client(ALICE, put("k", "v"));
    let txid = prepare_txid(&h.take_sent());
    let staged: Vec<_> = h
        .coord
        .compaction_records()
        .into_iter()
        .filter(|r| matches!(r, CoordinatorRecord::Staged { txid: t, .. } if *t == txid))
        .collect();
    assert_eq!(staged.len(), 1);
    let (a, b) = pair("k");
    h.server(a, None, refuse(txid, ErrorCode::Locked, "held"));
    h.server(b, None, ready(txid));
    assert!(
        h.coord.compaction_records().iter().all(|r| !matches!(
            r,
            CoordinatorRecord::Staged { .. } | CoordinatorRecord::Commit { .. }
        )),
        "an abort leaves nothing"
    );
}

#[test]
fn an_abort_answer_waiting_for_its_record_holds_an_update_slot() {
    let mut config = CoordinatorConfig::new(3);
    config.max_updates = 1;
    let mut h = Harness::new(config);
    for id in [10, 20, 30] {
        h.register(id, &format!("127.0.0.1:{}", 4000 + id));
    }
    h.take_sent();
    h.hold_log = true;
    h.client(ALICE, ClientRequest::Del { key: "k".into() });
    let txid = prepare_txid(&h.take_sent());
    let (a, b) = pair("k");
    h.server(a, None, refuse(txid, ErrorCode::NotFound, "no such key"));
    h.server(b, None, refuse(txid, ErrorCode::NotFound, "no such key"));
    assert_eq!(h.coord.open_transactions(), 0, "the transaction ended");
    assert!(
        h.replies().is_empty(),
        "its answer waits for the abort record"
    );
    h.client(BOB, put("other", "v"));
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(code(&replies[0].1), ErrorCode::Overloaded, "{replies:?}");
    h.sync_log();
    let replies = h.replies();
    assert_eq!(code(&replies[0].1), ErrorCode::NotFound);
    h.client(BOB, put("other", "v"));
    assert!(h.replies().is_empty(), "the slot is free again");
    assert!(!h.take_sent().is_empty());
}

#[test]
fn a_commit_decided_with_an_update_queued_is_hastened_at_once() {
    let mut h = Harness::with_ring();
    h.hold_log = true;
    h.client(ALICE, put("k", "v1"));
    let txid = prepare_txid(&h.take_sent());
    h.client(BOB, put("k", "v2"));
    assert!(h.hastened.is_empty(), "phase 1: nothing to hasten yet");
    let (a, b) = pair("k");
    h.server(a, None, ready(txid));
    h.server(b, None, ready(txid));
    assert_eq!(
        h.hastened,
        vec![h.last_write.unwrap()],
        "the commit decision, just written, is synced without lingering"
    );
}
