//! Unit tests of the rules, one scenario each.

use crate::versions::{
    clock_json, container_to_bytes, decode_container, decode_context, decode_lww, encode_context,
    encode_lww, parse_clock_json, Actor, ActorParseError, BinaryError, Container, ContextError,
    Dot, InvariantError, LwwVersion, Payload, Stamp, Version, VersionVector, WriteError,
    MAX_ACTORS, MAX_CLOUD_DOTS, MAX_CONTEXT_BYTES, MAX_COUNTER,
};
use std::collections::BTreeMap;

fn a(node: u64) -> Actor {
    Actor::new(node, 0)
}

fn val(text: &str) -> Payload {
    Payload::Value(text.to_owned())
}

fn values(c: &Container) -> Vec<String> {
    c.versions()
        .map(|v| match v.payload() {
            Payload::Value(s) => s.clone(),
            Payload::Deleted => "<deleted>".to_owned(),
        })
        .collect()
}

fn write(c: &mut Container, actor: Actor, ctx: Option<&VersionVector>, p: Payload) -> Dot {
    match c.write(actor, ctx, p) {
        Ok(dot) => dot,
        Err(e) => panic!("write refused: {e}"),
    }
}

#[test]
fn actors_display_and_parse_as_the_protocol_says() {
    assert_eq!(a(17).to_string(), "17");
    assert_eq!(Actor::new(17, 2).to_string(), "17.2");
    assert_eq!("17".parse::<Actor>(), Ok(a(17)));
    assert_eq!("17.2".parse::<Actor>(), Ok(Actor::new(17, 2)));
    assert_eq!("0".parse::<Actor>(), Ok(a(0)));
    let max = format!("{}.{}", u64::MAX, u64::MAX);
    assert_eq!(max.parse::<Actor>(), Ok(Actor::new(u64::MAX, u64::MAX)));
    for bad in [
        "", "17.0", "017", "17.02", "+1", "-1", "1.", ".1", "1.2.3", "a", " 1", "1 ",
    ] {
        assert_eq!(
            bad.parse::<Actor>(),
            Err(ActorParseError::NotCanonical),
            "{bad:?}"
        );
    }
    assert_eq!(
        "18446744073709551616".parse::<Actor>(),
        Err(ActorParseError::Overflow)
    );
}

#[test]
fn actors_order_by_node_then_incarnation() {
    assert!(a(3) < Actor::new(3, 1));
    assert!(Actor::new(3, 9) < a(17));
}

#[test]
fn a_blind_write_replaces_every_version_of_its_replica() {
    let mut c = Container::new();
    let d1 = write(&mut c, a(1), None, val("x"));
    let d2 = write(&mut c, a(1), None, val("y"));
    assert_eq!(d1, Dot::new(a(1), 1));
    assert_eq!(d2, Dot::new(a(1), 2));
    assert_eq!(values(&c), ["y"]);
    // A blind write at another actor on the same replica replaces too.
    write(&mut c, a(2), None, val("z"));
    assert_eq!(values(&c), ["z"]);
}

#[test]
fn blind_writes_at_two_replicas_become_siblings_with_concurrent_clocks() {
    let mut r1 = Container::new();
    let mut r2 = Container::new();
    write(&mut r1, a(1), None, val("x"));
    write(&mut r2, a(2), None, val("y"));
    let merged = r1.join(&r2);
    assert_eq!(values(&merged), ["x", "y"]);
    let clocks: Vec<_> = merged.versions().map(Version::clock).collect();
    assert!(clocks[0].concurrent_with(&clocks[1]));
    assert_eq!(
        merged.context(),
        &[(a(1), 1), (a(2), 1)].into_iter().collect()
    );
}

