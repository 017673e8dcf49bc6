//! The error codes each response carries, top level and per item, so that
//! `sluice_request_errors_total` counts what clients were told, whatever the API.

use kafka_protocol::messages::*;

/// Every non-zero error code in a response. A response without errors allocates nothing.
pub(crate) trait ErrorCodes {
    fn error_codes(&self, out: &mut Vec<i16>);
}

fn errors(out: &mut Vec<i16>, codes: impl IntoIterator<Item = i16>) {
    out.extend(codes.into_iter().filter(|&c| c != 0));
}

/// `impl ErrorCodes` from field paths: `top` fields hold a code; `each` walks one array of
/// items holding a code; `nested` walks an array of arrays.
macro_rules! error_codes {
    ($($ty:ty {
        $(top: $top:ident;)*
        $(each: $arr:ident . $code:ident;)*
        $(nested: $outer:ident . $inner:ident . $ncode:ident;)*
    })*) => {$(
        impl ErrorCodes for $ty {
            fn error_codes(&self, out: &mut Vec<i16>) {
                $(errors(out, [self.$top]);)*
                $(errors(out, self.$arr.iter().map(|i| i.$code));)*
                $(errors(out, self.$outer.iter().flat_map(|o| o.$inner.iter().map(|i| i.$ncode)));)*
            }
        }
    )*};
}

error_codes! {
    ApiVersionsResponse { top: error_code; }
    MetadataResponse {
        each: topics.error_code;
        nested: topics.partitions.error_code;
    }
    ProduceResponse { nested: responses.partition_responses.error_code; }
    FetchResponse { top: error_code; nested: responses.partitions.error_code; }
    ListOffsetsResponse { nested: topics.partitions.error_code; }
    CreateTopicsResponse { each: topics.error_code; }
    DeleteTopicsResponse { each: responses.error_code; }
    DescribeConfigsResponse { each: results.error_code; }
    CreatePartitionsResponse { each: results.error_code; }
    InitProducerIdResponse { top: error_code; }
    FindCoordinatorResponse { top: error_code; each: coordinators.error_code; }
    JoinGroupResponse { top: error_code; }
    SyncGroupResponse { top: error_code; }
    HeartbeatResponse { top: error_code; }
    LeaveGroupResponse { top: error_code; each: members.error_code; }
    OffsetCommitResponse { nested: topics.partitions.error_code; }
    ListGroupsResponse { top: error_code; }
    DescribeGroupsResponse { each: groups.error_code; }
    DeleteGroupsResponse { each: results.error_code; }
    OffsetDeleteResponse { top: error_code; nested: topics.partitions.error_code; }
    DeleteRecordsResponse { nested: topics.partitions.error_code; }
    AlterConfigsResponse { each: responses.error_code; }
    IncrementalAlterConfigsResponse { each: responses.error_code; }
    DescribeClusterResponse { top: error_code; }
    DescribeQuorumResponse { top: error_code; nested: topics.partitions.error_code; }
    ElectLeadersResponse {
        top: error_code;
        nested: replica_election_results.partition_result.error_code;
    }
    DescribeTopicPartitionsResponse {
        each: topics.error_code;
        nested: topics.partitions.error_code;
    }
    DescribeLogDirsResponse { top: error_code; each: results.error_code; }
    AlterReplicaLogDirsResponse { nested: results.partitions.error_code; }
    DescribeProducersResponse { nested: topics.partitions.error_code; }
    ListConfigResourcesResponse { top: error_code; }
    OffsetForLeaderEpochResponse { nested: topics.partitions.error_code; }
    AddOffsetsToTxnResponse { top: error_code; }
    TxnOffsetCommitResponse { nested: topics.partitions.error_code; }
    EndTxnResponse { top: error_code; }
    DescribeTransactionsResponse { each: transaction_states.error_code; }
    ListTransactionsResponse { top: error_code; }
}

/// Three levels deep from v8 (groups, topics, partitions), beyond what the macro walks.
impl ErrorCodes for OffsetFetchResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        errors(out, [self.error_code]);
        errors(
            out,
            self.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        );
        for g in &self.groups {
            errors(out, [g.error_code]);
            let partitions = g.topics.iter().flat_map(|t| &t.partitions);
            errors(out, partitions.map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for AddPartitionsToTxnResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        errors(out, [self.error_code]);
        let partitions =
            |topics: &[add_partitions_to_txn_response::AddPartitionsToTxnTopicResult]| {
                topics
                    .iter()
                    .flat_map(|t| {
                        t.results_by_partition
                            .iter()
                            .map(|p| p.partition_error_code)
                    })
                    .collect::<Vec<_>>()
            };
        errors(out, partitions(&self.results_by_topic_v3_and_below));
        for txn in &self.results_by_transaction {
            errors(out, partitions(&txn.topic_results));
        }
    }
}

impl ErrorCodes for WriteTxnMarkersResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        for marker in &self.markers {
            for topic in &marker.topics {
                errors(out, topic.partitions.iter().map(|p| p.error_code));
            }
        }
    }
}

impl ErrorCodes for AlterPartitionReassignmentsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        errors(out, [self.error_code]);
        for topic in &self.responses {
            errors(out, topic.partitions.iter().map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for ListPartitionReassignmentsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        errors(out, [self.error_code]);
    }
}
