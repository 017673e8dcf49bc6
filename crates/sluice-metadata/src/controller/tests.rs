//! The controller's rules, one scenario each, then a seeded simulation.

use super::*;
use crate::snapshot::{decode_snapshot, encode_snapshot};

mod simulation;

const T0: i64 = 1_000_000;

fn endpoint(id: i32) -> Endpoint {
    Endpoint {
        listener: "PLAINTEXT".into(),
        host: format!("127.0.0.{id}"),
        port: 9092,
        security_protocol: 0,
    }
}

fn incarnation(id: i32, n: u128) -> Uuid {
    Uuid::from_u128(((id as u128) << 64) | n)
}

/// A controller with brokers 1..=n registered, caught up and unfenced. Returns the epochs.
fn cluster(n: i32) -> (Controller, BTreeMap<i32, i64>) {
    let mut c = Controller::new(ControllerConfig::default(), MetadataImage::default(), T0);
    let mut epochs = BTreeMap::new();
    for id in 1..=n {
        let (epoch, _) = c
            .register_broker(
                RegistrationRequest {
                    broker_id: id,
                    incarnation_id: incarnation(id, 0),
                    endpoints: vec![endpoint(id)],
                    rack: None,
                    previous_broker_epoch: -1,
                },
                T0,
            )
            .unwrap();
        let (reply, _) = c.heartbeat(beat(id, epoch), T0).unwrap();
        assert!(!reply.is_fenced);
        epochs.insert(id, epoch);
    }
    (c, epochs)
}

fn beat(broker_id: i32, broker_epoch: i64) -> Heartbeat {
    Heartbeat {
        broker_id,
        broker_epoch,
        caught_up: true,
        want_fence: false,
        want_shut_down: false,
    }
}

fn topic(name: &str, partitions: i32, factor: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        topic_id: Uuid::from_u128(name.len() as u128 * 7919 + partitions as u128),
        num_partitions: partitions,
        replication_factor: factor,
        assignments: Vec::new(),
        configs: Vec::new(),
    }
}

fn partition(c: &Controller, name: &str, p: i32) -> PartitionRegistration {
    c.image().topic_by_name(name).unwrap().partitions[&p].clone()
}

#[test]
fn a_registered_broker_stays_fenced_until_it_has_caught_up() {
    let mut c = Controller::new(ControllerConfig::default(), MetadataImage::default(), T0);
    let (epoch, records) = c
        .register_broker(
            RegistrationRequest {
                broker_id: 1,
                incarnation_id: incarnation(1, 0),
                endpoints: vec![endpoint(1)],
                rack: None,
                previous_broker_epoch: -1,
            },
            T0,
        )
        .unwrap();
    assert_eq!(records.len(), 1);
    assert!(c.image().broker(1).unwrap().fenced);
    let behind = Heartbeat {
        caught_up: false,
        ..beat(1, epoch)
    };
    assert!(c.heartbeat(behind, T0).unwrap().0.is_fenced);
    assert!(!c.heartbeat(beat(1, epoch), T0).unwrap().0.is_fenced);
}

#[test]
fn topics_are_placed_round_robin_with_every_replica_in_sync() {
    let (mut c, _) = cluster(3);
    c.create_topic(topic("t", 3, 3)).unwrap();
    let leaders: Vec<i32> = (0..3).map(|p| partition(&c, "t", p).leader).collect();
    assert_eq!(leaders, vec![1, 2, 3], "leaders spread over the brokers");
    for p in 0..3 {
        let p = partition(&c, "t", p);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.replicas.len(), 3);
    }
    let err = c.create_topic(topic("u", 1, 4)).unwrap_err();
    assert_eq!(err.code, codes::INVALID_REPLICATION_FACTOR);
    let err = c.create_topic(topic("t", 1, 1)).unwrap_err();
    assert_eq!(err.code, codes::TOPIC_ALREADY_EXISTS);
    let err = c.create_topic(topic("bad/name", 1, 1)).unwrap_err();
    assert_eq!(err.code, codes::INVALID_TOPIC_EXCEPTION);
    // One entry of the metadata log holds one request's records: Kafka's 10,000 bound.
    let err = c.create_topic(topic("huge", 10_000, 1)).unwrap_err();
    assert_eq!(err.code, codes::POLICY_VIOLATION);
    c.create_topic(topic("large", 9_999, 1)).unwrap();
}