#[test]
fn a_write_with_a_read_context_supersedes_exactly_what_the_read_showed() {
    let mut r = Container::new();
    write(&mut r, a(1), None, val("x"));
    let read = r.clone();
    // Another client writes concurrently, with the empty context of a key it read as absent.
    write(&mut r, a(1), Some(&VersionVector::new()), val("y"));
    assert_eq!(values(&r), ["x", "y"]);
    let dot = write(&mut r, a(1), Some(read.context()), val("x2"));
    assert_eq!(values(&r), ["y", "x2"]);
    let new_clock = r.version(dot).map(Version::clock);
    let old_clock = read.versions().next().map(Version::clock);
    match (new_clock, old_clock) {
        (Some(new), Some(old)) => assert!(new.dominates(&old)),
        other => panic!("versions missing: {other:?}"),
    }
}

#[test]
fn a_context_from_another_replica_supersedes_versions_this_one_never_held() {
    let mut r1 = Container::new();
    let mut r2 = Container::new();
    write(&mut r1, a(1), None, val("x"));
    let ctx = r1.context().clone();
    // The write lands on r2, which never saw "x"; when the states meet, "x" is gone.
    write(&mut r2, a(2), Some(&ctx), val("y"));
    r1.merge(&r2);
    assert_eq!(values(&r1), ["y"]);
}

#[test]
fn the_sibling_limit_is_checked_without_changing_anything() {
    let mut c = Container::new();
    let empty = VersionVector::new();
    for i in 0..3 {
        write(&mut c, a(1), Some(&empty), val(&i.to_string()));
    }
    let before = c.clone();
    assert_eq!(c.siblings_after_write(Some(&empty)), 4);
    assert!(c.write_exceeds(Some(&empty), 3));
    assert!(!c.write_exceeds(Some(&empty), 4));
    assert_eq!(c.siblings_after_write(Some(c.context())), 1);
    assert_eq!(c.siblings_after_write(None), 1);
    assert_eq!(c, before);
}

#[test]
fn merges_are_never_refused_by_the_sibling_count() {
    let mut r1 = Container::new();
    let mut r2 = Container::new();
    let empty = VersionVector::new();
    for i in 0..64 {
        write(&mut r1, a(1), Some(&empty), val(&format!("a{i}")));
        write(&mut r2, a(2), Some(&empty), val(&format!("b{i}")));
    }
    assert!(r1.merge(&r2).changed);
    assert_eq!(r1.len(), 128);
}

#[test]
fn a_deletion_is_a_version_that_repair_cannot_undo() {
    let mut r1 = Container::new();
    write(&mut r1, a(1), None, val("x"));
    let stale = r1.clone();
    write(&mut r1, a(1), Some(stale.context()), Payload::Deleted);
    assert!(r1.all_deleted() && !r1.is_empty());
    // The stale replica's value does not come back, whichever way the merge goes.
    assert!(!r1.merge(&stale).changed);
    assert!(r1.all_deleted());
    assert!(stale.join(&r1).all_deleted());
}

#[test]
fn includes_tells_when_a_replica_holds_everything_of_another() {
    let mut r1 = Container::new();
    write(&mut r1, a(1), None, Payload::Deleted);
    let mut r2 = Container::new();
    assert!(!r2.includes(&r1));
    assert!(r1.includes(&r2));
    r2.merge(&r1);
    assert!(r2.includes(&r1) && r1.includes(&r2));
    // Holding a version the other has seen superseded is not holding everything of it.
    let mut r3 = r1.clone();
    write(&mut r3, a(3), None, val("back"));
    assert!(!r1.includes(&r3));
    assert!(r3.includes(&r1));
}

#[test]
fn merging_reports_changes_and_is_idempotent() {
    let mut r1 = Container::new();
    let mut r2 = Container::new();
    write(&mut r1, a(1), None, val("x"));
    write(&mut r2, a(2), None, val("y"));
    let report = r1.merge(&r2);
    assert!(report.changed);
    assert_eq!(report.reused_dots, 0);
    let again = r1.clone();
    assert!(!r1.merge(&again).changed);
    assert!(!r1.merge(&r2).changed);
    assert_eq!(r1, again);
}

