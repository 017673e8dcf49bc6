//! The allocation guard: walks a message body against a compact schema before `kafka-protocol`
//! decodes it. The broker runs it on every request; the CLI runs it on every response
//! ([`check_response`], schemas in `guard/response.rs`), with the same schema language and walker.
//!
//! `kafka-protocol` 0.18 calls `Vec::with_capacity(n)` with array counts read off the wire, so a
//! six-byte body claiming two billion topics aborts the process. The walker reads every length
//! and count the decoder will read, in the same order, and refuses the message unless
//! - every count fits in the bytes that remain (each element needs at least one byte), and
//! - the sum over all arrays of `count × size_of::<element>()`, plus a fixed cost per tagged
//!   field, stays within a budget.
//!
//! Only then is the body handed to the decoder, whose allocations are therefore bounded by the
//! frame size plus the budget. The walk is linear in the frame's length.
//!
//! ```text
//! classic (before a message's first flexible version):
//!   string: i16 length (-1 = null) | bytes      bytes, array: i32 length or count (-1 = null)
//! flexible:
//!   string, bytes: uvarint (length + 1, 0 = null) | bytes
//!   array:         uvarint (count + 1, 0 = null)  | elements
//!   struct:        fields | tagged fields
//!   tagged fields: uvarint count | count × (uvarint tag | uvarint size | size bytes)
//!   uvarint:       at most 5 bytes, 7 bits each, low first
//! ```
//! A tagged field the decoder knows at that version is decoded from the stream itself, not
//! from its `size` bytes, so the walker follows its schema too and insists the two agree.
//!
//! Unit tests encode messages of every version a schema claims with `kafka-protocol` and check
//! that the walker consumes exactly the encoded bytes, so a schema typo fails a test.

use std::mem::size_of;

use kafka_protocol::messages::{
    add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction},
    alter_configs_request::{AlterConfigsResource, AlterableConfig},
    alter_partition_reassignments_request, alter_replica_log_dirs_request,
    create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic},
    create_topics_request::{CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig},
    delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic},
    delete_topics_request::DeleteTopicState,
    describe_configs_request::DescribeConfigsResource,
    describe_log_dirs_request, describe_producers_request, describe_quorum_request,
    describe_topic_partitions_request, elect_leaders_request,
    fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
    incremental_alter_configs_request as incremental,
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    list_partition_reassignments_request,
    metadata_request::MetadataRequestTopic,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic},
    offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    },
    offset_for_leader_epoch_request,
    produce_request::{PartitionProduceData, TopicProduceData},
    sync_group_request::SyncGroupRequestAssignment,
    txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic},
    ApiKey,
};
use kafka_protocol::protocol::StrBytes;

mod response;

pub use response::{check_response, response_versions};

/// Bytes charged per tagged field (an unknown one is a `BTreeMap` entry holding a `Bytes`).
const TAGGED_FIELD_COST: usize = 64;

/// Why the guard refused a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("body ends early at byte {0}")]
    Truncated(usize),
    #[error("negative length or count {0}")]
    Negative(i64),
    #[error("count {count} cannot fit in the {remaining} bytes left")]
    CountTooLarge { count: u64, remaining: usize },
    #[error("decoding would need more than {0} bytes")]
    OverBudget(usize),
    #[error("known tagged field {tag} disagrees with its size")]
    TaggedFieldSize { tag: u32 },
    #[error("no schema for {api:?} v{version}")]
    NoSchema { api: ApiKey, version: i16 },
}

/// Field kinds as they appear on the wire. Strings, bytes and arrays switch to their compact
/// (varint-length) form in flexible versions.
#[derive(Clone, Copy)]
enum Kind {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// A (nullable) string.
    Str,
    /// (Nullable) bytes, including record sets.
    Bytes,
    /// One struct with these fields, in place (only as a tagged field so far).
    Struct(&'static [Field]),
    /// A nullable struct: an int8 (negative for null), then the struct if present.
    NullableStruct(&'static [Field]),
    /// A (nullable) array of structs with these fields; the usize is `size_of` the decoded
    /// element type.
    Structs(&'static [Field], usize),
    /// A (nullable) array of int8.
    I8s,
    /// A (nullable) array of int32.
    I32s,
    /// A (nullable) array of int64.
    I64s,
    /// A (nullable) array of strings.
    Strs,
}

/// One field, present for versions `since..=until`: in its place among the struct's fields,
/// or, with a `tag`, among its tagged fields (flexible versions only).
#[derive(Clone, Copy)]
struct Field {
    since: i16,
    until: i16,
    tag: Option<u32>,
    kind: Kind,
}

const fn range(since: i16, until: i16, kind: Kind) -> Field {
    Field {
        since,
        until,
        tag: None,
        kind,
    }
}
const fn f(kind: Kind) -> Field {
    range(0, i16::MAX, kind)
}
const fn since(v: i16, kind: Kind) -> Field {
    range(v, i16::MAX, kind)
}
/// A tagged field the decoder knows from version `v` on.
const fn tagged(tag: u32, v: i16, kind: Kind) -> Field {
    Field {
        tag: Some(tag),
        ..since(v, kind)
    }
}

impl Field {
    fn present_in(&self, version: i16) -> bool {
        (self.since..=self.until).contains(&version)
    }
}

use Kind::*;

const API_VERSIONS: &[Field] = &[since(3, Str), since(3, Str)];

const METADATA: &[Field] = &[
    f(Structs(
        &[since(10, Uuid), f(Str)],
        size_of::<MetadataRequestTopic>(),
    )),
    since(4, I8),
    range(8, 10, I8),
    since(8, I8),
];

const PRODUCE: &[Field] = &[
    since(3, Str),
    f(I16),
    f(I32),
    f(Structs(
        &[
            range(0, 12, Str),
            since(13, Uuid),
            f(Structs(
                &[f(I32), f(Bytes)],
                size_of::<PartitionProduceData>(),
            )),
        ],
        size_of::<TopicProduceData>(),
    )),
];

const FETCH: &[Field] = &[
    range(0, 14, I32),
    f(I32),
    f(I32),
    since(3, I32),
    since(4, I8),
    since(7, I32),
    since(7, I32),
    f(Structs(
        &[
            range(0, 12, Str),
            since(13, Uuid),
            f(Structs(
                &[
                    f(I32),
                    since(9, I32),
                    f(I64),
                    since(12, I32),
                    since(5, I64),
                    f(I32),
                    // replica_directory_id, high_watermark
                    tagged(0, 17, Uuid),
                    tagged(1, 18, I64),
                ],
                size_of::<FetchPartition>(),
            )),
        ],
        size_of::<FetchTopic>(),
    )),
    since(
        7,
        Structs(
            &[range(7, 12, Str), since(13, Uuid), f(I32s)],
            size_of::<ForgottenTopic>(),
        ),
    ),
    since(11, Str),
    // cluster_id, replica_state
    tagged(0, 12, Str),
    tagged(1, 15, Struct(&[f(I32), f(I64)])),
];

const LIST_OFFSETS: &[Field] = &[
    f(I32),
    since(2, I8),
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32), since(4, I32), f(I64), range(0, 0, I32)],
                size_of::<ListOffsetsPartition>(),
            )),
        ],
        size_of::<ListOffsetsTopic>(),
    )),
    since(10, I32),
];