#[test]
fn a_broker_whose_session_expires_is_fenced_and_loses_its_leaderships_to_the_isr() {
    let (mut c, epochs) = cluster(3);
    c.create_topic(topic("t", 3, 3)).unwrap();
    let before = partition(&c, "t", 0);
    assert_eq!(before.leader, 1);
    // Brokers 2 and 3 keep heartbeating, 1 does not.
    let later = T0 + 9_001;
    for id in [2, 3] {
        c.heartbeat(beat(id, epochs[&id]), later).unwrap();
    }
    let records = c.tick(later);
    assert!(records.contains(&MetadataRecord::FenceBroker {
        broker_id: 1,
        broker_epoch: epochs[&1]
    }));
    let after = partition(&c, "t", 0);
    assert_ne!(after.leader, 1);
    assert!(before.isr.contains(&after.leader));
    assert!(!after.isr.contains(&1));
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert!(after.partition_epoch > before.partition_epoch);
}

#[test]
fn the_last_isr_member_stays_in_the_isr_and_leads_again_when_it_returns() {
    let (mut c, epochs) = cluster(2);
    c.create_topic(NewTopic {
        assignments: vec![vec![1, 2]],
        num_partitions: -1,
        replication_factor: -1,
        ..topic("t", 0, 0)
    })
    .unwrap();
    // The leader drops 2 from the ISR (it fell behind), then 1 goes away.
    let p = partition(&c, "t", 0);
    let topic_id = c.image().topic_by_name("t").unwrap().topic_id;
    c.alter_partition(AlterPartition {
        broker_id: 1,
        broker_epoch: epochs[&1],
        topic_id,
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: vec![1],
    })
    .unwrap();
    c.heartbeat(beat(2, epochs[&2]), T0 + 9_001).unwrap();
    c.tick(T0 + 9_001);
    let offline = partition(&c, "t", 0);
    assert_eq!(
        offline.leader, NO_LEADER,
        "2 is not in the ISR: no clean leader"
    );
    assert_eq!(offline.isr, vec![1], "the ISR is never empty");
    // 1 restarts as a new process, catches up, and leads again.
    let (epoch, _) = c
        .register_broker(
            RegistrationRequest {
                broker_id: 1,
                incarnation_id: incarnation(1, 1),
                endpoints: vec![endpoint(1)],
                rack: None,
                previous_broker_epoch: -1,
            },
            T0 + 10_000,
        )
        .unwrap();
    assert!(epoch > epochs[&2], "broker epochs grow across all brokers");
    c.heartbeat(beat(1, epoch), T0 + 10_000).unwrap();
    assert_eq!(partition(&c, "t", 0).leader, 1);
}

#[test]
fn unclean_election_is_off_by_default_and_on_per_topic() {
    let (mut c, epochs) = cluster(2);
    let mut t = topic("t", 1, 2);
    t.configs = vec![("unclean.leader.election.enable".into(), "true".into())];
    c.create_topic(t).unwrap();
    let topic_id = c.image().topic_by_name("t").unwrap().topic_id;
    let p = partition(&c, "t", 0);
    let leader = p.leader;
    let follower = if leader == 1 { 2 } else { 1 };
    c.alter_partition(AlterPartition {
        broker_id: leader,
        broker_epoch: epochs[&leader],
        topic_id,
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: vec![leader],
    })
    .unwrap();
    c.heartbeat(beat(follower, epochs[&follower]), T0 + 9_001)
        .unwrap();
    c.tick(T0 + 9_001);
    let after = partition(&c, "t", 0);
    assert_eq!(after.leader, follower, "the topic allows an unclean leader");
    assert_eq!(after.isr, vec![follower]);
}