/// Riak's kv679: a node that lost its disk and writes again under its old actor hands out
/// a dot the others already know, and its new write is silently dropped. A new
/// incarnation keeps it.
#[test]
fn a_node_that_lost_its_disk_keeps_new_writes_only_under_a_new_incarnation() {
    let mut other = Container::new();
    let mut lost = Container::new();
    for i in 0..3 {
        write(&mut lost, a(1), None, val(&format!("old{i}")));
    }
    other.merge(&lost);

    // The hazard is real: restarting empty under the same actor reuses dot 1:1.
    let mut amnesiac = Container::new();
    let reused = write(&mut amnesiac, a(1), None, val("new"));
    assert_eq!(reused, Dot::new(a(1), 1));
    assert!(!other.join(&amnesiac).versions().any(|v| v.dot() == reused));

    let mut reborn = Container::new();
    let fresh = write(&mut reborn, Actor::new(1, 7), None, val("new"));
    let merged = other.join(&reborn);
    assert!(merged.version(fresh).is_some());
    assert_eq!(values(&merged), ["old2", "new"]);
}

/// The "doomstone": a replica reaps a tombstone, the key is written again there, and a
/// replica that has not reaped yet still knows the old counters. A floor above every
/// counter the node handed out keeps the new write.
#[test]
fn a_write_above_a_floor_survives_a_replica_that_has_not_reaped_yet() {
    let mut r1 = Container::new();
    write(&mut r1, a(1), None, val("x"));
    write(&mut r1, a(1), None, Payload::Deleted);
    let not_reaped = r1.clone();

    let mut reaped = Container::new();
    let reused = write(&mut reaped, a(1), None, val("again"));
    assert!(
        not_reaped.join(&reaped).all_deleted(),
        "hazard: the write was lost"
    );

    let mut reaped = Container::new();
    let floor = not_reaped.context().get(a(1));
    let dot = match reaped.write_above(a(1), None, val("again"), floor) {
        Ok(dot) => dot,
        Err(e) => panic!("{e}"),
    };
    assert!(dot.counter > reused.counter);
    // The node held the tombstone before reaping it, so the new write supersedes it.
    let merged = not_reaped.join(&reaped);
    assert_eq!(values(&merged), ["again"]);
    assert_eq!(merged, reaped.join(&not_reaped));
}

#[test]
fn a_write_past_the_largest_counter_is_refused_and_changes_nothing() {
    let mut c = Container::new();
    write(&mut c, a(1), None, val("x"));
    let before = c.clone();
    let forged: VersionVector = [(a(1), MAX_COUNTER)].into_iter().collect();
    assert_eq!(
        c.write(a(1), Some(&forged), val("y")),
        Err(WriteError::CounterExhausted)
    );
    let beyond: VersionVector = [(a(2), MAX_COUNTER + 1)].into_iter().collect();
    assert_eq!(
        c.write(a(1), Some(&beyond), val("y")),
        Err(WriteError::CounterExhausted)
    );
    assert_eq!(c, before);
}

#[test]
fn a_write_naming_too_many_actors_is_refused_and_changes_nothing() {
    let mut c = Container::new();
    let wide: VersionVector = (0..MAX_ACTORS as u64).map(|n| (a(n + 10), 1)).collect();
    assert_eq!(
        c.write(a(1), Some(&wide), val("y")),
        Err(WriteError::TooManyActors)
    );
    assert_eq!(c, Container::new());
    let fits: VersionVector = (0..MAX_ACTORS as u64 - 1).map(|n| (a(n + 10), 1)).collect();
    assert!(c.write(a(1), Some(&fits), val("y")).is_ok());

    let before = c.clone();
    let mut cloudy = VersionVector::new();
    for i in 0..=MAX_CLOUD_DOTS as u64 {
        cloudy.insert(Dot::new(a(1), 2 * i + 3));
    }
    assert_eq!(
        c.write(a(1), Some(&cloudy), val("z")),
        Err(WriteError::TooManyDots)
    );
    assert_eq!(c, before);
}

