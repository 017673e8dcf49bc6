//! Deterministic tests of the coordinator: time is a number the test moves, and the seeded
//! simulation at the end prints its seed so any failure replays exactly.

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        ..CoordinatorConfig::default()
    }
}

/// A consumer-protocol subscription (version 0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = vec![0, 0];
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        out.extend_from_slice(&(t.len() as i16).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

fn join(member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(&["t"]))],
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

fn sync(member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        generation_id,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
            .collect(),
        ..SyncRequest::default()
    }
}

fn join_output(c: &mut GroupCoordinator, waiter: WaiterId) -> JoinResponse {
    let outputs = c.take_outputs();
    outputs
        .into_iter()
        .find_map(|o| match o {
            Output::Join(w, r) if w == waiter => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join output for waiter {waiter}"))
}

/// A dynamic member's full entry: MEMBER_ID_REQUIRED, then a join with the given id.
fn join_dynamic(c: &mut GroupCoordinator, waiter: WaiterId, now: i64) -> String {
    let first = c
        .join_group(join("", None), waiter, now)
        .expect("answered at once");
    assert_eq!(first.error, MEMBER_ID_REQUIRED);
    assert!(first.member_id.starts_with("client-"));
    assert!(c
        .join_group(join(&first.member_id, None), waiter, now)
        .is_none());
    first.member_id
}

#[test]
fn single_member_joins_after_member_id_required_and_becomes_stable() {
    let mut c = GroupCoordinator::new(config());
    let id = join_dynamic(&mut c, 1, 0);
    let r = join_output(&mut c, 1);
    assert_eq!(r.error, NONE);
    assert_eq!((r.generation_id, r.leader.as_str()), (1, id.as_str()));
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1, "the leader sees every member");
    assert_eq!(c.describe_group("g").state, GroupState::CompletingRebalance);

    let s = c.sync_group(sync(&id, 1, &[(&id, "all")]), 2, 10);
    assert!(s.is_none(), "the leader's sync answers through outputs");
    let outputs = c.take_outputs();
    assert_eq!(
        outputs,
        vec![Output::Sync(
            2,
            SyncResponse {
                error: NONE,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: Bytes::from_static(b"all"),
            }
        )]
    );
    assert_eq!(c.describe_group("g").state, GroupState::Stable);
    let records = c.take_records();
    assert_eq!(records.len(), 1, "the stable group is stored: {records:?}");
    assert_eq!(records[0].partition, c.partition_for("g"));
}

#[test]
fn initial_rebalance_delay_waits_for_more_members_up_to_the_rebalance_timeout() {
    let mut c = GroupCoordinator::new(CoordinatorConfig {
        initial_rebalance_delay_ms: 3_000,
        ..config()
    });
    let a = join_dynamic(&mut c, 1, 0);
    c.tick(2_000);
    assert!(
        c.take_outputs().is_empty(),
        "still within the initial delay"
    );
    let b = join_dynamic(&mut c, 2, 2_500);
    c.tick(3_000);
    assert!(
        c.take_outputs().is_empty(),
        "a member arrived during the delay, so it is extended"
    );
    c.tick(6_000);
    let outputs = c.take_outputs();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    for o in outputs {
        let Output::Join(_, r) = o else {
            panic!("{o:?}")
        };
        assert_eq!(r.generation_id, 1);
        assert!(r.member_id == a || r.member_id == b);
    }
}

#[test]
fn a_second_member_rebalances_the_group_and_the_leader_sees_both_subscriptions() {
    let mut c = GroupCoordinator::new(config());
    let a = join_dynamic(&mut c, 1, 0);
    join_output(&mut c, 1);
    c.sync_group(sync(&a, 1, &[(&a, "p0")]), 2, 0);
    c.take_outputs();

    let b = join_dynamic(&mut c, 3, 100);
    assert_eq!(c.describe_group("g").state, GroupState::PreparingRebalance);
    assert_eq!(c.heartbeat("g", &a, None, 1, 200), REBALANCE_IN_PROGRESS);
    assert!(c.join_group(join(&a, None), 4, 300).is_none());
    let outputs = c.take_outputs();
    assert_eq!(
        outputs.len(),
        2,
        "both joins complete together: {outputs:?}"
    );
    let mut leader_members = 0;
    for o in outputs {
        let Output::Join(_, r) = o else {
            panic!("{o:?}")
        };
        assert_eq!((r.generation_id, r.leader.as_str()), (2, a.as_str()));
        if r.member_id == a {
            leader_members = r.members.len();
        } else {
            assert_eq!(r.member_id, b);
            assert!(r.members.is_empty(), "followers get no member list");
        }
    }
    assert_eq!(leader_members, 2);

    // The follower's sync waits for the leader's; an old generation is refused.
    assert_eq!(
        c.sync_group(sync(&b, 1, &[]), 5, 400).map(|r| r.error),
        Some(ILLEGAL_GENERATION)
    );
    assert!(c.sync_group(sync(&b, 2, &[]), 5, 400).is_none());
    assert!(c.take_outputs().is_empty());
    c.sync_group(sync(&a, 2, &[(&a, "p0"), (&b, "p1")]), 6, 500);
    let mut got: Vec<(WaiterId, Bytes)> = c
        .take_outputs()
        .into_iter()
        .map(|o| match o {
            Output::Sync(w, r) => (w, r.assignment),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (5, Bytes::from_static(b"p1")),
            (6, Bytes::from_static(b"p0"))
        ]
    );
}

#[test]
fn an_expired_session_removes_the_member_and_the_rest_rebalance() {
    let mut c = GroupCoordinator::new(config());
    let a = join_dynamic(&mut c, 1, 0);
    let b = join_dynamic(&mut c, 2, 0);
    // Two members are known before the first join completes only if the first waits; with
    // no initial delay the first completes alone, so bring both to a stable generation.
    c.take_outputs();
    assert!(c.join_group(join(&a, None), 3, 10).is_none());
    let outputs = c.take_outputs();
    assert_eq!(outputs.len(), 2);
    let generation = c.heartbeat("g", &a, None, 2, 20);
    assert_eq!(generation, NONE, "generation 2 holds both members");
    c.sync_group(sync(&a, 2, &[(&a, "x"), (&b, "y")]), 4, 30);
    c.take_outputs();

    // a keeps heartbeating, b goes silent.
    for t in (1_000..=SESSION_MS as i64).step_by(1_000) {
        assert_eq!(c.heartbeat("g", &a, None, 2, t), NONE);
        c.tick(t);
    }
    assert_eq!(
        c.describe_group("g").members.len(),
        2,
        "b's session is not over yet"
    );
    c.tick(i64::from(SESSION_MS) + 31);
    let d = c.describe_group("g");
    assert_eq!(d.members.len(), 1, "b expired");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(c.heartbeat("g", &b, None, 2, 10_100), UNKNOWN_MEMBER_ID);
    assert_eq!(c.heartbeat("g", &a, None, 2, 10_100), REBALANCE_IN_PROGRESS);
    assert!(c.join_group(join(&a, None), 5, 10_200).is_none());
    let r = join_output(&mut c, 5);
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
}

#[test]
fn a_member_that_never_rejoins_is_dropped_at_the_rebalance_timeout() {
    let mut c = GroupCoordinator::new(config());
    let a = join_dynamic(&mut c, 1, 0);
    c.take_outputs();
    c.sync_group(sync(&a, 1, &[]), 2, 0);
    c.take_outputs();
    join_dynamic(&mut c, 3, 100);
    // a is told to rejoin by heartbeat but does not; b's join waits for it until the
    // rebalance timeout, which a's heartbeats do not extend.
    for t in (1_000..i64::from(REBALANCE_MS)).step_by(1_000) {
        c.heartbeat("g", &a, None, 1, t);
        c.tick(t);
        assert!(c.take_outputs().is_empty(), "at {t}");
    }
    c.tick(100 + i64::from(REBALANCE_MS));
    let r = join_output(&mut c, 3);
    assert_eq!((r.error, r.generation_id, r.members.len()), (NONE, 2, 1));
    assert_eq!(c.heartbeat("g", &a, None, 1, 40_000), UNKNOWN_MEMBER_ID);
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_and_fences_the_old_instance() {
    let mut c = GroupCoordinator::new(config());
    assert!(c.join_group(join("", Some("i1")), 1, 0).is_none());
    let r = join_output(&mut c, 1);
    let old = r.member_id.clone();
    assert!(
        old.starts_with("i1-"),
        "static members skip MEMBER_ID_REQUIRED: {old}"
    );
    c.sync_group(sync(&old, 1, &[(&old, "mine")]), 2, 0);
    c.take_outputs();
    c.take_records();

    // The process restarts and joins without its member id.
    let r = c
        .join_group(join("", Some("i1")), 3, 5_000)
        .expect("a stable group answers at once");
    assert_eq!((r.error, r.generation_id), (NONE, 1), "no rebalance");
    let new = r.member_id.clone();
    assert_ne!(new, old);
    assert_eq!(
        r.leader, old,
        "the old leader id, so the restarted leader does not assign"
    );
    assert!(r.skip_assignment && r.members.len() == 1);
    assert_eq!(c.describe_group("g").state, GroupState::Stable);
    assert_eq!(c.take_records().len(), 1, "the new member id is stored");
    let s = c.sync_group(sync(&new, 1, &[]), 4, 5_100).unwrap();
    assert_eq!(s.assignment, Bytes::from_static(b"mine"));

    // The old incarnation is fenced everywhere.
    assert_eq!(
        c.heartbeat("g", &old, Some("i1"), 1, 5_200),
        FENCED_INSTANCE_ID
    );
    let commit = CommitRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: old.clone(),
        group_instance_id: Some("i1".into()),
        retention_time_ms: -1,
        offsets: vec![],
    };
    assert_eq!(c.commit_offsets(commit, 5_300), Err(FENCED_INSTANCE_ID));
    let (_, errors) = c.leave_group("g", &[(old, Some("i1".into()))], 5_400);
    assert_eq!(errors, vec![FENCED_INSTANCE_ID]);
}

#[test]
fn batched_leave_removes_members_by_instance_and_by_id() {
    let mut c = GroupCoordinator::new(config());
    c.join_group(join("", Some("i1")), 1, 0);
    let s = join_output(&mut c, 1).member_id;
    let d = join_dynamic(&mut c, 2, 10);
    let (top, errors) = c.leave_group(
        "g",
        &[
            (String::new(), Some("i1".into())),
            (d.clone(), None),
            ("nobody".into(), None),
        ],
        20,
    );
    assert_eq!(top, NONE);
    assert_eq!(errors, vec![NONE, NONE, UNKNOWN_MEMBER_ID]);
    let desc = c.describe_group("g");
    assert!(desc.members.is_empty(), "{desc:?}");
    assert_eq!(desc.state, GroupState::Empty);
    assert_eq!(c.heartbeat("g", &s, Some("i1"), 1, 30), UNKNOWN_MEMBER_ID);
}

#[test]
fn offset_commits_follow_membership_and_survive_replay() {
    let mut c = GroupCoordinator::new(config());
    let a = join_dynamic(&mut c, 1, 0);
    c.take_outputs();
    let commit = |generation_id: i32, member_id: &str, offset: i64, metadata: &str| CommitRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        retention_time_ms: -1,
        offsets: vec![CommitOffset {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: 4,
            metadata: Some(metadata.into()),
        }],
    };
    assert_eq!(
        c.commit_offsets(commit(1, &a, 5, ""), 1),
        Err(REBALANCE_IN_PROGRESS),
        "no commits between join and sync"
    );
    c.sync_group(sync(&a, 1, &[]), 2, 2);
    c.take_outputs();
    assert_eq!(
        c.commit_offsets(commit(0, &a, 5, ""), 3),
        Err(ILLEGAL_GENERATION)
    );
    assert_eq!(
        c.commit_offsets(commit(1, "x", 5, ""), 3),
        Err(UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        c.commit_offsets(commit(-1, "", 5, ""), 3),
        Err(UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        c.commit_offsets(commit(1, &a, 7, "meta ✓"), 4),
        Ok(vec![NONE])
    );
    let big = "m".repeat(4097);
    assert_eq!(
        c.commit_offsets(commit(1, &a, 8, &big), 5),
        Ok(vec![OFFSET_METADATA_TOO_LARGE])
    );
    // A standalone consumer commits into a group of its own.
    let mut solo = commit(-1, "", 11, "solo");
    solo.group_id = "solo".into();
    assert_eq!(c.commit_offsets(solo, 6), Ok(vec![NONE]));

    // Rebuild a coordinator from nothing but the records.
    let records = c.take_records();
    let mut r = GroupCoordinator::new(config());
    for rec in &records {
        r.replay(&rec.key, rec.value.as_deref(), 100).unwrap();
    }
    r.finish_loading(100);
    let want = vec![(
        "t".to_string(),
        0,
        Some(Committed {
            offset: 7,
            leader_epoch: 4,
            metadata: "meta ✓".into(),
        }),
    )];
    assert_eq!(r.fetch_offsets("g", None), want);
    assert_eq!(r.fetch_offsets("g", Some(&[("t".into(), vec![0])])), want);
    assert_eq!(
        r.fetch_offsets("g", Some(&[("t".into(), vec![1])])),
        vec![("t".to_string(), 1, None)]
    );
    assert_eq!(
        r.fetch_offsets("solo", None)[0].2.as_ref().unwrap().offset,
        11
    );
    let d = r.describe_group("g");
    assert_eq!((d.state, d.members.len()), (GroupState::Stable, 1));
    // The reloaded member keeps its generation and may heartbeat and commit.
    assert_eq!(r.heartbeat("g", &a, None, 1, 200), NONE);
    assert_eq!(r.commit_offsets(commit(1, &a, 9, ""), 300), Ok(vec![NONE]));
    // Its session starts at load time.
    r.tick(300 + i64::from(SESSION_MS));
    assert_eq!(r.describe_group("g").state, GroupState::Empty);
}

#[test]
fn a_commit_whose_record_was_not_appended_is_never_visible() {
    let mut c = GroupCoordinator::new(config());
    let commit = |offset| CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        retention_time_ms: -1,
        offsets: vec![CommitOffset {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: -1,
            metadata: None,
        }],
        ..CommitRequest::default()
    };
    c.commit_offsets(commit(5), 0).unwrap();
    assert_eq!(c.take_records().len(), 1);
    c.records_appended(true);
    c.commit_offsets(commit(9), 1).unwrap();
    c.take_records();
    c.records_appended(false);
    assert_eq!(c.fetch_offsets("g", None)[0].2.as_ref().unwrap().offset, 5);
}

#[test]
fn a_standalone_consumer_keeps_offsets_it_keeps_committing() {
    let mut c = GroupCoordinator::new(CoordinatorConfig {
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 1_000,
        ..config()
    });
    for t in (0..=120_000).step_by(10_000) {
        let commit = CommitRequest {
            group_id: "solo".into(),
            generation_id: -1,
            retention_time_ms: -1,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: t,
                leader_epoch: -1,
                metadata: None,
            }],
            ..CommitRequest::default()
        };
        c.commit_offsets(commit, t).unwrap();
        c.records_appended(true);
        c.tick(t);
    }
    assert_eq!(
        c.fetch_offsets("solo", None).len(),
        1,
        "retention runs from the last commit"
    );
    c.tick(120_000 + 60_000);
    assert!(c.fetch_offsets("solo", None).is_empty());
}