#[test]
fn alter_partition_refuses_stale_epochs_non_leaders_and_fenced_replicas() {
    let (mut c, epochs) = cluster(3);
    c.create_topic(topic("t", 1, 3)).unwrap();
    let topic_id = c.image().topic_by_name("t").unwrap().topic_id;
    let p = partition(&c, "t", 0);
    let leader = p.leader;
    let request = |new_isr: Vec<i32>| AlterPartition {
        broker_id: leader,
        broker_epoch: epochs[&leader],
        topic_id,
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr,
    };
    let err = |c: &mut Controller, r: AlterPartition| c.alter_partition(r).unwrap_err().code;
    let stale_leader = AlterPartition {
        leader_epoch: p.leader_epoch - 1,
        ..request(vec![leader])
    };
    assert_eq!(err(&mut c, stale_leader), codes::FENCED_LEADER_EPOCH);
    let stale_partition = AlterPartition {
        partition_epoch: p.partition_epoch + 1,
        ..request(vec![leader])
    };
    assert_eq!(err(&mut c, stale_partition), codes::INVALID_UPDATE_VERSION);
    let other = p.replicas.iter().copied().find(|&b| b != leader).unwrap();
    let not_leader = AlterPartition {
        broker_id: other,
        broker_epoch: epochs[&other],
        ..request(vec![other])
    };
    assert_eq!(err(&mut c, not_leader), codes::NOT_LEADER_OR_FOLLOWER);
    assert_eq!(err(&mut c, request(vec![other])), codes::INVALID_REQUEST);
    // Shrink to the leader, fence `other`, then try to add it back.
    let (shrunk, records) = c.alter_partition(request(vec![leader])).unwrap();
    assert_eq!(records.len(), 1);
    c.heartbeat(
        Heartbeat {
            want_fence: true,
            ..beat(other, epochs[&other])
        },
        T0,
    )
    .unwrap();
    let grow = AlterPartition {
        partition_epoch: shrunk.partition_epoch,
        ..request(vec![leader, other])
    };
    assert_eq!(err(&mut c, grow), codes::INELIGIBLE_REPLICA);
    assert_eq!(partition(&c, "t", 0), shrunk, "refusals change nothing");
}

#[test]
fn controlled_shutdown_moves_leaderships_before_the_broker_may_stop() {
    let (mut c, epochs) = cluster(3);
    c.create_topic(topic("t", 3, 3)).unwrap();
    let shutting = Heartbeat {
        want_shut_down: true,
        ..beat(2, epochs[&2])
    };
    let (reply, _) = c.heartbeat(shutting, T0).unwrap();
    assert!(reply.should_shut_down, "it leads nothing once moved");
    assert!(reply.is_fenced);
    for p in 0..3 {
        let p = partition(&c, "t", p);
        assert_ne!(p.leader, 2);
        assert!(!p.isr.contains(&2));
    }
    // It comes back as the same process: unfenced again, and the preferred election brings
    // its leadership back once the leader has let it into the ISR.
    let (reply, _) = c.heartbeat(beat(2, epochs[&2]), T0).unwrap();
    assert!(!reply.is_fenced && !reply.in_controlled_shutdown);
    let topic_id = c.image().topic_by_name("t").unwrap().topic_id;
    let p = partition(&c, "t", 1);
    assert_eq!(p.preferred_leader(), 2);
    let err = c
        .elect_leader(topic_id, 1, ElectionType::Preferred)
        .unwrap_err();
    assert_eq!(err.code, codes::PREFERRED_LEADER_NOT_AVAILABLE);
    let mut isr = p.isr.clone();
    isr.push(2);
    c.alter_partition(AlterPartition {
        broker_id: p.leader,
        broker_epoch: epochs[&p.leader],
        topic_id,
        partition: 1,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: isr,
    })
    .unwrap();
    c.elect_leader(topic_id, 1, ElectionType::Preferred)
        .unwrap();
    assert_eq!(partition(&c, "t", 1).leader, 2);
    let err = c
        .elect_leader(topic_id, 1, ElectionType::Preferred)
        .unwrap_err();
    assert_eq!(err.code, codes::ELECTION_NOT_NEEDED);
}

#[test]
fn a_second_live_process_with_the_same_id_is_refused_and_old_epochs_are_stale() {
    let (mut c, epochs) = cluster(1);
    let again = RegistrationRequest {
        broker_id: 1,
        incarnation_id: incarnation(1, 9),
        endpoints: vec![endpoint(1)],
        rack: None,
        previous_broker_epoch: -1,
    };
    let err = c.register_broker(again.clone(), T0 + 1).unwrap_err();
    assert_eq!(err.code, codes::DUPLICATE_BROKER_REGISTRATION);
    // Once the first one's session has expired, the new process takes over.
    let (epoch, records) = c.register_broker(again, T0 + 9_001).unwrap();
    assert!(epoch > epochs[&1]);
    assert!(matches!(records[0], MetadataRecord::FenceBroker { .. }));
    let err = c.heartbeat(beat(1, epochs[&1]), T0 + 9_002).unwrap_err();
    assert_eq!(err.code, codes::STALE_BROKER_EPOCH);
}

