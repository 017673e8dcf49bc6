//! The records of the cluster metadata log. Kafka's KRaft names them and numbers their types
//! (`RegisterBrokerRecord` is type 0, `PartitionChangeRecord` type 5, ...); Sluice keeps the
//! names, the type numbers and the meaning of every field, in its own non-flexible encoding
//! built from [`sluice_records::kv`]:
//!
//! ```text
//! record        i16 type | i16 version = 0 | fields of that type, in the order below
//! uuid          16 bytes, most significant first
//! bool          i8, 0 or 1
//! [i32]         i32 count, then that many i32s (broker ids)
//!
//!  0 RegisterBroker          i32 broker id | uuid incarnation | i64 broker epoch
//!                            | i32 endpoint count, then per endpoint:
//!                                string listener | string host | i32 port | i16 security protocol
//!                            | string rack (null = none) | bool fenced | bool in controlled shutdown
//!  1 UnregisterBroker        i32 broker id | i64 broker epoch
//!  2 Topic                   string name | uuid topic id
//!  3 Partition               uuid topic id | i32 partition | [i32] replicas | [i32] isr
//!                            | i32 leader (-1 = none) | i32 leader epoch | i32 partition epoch
//!                            | v1: [i32] removing replicas | [i32] adding replicas
//!                            | v2: [i32] eligible leader replicas
//!  4 Config                  i8 resource type | string resource name | string name
//!                            | string value (null = delete)
//!  5 PartitionChange         uuid topic id | i32 partition | i32 leader (-2 = unchanged,
//!                            -1 = none) | [i32] isr (null = unchanged)
//!                            | [i32] replicas (null = unchanged)
//!                            | v1: [i32] removing replicas | [i32] adding replicas
//!                              (each null = unchanged)
//!                            | v2: [i32] eligible leader replicas (null = unchanged)
//!  7 FenceBroker             i32 broker id | i64 broker epoch
//!  8 UnfenceBroker           i32 broker id | i64 broker epoch
//!  9 RemoveTopic             uuid topic id
//! 17 BrokerRegistrationChange i32 broker id | i64 broker epoch | bool in controlled shutdown
//! ```
//!
//! Partition and PartitionChange are written at version 2 (version 1 added a reassignment's
//! adding and removing replicas, version 2 KIP-966's eligible leader replicas, as Kafka's
//! records carry them); versions 0 and 1 of them still read, with none of what they lack.
//! Every other type is version 0.
//!
//! For example `FenceBroker` of broker 2 at epoch 5 is
//! `00 07 | 00 00 | 00 00 00 02 | 00 00 00 00 00 00 00 05`.
//!
//! A `PartitionChange` carries no epochs: replaying it raises the partition epoch by one, and
//! the leader epoch by one when the leader changes, as Kafka's replay does. Every decoder
//! bounds each count by the bytes left, so a damaged or hostile record is an error, never an
//! allocation.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_records::kv::{put_count, put_opt_str, put_str, Reader};
use uuid::Uuid;

pub use sluice_records::kv::BadRecord;

/// The record version Sluice writes, but for the partition records.
const VERSION: i16 = 0;
/// The version of `Partition` and `PartitionChange` Sluice writes (version 0 still reads).
const PARTITION_VERSION: i16 = 2;

/// `PartitionChange`'s leader field: the leader stays as it is.
pub const LEADER_UNCHANGED: i32 = -2;
/// No leader: the partition is offline.
pub const NO_LEADER: i32 = -1;

/// A listener a broker serves clients on, as it registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `SSL`, ...).
    pub listener: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id: 0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL.
    pub security_protocol: i16,
}

/// A broker as it registered, and whether it may lead: a `RegisterBroker` record, and the
/// image's entry for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    /// New for every start of the broker process.
    pub incarnation_id: Uuid,
    /// Grows with every registration of any broker; a request carrying an older one comes
    /// from a process that has since been replaced.
    pub broker_epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and cannot join an ISR.
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

/// A partition's replicas and who leads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    /// The assigned replicas; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The in-sync replicas: those that hold every committed record.
    pub isr: Vec<i32>,
    /// During a reassignment (KIP-455): replicas that leave once it completes, and replicas
    /// being added (both among `replicas`); empty otherwise.
    pub removing_replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    /// KIP-966's eligible leader replicas: replicas that left the ISR while it was below
    /// `min.insync.replicas`, since when the high watermark has not moved, so each holds
    /// every committed record and may be elected cleanly. Never in the ISR; empty whenever
    /// the ISR reaches `min.insync.replicas`.
    pub elr: Vec<i32>,
    pub leader: i32,
    /// Grows by one each time the leader changes.
    pub leader_epoch: i32,
    /// Grows by one with every change to the partition.
    pub partition_epoch: i32,
}