#[test]
fn a_leader_that_never_syncs_is_dropped_at_the_rebalance_timeout() {
    let mut c = GroupCoordinator::new(CoordinatorConfig {
        initial_rebalance_delay_ms: 1_000,
        ..config()
    });
    let a = join_dynamic(&mut c, 1, 0);
    let b = join_dynamic(&mut c, 2, 0);
    c.tick(1_000); // b arrived during the initial delay, which extends it once
    c.tick(3_000);
    let outputs = c.take_outputs();
    assert_eq!(outputs.len(), 2);
    let leader = join_result_leader(&outputs);
    let follower = if leader == a { b } else { a };
    assert!(c.sync_group(sync(&follower, 1, &[]), 3, 3_100).is_none());
    // The leader keeps its session alive but never sends its assignment.
    for t in (4_000..3_000 + i64::from(REBALANCE_MS)).step_by(2_000) {
        c.heartbeat("g", &leader, None, 1, t);
        c.tick(t);
        assert!(c.take_outputs().is_empty(), "at {t}");
    }
    c.tick(3_000 + i64::from(REBALANCE_MS));
    let outputs = c.take_outputs();
    assert!(
        outputs.contains(&Output::Sync(3, SyncResponse::error(REBALANCE_IN_PROGRESS))),
        "{outputs:?}"
    );
    assert_eq!(
        c.heartbeat("g", &leader, None, 1, 40_000),
        UNKNOWN_MEMBER_ID
    );
}