const CREATE_TOPICS: &[Field] = &[
    f(Structs(
        &[
            f(Str),
            f(I32),
            f(I16),
            f(Structs(
                &[f(I32), f(I32s)],
                size_of::<CreatableReplicaAssignment>(),
            )),
            f(Structs(
                &[f(Str), f(Str)],
                size_of::<CreatableTopicConfig>(),
            )),
        ],
        size_of::<CreatableTopic>(),
    )),
    f(I32),
    since(1, I8),
];

const DELETE_TOPICS: &[Field] = &[
    since(
        6,
        Structs(&[f(Str), f(Uuid)], size_of::<DeleteTopicState>()),
    ),
    range(0, 5, Strs),
    f(I32),
];

const DESCRIBE_CONFIGS: &[Field] = &[
    f(Structs(
        &[f(I8), f(Str), f(Strs)],
        size_of::<DescribeConfigsResource>(),
    )),
    since(1, I8),
    since(3, I8),
];

const CREATE_PARTITIONS: &[Field] = &[
    f(Structs(
        &[
            f(Str),
            f(I32),
            f(Structs(&[f(I32s)], size_of::<CreatePartitionsAssignment>())),
        ],
        size_of::<CreatePartitionsTopic>(),
    )),
    f(I32),
    f(I8),
];

const INIT_PRODUCER_ID: &[Field] = &[f(Str), f(I32), since(3, I64), since(3, I16)];

const FIND_COORDINATOR: &[Field] = &[range(0, 3, Str), since(1, I8), since(4, Strs)];

const JOIN_GROUP: &[Field] = &[
    f(Str),
    f(I32),
    since(1, I32),
    f(Str),
    since(5, Str),
    f(Str),
    f(Structs(
        &[f(Str), f(Bytes)],
        size_of::<JoinGroupRequestProtocol>(),
    )),
    since(8, Str),
];

const SYNC_GROUP: &[Field] = &[
    f(Str),
    f(I32),
    f(Str),
    since(3, Str),
    since(5, Str),
    since(5, Str),
    f(Structs(
        &[f(Str), f(Bytes)],
        size_of::<SyncGroupRequestAssignment>(),
    )),
];

const HEARTBEAT: &[Field] = &[f(Str), f(I32), f(Str), since(3, Str)];

const LEAVE_GROUP: &[Field] = &[
    f(Str),
    range(0, 2, Str),
    since(
        3,
        Structs(
            &[since(3, Str), since(3, Str), since(5, Str)],
            size_of::<MemberIdentity>(),
        ),
    ),
];

const OFFSET_COMMIT: &[Field] = &[
    f(Str),
    f(I32),
    f(Str),
    since(7, Str),
    range(0, 4, I64),
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32), f(I64), since(6, I32), f(Str)],
                size_of::<OffsetCommitRequestPartition>(),
            )),
        ],
        size_of::<OffsetCommitRequestTopic>(),
    )),
];

const OFFSET_FETCH: &[Field] = &[
    range(0, 7, Str),
    range(
        0,
        7,
        Structs(
            &[range(0, 7, Str), range(0, 7, I32s)],
            size_of::<OffsetFetchRequestTopic>(),
        ),
    ),
    since(
        8,
        Structs(
            &[
                since(8, Str),
                since(9, Str),
                since(9, I32),
                since(
                    8,
                    Structs(
                        &[since(8, Str), since(8, I32s)],
                        size_of::<OffsetFetchRequestTopics>(),
                    ),
                ),
            ],
            size_of::<OffsetFetchRequestGroup>(),
        ),
    ),
    since(7, I8),
];

const LIST_GROUPS: &[Field] = &[since(4, Strs), since(5, Strs)];

const DESCRIBE_GROUPS: &[Field] = &[f(Strs), since(3, I8)];

const DELETE_GROUPS: &[Field] = &[f(Strs)];