#[test]
fn a_process_that_names_its_previous_epoch_takes_over_a_live_session_and_no_one_else_does() {
    let (c, epochs) = cluster(2);
    // A new controller over the same image (the cluster restarted): every broker has a
    // session from the controller's start.
    let mut fresh = Controller::new(ControllerConfig::default(), c.image().clone(), T0 + 100);
    let stranger = RegistrationRequest {
        broker_id: 1,
        incarnation_id: incarnation(1, 8),
        endpoints: vec![endpoint(1)],
        rack: None,
        previous_broker_epoch: -1,
    };
    // A process that does not hold broker 1's data (it names no previous epoch) waits.
    let err = fresh
        .register_broker(stranger.clone(), T0 + 101)
        .unwrap_err();
    assert_eq!(err.code, codes::DUPLICATE_BROKER_REGISTRATION);
    let wrong = RegistrationRequest {
        previous_broker_epoch: epochs[&1] - 1,
        ..stranger.clone()
    };
    let err = fresh.register_broker(wrong, T0 + 101).unwrap_err();
    assert_eq!(err.code, codes::DUPLICATE_BROKER_REGISTRATION);
    // Broker 1's own next process (after a kill -9) names its epoch and takes over at once.
    let own = RegistrationRequest {
        incarnation_id: incarnation(1, 9),
        previous_broker_epoch: epochs[&1],
        ..stranger
    };
    let (epoch, records) = fresh.register_broker(own, T0 + 102).unwrap();
    assert!(epoch > epochs[&1]);
    assert!(matches!(records[0], MetadataRecord::FenceBroker { .. }));
    // Broker 2 is not fenced before a whole session has passed from the controller's start.
    let fenced = |records: Vec<MetadataRecord>| {
        records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::FenceBroker { broker_id, .. } => Some(*broker_id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fenced(fresh.tick(T0 + 100 + 9_000)), Vec::<i32>::new());
    assert_eq!(fenced(fresh.tick(T0 + 100 + 9_001)), vec![2]);
}

#[test]
fn replaying_what_the_controller_wrote_or_its_snapshot_gives_its_image() {
    let (mut c, epochs) = cluster(3);
    let mut log: Vec<MetadataRecord> = Vec::new();
    // The cluster's own registrations are not in `log`; start from the controller's image.
    let mut replica = c.image().clone();
    let mut t = topic("t", 4, 2);
    t.configs = vec![("cleanup.policy".into(), "compact".into())];
    log.extend(c.create_topic(t).unwrap());
    log.extend(c.create_topic(topic("gone", 1, 1)).unwrap());
    log.extend(c.delete_topic("gone").unwrap());
    c.heartbeat(beat(1, epochs[&1]), T0 + 9_001).unwrap();
    log.extend(c.tick(T0 + 9_001));
    replica.apply_all(&log).unwrap();
    assert_eq!(&replica, c.image());
    let loaded = decode_snapshot(&encode_snapshot(c.image())).unwrap();
    assert_eq!(&loaded, c.image());
    // A damaged snapshot is refused, not loaded.
    let mut bytes = encode_snapshot(c.image()).to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        decode_snapshot(&bytes),
        Err(crate::snapshot::SnapshotError::Checksum { .. })
    ));
}