#[test]
fn a_dot_handed_out_twice_is_counted_and_merged_the_same_both_ways() {
    let mut r1 = Container::new();
    let mut r2 = Container::new();
    write(&mut r1, a(1), None, val("one"));
    write(&mut r2, a(1), None, val("two"));
    let mut left = r1.clone();
    assert_eq!(left.merge(&r2).reused_dots, 1);
    let mut right = r2.clone();
    assert_eq!(right.merge(&r1).reused_dots, 1);
    assert_eq!(left, right);
    assert_eq!(left.check_invariants(), Ok(()));
}

#[test]
fn check_invariants_names_each_broken_rule() {
    let x = Dot::new(a(1), 1);
    let y = Dot::new(a(2), 1);
    let known: VersionVector = [(a(1), 1), (a(2), 1)].into_iter().collect();
    let build = |known: &VersionVector, versions: Vec<(Dot, Version)>| {
        Container::from_parts(
            known.clone(),
            versions.into_iter().collect::<BTreeMap<_, _>>(),
        )
    };
    let plain = |dot: Dot| Version::from_parts(dot, VersionVector::new(), val("v"));
    assert!(build(&known, vec![(x, plain(x)), (y, plain(y))]).is_ok());
    assert_eq!(
        build(&known, vec![(y, plain(x))]),
        Err(InvariantError::MisfiledVersion(y))
    );
    let zero = Dot::new(a(1), 0);
    assert_eq!(
        build(&known, vec![(zero, plain(zero))]),
        Err(InvariantError::BadCounter(zero))
    );
    let unknown = Dot::new(a(1), 2);
    assert_eq!(
        build(&known, vec![(unknown, plain(unknown))]),
        Err(InvariantError::DotNotKnown(unknown))
    );
    let wide: VersionVector = [(a(3), 1)].into_iter().collect();
    let v = Version::from_parts(x, wide, val("v"));
    assert_eq!(
        build(&known, vec![(x, v)]),
        Err(InvariantError::PastNotKnown(x))
    );
    let own: VersionVector = [(a(1), 1)].into_iter().collect();
    let v = Version::from_parts(x, own.clone(), val("v"));
    assert_eq!(
        build(&known, vec![(x, v)]),
        Err(InvariantError::PastCoversOwnDot(x))
    );
    let over = Version::from_parts(y, own, val("v"));
    assert_eq!(
        build(&known, vec![(x, plain(x)), (y, over)]),
        Err(InvariantError::Superseded { dot: x, by: y })
    );
    let huge: VersionVector = [(a(1), MAX_COUNTER + 1)].into_iter().collect();
    assert_eq!(
        build(&huge, vec![]),
        Err(InvariantError::KnownCounterTooLarge)
    );
}

#[test]
fn contexts_have_one_spelling() {
    let vv: VersionVector = [(a(17), 5), (Actor::new(3, 1), 2), (a(3), 9)]
        .into_iter()
        .collect();
    assert_eq!(encode_context(&vv), "3:9,3.1:2,17:5");
    assert_eq!(decode_context("3:9,3.1:2,17:5"), Ok(vv));
    assert_eq!(encode_context(&VersionVector::new()), "");
    assert_eq!(decode_context(""), Ok(VersionVector::new()));
    let mut cloudy: VersionVector = [(a(3), 2)].into_iter().collect();
    cloudy.insert(Dot::new(a(17), 7));
    cloudy.insert(Dot::new(a(3), 4));
    assert_eq!(encode_context(&cloudy), "3:2~3:4,17:7");
    assert_eq!(decode_context("3:2~3:4,17:7"), Ok(cloudy.clone()));
    // The dot that fills the gap folds the cloud into the counter.
    cloudy.insert(Dot::new(a(3), 3));
    assert_eq!(encode_context(&cloudy), "3:4~17:7");
    let top = format!("{}.{}:{MAX_COUNTER}", u64::MAX, u64::MAX);
    assert!(decode_context(&top).is_ok());
}