const DELETE_RECORDS: &[Field] = &[
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32), f(I64)],
                size_of::<DeleteRecordsPartition>(),
            )),
        ],
        size_of::<DeleteRecordsTopic>(),
    )),
    f(I32),
];

const ALTER_CONFIGS: &[Field] = &[
    f(Structs(
        &[
            f(I8),
            f(Str),
            f(Structs(&[f(Str), f(Str)], size_of::<AlterableConfig>())),
        ],
        size_of::<AlterConfigsResource>(),
    )),
    f(I8),
];

const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f(Structs(
        &[
            f(I8),
            f(Str),
            f(Structs(
                &[f(Str), f(I8), f(Str)],
                size_of::<incremental::AlterableConfig>(),
            )),
        ],
        size_of::<incremental::AlterConfigsResource>(),
    )),
    f(I8),
];

const OFFSET_DELETE: &[Field] = &[
    f(Str),
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32)],
                size_of::<OffsetDeleteRequestPartition>(),
            )),
        ],
        size_of::<OffsetDeleteRequestTopic>(),
    )),
];

const TXN_TOPICS: Kind = Structs(&[f(Str), f(I32s)], size_of::<AddPartitionsToTxnTopic>());

const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    since(
        4,
        Structs(
            &[f(Str), f(I64), f(I16), f(I8), f(TXN_TOPICS)],
            size_of::<AddPartitionsToTxnTransaction>(),
        ),
    ),
    range(0, 3, Str),
    range(0, 3, I64),
    range(0, 3, I16),
    range(0, 3, TXN_TOPICS),
];

const ADD_OFFSETS_TO_TXN: &[Field] = &[f(Str), f(I64), f(I16), f(Str)];

/// `markers: [{producer_id, producer_epoch, transaction_result, topics: [{name,
/// partition_indexes}], coordinator_epoch}]`.
const WRITE_TXN_MARKERS: &[Field] = &[f(Structs(
    &[f(I64), f(I16), f(I8), f(TXN_MARKER_TOPICS), f(I32)],
    size_of::<kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker>(),
))];

const TXN_MARKER_TOPICS: Kind = Structs(
    &[f(Str), f(I32s)],
    size_of::<kafka_protocol::messages::write_txn_markers_request::WritableTxnMarkerTopic>(),
);

const END_TXN: &[Field] = &[f(Str), f(I64), f(I16), f(I8)];

const TXN_OFFSET_COMMIT: &[Field] = &[
    f(Str),
    f(Str),
    f(I64),
    f(I16),
    since(3, I32),
    since(3, Str),
    since(3, Str),
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32), f(I64), since(2, I32), f(Str)],
                size_of::<TxnOffsetCommitRequestPartition>(),
            )),
        ],
        size_of::<TxnOffsetCommitRequestTopic>(),
    )),
];

const DESCRIBE_TRANSACTIONS: &[Field] = &[f(Strs)];

const DESCRIBE_CLUSTER: &[Field] = &[f(I8), since(1, I8), since(2, I8)];

const DESCRIBE_PRODUCERS: &[Field] = &[f(Structs(
    &[f(Str), f(I32s)],
    size_of::<describe_producers_request::TopicRequest>(),
))];

const DESCRIBE_TOPIC_PARTITIONS: &[Field] = &[
    f(Structs(
        &[f(Str)],
        size_of::<describe_topic_partitions_request::TopicRequest>(),
    )),
    f(I32),
    f(NullableStruct(&[f(Str), f(I32)])),
];

const LIST_CONFIG_RESOURCES: &[Field] = &[since(1, I8s)];

const DESCRIBE_LOG_DIRS: &[Field] = &[f(Structs(
    &[f(Str), f(I32s)],
    size_of::<describe_log_dirs_request::DescribableLogDirTopic>(),
))];

const ALTER_REPLICA_LOG_DIRS: &[Field] = &[f(Structs(
    &[
        f(Str),
        f(Structs(
            &[f(Str), f(I32s)],
            size_of::<alter_replica_log_dirs_request::AlterReplicaLogDirTopic>(),
        )),
    ],
    size_of::<alter_replica_log_dirs_request::AlterReplicaLogDir>(),
))];

const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    since(3, I32),
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32), since(2, I32), f(I32)],
                size_of::<offset_for_leader_epoch_request::OffsetForLeaderPartition>(),
            )),
        ],
        size_of::<offset_for_leader_epoch_request::OffsetForLeaderTopic>(),
    )),
];

const DESCRIBE_QUORUM: &[Field] = &[f(Structs(
    &[
        f(Str),
        f(Structs(
            &[f(I32)],
            size_of::<describe_quorum_request::PartitionData>(),
        )),
    ],
    size_of::<describe_quorum_request::TopicData>(),
))];

const ELECT_LEADERS: &[Field] = &[
    since(1, I8),
    f(Structs(
        &[f(Str), f(I32s)],
        size_of::<elect_leaders_request::TopicPartitions>(),
    )),
    f(I32),
];

/// `timeout_ms, v1: allow_replication_factor_change, topics: [{name, partitions:
/// [{partition_index, replicas (null = cancel)}]}]`.
const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    f(I32),
    since(1, I8),
    f(Structs(
        &[
            f(Str),
            f(Structs(
                &[f(I32), f(I32s)],
                size_of::<alter_partition_reassignments_request::ReassignablePartition>(),
            )),
        ],
        size_of::<alter_partition_reassignments_request::ReassignableTopic>(),
    )),
];

/// `timeout_ms, topics (null = all): [{name, partition_indexes}]`.
const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[
    f(I32),
    f(Structs(
        &[f(Str), f(I32s)],
        size_of::<list_partition_reassignments_request::ListPartitionReassignmentsTopics>(),
    )),
];