#[test]
fn partitions_are_added_with_the_topics_replication_factor_and_a_refusal_changes_nothing() {
    let (mut c, _) = cluster(3);
    let mut replica = c.image().clone();
    replica
        .apply_all(&c.create_topic(topic("t", 2, 2)).unwrap())
        .unwrap();
    let records = c.create_partitions("t", 5, Vec::new()).unwrap();
    assert_eq!(records.len(), 3);
    replica.apply_all(&records).unwrap();
    assert_eq!(
        &replica,
        c.image(),
        "replaying the records gives the controller's image"
    );
    for p in 2..5 {
        let reg = partition(&c, "t", p);
        assert_eq!(reg.replicas.len(), 2, "partition {p}: {reg:?}");
        assert_eq!(reg.isr, reg.replicas);
        assert_eq!(reg.leader, reg.replicas[0]);
    }
    // Explicit assignments: one list per new partition, of the topic's factor.
    c.create_partitions("t", 6, vec![vec![3, 1]]).unwrap();
    assert_eq!(partition(&c, "t", 5).replicas, vec![3, 1]);
    let before = c.image().clone();
    for (total, assignments, code) in [
        (6, vec![], codes::INVALID_PARTITIONS),
        (3, vec![], codes::INVALID_PARTITIONS),
        (8, vec![vec![1, 2]], codes::INVALID_REPLICA_ASSIGNMENT),
        (7, vec![vec![1]], codes::INVALID_REPLICA_ASSIGNMENT),
        (7, vec![vec![1, 9]], codes::INVALID_REPLICA_ASSIGNMENT),
        (2_000_000, vec![], codes::INVALID_PARTITIONS),
    ] {
        let err = c.create_partitions("t", total, assignments).unwrap_err();
        assert_eq!(err.code, code, "{total}: {err:?}");
    }
    let err = c.create_partitions("nope", 3, Vec::new()).unwrap_err();
    assert_eq!(err.code, codes::UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(&before, c.image(), "a refused call changed the image");
}

#[test]
fn topic_configs_are_set_and_removed_and_unchanged_values_write_nothing() {
    let (mut c, _) = cluster(1);
    c.create_topic(topic("t", 1, 1)).unwrap();
    let set = c
        .alter_topic_configs(
            "t",
            vec![
                ("retention.ms".into(), Some("1000".into())),
                ("cleanup.policy".into(), Some("compact".into())),
            ],
        )
        .unwrap();
    assert_eq!(set.len(), 2);
    let configs = |c: &Controller| c.image().configs(RESOURCE_TOPIC, "t").cloned();
    assert_eq!(configs(&c).unwrap()["retention.ms"], "1000");
    // The same value again, and removing what is not set: nothing to write.
    let same = c
        .alter_topic_configs(
            "t",
            vec![
                ("retention.ms".into(), Some("1000".into())),
                ("segment.bytes".into(), None),
            ],
        )
        .unwrap();
    assert!(same.is_empty(), "{same:?}");
    c.alter_topic_configs("t", vec![("retention.ms".into(), None)])
        .unwrap();
    assert_eq!(
        configs(&c).unwrap().keys().collect::<Vec<_>>(),
        vec!["cleanup.policy"]
    );
    let err = c
        .alter_topic_configs("nope", vec![("retention.ms".into(), None)])
        .unwrap_err();
    assert_eq!(err.code, codes::UNKNOWN_TOPIC_OR_PARTITION);
    let long = "x".repeat(NAME_BYTES_MAX + 1);
    let err = c
        .alter_topic_configs("t", vec![(long, Some("1".into()))])
        .unwrap_err();
    assert_eq!(err.code, codes::INVALID_REQUEST);
}

/// Four brokers and topic "t" with one partition on brokers 1, 2 and 3, led by 1.
fn one_partition_on_1_2_3_of_4() -> (Controller, BTreeMap<i32, i64>, Uuid) {
    let (mut c, epochs) = cluster(4);
    c.create_topic(NewTopic {
        assignments: vec![vec![1, 2, 3]],
        num_partitions: -1,
        replication_factor: -1,
        ..topic("t", 1, 3)
    })
    .unwrap();
    let topic_id = c.image().topic_by_name("t").unwrap().topic_id;
    (c, epochs, topic_id)
}

/// KIP-455: a reassignment adds the target replicas first (replicas = target, then the
/// original ones), and only once every target replica is in the ISR do the others leave,
/// with the leadership handed to a target replica in the ISR in a new leader epoch.
#[test]
fn a_reassignment_adds_replicas_first_and_removes_the_old_ones_once_in_sync() {
    let (mut c, epochs, topic_id) = one_partition_on_1_2_3_of_4();
    let before = partition(&c, "t", 0);
    assert_eq!((before.leader, before.isr.clone()), (1, vec![1, 2, 3]));

    c.alter_reassignment(topic_id, 0, Some(vec![2, 3, 4]))
        .unwrap();
    let moving = partition(&c, "t", 0);
    assert_eq!(moving.replicas, vec![2, 3, 4, 1]);
    assert_eq!(
        (
            moving.adding_replicas.clone(),
            moving.removing_replicas.clone()
        ),
        (vec![4], vec![1])
    );
    assert_eq!(
        (moving.leader, moving.leader_epoch),
        (1, before.leader_epoch)
    );
    assert_eq!(c.reassignments().len(), 1);

    // The ISR grows to take the new replica in: the reassignment completes with it.
    let (after, records) = c
        .alter_partition(AlterPartition {
            broker_id: 1,
            broker_epoch: epochs[&1],
            topic_id,
            partition: 0,
            leader_epoch: moving.leader_epoch,
            partition_epoch: moving.partition_epoch,
            new_isr: vec![1, 2, 3, 4],
        })
        .unwrap();
    assert_eq!(records.len(), 2, "the ISR change, then the completion");
    assert_eq!(after.replicas, vec![2, 3, 4]);
    assert_eq!(after.isr, vec![2, 3, 4]);
    assert!(!after.is_reassigning());
    assert_eq!(
        (after.leader, after.leader_epoch),
        (2, before.leader_epoch + 1)
    );
    assert!(c.reassignments().is_empty());
    let err = c.alter_reassignment(topic_id, 0, None).unwrap_err();
    assert_eq!(err.code, codes::NO_REASSIGNMENT_IN_PROGRESS);
}

/// Cancelling goes back to the original replicas (the added ones leave the ISR), and a
/// target naming an unknown broker or a broker twice is refused without a change.
#[test]
fn a_reassignment_can_be_cancelled_and_bad_targets_change_nothing() {
    let (mut c, epochs, topic_id) = one_partition_on_1_2_3_of_4();
    let before = partition(&c, "t", 0);
    for bad in [vec![1, 9], vec![2, 2], vec![]] {
        let err = c.alter_reassignment(topic_id, 0, Some(bad)).unwrap_err();
        assert_eq!(err.code, codes::INVALID_REPLICA_ASSIGNMENT);
    }
    assert_eq!(partition(&c, "t", 0), before);

    c.alter_reassignment(topic_id, 0, Some(vec![4])).unwrap();
    let moving = partition(&c, "t", 0);
    assert_eq!(moving.replicas, vec![4, 1, 2, 3]);
    // Cancelled while 4 is still behind (not in the ISR).
    c.alter_reassignment(topic_id, 0, None).unwrap();
    let back = partition(&c, "t", 0);
    assert_eq!(back.replicas, vec![1, 2, 3]);
    assert_eq!(back.isr, vec![1, 2, 3]);
    assert!(!back.is_reassigning());
    assert_eq!(back.leader, 1);

    // Moving every replica away hands the leadership over once the new one is in sync.
    c.alter_reassignment(topic_id, 0, Some(vec![4])).unwrap();
    let moving = partition(&c, "t", 0);
    let (after, _) = c
        .alter_partition(AlterPartition {
            broker_id: 1,
            broker_epoch: epochs[&1],
            topic_id,
            partition: 0,
            leader_epoch: moving.leader_epoch,
            partition_epoch: moving.partition_epoch,
            new_isr: vec![1, 2, 3, 4],
        })
        .unwrap();
    assert_eq!(
        (after.replicas.clone(), after.isr.clone(), after.leader),
        (vec![4], vec![4], 4)
    );
}

/// A topic on brokers 1, 2 and 3 with `min.insync.replicas=2`, led by 1.
fn min_isr_two(c: &mut Controller) -> Uuid {
    c.create_topic(NewTopic {
        assignments: vec![vec![1, 2, 3]],
        num_partitions: -1,
        replication_factor: -1,
        configs: vec![("min.insync.replicas".into(), "2".into())],
        ..topic("t", 0, 0)
    })
    .unwrap();
    c.image().topic_by_name("t").unwrap().topic_id
}

/// The leader's AlterPartition giving partition 0 of "t" the ISR `isr`.
fn set_isr(c: &mut Controller, epochs: &BTreeMap<i32, i64>, topic_id: Uuid, isr: Vec<i32>) {
    let p = partition(c, "t", 0);
    c.alter_partition(AlterPartition {
        broker_id: p.leader,
        broker_epoch: epochs[&p.leader],
        topic_id,
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: isr,
    })
    .unwrap();
}

fn fence(c: &mut Controller, epochs: &BTreeMap<i32, i64>, broker: i32) {
    c.heartbeat(
        Heartbeat {
            want_fence: true,
            ..beat(broker, epochs[&broker])
        },
        T0,
    )
    .unwrap();
}

/// KIP-966: a replica that leaves an ISR that is then below `min.insync.replicas` holds
/// every committed record (the leader's high watermark stands still from then on), so it
/// is an eligible leader replica; one that left while the ISR was still at the minimum
/// may lack later commits and is not. When the last in-sync replica fails, an eligible one
/// is elected cleanly, and the failed one becomes eligible; once the ISR reaches the
/// minimum again nobody is.
#[test]
fn replicas_leaving_an_isr_below_min_insync_replicas_stay_eligible_to_lead() {
    let (mut c, epochs) = cluster(3);
    let topic_id = min_isr_two(&mut c);
    set_isr(&mut c, &epochs, topic_id, vec![1, 2]);
    assert!(
        partition(&c, "t", 0).elr.is_empty(),
        "the ISR is at the minimum"
    );
    set_isr(&mut c, &epochs, topic_id, vec![1]);
    assert_eq!(partition(&c, "t", 0).elr, vec![2]);
    fence(&mut c, &epochs, 1);
    let p = partition(&c, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (2, vec![2], vec![1])
    );
    set_isr(&mut c, &epochs, topic_id, vec![2, 3]);
    assert!(partition(&c, "t", 0).elr.is_empty());
    // Without an eligible replica alive, the last in-sync one stays, and the partition
    // waits for it (unclean election is off).
    set_isr(&mut c, &epochs, topic_id, vec![2]);
    fence(&mut c, &epochs, 3);
    fence(&mut c, &epochs, 2);
    let p = partition(&c, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![2], vec![3])
    );
    let loaded = decode_snapshot(&encode_snapshot(c.image())).unwrap();
    assert_eq!(
        loaded.topic_by_name("t").unwrap().partitions[&0],
        p,
        "eligible leader replicas are in the snapshot"
    );
}

