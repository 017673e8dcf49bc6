//! DeleteRecords: moves partitions' log start offsets forward, deleting whole segments below
//! them; the new start is checkpointed before the answer.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use crate::errors::error_code;
use crate::BrokerState;

pub(crate) fn handle(state: &BrokerState, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let log = (!crate::is_internal_topic(t.name.as_str()))
                        .then(|| state.replicas.partition(t.name.as_str(), p.partition_index))
                        .flatten();
                    let Some(log) = log else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if let Err(code) = state.leads(&log, -1) {
                        return out.with_error_code(code);
                    }
                    match tokio::task::block_in_place(|| {
                        state.replicas.delete_records(&log, p.offset)
                    }) {
                        Ok(start) => {
                            tracing::info!(
                                topic = t.name.as_str(),
                                partition = p.partition_index,
                                log_start_offset = start,
                                "deleted records"
                            );
                            out.with_low_watermark(start)
                        }
                        Err(e) => out.with_error_code(error_code(&e)),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