const LIST_TRANSACTIONS: &[Field] = &[f(Strs), f(I64s), since(1, I64), since(2, Str)];

macro_rules! schemas {
    ($((
        $api:ident, $request:ident, $min:literal, $max:literal,
        $schema:ident, $flexible:expr, $handler:ident
    ))*) => {
        /// The schema of a request body, and the first flexible version of that request.
        fn schema(api: ApiKey) -> Option<(&'static [Field], i16)> {
            Some(match api {
                $(ApiKey::$api => ($schema, $flexible),)*
                _ => return None,
            })
        }
    };
}
crate::for_each_api!(schemas);

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
    budget_left: usize,
    budget: usize,
}

impl<'a> Walker<'a> {
    fn new(buf: &'a [u8], version: i16, flexible: bool, budget: usize) -> Self {
        Self {
            buf,
            pos: 0,
            version,
            flexible,
            budget_left: budget,
            budget,
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), GuardError> {
        if self.buf.len() - self.pos < n {
            return Err(GuardError::Truncated(self.pos));
        }
        self.pos += n;
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn read_i16(&mut self) -> Result<i16, GuardError> {
        let at = self.pos;
        self.skip(2)?;
        Ok(i16::from_be_bytes([self.buf[at], self.buf[at + 1]]))
    }

    fn read_i32(&mut self) -> Result<i32, GuardError> {
        let at = self.pos;
        self.skip(4)?;
        Ok(i32::from_be_bytes(
            self.buf[at..at + 4].try_into().expect("4 bytes"),
        ))
    }

    /// Stricter than `kafka-protocol`, which stops after five bytes whatever the fifth says.
    fn read_uvarint(&mut self) -> Result<u32, GuardError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let at = self.pos;
            self.skip(1)?;
            let byte = self.buf[at];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GuardError::Truncated(self.pos))
    }

    fn charge(&mut self, bytes: u64) -> Result<(), GuardError> {
        let bytes = usize::try_from(bytes).map_err(|_| GuardError::OverBudget(self.budget))?;
        self.budget_left = self
            .budget_left
            .checked_sub(bytes)
            .ok_or(GuardError::OverBudget(self.budget))?;
        Ok(())
    }

    /// A length-prefixed byte string (string or bytes): skips the bytes, allows null.
    fn length_prefixed(&mut self, classic_i16: bool) -> Result<(), GuardError> {
        let len: i64 = if self.flexible {
            i64::from(self.read_uvarint()?) - 1
        } else if classic_i16 {
            i64::from(self.read_i16()?)
        } else {
            i64::from(self.read_i32()?)
        };
        match len {
            -1 => Ok(()),
            n if n < 0 => Err(GuardError::Negative(n)),
            n => self.skip(n as usize),
        }
    }

    /// Checks a count against the bytes left (each element takes at least one) and charges
    /// `count × element_size` to the budget.
    fn admit(&mut self, count: u64, element_size: usize) -> Result<(), GuardError> {
        if count > self.remaining() as u64 {
            return Err(GuardError::CountTooLarge {
                count,
                remaining: self.remaining(),
            });
        }
        self.charge(count * element_size as u64)
    }

    /// Reads an array count; returns `None` for a null array. [`Walker::admit`]s it.
    fn array_count(&mut self, element_size: usize) -> Result<Option<u64>, GuardError> {
        let count: i64 = if self.flexible {
            i64::from(self.read_uvarint()?) - 1
        } else {
            i64::from(self.read_i32()?)
        };
        match count {
            -1 => Ok(None),
            n if n < 0 => Err(GuardError::Negative(n)),
            n => {
                self.admit(n as u64, element_size)?;
                Ok(Some(n as u64))
            }
        }
    }

    /// The tagged fields of a struct with `fields`: those the decoder knows at this version
    /// are walked by their schema and must take exactly their declared size; others are
    /// skipped.
    fn tagged_fields(&mut self, fields: &[Field]) -> Result<(), GuardError> {
        let count = self.read_uvarint()?;
        self.admit(count.into(), TAGGED_FIELD_COST)?;
        for _ in 0..count {
            let tag = self.read_uvarint()?;
            let size = self.read_uvarint()? as usize;
            let known = fields
                .iter()
                .find(|field| field.tag == Some(tag) && field.present_in(self.version));
            match known {
                None => self.skip(size)?,
                Some(field) => {
                    let start = self.pos;
                    self.field(field.kind)?;
                    if self.pos - start != size {
                        return Err(GuardError::TaggedFieldSize { tag });
                    }
                }
            }
        }
        Ok(())
    }

    fn structure(&mut self, fields: &[Field]) -> Result<(), GuardError> {
        for field in fields {
            if field.tag.is_none() && field.present_in(self.version) {
                self.field(field.kind)?;
            }
        }
        if self.flexible {
            self.tagged_fields(fields)?;
        }
        Ok(())
    }