/// A lower `min.insync.replicas` that an ISR now reaches lets its high watermark move: the
/// partition's eligible leader replicas are dropped with the change. An unclean election
/// (which may lose committed records) leaves none either.
#[test]
fn eligible_leader_replicas_go_when_the_minimum_falls_or_an_election_is_unclean() {
    let (mut c, epochs) = cluster(3);
    let topic_id = min_isr_two(&mut c);
    set_isr(&mut c, &epochs, topic_id, vec![1]);
    assert_eq!(partition(&c, "t", 0).elr, vec![2, 3]);
    c.alter_topic_configs("t", vec![("min.insync.replicas".into(), Some("1".into()))])
        .unwrap();
    assert!(partition(&c, "t", 0).elr.is_empty());
    c.alter_topic_configs("t", vec![("min.insync.replicas".into(), Some("3".into()))])
        .unwrap();
    set_isr(&mut c, &epochs, topic_id, vec![1, 2]);
    set_isr(&mut c, &epochs, topic_id, vec![1]);
    assert_eq!(partition(&c, "t", 0).elr, vec![2]);
    fence(&mut c, &epochs, 2);
    fence(&mut c, &epochs, 1);
    assert_eq!(partition(&c, "t", 0).leader, NO_LEADER);
    c.elect_leader(topic_id, 0, ElectionType::Unclean).unwrap();
    let p = partition(&c, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (3, vec![3], vec![])
    );
}