/// A partition's whole state, as created or as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    pub registration: PartitionRegistration,
}

/// A change to one partition; `None` and [`LEADER_UNCHANGED`] leave a field as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: i32,
    pub isr: Option<Vec<i32>>,
    pub replicas: Option<Vec<i32>>,
    pub removing_replicas: Option<Vec<i32>>,
    pub adding_replicas: Option<Vec<i32>>,
    pub elr: Option<Vec<i32>>,
}

/// One entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker(BrokerRegistration),
    UnregisterBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    Topic {
        name: String,
        topic_id: Uuid,
    },
    Partition(PartitionRecord),
    Config {
        resource_type: i8,
        resource_name: String,
        name: String,
        value: Option<String>,
    },
    PartitionChange(PartitionChange),
    FenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    UnfenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
    BrokerRegistrationChange {
        broker_id: i32,
        broker_epoch: i64,
        in_controlled_shutdown: bool,
    },
}

/// Kafka's config resource type for topics (DescribeConfigs' 2).
pub const RESOURCE_TOPIC: i8 = 2;
/// Kafka's config resource type for brokers (DescribeConfigs' 4).
pub const RESOURCE_BROKER: i8 = 4;

/// The smallest encoding of one endpoint: two empty strings, a port and a protocol.
const ENDPOINT_MIN_BYTES: usize = 2 + 2 + 4 + 2;

impl MetadataRecord {
    /// Kafka's metadata record type number.
    pub fn type_id(&self) -> i16 {
        match self {
            Self::RegisterBroker(_) => 0,
            Self::UnregisterBroker { .. } => 1,
            Self::Topic { .. } => 2,
            Self::Partition(_) => 3,
            Self::Config { .. } => 4,
            Self::PartitionChange(_) => 5,
            Self::FenceBroker { .. } => 7,
            Self::UnfenceBroker { .. } => 8,
            Self::RemoveTopic { .. } => 9,
            Self::BrokerRegistrationChange { .. } => 17,
        }
    }