    fn field(&mut self, kind: Kind) -> Result<(), GuardError> {
        match kind {
            I8 => self.skip(1),
            I16 => self.skip(2),
            I32 => self.skip(4),
            I64 => self.skip(8),
            Uuid => self.skip(16),
            Str => self.length_prefixed(true),
            Bytes => self.length_prefixed(false),
            Struct(fields) => self.structure(fields),
            NullableStruct(fields) => {
                let at = self.pos;
                self.skip(1)?;
                if (self.buf[at] as i8) < 0 {
                    Ok(())
                } else {
                    self.structure(fields)
                }
            }
            Structs(fields, size) => {
                if let Some(n) = self.array_count(size)? {
                    for _ in 0..n {
                        self.structure(fields)?;
                    }
                }
                Ok(())
            }
            I8s => {
                if let Some(n) = self.array_count(size_of::<i8>())? {
                    self.skip(n as usize)?;
                }
                Ok(())
            }
            I32s => {
                if let Some(n) = self.array_count(size_of::<i32>())? {
                    self.skip(n as usize * 4)?;
                }
                Ok(())
            }
            I64s => {
                if let Some(n) = self.array_count(size_of::<i64>())? {
                    self.skip(n as usize * 8)?;
                }
                Ok(())
            }
            Strs => {
                if let Some(n) = self.array_count(size_of::<StrBytes>())? {
                    for _ in 0..n {
                        self.length_prefixed(true)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Checks that decoding `body` as request `api` at `version` allocates at most
/// `budget_bytes` for arrays and tagged fields on top of the body itself. Returns the number
/// of bytes the schema accounts for (the whole body for a well-formed request).
pub fn check_request_body(
    api: ApiKey,
    version: i16,
    body: &[u8],
    budget_bytes: usize,
) -> Result<usize, GuardError> {
    let (fields, flexible_since) = schema(api).ok_or(GuardError::NoSchema { api, version })?;
    let mut walker = Walker::new(body, version, version >= flexible_since, budget_bytes);
    walker.structure(fields)?;
    Ok(walker.pos)
}

/// Whether the guard has a schema for this API (and so the broker may decode it).
pub fn has_schema(api: ApiKey) -> bool {
    schema(api).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, RequestHeader, SUPPORTED_APIS};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use proptest::prelude::*;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }
    fn topic(v: &str) -> TopicName {
        TopicName(s(v))
    }

    /// A request of `api` at `version` with every array populated, so that nested fields are
    /// exercised. Fields a version lacks are left at their defaults.
    fn sample(api: ApiKey, v: i16) -> Box<dyn Fn(&mut BytesMut) -> anyhow_free::R> {
        use anyhow_free::enc;
        match api {
            ApiKey::ApiVersions => enc(
                ApiVersionsRequest::default()
                    .with_client_software_name(s("t"))
                    .with_client_software_version(s("1")),
                v,
            ),
            ApiKey::Metadata => enc(
                MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(topic("a"))),
                ])),
                v,
            ),
            ApiKey::Produce => enc(
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(topic("a"))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(1)
                                .with_records(Some(Bytes::from_static(b"xyz"))),
                        ])]),
                v,
            ),
            // Known tagged fields from the versions that have them, so their schemas are
            // walked too.
            ApiKey::Fetch => enc(
                FetchRequest::default()
                    .with_topics(vec![fetch_request::FetchTopic::default()
                        .with_topic(topic("a"))
                        .with_partitions(vec![fetch_request::FetchPartition::default()
                            .with_fetch_offset(5)
                            .with_replica_directory_id(if v >= 17 {
                                uuid::Uuid::from_u128(7)
                            } else {
                                uuid::Uuid::nil()
                            })
                            .with_high_watermark(if v >= 18 { 9 } else { i64::MAX })])])
                    .with_cluster_id((v >= 12).then(|| s("c")))
                    .with_replica_state(if v >= 15 {
                        fetch_request::ReplicaState::default()
                            .with_replica_id(BrokerId(3))
                            .with_replica_epoch(4)
                    } else {
                        fetch_request::ReplicaState::default()
                    })
                    .with_forgotten_topics_data(if v >= 7 {
                        vec![fetch_request::ForgottenTopic::default()
                            .with_topic(topic("b"))
                            .with_partitions(vec![1, 2])]
                    } else {
                        vec![]
                    })
                    .with_rack_id(s("r")),
                v,
            ),
            ApiKey::ListOffsets => enc(
                ListOffsetsRequest::default().with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic("a"))
                        .with_partitions(vec![
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_timestamp(-1),
                        ]),
                ]),
                v,
            ),
            ApiKey::CreateTopics => enc(
                CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic("a"))
                        .with_num_partitions(-1)
                        .with_assignments(vec![
                            create_topics_request::CreatableReplicaAssignment::default()
                                .with_broker_ids(vec![BrokerId(0)]),
                        ])
                        .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                            .with_name(s("segment.bytes"))
                            .with_value(Some(s("1024")))]),
                ]),
                v,
            ),
            ApiKey::DeleteTopics => {
                let mut r = DeleteTopicsRequest::default();
                if v >= 6 {
                    r = r.with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(topic("a")))]);
                } else {
                    r = r.with_topic_names(vec![topic("a"), topic("b")]);
                }
                enc(r, v)
            }
            ApiKey::DescribeConfigs => enc(
                DescribeConfigsRequest::default().with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("a"))
                        .with_configuration_keys(Some(vec![s("x"), s("y")])),
                ]),
                v,
            ),
            ApiKey::CreatePartitions => enc(
                CreatePartitionsRequest::default().with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("a"))
                        .with_count(3)
                        .with_assignments(Some(vec![
                            create_partitions_request::CreatePartitionsAssignment::default()
                                .with_broker_ids(vec![BrokerId(0)]),
                        ])),
                ]),
                v,
            ),
            ApiKey::InitProducerId => enc(
                InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(s("tx"))))
                    .with_transaction_timeout_ms(60_000),
                v,
            ),
            ApiKey::FindCoordinator => {
                let r = if v >= 4 {
                    FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")])
                } else {
                    FindCoordinatorRequest::default().with_key(s("g"))
                };
                enc(r, v)
            }
            ApiKey::JoinGroup => {
                let protocol = join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"meta"));
                enc(
                    JoinGroupRequest::default()
                        .with_group_id(GroupId(s("g")))
                        .with_session_timeout_ms(10_000)
                        .with_rebalance_timeout_ms(20_000)
                        .with_member_id(s("m"))
                        .with_group_instance_id((v >= 5).then(|| s("i")))
                        .with_protocol_type(s("consumer"))
                        .with_protocols(vec![protocol])
                        .with_reason(Some(s("r"))),
                    v,
                )
            }
            ApiKey::SyncGroup => enc(
                SyncGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_generation_id(1)
                    .with_member_id(s("m"))
                    .with_group_instance_id((v >= 3).then(|| s("i")))
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")))
                    .with_assignments(vec![
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(s("m"))
                            .with_assignment(Bytes::from_static(b"assignment")),
                    ]),
                v,
            ),
            ApiKey::Heartbeat => enc(
                HeartbeatRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_generation_id(1)
                    .with_member_id(s("m"))
                    .with_group_instance_id((v >= 3).then(|| s("i"))),
                v,
            ),
            ApiKey::LeaveGroup => {
                let r = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
                let r = if v >= 3 {
                    r.with_members(vec![leave_group_request::MemberIdentity::default()
                        .with_member_id(s("m"))
                        .with_group_instance_id(Some(s("i")))
                        .with_reason(Some(s("r")))])
                } else {
                    r.with_member_id(s("m"))
                };
                enc(r, v)
            }
            ApiKey::OffsetCommit => enc(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_generation_id_or_member_epoch(1)
                    .with_member_id(s("m"))
                    .with_group_instance_id((v >= 7).then(|| s("i")))
                    .with_retention_time_ms(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(topic("a"))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(1)
                                    .with_committed_offset(5)
                                    .with_committed_leader_epoch(3)
                                    .with_committed_metadata(Some(s("md"))),
                            ]),
                    ]),
                v,
            ),
            ApiKey::OffsetFetch => {
                let r = if v >= 8 {
                    OffsetFetchRequest::default().with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(s("g")))
                            .with_member_id(Some(s("m")))
                            .with_member_epoch(3)
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopics::default()
                                    .with_name(topic("a"))
                                    .with_partition_indexes(vec![0, 1]),
                            ])),
                    ])
                } else {
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(s("g")))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(topic("a"))
                                .with_partition_indexes(vec![0, 1]),
                        ]))
                };
                enc(r.with_require_stable(v >= 7), v)
            }
            ApiKey::ListGroups => enc(
                ListGroupsRequest::default()
                    .with_states_filter(if v >= 4 { vec![s("Stable")] } else { vec![] })
                    .with_types_filter(if v >= 5 { vec![s("classic")] } else { vec![] }),
                v,
            ),
            ApiKey::DescribeGroups => enc(
                DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(s("g")), GroupId(s("h"))])
                    .with_include_authorized_operations(v >= 3),
                v,
            ),
            ApiKey::DeleteGroups => enc(
                DeleteGroupsRequest::default()
                    .with_groups_names(vec![GroupId(s("g")), GroupId(s("h"))]),
                v,
            ),
            ApiKey::OffsetDelete => enc(
                OffsetDeleteRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(vec![
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(topic("a"))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default()
                                    .with_partition_index(1),
                            ]),
                    ]),
                v,
            ),
            ApiKey::AddPartitionsToTxn => {
                let topics = vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![0, 3])];
                let request = if v >= 4 {
                    AddPartitionsToTxnRequest::default().with_transactions(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                            .with_transactional_id(TransactionalId(s("t")))
                            .with_producer_id(ProducerId(4))
                            .with_verify_only(true)
                            .with_topics(topics),
                    ])
                } else {
                    AddPartitionsToTxnRequest::default()
                        .with_v3_and_below_transactional_id(TransactionalId(s("t")))
                        .with_v3_and_below_producer_id(ProducerId(4))
                        .with_v3_and_below_topics(topics)
                };
                enc(request, v)
            }
            ApiKey::AddOffsetsToTxn => enc(
                AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("t")))
                    .with_group_id(GroupId(s("g"))),
                v,
            ),
            ApiKey::WriteTxnMarkers => {
                use kafka_protocol::messages::write_txn_markers_request::{
                    WritableTxnMarker, WritableTxnMarkerTopic,
                };
                enc(
                    WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                        .with_producer_id(ProducerId(7))
                        .with_producer_epoch(2)
                        .with_transaction_result(true)
                        .with_coordinator_epoch(4)
                        .with_topics(vec![WritableTxnMarkerTopic::default()
                            .with_name(TopicName(s("t")))
                            .with_partition_indexes(vec![0, 1])])]),
                    v,
                )
            }
            ApiKey::EndTxn => enc(
                EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("t")))
                    .with_committed(true),
                v,
            ),
            ApiKey::TxnOffsetCommit => enc(
                TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("t")))
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s(if v >= 3 { "m" } else { "" }))
                    .with_group_instance_id((v >= 3).then(|| s("i")))
                    .with_topics(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                            .with_name(topic("a"))
                            .with_partitions(vec![
                                txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                    .with_committed_offset(9)
                                    .with_committed_metadata(Some(s("md"))),
                            ]),
                    ]),
                v,
            ),
            ApiKey::DescribeTransactions => enc(
                DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(s("t")),
                    TransactionalId(s("u")),
                ]),
                v,
            ),
            ApiKey::DescribeCluster => {
                let mut r = DescribeClusterRequest::default()
                    .with_include_cluster_authorized_operations(true);
                if v >= 1 {
                    r = r.with_endpoint_type(1);
                }
                if v >= 2 {
                    r = r.with_include_fenced_brokers(true);
                }
                enc(r, v)
            }
            ApiKey::DescribeProducers => enc(
                DescribeProducersRequest::default().with_topics(vec![
                    describe_producers_request::TopicRequest::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 1]),
                ]),
                v,
            ),
            ApiKey::DescribeTopicPartitions => enc(
                DescribeTopicPartitionsRequest::default()
                    .with_topics(vec![
                        describe_topic_partitions_request::TopicRequest::default()
                            .with_name(topic("t")),
                    ])
                    .with_response_partition_limit(100)
                    .with_cursor(Some(
                        describe_topic_partitions_request::Cursor::default()
                            .with_topic_name(topic("t"))
                            .with_partition_index(3),
                    )),
                v,
            ),
            ApiKey::ListConfigResources => {
                let mut r = ListConfigResourcesRequest::default();
                if v >= 1 {
                    r = r.with_resource_types(vec![2, 4]);
                }
                enc(r, v)
            }
            ApiKey::DescribeLogDirs => enc(
                DescribeLogDirsRequest::default().with_topics(Some(vec![
                    describe_log_dirs_request::DescribableLogDirTopic::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![0]),
                ])),
                v,
            ),
            ApiKey::AlterReplicaLogDirs => enc(
                AlterReplicaLogDirsRequest::default().with_dirs(vec![
                    alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                        .with_path(s("/data"))
                        .with_topics(vec![
                            alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                                .with_name(topic("t"))
                                .with_partitions(vec![0, 1]),
                        ]),
                ]),
                v,
            ),
            ApiKey::OffsetForLeaderEpoch => {
                let mut r = OffsetForLeaderEpochRequest::default().with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(0)
                                .with_leader_epoch(0),
                        ]),
                ]);
                if v >= 3 {
                    r = r.with_replica_id(BrokerId(-1));
                }
                enc(r, v)
            }
            ApiKey::DescribeQuorum => enc(
                DescribeQuorumRequest::default().with_topics(vec![
                    describe_quorum_request::TopicData::default()
                        .with_topic_name(topic("__cluster_metadata"))
                        .with_partitions(vec![
                            describe_quorum_request::PartitionData::default()
                                .with_partition_index(0),
                        ]),
                ]),
                v,
            ),
            ApiKey::ElectLeaders => enc(
                ElectLeadersRequest::default()
                    .with_election_type(0)
                    .with_topic_partitions(Some(vec![
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(topic("a"))
                            .with_partitions(vec![0, 1]),
                    ]))
                    .with_timeout_ms(1000),
                v,
            ),
            ApiKey::AlterPartitionReassignments => enc(
                AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(1000)
                    .with_allow_replication_factor_change(true)
                    .with_topics(vec![
                        alter_partition_reassignments_request::ReassignableTopic::default()
                            .with_name(topic("a"))
                            .with_partitions(vec![
                                alter_partition_reassignments_request::ReassignablePartition::default()
                                    .with_partition_index(1)
                                    .with_replicas(Some(vec![BrokerId(2), BrokerId(3)])),
                                alter_partition_reassignments_request::ReassignablePartition::default()
                                    .with_partition_index(2)
                                    .with_replicas(None),
                            ]),
                    ]),
                v,
            ),
            ApiKey::ListPartitionReassignments => enc(
                ListPartitionReassignmentsRequest::default()
                    .with_timeout_ms(1000)
                    .with_topics(Some(vec![
                        list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                            .with_name(topic("a"))
                            .with_partition_indexes(vec![0, 1]),
                    ])),
                v,
            ),
            ApiKey::ListTransactions => enc(
                ListTransactionsRequest::default()
                    .with_state_filters(vec![s("Ongoing")])
                    .with_producer_id_filters(vec![ProducerId(3), ProducerId(5)])
                    .with_transactional_id_pattern((v >= 2).then(|| s("t.*"))),
                v,
            ),
            ApiKey::DeleteRecords => enc(
                DeleteRecordsRequest::default()
                    .with_timeout_ms(1000)
                    .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                        .with_name(topic("a"))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(2)
                                .with_offset(7),
                        ])]),
                v,
            ),
            ApiKey::AlterConfigs => enc(
                AlterConfigsRequest::default().with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("a"))
                        .with_configs(vec![alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("1000")))]),
                ]),
                v,
            ),
            ApiKey::IncrementalAlterConfigs => enc(
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("a"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s("cleanup.policy"))
                                .with_config_operation(2)
                                .with_value(Some(s("compact"))),
                        ]),
                ]),
                v,
            ),
            other => panic!("no sample for {other:?}"),
        }
    }

    mod anyhow_free {
        use super::*;
        pub type R = Result<(), String>;
        pub fn enc<T: Encodable + 'static>(msg: T, v: i16) -> Box<dyn Fn(&mut BytesMut) -> R> {
            Box::new(move |buf| msg.encode(buf, v).map_err(|e| e.to_string()))
        }
    }

    fn encoded(api: ApiKey, v: i16) -> Bytes {
        let mut buf = BytesMut::new();
        sample(api, v)(&mut buf).unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
        buf.freeze()
    }

    fn header(api: ApiKey, v: i16) -> RequestHeader {
        RequestHeader {
            api_key: api as i16,
            api_version: v,
            correlation_id: 1,
            client_id: None,
        }
    }

    /// The walker's schema matches the codec's for every version the codec knows (advertised
    /// or not: unsupported versions are decoded too, to answer them with an error): it
    /// consumes exactly the bytes the codec wrote, and the decoder accepts them.
    #[test]
    fn guard_schema_matches_codec_for_every_codec_version() {
        for &(api, _, _) in SUPPORTED_APIS {
            let (min, max) = crate::codec_versions(api).unwrap();
            for v in min..=max {
                let body = encoded(api, v);
                let used = check_request_body(api, v, &body, 1 << 20)
                    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
                assert_eq!(used, body.len(), "{api:?} v{v}: walker and codec disagree");
                Request::decode_unsupported(&header(api, v), body, 1 << 20)
                    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
            }
        }
    }

    /// Every API's error response (`ErrorResponse`) encodes at every version the codec knows,
    /// for requests naming topics, partitions, groups and keys in every version's fields.
    #[test]
    fn error_responses_encode_for_every_codec_version() {
        for &(api, _, _) in SUPPORTED_APIS {
            let (min, max) = crate::codec_versions(api).unwrap();
            for v in min..=max {
                let request =
                    Request::decode_unsupported(&header(api, v), encoded(api, v), 1 << 20)
                        .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
                let bytes = request
                    .encode_error_response(v, 1, 35)
                    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
                // Size prefix, correlation id, and a body.
                assert!(bytes.len() > 8, "{api:?} v{v}");
            }
        }
    }

    /// Every advertised version decodes through the guarded path.
    #[test]
    fn every_advertised_version_decodes() {
        for &(api, lo, hi) in SUPPORTED_APIS {
            // Versions the codec cannot encode are tested in `legacy`.
            let lo = lo.max(crate::codec_versions(api).unwrap().0);
            for v in lo..=hi {
                let body = encoded(api, v);
                let used = check_request_body(api, v, &body, 1 << 20)
                    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
                assert_eq!(used, body.len(), "{api:?} v{v}: walker and codec disagree");
                Request::decode(&header(api, v), body, 1 << 20)
                    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
            }
        }
    }

    /// Six bytes claiming two billion topics are refused before any allocation.
    #[test]
    fn absurd_array_count_is_refused() {
        let mut body = vec![0x7f, 0xff, 0xff, 0xff];
        body.extend_from_slice(&[0, 1]);
        let err = check_request_body(ApiKey::Metadata, 1, &body, 1 << 20).unwrap_err();
        assert!(matches!(err, GuardError::CountTooLarge { .. }), "{err}");
        // The flexible (varint) form as well.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        let err = check_request_body(ApiKey::Metadata, 12, &body, 1 << 20).unwrap_err();
        assert!(matches!(err, GuardError::CountTooLarge { .. }), "{err}");
    }

    /// A count that fits the bytes but whose decoded form exceeds the budget is refused.
    #[test]
    fn decoded_size_budget_is_enforced() {
        let topics = 1000;
        let mut body = (topics as i32).to_be_bytes().to_vec();
        for _ in 0..topics {
            body.extend_from_slice(&0i16.to_be_bytes());
        }
        let need = topics * size_of::<MetadataRequestTopic>();
        assert!(check_request_body(ApiKey::Metadata, 1, &body, need).is_ok());
        let err = check_request_body(ApiKey::Metadata, 1, &body, need - 1).unwrap_err();
        assert!(matches!(err, GuardError::OverBudget(_)), "{err}");
    }

    /// The decoder reads a known tagged field (Fetch's cluster_id) from the stream, not from
    /// its declared size: a size that lies would let the two part ways, so it is refused.
    #[test]
    fn a_known_tagged_field_whose_size_lies_is_refused() {
        let mut body = encoded(ApiKey::Fetch, 12).to_vec();
        // Last in the body: one tagged field, tag 0, size 2, the compact string "c".
        let at = body.len() - 4;
        assert_eq!(
            body[at - 1..],
            [1, 0, 2, 2, b'c'],
            "the sample's cluster_id"
        );
        body[at + 1] = 1;
        assert_eq!(
            check_request_body(ApiKey::Fetch, 12, &body, 1 << 20),
            Err(GuardError::TaggedFieldSize { tag: 0 })
        );
    }

    #[test]
    fn negative_lengths_are_refused() {
        let body = (-5i32).to_be_bytes();
        assert!(matches!(
            check_request_body(ApiKey::Metadata, 1, &body, 1 << 20),
            Err(GuardError::Negative(-5))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bodies for every advertised API and version never panic or abort the guarded
        /// decode path: they decode or return an error.
        #[test]
        fn random_bodies_never_panic(
            which in 0usize..SUPPORTED_APIS.len(),
            vsel in 0i16..20,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (api, lo, hi) = SUPPORTED_APIS[which];
            let v = lo + vsel % (hi - lo + 1);
            let _ = Request::decode(&header(api, v), Bytes::from(body), 1 << 16);
        }

        /// Valid encodings with bytes flipped or cut never panic either: these reach deep
        /// into the structure, where purely random bytes rarely go.
        #[test]
        fn mutated_valid_bodies_never_panic(
            which in 0usize..SUPPORTED_APIS.len(),
            vsel in 0i16..20,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let (api, lo, hi) = SUPPORTED_APIS[which];
            let lo = lo.max(crate::codec_versions(api).unwrap().0);
            let v = lo + vsel % (hi - lo + 1);
            let mut body = encoded(api, v).to_vec();
            let n = body.len();
            if n > 0 {
                for (pos, byte) in flips {
                    body[pos % n] = byte;
                }
            }
            let cut = cut % (body.len() + 1);
            body.truncate(cut.max(1));
            let _ = Request::decode(&header(api, v), Bytes::from(body), 1 << 16);
        }
    }
}
