//! The table of the Kafka APIs Sluice implements: the one place an API is registered.
//!
//! Each line names, for one API:
//! - the `ApiKey` variant, which is also the variant of [`crate::Request`] holding it,
//! - its request type in `kafka_protocol::messages` (the decoder; its
//!   [`ErrorResponse`](crate::ErrorResponse) impl builds the answer for a failed request),
//! - the versions ApiVersions advertises,
//! - the allocation guard's schema for its body (a const in `guard.rs`) and the request's first
//!   flexible version (`i16::MAX` while it has none),
//! - the broker's handler, a function of that name in `sluice-broker`'s `handlers` module.
//!   This crate only carries the name; it is resolved where the broker expands the table.
//!
//! Everything that lists APIs is generated from it: [`crate::SUPPORTED_APIS`],
//! [`crate::codec_versions`], the `Request` enum and its decoder, the guard's schema dispatch,
//! the broker's handler dispatch and its error answers. A macro consumes the table by passing
//! its own name to [`for_each_api!`], which calls it back with one tuple per API:
//!
//! ```text
//! (Api, RequestType, min_version, max_version, GUARD_SCHEMA, first_flexible_version, handler)
//! ```

/// Calls the macro `$callback` with the API table, one
/// `(Api, RequestType, min, max, SCHEMA, flexible_since, handler)` tuple per API.
///
/// To add an API: one line here, its guard schema in `guard.rs`, its [`crate::ErrorResponse`]
/// impl in `error_response.rs`, the handler function in `sluice-broker/src/handlers/mod.rs`
/// (and, as for any response type, its `ErrorCodes` impl in `handlers/error_codes.rs`, for the
/// error metrics). The compiler points at each one that is missing.
#[macro_export]
macro_rules! for_each_api {
    ($callback:ident) => {
        $crate::for_each_api! { @table $callback
            // Api(RequestType)  min..=max  GUARD_SCHEMA from first_flexible_version  => handler
            Produce(ProduceRequest)                                 0..=13 PRODUCE from 9                   => produce;
            Fetch(FetchRequest)                                     0..=18 FETCH from 12                    => fetch;
            ListOffsets(ListOffsetsRequest)                         0..=10 LIST_OFFSETS from 6              => list_offsets;
            Metadata(MetadataRequest)                               0..=13 METADATA from 9                  => metadata;
            ApiVersions(ApiVersionsRequest)                         0..=4  API_VERSIONS from 3              => api_versions;
            CreateTopics(CreateTopicsRequest)                       0..=7  CREATE_TOPICS from 5             => create_topics;
            DeleteTopics(DeleteTopicsRequest)                       0..=6  DELETE_TOPICS from 4             => delete_topics;
            DescribeConfigs(DescribeConfigsRequest)                 0..=4  DESCRIBE_CONFIGS from 4          => describe_configs;
            CreatePartitions(CreatePartitionsRequest)               0..=3  CREATE_PARTITIONS from 2         => create_partitions;
            InitProducerId(InitProducerIdRequest)                   0..=5  INIT_PRODUCER_ID from 2          => init_producer_id;
            FindCoordinator(FindCoordinatorRequest)                 0..=6  FIND_COORDINATOR from 3          => find_coordinator;
            JoinGroup(JoinGroupRequest)                             0..=9  JOIN_GROUP from 6                => join_group;
            SyncGroup(SyncGroupRequest)                             0..=5  SYNC_GROUP from 4                => sync_group;
            Heartbeat(HeartbeatRequest)                             0..=4  HEARTBEAT from 4                 => heartbeat;
            LeaveGroup(LeaveGroupRequest)                           0..=5  LEAVE_GROUP from 4               => leave_group;
            OffsetCommit(OffsetCommitRequest)                       0..=9  OFFSET_COMMIT from 8             => offset_commit;
            OffsetFetch(OffsetFetchRequest)                         0..=9  OFFSET_FETCH from 6              => offset_fetch;
            ListGroups(ListGroupsRequest)                           0..=5  LIST_GROUPS from 3               => list_groups;
            DescribeGroups(DescribeGroupsRequest)                   0..=6  DESCRIBE_GROUPS from 5           => describe_groups;
            DeleteGroups(DeleteGroupsRequest)                       0..=2  DELETE_GROUPS from 2             => delete_groups;
            // OffsetDelete has no flexible version yet.
            OffsetDelete(OffsetDeleteRequest)                       0..=0  OFFSET_DELETE from i16::MAX      => offset_delete;
            DeleteRecords(DeleteRecordsRequest)                     0..=2  DELETE_RECORDS from 2            => delete_records;
            AlterConfigs(AlterConfigsRequest)                       0..=2  ALTER_CONFIGS from 2             => alter_configs;
            IncrementalAlterConfigs(IncrementalAlterConfigsRequest) 0..=1  INCREMENTAL_ALTER_CONFIGS from 1 => incremental_alter_configs;
            // v4+ batches several transactions and can verify without adding (KIP-890).
            AddPartitionsToTxn(AddPartitionsToTxnRequest)           0..=5  ADD_PARTITIONS_TO_TXN from 3     => add_partitions_to_txn;
            AddOffsetsToTxn(AddOffsetsToTxnRequest)                 0..=4  ADD_OFFSETS_TO_TXN from 3        => add_offsets_to_txn;
            EndTxn(EndTxnRequest)                                   0..=5  END_TXN from 3                   => end_txn;
            TxnOffsetCommit(TxnOffsetCommitRequest)                 0..=5  TXN_OFFSET_COMMIT from 3         => txn_offset_commit;
            // Sent by transaction coordinators to partition leaders.
            WriteTxnMarkers(WriteTxnMarkersRequest)                 1..=1  WRITE_TXN_MARKERS from 1         => write_txn_markers;
            DescribeTransactions(DescribeTransactionsRequest)       0..=0  DESCRIBE_TRANSACTIONS from 0     => describe_transactions;
            ListTransactions(ListTransactionsRequest)               0..=1  LIST_TRANSACTIONS from 0         => list_transactions;
            DescribeCluster(DescribeClusterRequest)                 0..=2  DESCRIBE_CLUSTER from 0          => describe_cluster;
            DescribeProducers(DescribeProducersRequest)             0..=0  DESCRIBE_PRODUCERS from 0        => describe_producers;
            DescribeTopicPartitions(DescribeTopicPartitionsRequest) 0..=0  DESCRIBE_TOPIC_PARTITIONS from 0 => describe_topic_partitions;
            ListConfigResources(ListConfigResourcesRequest)         0..=1  LIST_CONFIG_RESOURCES from 0     => list_config_resources;
            DescribeLogDirs(DescribeLogDirsRequest)                 0..=4  DESCRIBE_LOG_DIRS from 2         => describe_log_dirs;
            AlterReplicaLogDirs(AlterReplicaLogDirsRequest)         0..=2  ALTER_REPLICA_LOG_DIRS from 2    => alter_replica_log_dirs;
            OffsetForLeaderEpoch(OffsetForLeaderEpochRequest)       0..=4  OFFSET_FOR_LEADER_EPOCH from 4   => offset_for_leader_epoch;
            DescribeQuorum(DescribeQuorumRequest)                   0..=2  DESCRIBE_QUORUM from 0           => describe_quorum;
            ElectLeaders(ElectLeadersRequest)                       0..=2  ELECT_LEADERS from 2             => elect_leaders;
            AlterPartitionReassignments(AlterPartitionReassignmentsRequest) 0..=1 ALTER_PARTITION_REASSIGNMENTS from 0 => alter_partition_reassignments;
            ListPartitionReassignments(ListPartitionReassignmentsRequest) 0..=0 LIST_PARTITION_REASSIGNMENTS from 0 => list_partition_reassignments;
        }
    };
    (@table $callback:ident $(
        $api:ident($request:ident) $min:literal..=$max:literal
        $schema:ident from $flexible:expr => $handler:ident;
    )*) => {
        $callback! { $(($api, $request, $min, $max, $schema, $flexible, $handler))* }
    };
}