    /// Appends this record's encoding. Strings must fit an i16 length: the controller bounds
    /// names (topics at 249 bytes, as Kafka) before it makes a record of them.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_i16(self.type_id());
        out.put_i16(match self {
            Self::Partition(_) | Self::PartitionChange(_) => PARTITION_VERSION,
            _ => VERSION,
        });
        match self {
            Self::RegisterBroker(b) => {
                out.put_i32(b.broker_id);
                put_uuid(out, &b.incarnation_id);
                out.put_i64(b.broker_epoch);
                put_count(out, b.endpoints.len());
                for e in &b.endpoints {
                    put_str(out, &e.listener);
                    put_str(out, &e.host);
                    out.put_i32(i32::from(e.port));
                    out.put_i16(e.security_protocol);
                }
                put_opt_str(out, b.rack.as_deref());
                out.put_i8(i8::from(b.fenced));
                out.put_i8(i8::from(b.in_controlled_shutdown));
            }
            Self::UnregisterBroker {
                broker_id,
                broker_epoch,
            }
            | Self::FenceBroker {
                broker_id,
                broker_epoch,
            }
            | Self::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                out.put_i32(*broker_id);
                out.put_i64(*broker_epoch);
            }
            Self::Topic { name, topic_id } => {
                put_str(out, name);
                put_uuid(out, topic_id);
            }
            Self::Partition(p) => {
                put_uuid(out, &p.topic_id);
                out.put_i32(p.partition);
                let r = &p.registration;
                put_ids(out, &r.replicas);
                put_ids(out, &r.isr);
                out.put_i32(r.leader);
                out.put_i32(r.leader_epoch);
                out.put_i32(r.partition_epoch);
                put_ids(out, &r.removing_replicas);
                put_ids(out, &r.adding_replicas);
                put_ids(out, &r.elr);
            }
            Self::Config {
                resource_type,
                resource_name,
                name,
                value,
            } => {
                out.put_i8(*resource_type);
                put_str(out, resource_name);
                put_str(out, name);
                put_opt_str(out, value.as_deref());
            }
            Self::PartitionChange(c) => {
                put_uuid(out, &c.topic_id);
                out.put_i32(c.partition);
                out.put_i32(c.leader);
                put_opt_ids(out, c.isr.as_deref());
                put_opt_ids(out, c.replicas.as_deref());
                put_opt_ids(out, c.removing_replicas.as_deref());
                put_opt_ids(out, c.adding_replicas.as_deref());
                put_opt_ids(out, c.elr.as_deref());
            }
            Self::RemoveTopic { topic_id } => put_uuid(out, topic_id),
            Self::BrokerRegistrationChange {
                broker_id,
                broker_epoch,
                in_controlled_shutdown,
            } => {
                out.put_i32(*broker_id);
                out.put_i64(*broker_epoch);
                out.put_i8(i8::from(*in_controlled_shutdown));
            }
        }
    }

    /// This record's encoding on its own.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Reads one record from `reader`, leaving it after the record.
    pub fn decode_from(reader: &mut Reader<'_>) -> Result<Self, BadRecord> {
        let type_id = reader.i16()?;
        let version = reader.i16()?;
        let known = version == VERSION
            || (matches!(type_id, 3 | 5) && (1..=PARTITION_VERSION).contains(&version));
        if !known {
            return Err(BadRecord("unknown metadata record version"));
        }
        let (v1, v2) = (version >= 1, version >= 2);
        let record = match type_id {
            0 => {
                let broker_id = reader.i32()?;
                let incarnation_id = get_uuid(reader)?;
                let broker_epoch = reader.i64()?;
                let count = reader
                    .count(ENDPOINT_MIN_BYTES)?
                    .ok_or(BadRecord("null endpoints"))?;
                let mut endpoints = Vec::with_capacity(count);
                for _ in 0..count {
                    let listener = reader.str()?;
                    let host = reader.str()?;
                    let port = u16::try_from(reader.i32()?)
                        .map_err(|_| BadRecord("endpoint port out of range"))?;
                    let security_protocol = reader.i16()?;
                    endpoints.push(Endpoint {
                        listener,
                        host,
                        port,
                        security_protocol,
                    });
                }
                Self::RegisterBroker(BrokerRegistration {
                    broker_id,
                    incarnation_id,
                    broker_epoch,
                    endpoints,
                    rack: reader.opt_str()?,
                    fenced: get_bool(reader)?,
                    in_controlled_shutdown: get_bool(reader)?,
                })
            }
            1 => Self::UnregisterBroker {
                broker_id: reader.i32()?,
                broker_epoch: reader.i64()?,
            },
            2 => Self::Topic {
                name: reader.str()?,
                topic_id: get_uuid(reader)?,
            },
            3 => {
                let topic_id = get_uuid(reader)?;
                let partition = reader.i32()?;
                let replicas = get_ids(reader)?;
                let isr = get_ids(reader)?;
                let (leader, leader_epoch, partition_epoch) =
                    (reader.i32()?, reader.i32()?, reader.i32()?);
                let (removing_replicas, adding_replicas) = if v1 {
                    (get_ids(reader)?, get_ids(reader)?)
                } else {
                    (Vec::new(), Vec::new())
                };
                let elr = if v2 { get_ids(reader)? } else { Vec::new() };
                Self::Partition(PartitionRecord {
                    topic_id,
                    partition,
                    registration: PartitionRegistration {
                        replicas,
                        isr,
                        removing_replicas,
                        adding_replicas,
                        elr,
                        leader,
                        leader_epoch,
                        partition_epoch,
                    },
                })
            }
            4 => Self::Config {
                resource_type: reader.i8()?,
                resource_name: reader.str()?,
                name: reader.str()?,
                value: reader.opt_str()?,
            },
            5 => {
                let topic_id = get_uuid(reader)?;
                let partition = reader.i32()?;
                let leader = reader.i32()?;
                let isr = get_opt_ids(reader)?;
                let replicas = get_opt_ids(reader)?;
                let (removing_replicas, adding_replicas) = if v1 {
                    (get_opt_ids(reader)?, get_opt_ids(reader)?)
                } else {
                    (None, None)
                };
                let elr = if v2 { get_opt_ids(reader)? } else { None };
                Self::PartitionChange(PartitionChange {
                    topic_id,
                    partition,
                    leader,
                    isr,
                    replicas,
                    removing_replicas,
                    adding_replicas,
                    elr,
                })
            }
            7 => Self::FenceBroker {
                broker_id: reader.i32()?,
                broker_epoch: reader.i64()?,
            },
            8 => Self::UnfenceBroker {
                broker_id: reader.i32()?,
                broker_epoch: reader.i64()?,
            },
            9 => Self::RemoveTopic {
                topic_id: get_uuid(reader)?,
            },
            17 => Self::BrokerRegistrationChange {
                broker_id: reader.i32()?,
                broker_epoch: reader.i64()?,
                in_controlled_shutdown: get_bool(reader)?,
            },
            _ => return Err(BadRecord("unknown metadata record type")),
        };
        Ok(record)
    }

    /// Decodes a buffer that holds exactly one record.
    pub fn decode(buf: &[u8]) -> Result<Self, BadRecord> {
        let mut reader = Reader::new(buf);
        let record = Self::decode_from(&mut reader)?;
        if reader.remaining() != 0 {
            return Err(BadRecord("bytes after a metadata record"));
        }
        Ok(record)
    }
}