#[test]
fn contexts_out_of_shape_are_refused_with_their_reason() {
    use ContextError::*;
    let cases: &[(&str, ContextError)] = &[
        ("17", MalformedEntry(0)),
        ("1:1,", MalformedEntry(1)),
        (",1:1", MalformedEntry(0)),
        ("1:1,,2:1", MalformedEntry(1)),
        ("1:0", BadCounter(0)),
        ("1:01", BadCounter(0)),
        ("1:", BadCounter(0)),
        ("1:1:1", BadCounter(0)),
        ("1:9007199254740992", BadCounter(0)),
        ("1:99999999999999999999", BadCounter(0)),
        ("01:1", BadActor(0, ActorParseError::NotCanonical)),
        ("1.0:1", BadActor(0, ActorParseError::NotCanonical)),
        (" 1:1", BadActor(0, ActorParseError::NotCanonical)),
        ("2:1,1:1", NotAscending(1)),
        ("2:1,2:3", NotAscending(1)),
        ("2.1:1,2:1", NotAscending(1)),
        ("~", NotCanonical(0)),
        ("1:1~", NotCanonical(0)),
        ("1:1~1:2", NotCanonical(0)),
        ("1:1~1:1", NotCanonical(0)),
        ("1:1~2:3,1:3", NotAscending(1)),
        ("~1:3,1:3", NotAscending(1)),
        ("~1:3,", MalformedEntry(1)),
        ("~1:3~1:5", BadCounter(0)),
    ];
    for (text, error) in cases {
        assert_eq!(decode_context(text), Err(*error), "{text:?}");
    }
    let long = "1".repeat(MAX_CONTEXT_BYTES + 1);
    assert_eq!(decode_context(&long), Err(TooLong));
    let many: Vec<String> = (0..=MAX_ACTORS).map(|n| format!("{n}:1")).collect();
    assert_eq!(decode_context(&many.join(",")), Err(TooManyActors));
    let most: Vec<String> = (0..MAX_ACTORS).map(|n| format!("{n}:1")).collect();
    assert!(decode_context(&most.join(",")).is_ok());
    let dots = |n: usize| {
        (0..n)
            .map(|i| format!("1:{}", 2 * i + 3))
            .collect::<Vec<_>>()
    };
    let cloud = format!("1:1~{}", dots(MAX_CLOUD_DOTS).join(","));
    assert_eq!(
        decode_context(&cloud).map(|vv| vv.cloud_len()),
        Ok(MAX_CLOUD_DOTS)
    );
    let cloud = format!("1:1~{}", dots(MAX_CLOUD_DOTS + 1).join(","));
    assert_eq!(decode_context(&cloud), Err(TooManyDots));
}

#[test]
fn clocks_are_json_objects_of_actor_to_counter() {
    let mut c = Container::new();
    write(&mut c, Actor::new(17, 2), None, val("x"));
    let ctx = c.context().clone();
    write(&mut c, a(3), Some(&ctx), val("y"));
    let answers: Vec<_> = c.versions().map(Version::answer_json).collect();
    assert_eq!(
        answers,
        [serde_json::json!({"value": "y", "clock": {"3": 1, "17.2": 1}})]
    );
    write(&mut c, a(3), None, Payload::Deleted);
    let answers: Vec<_> = c.versions().map(Version::answer_json).collect();
    assert_eq!(
        answers,
        [serde_json::json!({"deleted": true, "clock": {"3": 2, "17.2": 1}})]
    );
    let clock = c.context().clone();
    assert_eq!(parse_clock_json(&clock_json(&clock)), Ok(clock));
}

