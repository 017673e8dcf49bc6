//! Answers to requests at versions we do not advertise but can decode: every item gets
//! UNSUPPORTED_VERSION, in a response of the version the client asked for, echoing the names
//! or ids that version uses. (Apache Kafka closes the connection instead; the issue asks for
//! the error wherever the protocol allows one.)

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsResponse, CreateTopicsResponse, DeleteTopicsResponse,
    DescribeConfigsResponse, FetchResponse, InitProducerIdResponse, ListOffsetsResponse,
    MetadataResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use sluice_protocol::Request;

use super::{ready, Dispatched};

const UNSUPPORTED: i16 = ResponseError::UnsupportedVersion.code();

pub(crate) fn respond(request: Request, version: i16, corr: i32) -> Dispatched {
    match request {
        Request::Produce(r) => ready(
            ApiKey::Produce,
            version,
            corr,
            super::produce::error_all(&r, UNSUPPORTED),
        ),
        Request::Fetch(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(UNSUPPORTED)
                                        .with_high_watermark(-1)
                                        .with_preferred_read_replica(BrokerId(-1))
                                })
                                .collect(),
                        )
                })
                .collect();
            let body = FetchResponse::default()
                .with_error_code(UNSUPPORTED)
                .with_responses(topics);
            ready(ApiKey::Fetch, version, corr, body)
        }
        Request::ListOffsets(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(UNSUPPORTED)
                                        .with_offset(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            let body = ListOffsetsResponse::default().with_topics(topics);
            ready(ApiKey::ListOffsets, version, corr, body)
        }
        Request::Metadata(r) => {
            let topics = r
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    MetadataResponseTopic::default()
                        .with_name(t.name)
                        .with_topic_id(t.topic_id)
                        .with_error_code(UNSUPPORTED)
                })
                .collect();
            let mut body = MetadataResponse::default()
                .with_controller_id(BrokerId(-1))
                .with_topics(topics);
            if version >= 13 {
                body = body.with_error_code(UNSUPPORTED);
            }
            ready(ApiKey::Metadata, version, corr, body)
        }
        Request::CreateTopics(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(UNSUPPORTED)
                })
                .collect();
            let body = CreateTopicsResponse::default().with_topics(topics);
            ready(ApiKey::CreateTopics, version, corr, body)
        }
        Request::DeleteTopics(r) => {
            let by_name = r.topic_names.iter().map(|n| {
                DeletableTopicResult::default()
                    .with_name(Some(n.clone()))
                    .with_error_code(UNSUPPORTED)
            });
            let by_state = r.topics.iter().map(|t| {
                DeletableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_error_code(UNSUPPORTED)
            });
            let body =
                DeleteTopicsResponse::default().with_responses(by_name.chain(by_state).collect());
            ready(ApiKey::DeleteTopics, version, corr, body)
        }
        Request::DescribeConfigs(r) => {
            let results = r
                .resources
                .iter()
                .map(|res| {
                    DescribeConfigsResult::default()
                        .with_resource_type(res.resource_type)
                        .with_resource_name(res.resource_name.clone())
                        .with_error_code(UNSUPPORTED)
                })
                .collect();
            let body = DescribeConfigsResponse::default().with_results(results);
            ready(ApiKey::DescribeConfigs, version, corr, body)
        }
        Request::CreatePartitions(r) => {
            let results = r
                .topics
                .iter()
                .map(|t| {
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(UNSUPPORTED)
                })
                .collect();
            let body = CreatePartitionsResponse::default().with_results(results);
            ready(ApiKey::CreatePartitions, version, corr, body)
        }
        Request::InitProducerId(_) => {
            let body = InitProducerIdResponse::default()
                .with_error_code(UNSUPPORTED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            ready(ApiKey::InitProducerId, version, corr, body)
        }
        // Handled before decoding: answered in v0 with our ranges (KIP-511).
        Request::ApiVersions(_) => Err("ApiVersions reached the unsupported-version path".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use sluice_protocol::{codec_versions, SUPPORTED_APIS};

    fn empty(api: ApiKey) -> Option<Request> {
        Some(match api {
            ApiKey::Produce => Request::Produce(ProduceRequest::default()),
            ApiKey::Fetch => Request::Fetch(FetchRequest::default()),
            ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest::default()),
            ApiKey::Metadata => Request::Metadata(MetadataRequest::default()),
            ApiKey::CreateTopics => Request::CreateTopics(CreateTopicsRequest::default()),
            ApiKey::DeleteTopics => Request::DeleteTopics(DeleteTopicsRequest::default()),
            ApiKey::DescribeConfigs => Request::DescribeConfigs(DescribeConfigsRequest::default()),
            ApiKey::CreatePartitions => {
                Request::CreatePartitions(CreatePartitionsRequest::default())
            }
            ApiKey::InitProducerId => Request::InitProducerId(InitProducerIdRequest::default()),
            _ => return None,
        })
    }

    /// Every version the codec knows but we do not advertise gets an encodable answer.
    #[test]
    fn unsupported_version_answers_encode_for_every_unadvertised_version() {
        for &(api, lo, hi) in SUPPORTED_APIS {
            let (min, max) = codec_versions(api).unwrap();
            for version in (min..lo).chain(hi + 1..=max) {
                let Some(request) = empty(api) else { continue };
                let answer = respond(request, version, 1);
                assert!(matches!(answer, Ok(Some(_))), "{api:?} v{version}");
            }
        }
    }
}