/// Encodes records one after another, as one entry of the metadata log holds a batch of
/// them that must apply together.
pub fn encode_batch(records: &[MetadataRecord]) -> Bytes {
    let mut out = BytesMut::new();
    put_count(&mut out, records.len());
    for record in records {
        record.encode_into(&mut out);
    }
    out.freeze()
}

/// The smallest encoding of one record: its type and version.
const RECORD_MIN_BYTES: usize = 4;

/// Decodes what [`encode_batch`] wrote.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<MetadataRecord>, BadRecord> {
    let mut reader = Reader::new(buf);
    let count = reader
        .count(RECORD_MIN_BYTES)?
        .ok_or(BadRecord("null record batch"))?;
    // Not `count`: a record takes 4 bytes here but far more in memory.
    let mut records = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        records.push(MetadataRecord::decode_from(&mut reader)?);
    }
    if reader.remaining() != 0 {
        return Err(BadRecord("bytes after a metadata record batch"));
    }
    Ok(records)
}

fn put_uuid(out: &mut BytesMut, id: &Uuid) {
    out.put_slice(id.as_bytes());
}

pub(crate) fn get_uuid(reader: &mut Reader<'_>) -> Result<Uuid, BadRecord> {
    let high = reader.i64()?.to_be_bytes();
    let low = reader.i64()?.to_be_bytes();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high);
    bytes[8..].copy_from_slice(&low);
    Ok(Uuid::from_bytes(bytes))
}

fn get_bool(reader: &mut Reader<'_>) -> Result<bool, BadRecord> {
    match reader.i8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(BadRecord("bool is neither 0 nor 1")),
    }
}

fn put_ids(out: &mut BytesMut, ids: &[i32]) {
    put_count(out, ids.len());
    for id in ids {
        out.put_i32(*id);
    }
}

fn put_opt_ids(out: &mut BytesMut, ids: Option<&[i32]>) {
    match ids {
        Some(ids) => put_ids(out, ids),
        None => out.put_i32(-1),
    }
}

fn get_opt_ids(reader: &mut Reader<'_>) -> Result<Option<Vec<i32>>, BadRecord> {
    let Some(count) = reader.count(4)? else {
        return Ok(None);
    };
    (0..count)
        .map(|_| reader.i32())
        .collect::<Result<_, _>>()
        .map(Some)
}