fn join_result_leader(outputs: &[Output]) -> String {
    match &outputs[0] {
        Output::Join(_, r) => r.leader.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention_and_the_group_goes_away() {
    let mut c = GroupCoordinator::new(CoordinatorConfig {
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 1_000,
        ..config()
    });
    let commit = CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        retention_time_ms: -1,
        offsets: vec![CommitOffset {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        }],
        ..CommitRequest::default()
    };
    c.commit_offsets(commit, 0).unwrap();
    c.records_appended(true);
    c.take_records();
    c.tick(59_000);
    assert_eq!(c.list_groups(&[]).len(), 1);
    c.tick(60_000);
    assert!(
        c.list_groups(&[]).is_empty(),
        "offsets expired, group deleted"
    );
    let tombstones = c.take_records();
    // The offset's tombstone; the group never had members, so it has no record to delete.
    assert_eq!(tombstones.len(), 1, "{tombstones:?}");
    assert!(tombstones.iter().all(|r| r.value.is_none()));
}

#[test]
fn delete_groups_and_offset_delete_follow_kafkas_rules() {
    let mut c = GroupCoordinator::new(config());
    let a = join_dynamic(&mut c, 1, 0);
    c.take_outputs();
    c.sync_group(sync(&a, 1, &[]), 2, 0);
    c.take_outputs();
    let offsets = ["t", "other"]
        .iter()
        .map(|t| CommitOffset {
            topic: t.to_string(),
            partition: 0,
            offset: 3,
            leader_epoch: -1,
            metadata: None,
        })
        .collect();
    let commit = CommitRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: a.clone(),
        retention_time_ms: -1,
        offsets,
        ..CommitRequest::default()
    };
    c.commit_offsets(commit, 1).unwrap();
    c.records_appended(true);
    assert_eq!(
        c.delete_groups(&["g".into(), "nope".into()], 2),
        vec![NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]
    );
    let (top, errors) = c.delete_offsets("g", &[("t".into(), 0), ("other".into(), 0)], 3);
    assert_eq!((top, errors), (NONE, vec![GROUP_SUBSCRIBED_TO_TOPIC, NONE]));
    assert_eq!(c.fetch_offsets("g", None).len(), 1);
    c.leave_group("g", &[(a, None)], 4);
    c.take_records();
    assert_eq!(c.delete_groups(&["g".into()], 5), vec![NONE]);
    assert_eq!(c.describe_group("g").state, GroupState::Dead);
    let records = c.take_records();
    assert_eq!(records.len(), 2, "offset and group tombstones: {records:?}");
}