/// A broker that comes back without the data its last registration vouched for (a new or
/// wiped data directory: it does not name that registration's epoch) may lack committed
/// records: it is no longer an eligible leader replica. One that names it (a restart,
/// even after kill -9: followers fsync what they report) stays eligible.
#[test]
fn a_broker_returning_without_its_data_is_no_longer_eligible() {
    let (mut c, epochs) = cluster(3);
    let topic_id = min_isr_two(&mut c);
    set_isr(&mut c, &epochs, topic_id, vec![1]);
    assert_eq!(partition(&c, "t", 0).elr, vec![2, 3]);
    let restart = |c: &mut Controller, id: i32, previous: i64, now: i64| {
        c.register_broker(
            RegistrationRequest {
                broker_id: id,
                incarnation_id: incarnation(id, 1),
                endpoints: vec![endpoint(id)],
                rack: None,
                previous_broker_epoch: previous,
            },
            now,
        )
        .unwrap()
    };
    restart(&mut c, 2, epochs[&2], T0);
    assert_eq!(partition(&c, "t", 0).elr, vec![2, 3], "its own restart");
    // (Another process may register the id once its session expired.)
    restart(&mut c, 3, -1, T0 + 10_000);
    assert_eq!(partition(&c, "t", 0).elr, vec![2], "a new data directory");
}