fn get_ids(reader: &mut Reader<'_>) -> Result<Vec<i32>, BadRecord> {
    get_opt_ids(reader)?.ok_or(BadRecord("null broker id array"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fence_broker_is_encoded_as_the_module_diagram_shows() {
        let record = MetadataRecord::FenceBroker {
            broker_id: 2,
            broker_epoch: 5,
        };
        assert_eq!(
            record.encode().as_ref(),
            [0, 7, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5]
        );
    }

    /// A metadata log written before eligible leader replicas (versions 1 and 0 of the
    /// partition records) still replays: those records read with none.
    #[test]
    fn partition_records_of_older_versions_read_without_what_they_lack() {
        let record = MetadataRecord::Partition(PartitionRecord {
            topic_id: Uuid::from_u128(9),
            partition: 2,
            registration: PartitionRegistration {
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                elr: Vec::new(),
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 7,
            },
        });
        let v2 = record.encode();
        assert_eq!(&v2[..4], [0, 3, 0, 2]);
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1[3] = 1;
        assert_eq!(MetadataRecord::decode(&v1).unwrap(), record);
        let mut v0 = v2[..v2.len() - 12].to_vec();
        v0[3] = 0;
        assert_eq!(MetadataRecord::decode(&v0).unwrap(), record);
        let mut v3 = v2.to_vec();
        v3[3] = 3;
        assert!(
            MetadataRecord::decode(&v3).is_err(),
            "a newer version is refused"
        );
    }

    fn ids() -> impl Strategy<Value = Vec<i32>> {
        prop::collection::vec(-1i32..10, 0..5)
    }

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn record() -> impl Strategy<Value = MetadataRecord> {
        let endpoint = ("[A-Z]{1,8}", "[a-z0-9.]{0,12}", any::<u16>(), 0i16..4).prop_map(
            |(listener, host, port, security_protocol)| Endpoint {
                listener,
                host,
                port,
                security_protocol,
            },
        );
        prop_oneof![
            (
                any::<i32>(),
                uuid(),
                any::<i64>(),
                prop::collection::vec(endpoint, 0..3),
                prop::option::of("[a-z]{0,5}"),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(
                    |(broker_id, incarnation_id, broker_epoch, endpoints, rack, f, s)| {
                        MetadataRecord::RegisterBroker(BrokerRegistration {
                            broker_id,
                            incarnation_id,
                            broker_epoch,
                            endpoints,
                            rack,
                            fenced: f,
                            in_controlled_shutdown: s,
                        })
                    }
                ),
            (any::<i32>(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| {
                MetadataRecord::UnregisterBroker {
                    broker_id,
                    broker_epoch,
                }
            }),
            ("[a-z._-]{1,20}", uuid())
                .prop_map(|(name, topic_id)| MetadataRecord::Topic { name, topic_id }),
            (
                uuid(),
                any::<i32>(),
                ids(),
                ids(),
                any::<i32>(),
                any::<i32>(),
                any::<i32>(),
                ids(),
                (ids(), ids())
            )
                .prop_map(
                    |(topic_id, partition, replicas, isr, leader, le, pe, rm, (add, elr))| {
                        MetadataRecord::Partition(PartitionRecord {
                            topic_id,
                            partition,
                            registration: PartitionRegistration {
                                replicas,
                                isr,
                                removing_replicas: rm,
                                adding_replicas: add,
                                elr,
                                leader,
                                leader_epoch: le,
                                partition_epoch: pe,
                            },
                        })
                    }
                ),
            (
                any::<i8>(),
                "[a-z]{0,8}",
                "[a-z.]{1,12}",
                prop::option::of("[ -~]{0,10}")
            )
                .prop_map(|(resource_type, resource_name, name, value)| {
                    MetadataRecord::Config {
                        resource_type,
                        resource_name,
                        name,
                        value,
                    }
                }),
            (
                uuid(),
                any::<i32>(),
                any::<i32>(),
                prop::option::of(ids()),
                prop::option::of(ids()),
                prop::option::of(ids()),
                (prop::option::of(ids()), prop::option::of(ids()))
            )
                .prop_map(
                    |(topic_id, partition, leader, isr, replicas, rm, (add, elr))| {
                        MetadataRecord::PartitionChange(PartitionChange {
                            topic_id,
                            partition,
                            leader,
                            isr,
                            replicas,
                            removing_replicas: rm,
                            adding_replicas: add,
                            elr,
                        })
                    }
                ),
            (any::<i32>(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| {
                MetadataRecord::FenceBroker {
                    broker_id,
                    broker_epoch,
                }
            }),
            (any::<i32>(), any::<i64>()).prop_map(|(broker_id, broker_epoch)| {
                MetadataRecord::UnfenceBroker {
                    broker_id,
                    broker_epoch,
                }
            }),
            uuid().prop_map(|topic_id| MetadataRecord::RemoveTopic { topic_id }),
            (any::<i32>(), any::<i64>(), any::<bool>()).prop_map(|(id, epoch, s)| {
                MetadataRecord::BrokerRegistrationChange {
                    broker_id: id,
                    broker_epoch: epoch,
                    in_controlled_shutdown: s,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_record_decodes_to_itself(batch in prop::collection::vec(record(), 0..6)) {
            for record in &batch {
                prop_assert_eq!(&MetadataRecord::decode(&record.encode()).unwrap(), record);
            }
            prop_assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
        }

        #[test]
        fn damaged_batches_are_errors_not_panics(
            batch in prop::collection::vec(record(), 1..4),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = encode_batch(&batch);
            // A truncated batch never decodes: every field is needed.
            let cut = cut.index(bytes.len());
            prop_assert!(decode_batch(&bytes[..cut]).is_err());
            // A changed byte decodes to something or is an error; it never panics or
            // allocates past the buffer (counts are bounded by the bytes left).
            let mut changed = bytes.to_vec();
            changed[flip.index(bytes.len())] = byte;
            let _ = decode_batch(&changed);
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_anything_is_reserved() {
        let mut out = BytesMut::new();
        out.put_i32(i32::MAX);
        assert!(decode_batch(&out).is_err());
    }
}