#[test]
fn clock_json_out_of_shape_is_refused() {
    use crate::versions::ClockJsonError::*;
    let cases = [
        (serde_json::json!([]), NotAnObject),
        (serde_json::json!({"1.0": 1}), BadActor),
        (serde_json::json!({"x": 1}), BadActor),
        (serde_json::json!({"1": 0}), BadCounter),
        (serde_json::json!({"1": -1}), BadCounter),
        (serde_json::json!({"1": 1.5}), BadCounter),
        (serde_json::json!({"1": "1"}), BadCounter),
        (serde_json::json!({"1": 9007199254740992_u64}), BadCounter),
    ];
    for (value, error) in cases {
        assert_eq!(parse_clock_json(&value), Err(error), "{value}");
    }
}

#[test]
fn lww_stamps_order_by_time_then_node_and_never_repeat_on_one_node() {
    let early = Stamp { ts_ms: 5, node: 9 };
    let late = Stamp { ts_ms: 6, node: 1 };
    assert!(early < late);
    assert!(Stamp { ts_ms: 6, node: 2 } > late);
    assert_eq!(late.clock_json(), serde_json::json!({"ts": 6, "node": 1}));
    assert_eq!(
        Stamp::next(100, 3, None),
        Stamp {
            ts_ms: 100,
            node: 3
        }
    );
    let first = Stamp::next(100, 3, None);
    let second = Stamp::next(100, 3, Some(first));
    let after_step_back = Stamp::next(40, 3, Some(second));
    assert!(first < second && second < after_step_back);
}

#[test]
fn lww_keeps_the_highest_stamp_whichever_way_it_merges() {
    let older = LwwVersion {
        stamp: Stamp { ts_ms: 5, node: 2 },
        payload: val("old"),
    };
    let newer = LwwVersion {
        stamp: Stamp { ts_ms: 5, node: 3 },
        payload: Payload::Deleted,
    };
    let mut left = older.clone();
    assert!(left.merge(&newer));
    let mut right = newer.clone();
    assert!(!right.merge(&older));
    assert_eq!(left, right);
    assert_eq!(
        left.answer_json(),
        serde_json::json!({"deleted": true, "clock": {"ts": 5, "node": 3}})
    );
}

#[test]
fn containers_round_trip_through_bytes_and_bad_bytes_say_why() {
    let mut c = Container::new();
    write(&mut c, Actor::new(300, 1 << 40), None, val("héllo"));
    write(&mut c, a(2), Some(&VersionVector::new()), Payload::Deleted);
    let bytes = container_to_bytes(&c);
    assert_eq!(decode_container(&bytes), Ok(c.clone()));
    assert_eq!(decode_container(&[]), Err(BinaryError::Truncated));
    assert_eq!(decode_container(&[2]), Err(BinaryError::UnknownFormat(2)));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode_container(&trailing), Err(BinaryError::TrailingBytes));
    // Known {1:1} written with a two-byte varint for the counter.
    assert_eq!(
        decode_container(&[1, 1, 1, 0, 0x81, 0x00, 0]),
        Err(BinaryError::BadVarint)
    );
    // An eleven-byte varint, and a ten-byte one above 2^64 - 1.
    let mut long = vec![1];
    long.extend([0xff; 10]);
    long.push(1);
    assert_eq!(decode_container(&long), Err(BinaryError::BadVarint));
    let mut over = vec![1];
    over.extend([0xff; 9]);
    over.push(0x02);
    assert_eq!(decode_container(&over), Err(BinaryError::BadVarint));
    // One version whose dot the knowledge does not cover.
    let dot = Dot::new(a(1), 1);
    assert_eq!(
        decode_container(&[1, 0, 0, 1, 1, 0, 1, 0, 0, 0]),
        Err(BinaryError::Invariant(InvariantError::DotNotKnown(dot)))
    );
    assert_eq!(
        decode_container(&[1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 2]),
        Err(BinaryError::BadTag(2))
    );
    assert_eq!(
        decode_container(&[1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0xff]),
        Err(BinaryError::BadUtf8)
    );
    assert_eq!(
        decode_container(&[1, 2, 2, 0, 1, 1, 0, 1, 0]),
        Err(BinaryError::NotAscending)
    );
    assert_eq!(
        decode_container(&[1, 1, 1, 0, 0, 0]),
        Err(BinaryError::BadCounter)
    );
    // Knowledge {1:1} with the isolated dot 1:2, which belongs in the counter.
    assert_eq!(
        decode_container(&[1, 1, 1, 0, 1, 1, 1, 0, 2, 0]),
        Err(BinaryError::NotCanonical)
    );
    let cloudy = [1, 1, 1, 0, 1, 2, 1, 0, 5, 1, 0, 3, 0];
    assert_eq!(decode_container(&cloudy), Err(BinaryError::NotAscending));
}