#[test]
fn protocols_are_negotiated_across_members() {
    let mut c = GroupCoordinator::new(CoordinatorConfig {
        initial_rebalance_delay_ms: 1_000,
        ..config()
    });
    let mut first = join("", None);
    first.require_known_member_id = false;
    first.protocols = vec![
        ("cooperative-sticky".into(), subscription(&["t"])),
        ("range".into(), subscription(&["t"])),
    ];
    assert!(c.join_group(first.clone(), 1, 0).is_none());
    let mut second = first.clone();
    second.protocols = vec![
        ("range".into(), subscription(&["t"])),
        ("roundrobin".into(), subscription(&["t"])),
    ];
    assert!(c.join_group(second, 2, 0).is_none());
    let mut third = first.clone();
    third.protocols = vec![("roundrobin".into(), subscription(&["t"]))];
    assert_eq!(
        c.join_group(third, 3, 0).map(|r| r.error),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    let mut other_type = first;
    other_type.protocol_type = "connect".into();
    assert_eq!(
        c.join_group(other_type, 4, 0).map(|r| r.error),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    c.tick(1_000);
    assert!(
        c.take_outputs().is_empty(),
        "the second member extended the initial delay"
    );
    c.tick(2_000);
    let r = join_output(&mut c, 1);
    assert_eq!(
        r.protocol_name.as_deref(),
        Some("range"),
        "the only common protocol"
    );
}

#[test]
fn hostile_joins_get_errors() {
    let mut c = GroupCoordinator::new(config());
    let mut huge = join("", None);
    huge.protocols = vec![("range".into(), Bytes::from(vec![0u8; (1 << 20) + 1]))];
    assert_eq!(
        c.join_group(huge, 1, 0).map(|r| r.error),
        Some(INVALID_REQUEST)
    );
    for session in [0, -1, i32::MAX] {
        let mut bad = join("", None);
        bad.session_timeout_ms = session;
        assert_eq!(
            c.join_group(bad, 2, 0).map(|r| r.error),
            Some(INVALID_SESSION_TIMEOUT)
        );
    }
    let mut negative = join("", None);
    negative.rebalance_timeout_ms = -5;
    assert_eq!(
        c.join_group(negative, 3, 0).map(|r| r.error),
        Some(INVALID_REQUEST)
    );
    let mut empty = join("", None);
    empty.group_id = String::new();
    assert_eq!(
        c.join_group(empty, 4, 0).map(|r| r.error),
        Some(INVALID_GROUP_ID)
    );
    assert_eq!(
        c.join_group(join("made-up", None), 5, 0).map(|r| r.error),
        Some(UNKNOWN_MEMBER_ID)
    );
    assert!(
        c.list_groups(&[]).is_empty(),
        "refused joins leave no groups behind"
    );
}

#[test]
fn a_pending_dynamic_member_cannot_take_a_static_members_instance() {
    let mut c = GroupCoordinator::new(config());
    c.join_group(join("", Some("i1")), 1, 0);
    let holder = join_output(&mut c, 1).member_id;
    let pending = c.join_group(join("", None), 2, 10).unwrap().member_id;
    let r = c.join_group(join(&pending, Some("i1")), 3, 20).unwrap();
    assert_eq!(r.error, FENCED_INSTANCE_ID);
    let members: Vec<String> = c
        .describe_group("g")
        .members
        .into_iter()
        .map(|m| m.member_id)
        .collect();
    assert_eq!(members, vec![holder]);
}

#[test]
fn java_string_hash_places_groups_like_kafka() {
    // Well-known Java values: "hello".hashCode() is 99162322, and
    // "polygenelubricants".hashCode() is Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
    assert_eq!(partition_for("hello", 50), 99162322 % 50);
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    assert_eq!(partition_for("", 50), 0);
    for g in ["a", "group-with-ünïcode", "x".repeat(200).as_str()] {
        assert!((0..50).contains(&partition_for(g, 50)));
    }
}

mod simulation;

fn txn_commit(pid: i64, topic: &str, offset: i64) -> TxnCommitRequest {
    TxnCommitRequest {
        group_id: "g".into(),
        producer_id: pid,
        producer_epoch: 3,
        generation_id: -1,
        offsets: vec![CommitOffset {
            topic: topic.into(),
            partition: 0,
            offset,
            leader_epoch: -1,
            metadata: None,
        }],
        ..TxnCommitRequest::default()
    }
}

fn committed_offset(c: &GroupCoordinator, topic: &str) -> Option<i64> {
    let asked = [(topic.to_string(), vec![0])];
    c.fetch_offsets("g", Some(&asked))[0]
        .2
        .as_ref()
        .map(|v| v.offset)
}

/// A transactional offset commit is written at once, in its producer's transactional batch,
/// but is visible only after its transaction commits; an aborted one never is. Replaying the
/// records and markers into a fresh coordinator gives the same offsets and the same pending
/// (still open) transaction.
#[test]
fn transactional_offsets_are_visible_only_after_their_transaction_commits() {
    let mut c = GroupCoordinator::new(config());
    let mut log: Vec<(Record, Option<bool>)> = Vec::new();
    for (pid, topic, offset) in [(1, "a", 10), (2, "b", 20), (3, "c", 30)] {
        assert_eq!(
            c.txn_commit_offsets(txn_commit(pid, topic, offset), 0),
            Ok(vec![NONE])
        );
        let records = c.take_records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].producer, Some((pid, 3)));
        log.extend(records.into_iter().map(|r| (r, None)));
        c.records_appended(true);
        assert_eq!(committed_offset(&c, topic), None, "not before the marker");
        assert!(c.has_pending_txn_offset("g", topic, 0));
    }
    let partition = c.partition_for("g");
    c.complete_txn(partition, 1, true);
    c.complete_txn(partition, 2, false);
    for (pid, commit) in [(1, true), (2, false)] {
        let marker = Record {
            partition: 0,
            key: Bytes::new(),
            value: None,
            producer: Some((pid, 3)),
        };
        log.push((marker, Some(commit)));
    }
    assert_eq!(committed_offset(&c, "a"), Some(10));
    assert_eq!(committed_offset(&c, "b"), None, "aborted");
    assert_eq!(committed_offset(&c, "c"), None, "still open");
    assert!(!c.has_pending_txn_offset("g", "a", 0));
    assert!(c.has_pending_txn_offset("g", "c", 0));

    let mut replayed = GroupCoordinator::new(config());
    for (r, marker) in &log {
        let (pid, _) = r.producer.unwrap();
        match marker {
            Some(commit) => replayed.complete_txn(partition, pid, *commit),
            None => replayed
                .replay_txn(pid, &r.key, r.value.as_deref())
                .unwrap(),
        }
    }
    replayed.finish_loading(0);
    for topic in ["a", "b", "c"] {
        assert_eq!(
            committed_offset(&replayed, topic),
            committed_offset(&c, topic)
        );
    }
    replayed.complete_txn(partition, 3, true);
    assert_eq!(committed_offset(&replayed, "c"), Some(30));
}

