//! Answers to requests at versions we do not advertise but can decode: every item gets
//! UNSUPPORTED_VERSION, in a response of the version the client asked for, echoing the names
//! or ids that version uses. (Apache Kafka closes the connection instead; the issue asks for
//! the error wherever the protocol allows one.) Each answer is the request's
//! [`ErrorResponse`], as Kafka's `getErrorResponse` builds it.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use sluice_protocol::{ErrorResponse, Request};

use super::{ready, Dispatched};

const UNSUPPORTED: i16 = ResponseError::UnsupportedVersion.code();

macro_rules! error_dispatch {
    ($(($api:ident, $request:ident, $($_rest:tt)*))*) => {
        /// The request's error response for `error_code`, at `version`.
        pub(crate) fn error_response(
            request: &Request,
            version: i16,
            corr: i32,
            error_code: i16,
        ) -> Dispatched {
            match request {
                $(Request::$api(r) => {
                    ready(ApiKey::$api, version, corr, r.error_response(version, error_code))
                })*
            }
        }
    };
}
sluice_protocol::for_each_api!(error_dispatch);

/// Answers a request at a version we do not advertise with UNSUPPORTED_VERSION.
pub(crate) fn respond(request: &Request, version: i16, corr: i32) -> Dispatched {
    error_response(request, version, corr, UNSUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Response;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use sluice_protocol::{codec_versions, SUPPORTED_APIS};

    macro_rules! empty_requests {
        ($(($api:ident, $request:ident, $($_rest:tt)*))*) => {
            /// A request of `api` with every field at its default.
            fn empty(api: ApiKey) -> Option<Request> {
                Some(match api {
                    $(ApiKey::$api => Request::$api($request::default()),)*
                    _ => return None,
                })
            }
        };
    }
    sluice_protocol::for_each_api!(empty_requests);

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// A group request with every field the answer echoes set, those of all versions at once,
    /// so that the answer must itself leave out what its version lacks.
    fn populated(api: ApiKey) -> Option<Request> {
        let group = || GroupId(s("g"));
        Some(match api {
            ApiKey::FindCoordinator => Request::FindCoordinator(
                FindCoordinatorRequest::default()
                    .with_key(s("g"))
                    .with_coordinator_keys(vec![s("g"), s("h")]),
            ),
            ApiKey::JoinGroup => {
                Request::JoinGroup(JoinGroupRequest::default().with_member_id(s("m")))
            }
            ApiKey::SyncGroup => Request::SyncGroup(SyncGroupRequest::default()),
            ApiKey::Heartbeat => Request::Heartbeat(HeartbeatRequest::default()),
            ApiKey::LeaveGroup => Request::LeaveGroup(
                LeaveGroupRequest::default()
                    .with_member_id(s("m"))
                    .with_members(vec![leave_group_request::MemberIdentity::default()
                        .with_member_id(s("m"))
                        .with_group_instance_id(Some(s("i")))]),
            ),
            ApiKey::OffsetCommit => {
                Request::OffsetCommit(OffsetCommitRequest::default().with_topics(
                    vec![offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("a")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default(),
                    ])],
                ))
            }
            ApiKey::OffsetFetch => Request::OffsetFetch(
                OffsetFetchRequest::default()
                    .with_group_id(group())
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(TopicName(s("a")))
                            .with_partition_indexes(vec![0, 1]),
                    ]))
                    .with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group())
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopics::default()
                                    .with_name(TopicName(s("a")))
                                    .with_partition_indexes(vec![0, 1]),
                            ])),
                    ]),
            ),
            ApiKey::ListGroups => Request::ListGroups(ListGroupsRequest::default()),
            ApiKey::DescribeGroups => {
                Request::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group()]))
            }
            ApiKey::DeleteGroups => Request::DeleteGroups(
                DeleteGroupsRequest::default().with_groups_names(vec![group()]),
            ),
            ApiKey::OffsetDelete => {
                Request::OffsetDelete(OffsetDeleteRequest::default().with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(s("a")))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                        ]),
                ]))
            }
            _ => return None,
        })
    }

    /// The group APIs' answers encode at every version with whatever the request named, and
    /// carry the error where the metrics find it.
    #[test]
    fn group_answers_encode_and_report_the_error_for_every_codec_version() {
        let mut checked = 0;
        for &(api, _, _) in SUPPORTED_APIS {
            let (min, max) = codec_versions(api).unwrap();
            for version in min..=max {
                let Some(request) = populated(api) else {
                    continue;
                };
                let Ok(Some(Response::Now(Ok(Some(answer))))) = respond(&request, version, 1)
                else {
                    panic!("{api:?} v{version}: no answer");
                };
                // What `sluice_request_errors_total` counts: the client was told.
                assert!(
                    answer.errors.contains(&UNSUPPORTED),
                    "{api:?} v{version}: {:?}",
                    answer.errors
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    /// Every API in the table has an error answer, and it encodes at every version the codec
    /// knows (advertised or not), so no decodable request is left without one.
    #[test]
    fn every_api_answers_errors_at_every_codec_version() {
        for &(api, _, _) in SUPPORTED_APIS {
            let (min, max) = codec_versions(api).unwrap();
            for version in min..=max {
                let request = empty(api).expect("every API in the table has a request type");
                let answer = respond(&request, version, 1);
                assert!(matches!(answer, Ok(Some(_))), "{api:?} v{version}");
            }
        }
    }
}