#[test]
fn byte_counts_beyond_the_limits_are_refused_before_reading_on() {
    // A claimed count of 2^63 actors, versions, or value bytes allocates nothing.
    let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    let mut actors = vec![1];
    actors.extend(huge);
    assert_eq!(decode_container(&actors), Err(BinaryError::TooManyActors));
    let mut dots = vec![1, 0];
    dots.extend(huge);
    assert_eq!(decode_container(&dots), Err(BinaryError::TooManyDots));
    let mut versions = vec![1, 0, 0];
    versions.extend(huge);
    assert_eq!(
        decode_container(&versions),
        Err(BinaryError::TooManyVersions)
    );
    let mut value = vec![1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1];
    value.extend(huge);
    assert_eq!(decode_container(&value), Err(BinaryError::ValueTooLarge));
}

/// Two clients write through one node from the same read, so the node holds two siblings
/// of its own actor. The answer to the second write shows only its version, so its context
/// must not cover the first, whose counter is lower.
#[test]
fn a_write_answer_context_covers_its_version_and_not_a_lower_sibling_of_its_actor() {
    let mut r = Container::new();
    let empty = VersionVector::new();
    let first = write(&mut r, a(1), Some(&empty), val("first"));
    let second = write(&mut r, a(1), Some(&empty), val("second"));
    let answer = match r.version(second) {
        Some(v) => v.answer_context(),
        None => panic!("second write missing"),
    };
    assert_eq!(encode_context(&answer), "~1:2");
    assert!(answer.has_seen(second) && !answer.has_seen(first));

    // A plain vector (the clock) would cover the first write and lose it.
    let mut with_clock = r.clone();
    let clock = r.version(second).map(Version::clock).unwrap_or_default();
    write(&mut with_clock, a(1), Some(&clock), val("third"));
    assert_eq!(
        values(&with_clock),
        ["third"],
        "hazard: the first write is lost"
    );

    let mut elsewhere = Container::new();
    write(&mut elsewhere, a(2), Some(&answer), val("third"));
    write(&mut r, a(1), Some(&answer), val("third"));
    assert_eq!(values(&r), ["first", "third"]);
    // Applied at a replica that has not merged the node's state yet, the same write
    // supersedes the same version once the states meet, whichever way they merge.
    let left = r.join(&elsewhere);
    assert_eq!(values(&left), ["first", "third", "third"]);
    assert_eq!(left, elsewhere.join(&r));
    assert_eq!(left.check_invariants(), Ok(()));
    assert_eq!(elsewhere.context().cloud_len(), 1);
    assert_eq!(left.context().cloud_len(), 0);
}