/// A transactional commit naming a member is checked like a member's commit.
#[test]
fn transactional_commits_from_unknown_members_are_refused() {
    let mut c = GroupCoordinator::new(config());
    let mut req = txn_commit(1, "a", 1);
    req.member_id = "nobody".into();
    assert_eq!(c.txn_commit_offsets(req, 0), Err(UNKNOWN_MEMBER_ID));
    let mut req = txn_commit(1, "a", 1);
    req.generation_id = 4;
    assert_eq!(c.txn_commit_offsets(req, 0), Err(ILLEGAL_GENERATION));
    assert!(c.take_records().is_empty());
}

/// A marker decides only its own partition's transactional commits: a producer whose
/// transaction committed offsets of two groups on different offsets partitions, with the
/// marker on one partition replayed before the other partition's records, keeps the other
/// group's offsets pending until that partition's own marker.
#[test]
fn a_marker_decides_only_its_own_partitions_offsets() {
    let mut c = GroupCoordinator::new(config());
    let (g1, g2) = ("group-a", "group-b");
    let (p1, p2) = (c.partition_for(g1), c.partition_for(g2));
    assert_ne!(p1, p2, "the test needs two offsets partitions");
    for group in [g1, g2] {
        let mut req = txn_commit(9, "t", 5);
        req.group_id = group.into();
        c.txn_commit_offsets(req, 0).unwrap();
        c.take_records();
        c.records_appended(true);
    }
    c.complete_txn(p1, 9, true);
    let fetch = |c: &GroupCoordinator, group: &str| {
        let asked = [("t".to_string(), vec![0])];
        c.fetch_offsets(group, Some(&asked))[0]
            .2
            .as_ref()
            .map(|v| v.offset)
    };
    assert_eq!(fetch(&c, g1), Some(5));
    assert_eq!(fetch(&c, g2), None, "partition {p2} has no marker yet");
    assert!(c.has_pending_txn_offset(g2, "t", 0));
    c.complete_txn(p2, 9, false);
    assert_eq!(fetch(&c, g2), None);
    assert!(!c.has_pending_txn_offset(g2, "t", 0));
}