#[test]
fn every_clock_is_above_the_clocks_it_superseded() {
    let mut r1 = Container::new();
    let mut r2 = Container::new();
    let d1 = write(&mut r1, a(1), None, val("x"));
    let d2 = write(&mut r2, a(2), None, val("y"));
    r1.merge(&r2);
    let read = r1.clone();
    let d3 = write(&mut r2, a(2), Some(read.context()), val("z"));
    let clock = |c: &Container, d: Dot| c.version(d).map(Version::clock).unwrap_or_default();
    let new = clock(&r2, d3);
    assert!(new.dominates(&clock(&read, d1)));
    assert!(new.dominates(&clock(&read, d2)));
    assert_eq!(new, [(a(1), 1), (a(2), 2)].into_iter().collect());
}

/// Two clients read-modify-write one key through one node, always interleaved: one
/// reads, then the other writes with the context of its own earlier read, so every write
/// misses the other client's latest write. There are never more than two siblings, and the
/// siblings held are always truly concurrent.
#[test]
fn interleaved_read_modify_write_clients_make_no_false_siblings_and_no_explosion() {
    let mut node = Container::new();
    let mut reads = [VersionVector::new(), VersionVector::new()];
    let mut last = [None, None];
    for round in 0..100 {
        let reader = round % 2;
        let writer = 1 - reader;
        reads[reader] = node.context().clone();
        let dot = write(
            &mut node,
            a(1),
            Some(&reads[writer]),
            val(&round.to_string()),
        );
        last[writer] = Some(dot);
        assert!(node.len() <= 2, "round {round}: {} siblings", node.len());
        for v in node.versions() {
            assert!(v.dot() == dot || !reads[writer].has_seen(v.dot()));
        }
        assert_eq!(node.check_invariants(), Ok(()));
    }
    assert_eq!(node.len(), 2);
    assert!(last
        .iter()
        .all(|d| d.is_some_and(|d| node.version(d).is_some())));
}

#[test]
fn lww_states_round_trip_through_bytes_and_bad_bytes_say_why() {
    for version in [
        LwwVersion {
            stamp: Stamp {
                ts_ms: 1 << 40,
                node: u64::MAX,
            },
            payload: val("v"),
        },
        LwwVersion {
            stamp: Stamp { ts_ms: 0, node: 0 },
            payload: Payload::Deleted,
        },
    ] {
        let mut bytes = Vec::new();
        encode_lww(&version, &mut bytes);
        assert_eq!(decode_lww(&bytes), Ok(version));
        assert_eq!(decode_container(&bytes), Err(BinaryError::UnknownFormat(2)));
    }
    assert_eq!(decode_lww(&[1, 0, 0]), Err(BinaryError::UnknownFormat(1)));
    assert_eq!(decode_lww(&[2, 5]), Err(BinaryError::Truncated));
    assert_eq!(
        decode_lww(&[2, 5, 1, 0, 0]),
        Err(BinaryError::TrailingBytes)
    );
    assert_eq!(decode_lww(&[2, 5, 1, 3]), Err(BinaryError::BadTag(3)));
}

#[test]
fn a_grave_keeps_the_knowledge_and_swallows_what_it_had_seen() {
    let mut live = Container::new();
    write(&mut live, a(1), None, val("old"));
    let old = live.clone();
    let seen = live.context().clone();
    let del = write(&mut live, a(2), Some(&seen), Payload::Deleted);
    assert!(live.all_deleted() && live.version(del).is_some());
    let mut grave = live.without_versions();
    assert!(grave.is_empty() && grave.all_deleted());
    assert_eq!(grave.context(), live.context());
    assert_eq!(grave.check_invariants(), Ok(()));
    assert!(grave.includes(&live) && !live.includes(&grave));
    assert!(!grave.merge(&old).changed, "a delayed old state stays dead");
    assert!(
        !grave.merge(&live).changed,
        "so does the tombstone it replaced"
    );
    let mut back = live.clone();
    assert!(
        back.merge(&grave).changed && back.is_empty(),
        "graves spread by merge"
    );
    let next = write(&mut grave, a(2), None, val("new"));
    assert!(
        next.counter > del.counter,
        "a later write is numbered above the grave's past"
    );
    assert_eq!(values(&grave), ["new"]);
}