/// Names longer than a record can hold are refused instead of being written with a length
/// that wraps (which would replay as some other group or topic).
#[test]
fn names_too_long_for_a_record_are_refused() {
    let mut c = GroupCoordinator::new(config());
    let mut req = txn_commit(1, "t", 1);
    req.group_id = "g".repeat(40_000);
    assert_eq!(c.txn_commit_offsets(req, 0), Err(INVALID_GROUP_ID));
    let req = txn_commit(1, &"t".repeat(300), 1);
    assert_eq!(
        c.txn_commit_offsets(req, 0),
        Ok(vec![UNKNOWN_TOPIC_OR_PARTITION])
    );
    let mut j = join("", None);
    j.protocol_type = "x".repeat(40_000);
    assert_eq!(c.join_group(j, 1, 0).unwrap().error, INVALID_REQUEST);
    assert!(c.take_records().is_empty());
}

/// A static member's session ends at its deadline exactly: the coordinator names that
/// deadline as its next one, keeps the member one millisecond before it, and empties the
/// group at it (the shell sleeps until `next_deadline`, so there is no tick's delay).
#[test]
fn a_session_expires_at_its_deadline_and_the_coordinator_names_it() {
    let mut c = GroupCoordinator::new(config());
    let first = c
        .join_group(join("", Some("instance-1")), 1, 0)
        .map(|r| r.member_id);
    let id = first.unwrap_or_else(|| join_output(&mut c, 1).member_id);
    let _ = c.take_outputs();
    assert!(c.sync_group(sync(&id, 1, &[(&id, "all")]), 2, 5).is_none());
    let _ = c.take_outputs();
    assert_eq!(c.describe_group("g").state, GroupState::Stable);
    assert_eq!(c.heartbeat("g", &id, Some("instance-1"), 1, 1_000), NONE);
    c.tick(1_000); // the first tick also schedules the offset retention check
    let deadline = 1_000 + i64::from(SESSION_MS);
    assert_eq!(c.next_deadline(), deadline);
    c.tick(deadline - 1);
    assert_eq!(c.describe_group("g").state, GroupState::Stable);
    c.tick(deadline);
    assert_eq!(c.describe_group("g").state, GroupState::Empty);
    assert!(c.next_deadline() > deadline, "nothing left to expire at it");
}
