"""Apache Kafka itself is the oracle: the same scripted request sequences go to Apache Kafka
4.4.0 (one node, KRaft combined mode, its jars from Maven Central, see kafka_oracle.py) and to
Sluice, and the responses are compared field by field.

How it works:
- Each sequence is a function run once per broker, over one connection to it, with its setup
  (topics, groups, producers) done through the protocol itself. Requests are built and
  responses decoded with kafka-python's protocol classes (generated from Kafka's own message
  schemas); record batches (v2, CRC-32C) and old message sets (v1) are built here, and the
  `records` of responses are parsed into batches and records.
- Versions: per API, the highest version both brokers advertise and kafka-python encodes,
  unless the sequence names one (older versions are run on purpose, and the version sweep
  runs every version both accept for the read-only APIs).
- Both brokers run with node id 1, so node ids are compared as they are. Values that
  legitimately vary are masked before comparing (see FIELD_MASKS): throttle times, ports,
  cluster ids, topic ids (shown as the topic they name), producer ids and member ids (numbered
  by first appearance, so a later reference to the same id still compares), broker-chosen
  timestamps, log directory paths and sizes, and the wording of error messages and config
  documentation (null, empty and some text still differ; next to a non-zero error code,
  whether a message comes at all is not compared). Lists without a defined order are
  matched by their key field (name, partition index, ...). DescribeConfigs and CreateTopics
  compare only the config names Sluice has; broker config values that name paths or
  listeners are masked.
- Every remaining difference fails the test unless ALLOWED lists it: each entry names the API,
  the field path (a regex), and the reason, which is in README's "Where Sluice
  differs". ApiVersions differences (advertised ranges) are reported, not failed.
- At the end the module prints (past pytest's capture, so it shows with -q) the number of
  compared exchanges, the allowed differences by reason, the failures, and the ApiVersions
  report. SLUICE_DIFF_DUMP=FILE writes every compared pair of masked responses as JSON lines.
"""

import dataclasses
import gzip
import importlib
import json
import os
import pkgutil
import re
import socket
import struct
import time
import traceback
import uuid
import zlib

import pytest

from conftest import running_broker
from kafka_oracle import running_kafka

from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.data_container import DataContainer

CLIENT_ID = "differential"
IO_TIMEOUT_S = 30
WAIT_TIMEOUT_S = 30
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
LOADING = (14, 15, 16)
# Record timestamps we choose (broker-assigned ones are masked): ten minutes ago, whole seconds,
# inside both brokers' retention and timestamp bounds.
TS0 = (int(time.time()) - 600) * 1000
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
# Broker settings both run with (Sluice through --set, Kafka in server.properties).
SHARED_CONFIG = {"group.initial.rebalance.delay.ms": "0"}
# Set to a file name to get every compared exchange (both masked responses) as JSON lines.
DUMP = os.environ.get("SLUICE_DIFF_DUMP")

# -- kafka-python's request and response classes, by API key -------------------------------


def _api_classes():
    for pkg_name in ("admin", "consumer", "metadata", "producer"):
        pkg = importlib.import_module(f"kafka.protocol.{pkg_name}")
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"kafka.protocol.{pkg_name}.{info.name}")
    requests, responses = {}, {}

    def walk(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    for cls in walk(ApiMessage):
        if getattr(cls, "_class_version", None) is not None:
            continue  # a versioned wrapper
        try:
            key = cls.API_KEY
        except (AttributeError, TypeError, KeyError):
            continue
        (requests if cls.is_request() else responses)[key] = cls
    return requests, responses


REQUESTS, RESPONSES = _api_classes()
API_KEYS = {cls.name.removesuffix("Request"): key for key, cls in REQUESTS.items()}
API_NAMES = {key: name for name, key in API_KEYS.items()}


def build(cls, data, version):
    """A request (or nested struct) of `cls` from a dict; fields the version lacks are left
    out, so one dict can serve several versions."""
    fields = {}
    for name, value in data.items():
        field = cls._struct.fields[name]
        if not field.for_version_q(version):
            continue
        if field.is_struct_array() and value is not None:
            value = [build(field.data_class, v, version) if isinstance(v, dict) else v
                     for v in value]
        elif field.is_struct() and isinstance(value, dict):
            value = build(field.data_class, value, version)
        fields[name] = value
    return cls(version=version, **fields)


def plain(value):
    """Decoded response -> dicts, lists, ints, strings and bytes; `records` parsed."""
    if isinstance(value, DataContainer):
        value = value.to_dict(json=False)
    if isinstance(value, dict):
        return {k: (parse_records(bytes(v)) if k == "records" and v is not None else plain(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


class Closed(Exception):
    pass


class Undecodable(Exception):
    pass


class Conn:
    """One TCP connection; requests carry header v1/v2 with our client id."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.sock.settimeout(IO_TIMEOUT_S)
        self.corr = 0

    def close(self):
        self.sock.close()

    def _recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise Closed()
            out += chunk
        return out

    def roundtrip(self, key, version, request, expect_response=True):
        self.corr += 1
        request.with_header(correlation_id=self.corr, client_id=CLIENT_ID)
        try:
            self.sock.sendall(request.encode(version=version, header=True, framed=True))
            if not expect_response:
                return None
            (size,) = struct.unpack(">i", self._recv(4))
            data = self._recv(size)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed() from e
        (corr,) = struct.unpack(">i", data[:4])
        if corr != self.corr:
            raise Undecodable(f"correlation id {corr}, expected {self.corr}")
        try:
            return RESPONSES[key].decode(data, version=version, header=True)
        except Exception as e:  # noqa: BLE001 -- a malformed response is a finding
            raise Undecodable(f"{e!r}; {len(data)} bytes: {data[:200].hex()}") from e


@dataclasses.dataclass
class Exchange:
    label: str
    api: str
    version: int
    request: dict
    response: object  # dict, None (no response expected) or a "<...>" marker dict
    report_only: bool = False


class Side:
    """One broker under test: its advertised versions, one connection, and the exchanges the
    current sequence recorded."""

    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.conn = None
        self.advertised = {}  # api key -> (min, max)
        self.chosen = {}  # api key -> version used when a sequence names none
        self.sweep_range = {}  # api key -> (lowest, highest) version both accept
        self.log = []
        self.topic_ids = {}  # topic name -> id (learned from responses)
        self.canon = {}  # (kind, raw value) -> placeholder, per sequence
        self.features = {}  # finalized feature -> level (ApiVersions)

    def reset(self):
        self.log = []
        self.canon = {}
        if self.conn is not None:
            self.conn.close()
        self.conn = Conn(self.port)

    def version(self, api):
        return self.chosen[API_KEYS[api]]

    def tid(self, topic):
        return self.topic_ids.get(topic, ZERO_UUID)

    def call(self, label, api, data, version=None, record=True, expect_response=True,
             report_only=False):
        key = API_KEYS[api]
        v = self.chosen.get(key) if version is None else version
        if v is None:
            out = {"<not offered by both>": api}
        else:
            request = build(REQUESTS[key], data, v)
            try:
                if self.conn is None:
                    self.conn = Conn(self.port)
                resp = self.conn.roundtrip(key, v, request, expect_response)
                out = None if resp is None else plain(resp)
            except Closed:
                out = {"<connection closed>": True}
                self.conn.close()
                self.conn = None
            except socket.timeout:
                out = {"<no response within the timeout>": IO_TIMEOUT_S}
                self.conn.close()
                self.conn = None
            except Undecodable as e:
                out = {"<undecodable response>": str(e)}
                self.conn.close()  # the stream may be out of step now
                self.conn = None
        self._learn(out)
        if record:
            self.log.append(Exchange(label, api, v, data, out, report_only))
        return out

    def _learn(self, node):
        if isinstance(node, dict):
            name = node.get("name", node.get("topic"))
            tid = node.get("topic_id")
            if name and isinstance(name, str) and isinstance(tid, str) and tid != ZERO_UUID:
                self.topic_ids[name] = tid
            for v in node.values():
                self._learn(v)
        elif isinstance(node, list):
            for v in node:
                self._learn(v)

    # -- waits that are not compared (Kafka applies metadata asynchronously) ---------------

    def wait_for(self, what, probe):
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {what} not within {WAIT_TIMEOUT_S} s")
            time.sleep(0.05)

    def metadata(self, topics):
        return self.call("(wait)", "Metadata",
                         {"topics": [{"name": t} for t in topics],
                          "allow_auto_topic_creation": False}, record=False)

    def await_topic(self, topic, partitions=None):
        def ready():
            m = self.metadata([topic])
            t = m["topics"][0] if m and "topics" in m else None
            if not t or t["error_code"] != 0:
                return False
            if partitions is not None and len(t["partitions"]) != partitions:
                return False
            if not all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in t["partitions"]):
                return False
            # Kafka's metadata cache learns of the leader before the partition is made leader.
            r = self.call("(wait)", "ListOffsets", {
                "replica_id": -1, "isolation_level": 0, "timeout_ms": 30000,
                "topics": [{"name": topic, "partitions": [
                    {"partition_index": p["partition_index"], "current_leader_epoch": -1,
                     "timestamp": -1, "max_num_offsets": 1} for p in t["partitions"]]}]},
                record=False)
            return all(p["error_code"] == 0 for t in r.get("topics", [])
                       for p in t["partitions"])
        self.wait_for(f"topic {topic} ready", ready)

    def await_gone(self, topic):
        def gone():
            m = self.metadata([topic])
            return m and m["topics"][0]["error_code"] == 3
        self.wait_for(f"topic {topic} gone", gone)

    def await_coordinator(self, key, key_type):
        def found():
            r = self.call("(wait)", "FindCoordinator",
                          {"key": key, "key_type": key_type, "coordinator_keys": [key]},
                          record=False)
            c = r["coordinators"][0] if "coordinators" in r else r
            return c.get("error_code") == 0
        self.wait_for(f"coordinator for {key}", found)

    def await_group(self, group):
        """The group's coordinator is loaded (Kafka loads __consumer_offsets partitions
        asynchronously after creating the topic)."""
        self.await_coordinator(group, 0)

        def loaded():
            r = self.call("(wait)", "DescribeGroups", {"groups": [group]}, record=False)
            return r["groups"][0]["error_code"] not in LOADING
        self.wait_for(f"group coordinator for {group} loaded", loaded)

    def await_txn_coordinator(self, txn_id):
        self.await_coordinator(txn_id, 1)

        def loaded():
            r = self.call("(wait)", "DescribeTransactions", {"transactional_ids": [txn_id]},
                          record=False)
            return r["transaction_states"][0]["error_code"] not in LOADING
        self.wait_for(f"transaction coordinator for {txn_id} loaded", loaded)

    def await_producer_ids(self):
        """Kafka's brokers fetch blocks of producer ids from the controller on first use."""
        self.wait_for("a producer id", lambda: self.call("(wait)", "InitProducerId", {
            "transactional_id": None, "transaction_timeout_ms": 60000, "producer_id": -1,
            "producer_epoch": -1}, record=False).get("error_code") == 0)

    def await_txn_state(self, txn_id, states):
        def done():
            r = self.call("(wait)", "DescribeTransactions", {"transactional_ids": [txn_id]},
                          record=False)
            return r["transaction_states"][0]["transaction_state"] in states
        self.wait_for(f"transaction {txn_id} in {states}", done)


# -- record batches ---------------------------------------------------------------------------


def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def zigzag(n):
    n = (n << 1) ^ (n >> 63)
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def read_varint(data, pos):
    shift = n = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos


def _bytes_field(b):
    return zigzag(-1) if b is None else zigzag(len(b)) + b


def batch(records, base_offset=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
          transactional=False, ts=TS0, codec=0, corrupt_crc=False):
    """A v2 record batch. `records`: (key, value) or (key, value, [(hkey, hvalue)]); record i
    gets timestamp ts + i."""
    body = b""
    for i, rec in enumerate(records):
        key, value = rec[0], rec[1]
        headers = rec[2] if len(rec) > 2 else []
        r = b"\x00" + zigzag(i) + zigzag(i) + _bytes_field(key) + _bytes_field(value)
        r += zigzag(len(headers))
        for hk, hv in headers:
            r += zigzag(len(hk)) + hk + _bytes_field(hv)
        body += zigzag(len(r)) + r
    if codec == 1:
        body = gzip.compress(body, mtime=0)
    attributes = codec | (0x10 if transactional else 0)
    n = len(records)
    after_crc = struct.pack(">hiqqqhii", attributes, n - 1, ts, ts + n - 1, producer_id,
                            producer_epoch, base_sequence, n) + body
    crc = crc32c(after_crc) ^ (0xFFFF if corrupt_crc else 0)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


def message_set_v1(records, ts=TS0):
    """A magic 1 message set (what Produce v2 carries)."""
    out = b""
    for i, (key, value) in enumerate(records):
        body = struct.pack(">bbq", 1, 0, ts + i)
        body += struct.pack(">i", -1) if key is None else struct.pack(">i", len(key)) + key
        body += struct.pack(">i", len(value)) + value
        msg = struct.pack(">I", zlib.crc32(body)) + body
        out += struct.pack(">qi", i, len(msg)) + msg
    return out


def _parse_v2_records(body, base_offset, first_ts, count, control):
    out, pos = [], 0
    for _ in range(count):
        length, pos = read_varint(body, pos)
        end = pos + length
        attrs = body[pos]
        pos += 1
        ts_delta, pos = read_varint(body, pos)
        off_delta, pos = read_varint(body, pos)
        fields = []
        for _ in range(2):
            n, pos = read_varint(body, pos)
            fields.append(None if n < 0 else body[pos:pos + n])
            pos += max(n, 0)
        nh, pos = read_varint(body, pos)
        headers = []
        for _ in range(nh):
            n, pos = read_varint(body, pos)
            hk = body[pos:pos + n]
            pos += n
            n, pos = read_varint(body, pos)
            headers.append([hk, None if n < 0 else body[pos:pos + n]])
            pos += max(n, 0)
        rec = {"offset": base_offset + off_delta, "attributes": attrs,
               "timestamp": "<broker time>" if control else first_ts + ts_delta,
               "key": fields[0], "value": fields[1], "headers": headers}
        if control and fields[0] is not None and len(fields[0]) == 4:
            version, kind = struct.unpack(">hh", fields[0])
            rec["key"] = {"version": version, "type": {0: "ABORT", 1: "COMMIT"}.get(kind, kind)}
            if fields[1] is not None and len(fields[1]) == 6:
                v, coordinator_epoch = struct.unpack(">hi", fields[1])
                rec["value"] = {"version": v, "coordinator_epoch": coordinator_epoch}
        out.append(rec)
        pos = end
    return out


def parse_records(data):
    """Record batches (magic 2) and messages (magic 0/1) as dicts; a trailing partial batch is
    shown by its size only."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 17 > len(data):
            out.append({"partial_batch_bytes": len(data) - pos})
            break
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if pos + 12 + length > len(data):
            out.append({"partial_batch_bytes": len(data) - pos})
            break
        chunk = data[pos:pos + 12 + length]
        magic = chunk[16]
        if magic == 2:
            (leader_epoch, _, crc, attrs, last_delta, first_ts, max_ts, pid, epoch, seq,
             count) = struct.unpack_from(">ibIhiqqqhii", chunk, 12)
            body = chunk[61:]
            control = bool(attrs & 0x20)
            b = {"base_offset": base_offset, "batch_length": length,
                 "partition_leader_epoch": leader_epoch, "magic": 2,
                 "crc": "<covers broker time>" if control else crc,
                 "crc_ok": crc32c(chunk[21:]) == crc,
                 "attributes": attrs, "last_offset_delta": last_delta,
                 "first_timestamp": "<broker time>" if control or attrs & 0x08 else first_ts,
                 "max_timestamp": "<broker time>" if control or attrs & 0x08 else max_ts,
                 "producer_id": pid, "producer_epoch": epoch, "base_sequence": seq,
                 "record_count": count}
            codec = attrs & 0x07
            try:
                if codec == 1:
                    body = gzip.decompress(body)
                if codec in (0, 1):
                    b["records"] = _parse_v2_records(body, base_offset, first_ts, count,
                                                     control)
            except (IndexError, OSError, EOFError, zlib.error) as e:
                b["records"] = f"<unparsable: {e}>"
            out.append(b)
        else:
            (crc,) = struct.unpack_from(">I", chunk, 12)
            attrs = chunk[17]
            p = 18
            ts = None
            if magic == 1:
                (ts,) = struct.unpack_from(">q", chunk, p)
                p += 8
            fields = []
            for _ in range(2):
                (n,) = struct.unpack_from(">i", chunk, p)
                p += 4
                fields.append(None if n < 0 else chunk[p:p + n])
                p += max(n, 0)
            out.append({"offset": base_offset, "message_size": length, "magic": magic,
                        "crc_ok": zlib.crc32(chunk[16:]) == crc, "attributes": attrs,
                        "timestamp": ts, "key": fields[0], "value": fields[1]})
        pos += 12 + length
    return out


# -- consumer protocol (JoinGroup metadata, SyncGroup assignments) -----------------------------


def _kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def subscription(topics):
    return struct.pack(">hi", 0, len(topics)) + b"".join(_kstr(t) for t in topics) + \
        struct.pack(">i", -1)


def assignment(parts):
    """parts: {topic: [partitions]}"""
    out = struct.pack(">hi", 0, len(parts))
    for topic, ps in parts.items():
        out += _kstr(topic) + struct.pack(">i", len(ps)) + b"".join(struct.pack(">i", p)
                                                                   for p in ps)
    return out + struct.pack(">i", -1)


# -- masking ------------------------------------------------------------------------------------


def _canon(kind, sentinels=(None, "", -1, ZERO_UUID)):
    def mask(value, side):
        if value in sentinels:
            return value
        key = (kind, value)
        if key not in side.canon:
            n = sum(1 for k in side.canon if k[0] == kind) + 1
            side.canon[key] = f"<{kind} #{n}>"
        return side.canon[key]
    return mask


def _topic_id(value, side):
    if value in (None, ZERO_UUID):
        return value
    for name, tid in side.topic_ids.items():
        if tid == value:
            return f"<id of {name}>"
    return _canon("unknown topic id")(value, side)


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _member_id(value, side):
    """Numbered by first appearance, with its shape (client id, then a UUID) kept."""
    if value in (None, ""):
        return value
    return _canon("member")(value, side) + " " + UUID_RE.sub("<uuid>", value)


def _masked(label):
    return lambda value, side: value if value in (None, -1) else f"<{label}>"


def _text(value, side):
    """Wording is not compared; null, empty and Kafka's "NONE" (success) are."""
    return value if value in (None, "", "NONE") else "<text>"


# (API or "*", field name) -> mask(value, side).
FIELD_MASKS = {
    ("*", "throttle_time_ms"): _masked("throttle"),
    ("*", "port"): _masked("port"),
    ("*", "cluster_id"): _masked("cluster id"),
    ("*", "topic_id"): _topic_id,
    ("*", "producer_id"): _canon("producer id"),
    ("*", "member_id"): _member_id,
    ("JoinGroup", "leader"): _member_id,
    ("*", "log_append_time_ms"): _masked("broker time"),
    ("*", "transaction_start_time_ms"): _masked("broker time"),
    ("*", "error_message"): _text,
    ("*", "batch_index_error_message"): _text,
    ("*", "documentation"): _text,
    ("DescribeLogDirs", "log_dir"): _masked("log dir"),
    ("DescribeLogDirs", "partition_size"): _masked("size"),
    ("DescribeLogDirs", "total_bytes"): _masked("bytes"),
    ("DescribeLogDirs", "usable_bytes"): _masked("bytes"),
}


def mask(node, side, api):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            rule = FIELD_MASKS.get((api, k)) or FIELD_MASKS.get(("*", k))
            out[k] = rule(v, side) if rule and not isinstance(v, (dict, list)) else \
                mask(v, side, api)
        # With an error, whether a message comes along varies by code path in Kafka too.
        if out.get("error_code") not in (None, 0) and "error_message" in out:
            out["error_message"] = "<message or null>"
        return out
    if isinstance(node, list):
        return [mask(v, side, api) for v in node]
    return node


# Broker configs whose values name this machine's paths, ports or ids.
BROKER_VALUES_VARY = {"listeners", "advertised.listeners", "log.dirs", "log.dir"}


def _configs_of(resp):
    """(resource key, configs list) pairs of a DescribeConfigs or CreateTopics response."""
    for r in resp.get("results", []):
        yield (r.get("resource_type"), r.get("resource_name")), r
    for t in resp.get("topics", []):
        if isinstance(t, dict) and "configs" in t:
            yield (2, t.get("name")), t


def restrict_configs(api, kafka, sluice, notes):
    """Keeps only the config names Sluice reports (for the resources both report); notes the
    names only Kafka has. Masks broker values that name paths and listeners."""
    if api not in ("DescribeConfigs", "CreateTopics") or not isinstance(kafka, dict) \
            or not isinstance(sluice, dict):
        return
    ours = {key: r for key, r in _configs_of(sluice)}
    for key, r in _configs_of(kafka):
        if key not in ours or not isinstance(r.get("configs"), list) \
                or not isinstance(ours[key].get("configs"), list):
            continue
        names = {c["name"] for c in ours[key]["configs"]}
        only_kafka = sorted(c["name"] for c in r["configs"] if c["name"] not in names)
        if only_kafka:
            notes.add(f"{api} {key}: {len(only_kafka)} config names only Kafka has")
        r["configs"] = [c for c in r["configs"] if c["name"] in names]
    for resp in (kafka, sluice):
        for key, r in _configs_of(resp):
            if key[0] == 4:
                for c in r.get("configs") or []:
                    if c["name"] in BROKER_VALUES_VARY:
                        c["value"] = "<varies>"
                        for s in c.get("synonyms") or []:
                            s["value"] = "<varies>"


# -- comparing ----------------------------------------------------------------------------------

# Lists of dicts are matched by the first of these keys all their elements have uniquely.
LIST_KEYS = ("name", "topic", "topic_id", "partition_index", "partition", "index", "api_key",
             "group_id", "transactional_id", "resource_name", "member_id", "node_id",
             "broker_id", "producer_id", "batch_index", "base_offset", "offset", "key")
ABSENT = "<absent>"


def _list_key(a, b):
    items = a + b
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for k in LIST_KEYS:
        if all(k in i for i in items):
            for lst in (a, b):
                vals = [json.dumps(i[k], sort_keys=True, default=str) for i in lst]
                if len(set(vals)) != len(vals):
                    break
            else:
                return k
    return None


def diff(a, b, path=""):
    """[(path, kafka value, sluice value)] where they differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += diff(a.get(k, ABSENT), b.get(k, ABSENT), f"{path}.{k}" if path else k)
        return out
    if isinstance(a, list) and isinstance(b, list):
        key = _list_key(a, b)
        if key is not None:
            ka = {json.dumps(i[key], default=str): i for i in a}
            kb = {json.dumps(i[key], default=str): i for i in b}
            out = []
            for k in list(ka) + [k for k in kb if k not in ka]:
                out += diff(ka.get(k, ABSENT), kb.get(k, ABSENT),
                            f"{path}[{key}={json.loads(k)}]")
            return out
        if len(a) != len(b):
            return [(path, a, b)]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [(path, a, b)]


ANY = "<any>"


@dataclasses.dataclass(frozen=True)
class Allowed:
    """A deliberate difference: in `api` (regex on the API name), at field paths matching
    `path` (regex, full match), optionally only in exchanges whose label matches `label`."""
    api: str
    path: str
    reason: str
    label: str = ".*"
    kafka: object = ANY  # unless ANY, Kafka's value must be this
    sluice: object = ANY  # unless ANY, Sluice's value must be this

    def matches(self, ex, path, k, s):
        return (re.fullmatch(self.api, ex.api) and re.fullmatch(self.path, path)
                and re.fullmatch(self.label, ex.label)
                and (self.kafka == ANY or self.kafka == k)
                and (self.sluice == ANY or self.sluice == s))


CLOSED = {"<connection closed>": True}
B = r"results\[resource_name=1\]\.configs"  # the broker's configs in DescribeConfigs
# Broker config names only Sluice has.
SLUICE_BROKER_CONFIGS = ("admin.listen", "metrics.enabled", "queued.max.requests.per.connection",
                         "queued.max.response.bytes", "queued.max.response.bytes.per.connection",
                         "auto.create.topics.max.per.request", "shutdown.timeout.ms",
                         "group.member.metadata.max.bytes", "group.member.protocols.max",
                         "transaction.partitions.max", "log.flush.scope",
                         "metadata.log.snapshot.interval.entries")

# The deliberate differences. Each names the API, the field path and the reason; the reason
# quotes README's "Where Sluice differs".
ALLOWED = [
    Allowed(".*", "<response>", kafka=CLOSED, label=r"old: .*",
            reason="Old versions (accepted as Kafka 3.9 accepted them; Kafka 4 refuses them): "
                   "Kafka 4 closes the connection on Produce v2, Fetch v3, ListOffsets v0, "
                   "CreateTopics v1, DescribeConfigs v0, OffsetFetch v0, DeleteTopics v0, "
                   "OffsetCommit v1"),
    Allowed("ListGroups", r"groups\[group_id=old-g\]", kafka=ABSENT,
            reason="The same: old-g exists only on Sluice, made by the OffsetCommit v1 that "
                   "Kafka 4 refuses"),
    Allowed(".*", ".*", label=r"tv2: .*",
            reason="Transaction protocol version 2 (KIP-890 part 2) is not offered: EndTxn v5 "
                   "echoes the producer's id and epoch (no bump), Produce v12+ and "
                   "TxnOffsetCommit v5 do not add partitions or groups implicitly"),
    Allowed("Produce", r"responses\[.*\]\.partition_responses\[.*\]\.log_append_time_ms",
            label=r"seq 0 again \(duplicate\)", sluice=-1,
            reason="A de-duplicated idempotent retry is answered with its original offsets but "
                   "with log_append_time -1"),
    Allowed("DescribeProducers", r".*\.active_producers\[.*\]\.coordinator_epoch", sluice=-1,
            reason="DescribeProducers reports the coordinator epoch as -1"),
    Allowed("DescribeProducers", r".*\.active_producers\[.*\]\.last_timestamp",
            reason="DescribeProducers reports the last append time as the last timestamp "
                   "(Kafka: the max timestamp of the producer's last batch)"),
    Allowed("DescribeConfigs", B + r"\[name=.*\]\.read_only", kafka=False, sluice=True,
            reason="Only topic configs can be altered; broker configs are static, set at "
                   "start-up (read-only; Kafka can update many per broker)"),
    Allowed("AlterConfigs|IncrementalAlterConfigs", r"responses\[resource_name=1\]\.error_.*",
            label=".* on the broker",
            reason="Only topic configs can be altered; broker configs are static (Sluice "
                   "answers INVALID_REQUEST)"),
    Allowed("DescribeConfigs", B + r"\[name=(%s)\]" % "|".join(
        re.escape(n) for n in SLUICE_BROKER_CONFIGS), kafka=ABSENT,
            reason="Sluice's own broker configs (admin listener, metrics, response queues, "
                   "limits, the flush scope, the metadata snapshot interval); Kafka has no "
                   "such names"),
    Allowed("DescribeConfigs", B + r"\[name=(process\.roles|controller\.listener\.names|"
            r"controller\.quorum\.voters)\]\.(config_source|synonyms.*|value)",
            reason="A node needs no configuration to be a cluster of one: process.roles, "
                   "controller.listener.names and controller.quorum.voters (empty: this node "
                   "alone) have defaults, so DescribeConfigs reports them as defaults where "
                   "Kafka, which requires them in its file, reports them as static"),
    Allowed("Fetch", r"responses\[topic_id=<id of (idem-t|txn-t)>\]\.partitions\[.*\]"
            r"\.records\[.*\]\.crc",
            reason="Producer ids are node.id << 32 plus the broker's own counter (Kafka's "
                   "controller hands out blocks from 0): the batches of idempotent and "
                   "transactional producers carry other ids (masked here), so their CRCs "
                   "differ"),
    Allowed("DescribeConfigs", B + r"\[name=(offsets\.topic|transaction\.state\.log)"
            r"\.replication\.factor\]\.(value|config_source|synonyms.*)",
            reason="offsets.topic.replication.factor and transaction.state.log.replication."
                   "factor (default 3, as in Kafka) are capped at the number of brokers when "
                   "__consumer_offsets and __transaction_state are created, so a single node "
                   "needs no setting (the Kafka oracle sets 1)"),
    Allowed("DescribeConfigs|CreateTopics",
            r".*configs\[name=min\.insync\.replicas\]\.(config_source|synonyms.*)",
            reason="min.insync.replicas is reported as a static broker config or its default; "
                   "Kafka 4 reports it as a dynamic cluster-wide default (source 3), which its "
                   "storage tool writes into the metadata log at format time"),
    Allowed("DescribeConfigs", B + r"\[name=queued\.max\.request\.bytes\]"
            r"(\.synonyms\[name=queued\.max\.request\.bytes\])?\.value",
            kafka="-1", sluice=str(256 << 20),
            reason="queued.max.request.bytes defaults to 256 MiB (Kafka: -1, no limit)"),
    Allowed("DescribeConfigs", B + r"\[name=max\.connections\]"
            r"(\.synonyms\[name=max\.connections\])?\.value",
            kafka="2147483647", sluice="10000",
            reason="max.connections defaults to 10,000, within the open-file budget (Kafka: "
                   "2^31-1)"),
    Allowed("DescribeConfigs", B + r"\[name=(log\.retention\.ms|log\.roll\.ms)\]\.value",
            kafka=None,
            reason="No log.retention.hours/minutes or log.roll.hours: log.retention.ms and "
                   "log.roll.ms carry the 7-day defaults (Kafka leaves them null and derives "
                   "them from the hours)"),
    Allowed("DescribeConfigs", r"results\[.*\]\.configs\[name=(retention\.ms|segment\.ms|"
            r"log\.retention\.ms|log\.roll\.ms)\]"
            r"\.synonyms\[name=(log\.retention\.ms|log\.roll\.ms)\]", kafka=ABSENT,
            reason="The same: the topic default comes from log.retention.ms / log.roll.ms, "
                   "listed as the DEFAULT_CONFIG synonym (Kafka lists no default synonym)"),
    Allowed("Fetch", r"responses\[.*\]\.partitions\[.*\]\.records",
            label="partition max bytes between batches",
            reason="A fetch ends at a whole batch; Kafka sends the first bytes of the next "
                   "batch up to the limit, which clients drop"),
    Allowed("CreateTopics", r"topics\[.*\]\.topic_id", label="validate only", sluice=None,
            reason="CreateTopics with validate_only answers no topic id (Kafka answers a "
                   "random one that names no topic)"),
    Allowed("IncrementalAlterConfigs", r"responses\[.*\]\.error_code",
            label="incremental: bad operation", kafka=-1, sluice=42,
            reason="An unknown config operation gets INVALID_REQUEST (Kafka: "
                   "UNKNOWN_SERVER_ERROR, from an exception)"),
]


# -- sequences ----------------------------------------------------------------------------------

SEQUENCES = {}


def sequence(fn):
    SEQUENCES[fn.__name__.removeprefix("seq_")] = fn
    return fn


def create_topics(b, label, topics, version=None, validate_only=False, wait=True):
    """topics: [(name, partitions, replication factor, {config: value})]"""
    r = b.call(label, "CreateTopics", {
        "topics": [{"name": n, "num_partitions": p, "replication_factor": rf,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in (c or {}).items()]}
                   for n, p, rf, c in topics],
        "timeout_ms": 30000, "validate_only": validate_only}, version=version)
    if wait and not validate_only:
        for t in r.get("topics", []):
            if t["error_code"] == 0:
                b.await_topic(t["name"])
    return r


def setup_topic(b, name, partitions=1, configs=None):
    create_topics(b, f"setup {name}", [(name, partitions, 1, configs)])
    b.await_topic(name, partitions)


def produce(b, label, topic, partition, data, acks=-1, version=None, txn_id=None):
    """data: the bytes of a batch, or a list of (topic, partition, bytes)."""
    parts = data if isinstance(data, list) else [(topic, partition, data)]
    by_topic = {}
    for t, p, data in parts:
        by_topic.setdefault(t, []).append({"index": p, "records": data})
    return b.call(label, "Produce", {
        "transactional_id": txn_id, "acks": acks, "timeout_ms": 30000,
        "topic_data": [{"name": t, "topic_id": b.tid(t), "partition_data": ps}
                       for t, ps in by_topic.items()]},
        version=version, expect_response=acks != 0)


def fetch(b, label, parts, max_bytes=1 << 20, isolation=0, version=None):
    """parts: [(topic, partition, offset, partition max bytes)]"""
    by_topic = {}
    for t, p, off, pmax in parts:
        by_topic.setdefault(t, []).append({
            "partition": p, "current_leader_epoch": -1, "fetch_offset": off,
            "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": pmax})
    return b.call(label, "Fetch", {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": max_bytes,
        "isolation_level": isolation, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": t, "topic_id": b.tid(t), "partitions": ps}
                   for t, ps in by_topic.items()],
        "forgotten_topics_data": [], "rack_id": ""}, version=version)


def list_offsets(b, label, topic, specs, version=None, isolation=0):
    """specs: [(partition, timestamp)]"""
    return b.call(label, "ListOffsets", {
        "replica_id": -1, "isolation_level": isolation,
        "topics": [{"name": topic, "partitions": [
            {"partition_index": p, "current_leader_epoch": -1, "timestamp": ts,
             "max_num_offsets": 1} for p, ts in specs]}],
        "timeout_ms": 30000}, version=version)


def records(n, prefix=b"r", keyed=True, start=0):
    return [(prefix + b"-k%d" % (start + i) if keyed else None, prefix + b"-v%d" % (start + i),
             [(b"h", b"%d" % i)] if i % 2 else []) for i in range(n)]


@sequence
def seq_api_versions(b):
    for v in (0, 3):
        b.call(f"ApiVersions v{v}", "ApiVersions",
               {"client_software_name": "sluice-differential", "client_software_version": "1"},
               version=v, report_only=True)


@sequence
def seq_create_and_delete_topics(b):
    create_topics(b, "create 3 partitions", [("adm-a", 3, 1, None)])
    create_topics(b, "create duplicate", [("adm-a", 3, 1, None)])
    create_topics(b, "invalid names", [("adm bad!", 1, 1, None), (".", 1, 1, None),
                                       ("..", 1, 1, None), ("x" * 250, 1, 1, None)])
    create_topics(b, "invalid partitions", [("adm-p0", 0, 1, None), ("adm-pm", -5, 1, None)])
    create_topics(b, "invalid replication factor", [("adm-r3", 1, 3, None),
                                                    ("adm-r0", 1, 0, None),
                                                    ("adm-rm", 1, -7, None)])
    create_topics(b, "broker defaults (-1, -1)", [("adm-def", -1, -1, None)])
    create_topics(b, "validate only", [("adm-v", 2, 1, None)], validate_only=True)
    b.call("validate only created nothing", "Metadata",
           {"topics": [{"name": "adm-v"}], "allow_auto_topic_creation": False})
    create_topics(b, "bad configs", [("adm-c1", 1, 1, {"cleanup.policy": "bogus"}),
                                     ("adm-c2", 1, 1, {"no.such.config": "1"}),
                                     ("adm-c3", 1, 1, {"retention.ms": "abc"}),
                                     ("adm-c4", 1, 1, {"min.cleanable.dirty.ratio": "7"})])
    create_topics(b, "good configs", [("adm-c5", 2, 1, {"cleanup.policy": "compact",
                                                        "retention.ms": "3600000"})])
    create_topics(b, "mixed batch", [("adm-m1", 1, 1, None), ("adm-a", 1, 1, None),
                                     ("adm-m2", 0, 1, None)])
    create_topics(b, "same name twice in one request", [("adm-twice", 1, 1, None),
                                                        ("adm-twice", 1, 1, None)])
    create_topics(b, "v2", [("adm-v2", 1, 1, None), ("adm-a", 1, 1, None)], version=2)
    create_topics(b, "v4", [("adm-v4", 1, 1, None), ("adm-a", 1, 1, None)], version=4)
    create_topics(b, "v5 (configs in response)", [("adm-v5", 1, 1, None)], version=5)

    b.call("create partitions", "CreatePartitions", {
        "topics": [{"name": "adm-a", "count": 5, "assignments": None}],
        "timeout_ms": 30000, "validate_only": False})
    b.await_topic("adm-a", 5)
    b.call("create partitions: errors", "CreatePartitions", {
        "topics": [{"name": "adm-a", "count": 4, "assignments": None},
                   {"name": "adm-m1", "count": 1, "assignments": None},
                   {"name": "adm-nope", "count": 3, "assignments": None}],
        "timeout_ms": 30000, "validate_only": False})
    b.call("create partitions: validate only", "CreatePartitions", {
        "topics": [{"name": "adm-m1", "count": 3, "assignments": None}],
        "timeout_ms": 30000, "validate_only": True})
    b.call("create partitions: assignment to a missing broker", "CreatePartitions", {
        "topics": [{"name": "adm-m1", "count": 2, "assignments": [{"broker_ids": [42]}]}],
        "timeout_ms": 30000, "validate_only": False})
    b.call("metadata after create partitions", "Metadata",
           {"topics": [{"name": "adm-a"}, {"name": "adm-m1"}], "allow_auto_topic_creation": False})

    setup_topic(b, "adm-d")
    b.call("delete topics", "DeleteTopics", {
        "topics": [{"name": "adm-d", "topic_id": ZERO_UUID},
                   {"name": "adm-unknown", "topic_id": ZERO_UUID}],
        "topic_names": ["adm-d", "adm-unknown"], "timeout_ms": 30000})
    b.await_gone("adm-d")
    b.call("delete topics: by id", "DeleteTopics", {
        "topics": [{"name": None, "topic_id": b.tid("adm-m1")},
                   {"name": None, "topic_id": "3f2c1a9e-0000-4000-8000-000000000001"}],
        "timeout_ms": 30000}, version=6)
    b.await_gone("adm-m1")
    b.call("delete topics: v1", "DeleteTopics", {"topic_names": ["adm-m2", "adm-d"],
                                                 "timeout_ms": 30000}, version=1)
    b.call("metadata after delete", "Metadata",
           {"topics": [{"name": "adm-d"}, {"name": "adm-m1"}], "allow_auto_topic_creation": False})


@sequence
def seq_metadata(b):
    setup_topic(b, "md-a", 2)
    v = b.version("Metadata")
    b.call("named", "Metadata", {"topics": [{"name": "md-a"}], "allow_auto_topic_creation": False})
    b.call("unknown, no auto-create", "Metadata",
           {"topics": [{"name": "md-none"}], "allow_auto_topic_creation": False})
    b.call("unknown, auto-create", "Metadata",
           {"topics": [{"name": "md-auto"}], "allow_auto_topic_creation": True})
    b.await_topic("md-auto", 1)
    b.call("auto-created", "Metadata",
           {"topics": [{"name": "md-auto"}], "allow_auto_topic_creation": False})
    b.call("invalid name, auto-create", "Metadata",
           {"topics": [{"name": "md bad"}], "allow_auto_topic_creation": True})
    b.call("authorized operations", "Metadata", {
        "topics": [{"name": "md-a"}], "allow_auto_topic_creation": False,
        "include_cluster_authorized_operations": True,
        "include_topic_authorized_operations": True})
    if v >= 10:
        b.call("by topic id", "Metadata", {"topics": [{"name": None, "topic_id": b.tid("md-a")}],
                                           "allow_auto_topic_creation": False}, version=v)
        b.call("by unknown topic id", "Metadata", {
            "topics": [{"name": None, "topic_id": "3f2c1a9e-0000-4000-8000-000000000002"}],
            "allow_auto_topic_creation": False}, version=v)
    b.call("all topics", "Metadata", {"topics": None, "allow_auto_topic_creation": False})
    b.call("no topics", "Metadata", {"topics": [], "allow_auto_topic_creation": False})
    for old in (0, 1, 4, 9):
        b.call(f"named v{old}", "Metadata", {"topics": [{"name": "md-a"}],
                                             "allow_auto_topic_creation": False}, version=old)
    # Before v4 a named unknown topic is always auto-created.
    b.call("unknown v1 (auto-creates)", "Metadata", {"topics": [{"name": "md-auto1"}]},
           version=1)
    b.await_topic("md-auto1", 1)
    b.call("auto-created by v1", "Metadata", {"topics": [{"name": "md-auto1"}]}, version=1)


@sequence
def seq_configs(b):
    setup_topic(b, "cfg-t", 1, {"retention.ms": "3600000", "cleanup.policy": "compact"})
    describe = {"include_synonyms": True, "include_documentation": True}

    def topic(keys=None, name="cfg-t"):
        return {"resource_type": 2, "resource_name": name, "configuration_keys": keys}
    b.call("describe topic", "DescribeConfigs", {"resources": [topic()], **describe})
    b.call("describe topic: some keys", "DescribeConfigs", {
        "resources": [topic(["retention.ms", "segment.bytes", "no.such.key"])], **describe})
    b.call("describe unknown topic", "DescribeConfigs",
           {"resources": [topic(None, "cfg-nope")], **describe})
    b.call("describe broker", "DescribeConfigs", {
        "resources": [{"resource_type": 4, "resource_name": "1", "configuration_keys": None}],
        **describe})
    b.call("describe broker: some keys", "DescribeConfigs", {
        "resources": [{"resource_type": 4, "resource_name": "1", "configuration_keys": [
            "num.partitions", "group.initial.rebalance.delay.ms", "log.retention.ms"]}],
        **describe})
    b.call("describe another broker", "DescribeConfigs", {
        "resources": [{"resource_type": 4, "resource_name": "7", "configuration_keys": None}],
        **describe})
    b.call("describe topic v1", "DescribeConfigs", {
        "resources": [topic(["retention.ms", "cleanup.policy", "segment.bytes"])],
        "include_synonyms": True}, version=1)

    def alter(label, configs, validate_only=False, name="cfg-t", rtype=2):
        b.call(label, "AlterConfigs", {"resources": [{
            "resource_type": rtype, "resource_name": name,
            "configs": [{"name": k, "value": v} for k, v in configs.items()]}],
            "validate_only": validate_only})

    alter("alter", {"retention.ms": "7200000", "segment.bytes": "1048576"})
    b.call("after alter", "DescribeConfigs", {"resources": [topic(
        ["retention.ms", "cleanup.policy", "segment.bytes"])], **describe})
    alter("alter: bad value", {"retention.ms": "abc"})
    alter("alter: unknown name", {"no.such.config": "1"})
    alter("alter: out of range", {"min.cleanable.dirty.ratio": "7"})
    alter("alter: validate only", {"retention.ms": "1000"}, validate_only=True)
    alter("alter: unknown topic", {"retention.ms": "1000"}, name="cfg-nope")
    b.call("after failed alters", "DescribeConfigs", {"resources": [topic(
        ["retention.ms", "segment.bytes"])], **describe})

    def incremental(label, ops, validate_only=False, name="cfg-t", rtype=2):
        b.call(label, "IncrementalAlterConfigs", {"resources": [{
            "resource_type": rtype, "resource_name": name,
            "configs": [{"name": k, "config_operation": op, "value": v} for k, op, v in ops]}],
            "validate_only": validate_only})

    incremental("incremental set and delete", [("retention.ms", 0, "1800000"),
                                               ("segment.bytes", 1, None)])
    incremental("incremental append", [("cleanup.policy", 2, "compact")])
    incremental("incremental append again", [("cleanup.policy", 2, "delete")])
    b.call("after incremental", "DescribeConfigs", {"resources": [topic(
        ["retention.ms", "cleanup.policy", "segment.bytes"])], **describe})
    incremental("incremental subtract", [("cleanup.policy", 3, "compact")])
    incremental("incremental: bad value", [("retention.ms", 0, "abc")])
    incremental("incremental: unknown name", [("no.such.config", 0, "1")])
    incremental("incremental: append to a non-list", [("retention.ms", 2, "5")])
    incremental("incremental: bad operation", [("retention.ms", 9, "5")])
    incremental("incremental: validate only", [("retention.ms", 0, "5")], validate_only=True)
    incremental("incremental: unknown topic", [("retention.ms", 0, "5")], name="cfg-nope")
    b.call("after all", "DescribeConfigs", {"resources": [topic(
        ["retention.ms", "cleanup.policy", "segment.bytes"])], **describe})
    # Validate only: Kafka would apply it, and every later topic would see it.
    incremental("incremental on the broker", [("log.retention.ms", 0, "3600000")],
                name="1", rtype=4, validate_only=True)
    alter("alter on the broker", {"log.retention.ms": "3600000"}, name="1", rtype=4,
          validate_only=True)


@sequence
def seq_describe_cluster_and_logs(b):
    setup_topic(b, "dsc-a", 2)
    produce(b, "produce", "dsc-a", 0, batch(records(3)))
    b.call("cluster", "DescribeCluster", {"include_cluster_authorized_operations": False,
                                          "endpoint_type": 1, "include_fenced_brokers": False})
    b.call("cluster with operations", "DescribeCluster", {
        "include_cluster_authorized_operations": True, "endpoint_type": 1,
        "include_fenced_brokers": True})
    b.call("cluster v0", "DescribeCluster",
           {"include_cluster_authorized_operations": False}, version=0)
    b.call("cluster: controller endpoints", "DescribeCluster", {
        "include_cluster_authorized_operations": False, "endpoint_type": 2,
        "include_fenced_brokers": False})
    b.call("topic partitions", "DescribeTopicPartitions", {
        "topics": [{"name": "dsc-a"}, {"name": "dsc-nope"}], "response_partition_limit": 2000,
        "cursor": None})
    b.call("topic partitions: limit 1", "DescribeTopicPartitions", {
        "topics": [{"name": "dsc-a"}], "response_partition_limit": 1, "cursor": None})
    b.call("topic partitions: cursor", "DescribeTopicPartitions", {
        "topics": [{"name": "dsc-a"}], "response_partition_limit": 1,
        "cursor": {"topic_name": "dsc-a", "partition_index": 1}})
    b.call("log dirs", "DescribeLogDirs", {"topics": [{"topic": "dsc-a", "partitions": [0, 1, 7]},
                                                      {"topic": "dsc-nope", "partitions": [0]}]})
    b.call("log dirs v1", "DescribeLogDirs", {"topics": [{"topic": "dsc-a", "partitions": [0]}]},
           version=1)


@sequence
def seq_produce_and_fetch(b):
    setup_topic(b, "pf-a", 2)
    setup_topic(b, "pf-c", 1, {"cleanup.policy": "compact"})
    produce(b, "acks=1", "pf-a", 0, batch(records(3)), acks=1)
    produce(b, "acks=-1", "pf-a", 0, batch(records(2, b"s")), acks=-1)
    produce(b, "acks=0", "pf-a", 1, batch(records(4, b"z")), acks=0)
    list_offsets(b, "end of the acks=0 partition", "pf-a", [(1, -1)])
    produce(b, "gzip", "pf-a", 0, batch(records(2, b"g"), codec=1))
    produce(b, "two partitions in one request", None, None, [
        ("pf-a", 0, batch(records(1, b"x"))), ("pf-a", 1, batch(records(1, b"y")))])
    named = min(b.version("Produce"), 12)
    produce(b, "unknown topic (by name)", "pf-nope", 0, batch(records(1)), version=named)
    if b.version("Produce") >= 13:
        produce(b, "unknown topic (by id)", "pf-nope", 0, batch(records(1)))
    produce(b, "invalid partition", "pf-a", 7, batch(records(1)))
    produce(b, "corrupt CRC", "pf-a", 0, batch(records(2), corrupt_crc=True))
    produce(b, "keyless record to a compacted topic", "pf-c", 0,
            batch([(b"k1", b"v1"), (None, b"v2"), (b"k3", b"v3")]))
    produce(b, "keyed records to a compacted topic", "pf-c", 0, batch(records(2)))
    produce(b, "empty batch", "pf-a", 0, batch([]))
    produce(b, "acks=2", "pf-a", 0, batch(records(1)), acks=2)
    produce(b, "produce v3", "pf-a", 1, batch(records(1, b"o")), version=3)
    produce(b, "produce v8", "pf-a", 1, batch(records(1, b"p")), version=8)

    fetch(b, "from 0", [("pf-a", 0, 0, 1 << 20), ("pf-a", 1, 0, 1 << 20)])
    fetch(b, "from the middle of a batch", [("pf-a", 0, 1, 1 << 20)])
    fetch(b, "partition max bytes below one batch", [("pf-a", 0, 0, 10)])
    fetch(b, "max bytes below one batch", [("pf-a", 0, 0, 1 << 20)], max_bytes=10)
    fetch(b, "partition max bytes between batches", [("pf-a", 0, 0, 150)])
    fetch(b, "at the high watermark", [("pf-a", 0, 8, 1 << 20)])
    fetch(b, "past the high watermark", [("pf-a", 0, 9, 1 << 20)])
    fetch(b, "negative offset", [("pf-a", 0, -5, 1 << 20)])
    fetch(b, "invalid partition", [("pf-a", 9, 0, 1 << 20)])
    fetch(b, "unknown topic", [("pf-nope", 0, 0, 1 << 20)])
    fetch(b, "compacted topic", [("pf-c", 0, 0, 1 << 20)])
    fetch(b, "fetch v4", [("pf-a", 0, 3, 1 << 20)], version=4)
    fetch(b, "fetch v11", [("pf-a", 0, 3, 1 << 20)], version=11)
    fetch(b, "fetch v12", [("pf-a", 0, 3, 1 << 20)], version=12)


@sequence
def seq_list_offsets_and_delete_records(b):
    setup_topic(b, "lo-a", 2)
    produce(b, "batch 1", "lo-a", 0, batch(records(3), ts=TS0))
    produce(b, "batch 2", "lo-a", 0, batch(records(3, b"s"), ts=TS0 + 1000))
    produce(b, "batch 3 (older timestamps)", "lo-a", 0, batch(records(2, b"t"), ts=TS0 + 500))
    for label, ts in (("latest", -1), ("earliest", -2), ("max timestamp", -3),
                      ("earliest local", -4), ("by timestamp", TS0 + 1001),
                      ("by timestamp between batches", TS0 + 3),
                      ("by a timestamp after all", TS0 + 10**6),
                      ("by timestamp 0", 0)):
        list_offsets(b, label, "lo-a", [(0, ts), (1, ts)])
    list_offsets(b, "unknown partition", "lo-a", [(0, -1), (5, -1)])
    list_offsets(b, "unknown topic", "lo-nope", [(0, -1)])
    list_offsets(b, "read_committed", "lo-a", [(0, -1)], isolation=1)
    list_offsets(b, "the same partition twice", "lo-a", [(0, -1), (0, -2)])
    for v in (1, 2, 4, 7):
        list_offsets(b, f"v{v}", "lo-a", [(0, TS0 + 1001), (1, -2)], version=v)

    def delete(label, specs, topic="lo-a"):
        b.call(label, "DeleteRecords", {"topics": [{"name": topic, "partitions": [
            {"partition_index": p, "offset": o} for p, o in specs]}], "timeout_ms": 30000})
    delete("delete up to 2", [(0, 2)])
    list_offsets(b, "earliest after delete", "lo-a", [(0, -2)])
    fetch(b, "fetch below the log start", [("lo-a", 0, 0, 1 << 20)])
    fetch(b, "fetch from the log start", [("lo-a", 0, 2, 1 << 20)])
    delete("delete below the log start", [(0, 1)])
    delete("delete past the high watermark", [(0, 99)])
    delete("delete to the high watermark (-1)", [(0, -1), (1, -1)])
    delete("delete: unknown partition", [(9, 0)])
    delete("delete: unknown topic", [(0, 0)], topic="lo-nope")
    setup_topic(b, "lo-c", 1, {"cleanup.policy": "compact"})
    delete("delete on a compacted topic", [(0, 0)], topic="lo-c")
    list_offsets(b, "after deletes", "lo-a", [(0, -2), (1, -2)])


@sequence
def seq_old_versions(b):
    """Versions Kafka 4 no longer accepts (KIP-896); Sluice accepts them."""
    setup_topic(b, "old-a", 1)
    produce(b, "old: produce v2 (message format v1)", "old-a", 0,
            message_set_v1([(b"k1", b"v1"), (None, b"v2")]), version=2)
    fetch(b, "old: fetch v3", [("old-a", 0, 0, 1 << 20)], version=3)
    list_offsets(b, "old: list offsets v0", "old-a", [(0, -1)], version=0)
    b.call("old: create topics v1", "CreateTopics", {"topics": [
        {"name": "old-a", "num_partitions": 1, "replication_factor": 1, "assignments": [],
         "configs": []}], "timeout_ms": 1000, "validate_only": False}, version=1)
    b.call("old: describe configs v0", "DescribeConfigs", {"resources": [
        {"resource_type": 2, "resource_name": "old-a", "configuration_keys": ["retention.ms"]}]},
        version=0)
    b.call("old: offset fetch v0", "OffsetFetch", {"group_id": "old-g", "topics": [
        {"name": "old-a", "partition_indexes": [0]}]}, version=0)
    b.call("old: delete topics v0", "DeleteTopics", {"topic_names": ["old-nope"],
                                                     "timeout_ms": 1000}, version=0)
    commit(b, "old: offset commit v1", "old-g", -1, "", {("old-a", 0): 1}, version=1)


def join(b, label, group, member_id="", topics=("grp-t",), version=None, instance_id=None,
         protocol_type="consumer", protocols=("range",), session_timeout_ms=30000):
    return b.call(label, "JoinGroup", {
        "group_id": group, "session_timeout_ms": session_timeout_ms,
        "rebalance_timeout_ms": 30000, "member_id": member_id, "group_instance_id": instance_id,
        "protocol_type": protocol_type,
        "protocols": [{"name": p, "metadata": subscription(list(topics))} for p in protocols],
        "reason": None}, version=version)


def sync(b, label, group, generation, member_id, assignments, version=None):
    return b.call(label, "SyncGroup", {
        "group_id": group, "generation_id": generation, "member_id": member_id,
        "group_instance_id": None, "protocol_type": "consumer", "protocol_name": "range",
        "assignments": [{"member_id": m, "assignment": a} for m, a in assignments]},
        version=version)


def heartbeat(b, label, group, generation, member_id, version=None):
    return b.call(label, "Heartbeat", {"group_id": group, "generation_id": generation,
                                       "member_id": member_id, "group_instance_id": None},
                  version=version)


def commit(b, label, group, generation, member_id, offsets, version=None):
    """offsets: {(topic, partition): offset}"""
    by_topic = {}
    for (t, p), o in offsets.items():
        by_topic.setdefault(t, []).append({"partition_index": p, "committed_offset": o,
                                           "committed_leader_epoch": -1,
                                           "commit_timestamp": -1,
                                           "committed_metadata": f"m{o}"})
    return b.call(label, "OffsetCommit", {
        "group_id": group, "generation_id_or_member_epoch": generation, "member_id": member_id,
        "group_instance_id": None, "retention_time_ms": -1,
        "topics": [{"name": t, "topic_id": b.tid(t), "partitions": ps}
                   for t, ps in by_topic.items()]}, version=version)


def offset_fetch(b, label, group, topics, version=None, require_stable=False):
    """topics: {topic: [partitions]} or None for all."""
    old = None if topics is None else [{"name": t, "partition_indexes": ps}
                                       for t, ps in topics.items()]
    new = None if topics is None else [{"name": t, "topic_id": b.tid(t), "partition_indexes": ps}
                                       for t, ps in topics.items()]
    return b.call(label, "OffsetFetch", {
        "group_id": group, "topics": old, "require_stable": require_stable,
        "groups": [{"group_id": group, "member_id": None, "member_epoch": -1, "topics": new}]},
        version=version)


@sequence
def seq_groups(b):
    setup_topic(b, "grp-t", 2)
    for g in ("grp-g1", "grp-g2", "grp-g3", "grp-g4", "grp-g5", "grp-simple", "grp-none"):
        b.await_group(g)
    b.call("find coordinator", "FindCoordinator",
           {"key": "grp-g1", "key_type": 0, "coordinator_keys": ["grp-g1", "grp-g2"]})
    b.call("find coordinator v0", "FindCoordinator", {"key": "grp-g1"}, version=0)
    b.call("find coordinator v3", "FindCoordinator", {"key": "grp-g1", "key_type": 0}, version=3)
    b.call("find coordinator: bad key type", "FindCoordinator",
           {"key": "grp-g1", "key_type": 5, "coordinator_keys": ["grp-g1"]})

    r = join(b, "join: member id required", "grp-g1")
    member = r["member_id"]
    r = join(b, "join with the member id", "grp-g1", member)
    gen = r["generation_id"]
    sync(b, "sync", "grp-g1", gen, member, [(member, assignment({"grp-t": [0, 1]}))])
    heartbeat(b, "heartbeat", "grp-g1", gen, member)
    heartbeat(b, "heartbeat: unknown member", "grp-g1", gen, "nobody-1")
    heartbeat(b, "heartbeat: illegal generation", "grp-g1", gen + 5, member)
    heartbeat(b, "heartbeat: unknown group", "grp-none", 1, member)
    sync(b, "sync: unknown member", "grp-g1", gen, "nobody-1", [])
    sync(b, "sync: illegal generation", "grp-g1", gen + 5, member, [])

    commit(b, "commit", "grp-g1", gen, member, {("grp-t", 0): 5, ("grp-t", 1): 7})
    commit(b, "commit: illegal generation", "grp-g1", gen + 5, member, {("grp-t", 0): 6})
    commit(b, "commit: unknown member", "grp-g1", gen, "nobody-1", {("grp-t", 0): 6})
    commit(b, "commit: unknown topic", "grp-g1", gen, member, {("grp-nope", 0): 1})
    commit(b, "commit: unknown partition", "grp-g1", gen, member, {("grp-t", 9): 1})
    offset_fetch(b, "offset fetch", "grp-g1", {"grp-t": [0, 1, 5], "grp-nope": [0]})
    offset_fetch(b, "offset fetch all", "grp-g1", None)
    offset_fetch(b, "offset fetch: unknown group", "grp-none", {"grp-t": [0]})
    offset_fetch(b, "offset fetch v1", "grp-g1", {"grp-t": [0, 1]}, version=1)
    offset_fetch(b, "offset fetch v5", "grp-g1", {"grp-t": [0, 1]}, version=5)
    offset_fetch(b, "offset fetch v7 stable", "grp-g1", {"grp-t": [0]}, version=7,
                 require_stable=True)
    b.call("offset fetch: two groups", "OffsetFetch", {"require_stable": False, "groups": [
        {"group_id": "grp-g1", "member_id": None, "member_epoch": -1, "topics": None},
        {"group_id": "grp-none", "member_id": None, "member_epoch": -1, "topics": None}]})

    b.call("describe", "DescribeGroups", {"groups": ["grp-g1", "grp-none"],
                                          "include_authorized_operations": True})
    b.call("describe v0", "DescribeGroups", {"groups": ["grp-g1"]}, version=0)
    b.call("list", "ListGroups", {"states_filter": [], "types_filter": []})
    b.call("list: stable", "ListGroups", {"states_filter": ["Stable"], "types_filter": []})
    b.call("list: classic", "ListGroups", {"states_filter": [], "types_filter": ["classic"]})
    b.call("list v0", "ListGroups", {}, version=0)

    # A second member joins: the group rebalances; the first learns it from its heartbeat.
    r2 = join(b, "second member: member id required", "grp-g1")
    member2 = r2["member_id"]
    # A member that has not rejoined with its id is only pending: no rebalance yet.
    heartbeat(b, "heartbeat while a member is pending", "grp-g1", gen, member)

    b.call("leave", "LeaveGroup", {"group_id": "grp-g1", "member_id": member,
                                   "members": [{"member_id": member, "group_instance_id": None,
                                                "reason": "bye"}]})
    b.call("leave: unknown member", "LeaveGroup", {"group_id": "grp-g1", "members": [
        {"member_id": "nobody-1", "group_instance_id": None, "reason": None}]})
    b.call("leave v0: unknown member", "LeaveGroup",
           {"group_id": "grp-g1", "member_id": "nobody-1"}, version=0)
    b.call("describe after leave", "DescribeGroups", {"groups": ["grp-g1"],
                                                      "include_authorized_operations": False})
    b.call("delete groups", "DeleteGroups", {"groups_names": ["grp-g1", "grp-none"]})

    # A group with a member cannot be deleted; a simple (memberless) commit works.
    r = join(b, "join g2", "grp-g2")
    r = join(b, "join g2 with the member id", "grp-g2", r["member_id"])
    b.call("delete a group with members", "DeleteGroups", {"groups_names": ["grp-g2"]})
    commit(b, "simple commit", "grp-simple", -1, "", {("grp-t", 0): 3})
    offset_fetch(b, "simple fetch", "grp-simple", {"grp-t": [0]})
    b.call("offset delete", "OffsetDelete", {"group_id": "grp-simple", "topics": [
        {"name": "grp-t", "partitions": [{"partition_index": 0}, {"partition_index": 1}]}]})
    b.call("offset delete: member group", "OffsetDelete", {"group_id": "grp-g2", "topics": [
        {"name": "grp-t", "partitions": [{"partition_index": 0}]}]})
    join(b, "join: inconsistent protocol type", "grp-g2", protocol_type="connect")
    join(b, "join: session timeout too small", "grp-g3", session_timeout_ms=1)
    join(b, "join v0", "grp-g4", version=0)
    join(b, "join v3", "grp-g5", version=3)


@sequence
def seq_idempotence(b):
    setup_topic(b, "idem-t", 1)
    b.await_producer_ids()
    r = b.call("init producer id", "InitProducerId", {
        "transactional_id": None, "transaction_timeout_ms": 60000, "producer_id": -1,
        "producer_epoch": -1})
    pid, epoch = r["producer_id"], r["producer_epoch"]
    produce(b, "seq 0", "idem-t", 0, batch(records(3), producer_id=pid, producer_epoch=epoch,
                                           base_sequence=0))
    produce(b, "seq 0 again (duplicate)", "idem-t", 0,
            batch(records(3), producer_id=pid, producer_epoch=epoch, base_sequence=0))
    produce(b, "seq 3", "idem-t", 0, batch(records(2, b"s"), producer_id=pid,
                                           producer_epoch=epoch, base_sequence=3))
    produce(b, "gap: seq 9", "idem-t", 0, batch(records(1, b"g"), producer_id=pid,
                                                producer_epoch=epoch, base_sequence=9))
    produce(b, "unknown producer", "idem-t", 0, batch(records(1, b"u"), producer_id=pid + 1000,
                                                      producer_epoch=0, base_sequence=5))
    produce(b, "higher epoch, seq 0", "idem-t", 0, batch(
        records(1, b"e"), producer_id=pid, producer_epoch=epoch + 5, base_sequence=0))
    produce(b, "back to the lower epoch", "idem-t", 0, batch(
        records(1, b"l"), producer_id=pid, producer_epoch=epoch, base_sequence=5))
    b.call("describe producers", "DescribeProducers", {"topics": [
        {"name": "idem-t", "partition_indexes": [0, 4]}, {"name": "idem-nope",
                                                          "partition_indexes": [0]}]})
    fetch(b, "fetch", [("idem-t", 0, 0, 1 << 20)])


def add_partitions(b, label, txn_id, pid, epoch, parts, version=3):
    """parts: {topic: [partitions]}"""
    topics = [{"name": t, "partitions": ps} for t, ps in parts.items()]
    return b.call(label, "AddPartitionsToTxn", {
        "v3_and_below_transactional_id": txn_id, "v3_and_below_producer_id": pid,
        "v3_and_below_producer_epoch": epoch, "v3_and_below_topics": topics,
        "transactions": [{"transactional_id": txn_id, "producer_id": pid, "producer_epoch": epoch,
                          "verify_only": False, "topics": topics}]}, version=version)


def end_txn(b, label, txn_id, pid, epoch, commit_it, version=None):
    r = b.call(label, "EndTxn", {"transactional_id": txn_id, "producer_id": pid,
                                 "producer_epoch": epoch, "committed": commit_it},
               version=version)
    return r


# Kafka 4 has transaction.version 2 (KIP-890 part 2) finalized; Sluice finalizes no features,
# so clients run the version 1 protocol with it: transactional Produce up to v11, EndTxn and
# TxnOffsetCommit up to v4 (what the Java client caps them at). The transaction sequence uses
# those, as a client of either broker would; seq_transactions_v2 shows the difference.
TXN_PRODUCE_V, TXN_END_V, TXN_OFFSET_COMMIT_V = 11, 4, 4


def txn_produce(b, label, topic, partition, recs, pid, epoch, seq, txn_id="txn-1",
                version=TXN_PRODUCE_V):
    return produce(b, label, topic, partition,
                   batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                         transactional=True), txn_id=txn_id, version=version)


def txn_offset_commit(b, label, txn_id, group, pid, epoch, offsets, version=TXN_OFFSET_COMMIT_V):
    return b.call(label, "TxnOffsetCommit", {
        "transactional_id": txn_id, "group_id": group, "producer_id": pid,
        "producer_epoch": epoch, "generation_id": -1, "member_id": "",
        "group_instance_id": None, "topics": [{"name": t, "partitions": [
            {"partition_index": p, "committed_offset": o, "committed_leader_epoch": -1,
             "committed_metadata": "txn"}]} for (t, p), o in offsets.items()]}, version=version)


def txn_setup(b, topic, txn_ids, groups):
    setup_topic(b, topic, 2)
    for t in txn_ids:
        b.await_txn_coordinator(t)
    for g in groups:
        b.await_group(g)
    b.await_producer_ids()


@sequence
def seq_transactions(b):
    txn_setup(b, "txn-t", ("txn-1", "txn-2", "txn-nope", "txn-unknown"), ("txn-g", "txn-other"))
    b.call("find transaction coordinator", "FindCoordinator",
           {"key": "txn-1", "key_type": 1, "coordinator_keys": ["txn-1"]})
    init = {"transaction_timeout_ms": 60000, "producer_id": -1, "producer_epoch": -1}
    r = b.call("init", "InitProducerId", {"transactional_id": "txn-1", **init})
    pid, epoch = r["producer_id"], r["producer_epoch"]
    b.call("describe (empty)", "DescribeTransactions", {"transactional_ids": ["txn-1"]})

    add_partitions(b, "add partitions", "txn-1", pid, epoch, {"txn-t": [0, 1]})
    add_partitions(b, "add partitions again", "txn-1", pid, epoch, {"txn-t": [0]})
    add_partitions(b, "add partitions: unknown partition", "txn-1", pid, epoch,
                   {"txn-t": [7], "txn-nope": [0]})
    txn_produce(b, "transactional produce", "txn-t", 0, records(2), pid, epoch, 0)
    txn_produce(b, "transactional produce p1", "txn-t", 1, records(1, b"q"), pid, epoch, 0)
    b.call("add offsets", "AddOffsetsToTxn", {"transactional_id": "txn-1", "producer_id": pid,
                                              "producer_epoch": epoch, "group_id": "txn-g"})
    txn_offset_commit(b, "txn offset commit", "txn-1", "txn-g", pid, epoch, {("txn-t", 0): 2})
    offset_fetch(b, "offset fetch, require stable", "txn-g", {"txn-t": [0]},
                 require_stable=True)
    offset_fetch(b, "offset fetch, not stable", "txn-g", {"txn-t": [0]})
    b.call("describe (ongoing)", "DescribeTransactions",
           {"transactional_ids": ["txn-1", "txn-unknown"]})
    b.call("list", "ListTransactions", {"state_filters": [], "producer_id_filters": [],
                                        "duration_filter": -1})
    b.call("list: ongoing of this producer", "ListTransactions", {
        "state_filters": ["Ongoing"], "producer_id_filters": [pid], "duration_filter": -1})
    b.call("describe producers", "DescribeProducers", {"topics": [
        {"name": "txn-t", "partition_indexes": [0, 1]}]})
    fetch(b, "read_committed while open", [("txn-t", 0, 0, 1 << 20)], isolation=1)
    fetch(b, "read_uncommitted while open", [("txn-t", 0, 0, 1 << 20)], isolation=0)
    list_offsets(b, "read_committed latest while open", "txn-t", [(0, -1)], isolation=1)

    end_txn(b, "commit", "txn-1", pid, epoch, True, version=TXN_END_V)
    b.await_txn_state("txn-1", {"CompleteCommit"})
    b.call("describe (committed)", "DescribeTransactions", {"transactional_ids": ["txn-1"]})
    fetch(b, "read_committed after commit", [("txn-t", 0, 0, 1 << 20)], isolation=1)
    offset_fetch(b, "offset fetch after commit", "txn-g", {"txn-t": [0]}, require_stable=True)

    add_partitions(b, "second transaction", "txn-1", pid, epoch, {"txn-t": [0]})
    txn_produce(b, "produce to abort", "txn-t", 0, records(2, b"a"), pid, epoch, 2)
    end_txn(b, "abort", "txn-1", pid, epoch, False, version=TXN_END_V)
    b.await_txn_state("txn-1", {"CompleteAbort"})
    fetch(b, "read_committed after abort", [("txn-t", 0, 0, 1 << 20)], isolation=1)
    fetch(b, "read_uncommitted after abort", [("txn-t", 0, 0, 1 << 20)], isolation=0)
    b.call("describe producers after", "DescribeProducers", {"topics": [
        {"name": "txn-t", "partition_indexes": [0]}]})

    # Error cases.
    end_txn(b, "end with nothing open", "txn-1", pid, epoch, True, version=TXN_END_V)
    end_txn(b, "end: unknown producer id", "txn-1", pid + 1000, epoch, True, version=TXN_END_V)
    end_txn(b, "end: unknown transactional id", "txn-nope", pid, epoch, True,
            version=TXN_END_V)
    add_partitions(b, "add: wrong epoch", "txn-1", pid, epoch + 3, {"txn-t": [0]})
    add_partitions(b, "add: unknown producer id", "txn-1", pid + 1000, epoch, {"txn-t": [0]})
    b.call("add offsets: wrong epoch", "AddOffsetsToTxn", {
        "transactional_id": "txn-1", "producer_id": pid, "producer_epoch": epoch + 3,
        "group_id": "txn-g"})
    b.call("init: timeout above the maximum", "InitProducerId",
           {"transactional_id": "txn-2", "transaction_timeout_ms": 10**9, "producer_id": -1,
            "producer_epoch": -1})
    r = b.call("init again (epoch bump)", "InitProducerId", {"transactional_id": "txn-1", **init})
    txn_produce(b, "produce with the fenced epoch", "txn-t", 0, records(1, b"f"), pid, epoch, 4)
    add_partitions(b, "add with the fenced epoch", "txn-1", pid, epoch, {"txn-t": [0]})
    epoch = r["producer_epoch"]
    txn_produce(b, "transactional produce without add partitions", "txn-t", 1,
                records(1, b"n"), pid, epoch, 0)
    txn_produce(b, "transactional produce v9 without add partitions", "txn-t", 1,
                records(1, b"n"), pid, epoch, 0, version=9)
    txn_offset_commit(b, "txn offset commit without add offsets", "txn-1", "txn-other", pid,
                      epoch, {("txn-t", 0): 1})
    txn_offset_commit(b, "txn offset commit v2 without add offsets", "txn-1", "txn-other", pid,
                      epoch, {("txn-t", 0): 1}, version=2)
    b.call("list: all states", "ListTransactions", {"state_filters": [],
                                                    "producer_id_filters": [],
                                                    "duration_filter": -1})
    add_partitions(b, "add partitions v5 (batched)", "txn-1", pid, epoch, {"txn-t": [0]},
                   version=b.version("AddPartitionsToTxn"))
    end_txn(b, "abort the batched one", "txn-1", pid, epoch, False, version=TXN_END_V)


@sequence
def seq_transactions_v2(b):
    """The transaction version 2 protocol (KIP-890 part 2), which Kafka 4 runs and Sluice
    does not offer: EndTxn v5 bumps the epoch; Produce v12+ and TxnOffsetCommit v5 add the
    partition or group to the transaction implicitly."""
    txn_setup(b, "tv2-t", ("tv2-1",), ("tv2-g",))
    r = b.call("init", "InitProducerId", {"transactional_id": "tv2-1",
                                          "transaction_timeout_ms": 60000, "producer_id": -1,
                                          "producer_epoch": -1})
    pid, epoch = r["producer_id"], r["producer_epoch"]
    add_partitions(b, "add partitions", "tv2-1", pid, epoch, {"tv2-t": [0]})
    txn_produce(b, "produce", "tv2-t", 0, records(1), pid, epoch, 0, txn_id="tv2-1")
    end_txn(b, "tv2: commit with EndTxn v5", "tv2-1", pid, epoch, True, version=5)
    b.await_txn_state("tv2-1", {"CompleteCommit"})
    end_txn(b, "tv2: EndTxn v5 with nothing open", "tv2-1", pid, epoch, True, version=5)
    r = b.call("tv2: init again", "InitProducerId", {"transactional_id": "tv2-1",
                                                "transaction_timeout_ms": 60000,
                                                "producer_id": -1, "producer_epoch": -1})
    epoch = r["producer_epoch"]
    txn_produce(b, "tv2: produce v13 without add partitions", "tv2-t", 1, records(1, b"i"),
                pid, epoch, 0, txn_id="tv2-1", version=b.version("Produce"))
    txn_offset_commit(b, "tv2: TxnOffsetCommit v5 without add offsets", "tv2-1", "tv2-g", pid,
                      epoch, {("tv2-t", 0): 1}, version=min(5, b.version("TxnOffsetCommit")))
    end_txn(b, "tv2: abort with EndTxn v5", "tv2-1", pid, epoch, False, version=5)
    b.await_txn_state("tv2-1", {"CompleteAbort", "CompleteCommit", "Empty"})
    # Kafka created the group with the implicit offset commit: remove it for later sequences.
    b.call("tv2: delete the group", "DeleteGroups", {"groups_names": ["tv2-g"]})


# What the version sweep sends at every version both brokers accept: reads, and writes that
# fail or only validate, so that running them again changes nothing.
SWEEP = [
    ("Metadata", lambda b: {"topics": [{"name": "sw-a"}], "allow_auto_topic_creation": False}),
    ("ListOffsets", lambda b: {"replica_id": -1, "isolation_level": 0, "timeout_ms": 30000,
                               "topics": [{"name": "sw-a", "partitions": [
                                   {"partition_index": 0, "current_leader_epoch": -1,
                                    "timestamp": -1, "max_num_offsets": 1}]}]}),
    ("Fetch", lambda b: {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 1 << 20,
                         "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                         "topics": [{"topic": "sw-a", "topic_id": b.tid("sw-a"), "partitions": [
                             {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0,
                              "last_fetched_epoch": -1, "log_start_offset": -1,
                              "partition_max_bytes": 1 << 20}]}],
                         "forgotten_topics_data": [], "rack_id": ""}),
    ("FindCoordinator", lambda b: {"key": "sw-g", "key_type": 0, "coordinator_keys": ["sw-g"]}),
    ("OffsetFetch", lambda b: {"group_id": "sw-g", "topics": [
        {"name": "sw-a", "partition_indexes": [0]}], "require_stable": False, "groups": [
        {"group_id": "sw-g", "member_id": None, "member_epoch": -1, "topics": [
            {"name": "sw-a", "topic_id": b.tid("sw-a"), "partition_indexes": [0]}]}]}),
    ("DescribeGroups", lambda b: {"groups": ["sw-g"], "include_authorized_operations": False}),
    ("ListGroups", lambda b: {"states_filter": ["Dead"], "types_filter": []}),
    ("DescribeConfigs", lambda b: {"resources": [{"resource_type": 2, "resource_name": "sw-a",
                                                  "configuration_keys": ["retention.ms"]}],
                                   "include_synonyms": True, "include_documentation": False}),
    ("DescribeLogDirs", lambda b: {"topics": [{"topic": "sw-a", "partitions": [0]}]}),
    ("DescribeCluster", lambda b: {"include_cluster_authorized_operations": False,
                                   "endpoint_type": 1, "include_fenced_brokers": False}),
    ("DescribeProducers", lambda b: {"topics": [{"name": "sw-a", "partition_indexes": [0]}]}),
    ("DescribeTransactions", lambda b: {"transactional_ids": ["sw-none"]}),
    ("ListTransactions", lambda b: {"state_filters": ["PrepareAbort"], "producer_id_filters": [],
                                    "duration_filter": -1}),
    ("DescribeTopicPartitions", lambda b: {"topics": [{"name": "sw-a"}],
                                           "response_partition_limit": 10, "cursor": None}),
    ("CreateTopics", lambda b: {"topics": [{"name": "sw-a", "num_partitions": 1,
                                            "replication_factor": 1, "assignments": [],
                                            "configs": []}],
                                "timeout_ms": 30000, "validate_only": True}),
    ("DeleteRecords", lambda b: {"topics": [{"name": "sw-nope", "partitions": [
        {"partition_index": 0, "offset": 0}]}], "timeout_ms": 30000}),
    ("DeleteTopics", lambda b: {"topic_names": ["sw-nope"], "topics": [
        {"name": "sw-nope", "topic_id": ZERO_UUID}], "timeout_ms": 30000}),
    ("CreatePartitions", lambda b: {"topics": [{"name": "sw-a", "count": 1, "assignments": None}],
                                    "timeout_ms": 30000, "validate_only": True}),
    ("DeleteGroups", lambda b: {"groups_names": ["sw-none"]}),
    ("Heartbeat", lambda b: {"group_id": "sw-none", "generation_id": 1, "member_id": "x-1",
                             "group_instance_id": None}),
    ("OffsetDelete", lambda b: {"group_id": "sw-none", "topics": [
        {"name": "sw-a", "partitions": [{"partition_index": 0}]}]}),
]


@sequence
def seq_version_sweep(b):
    setup_topic(b, "sw-a", 1)
    produce(b, "setup", "sw-a", 0, batch(records(2)))
    b.await_group("sw-g")
    for api, body in SWEEP:
        lo, hi = b.sweep_range[API_KEYS[api]]
        for v in range(lo, hi + 1):
            b.call(f"{api} v{v}", api, body(b), version=v)


# -- fixtures and the test ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    yield from running_kafka(tmp_path_factory.mktemp("kafka-oracle"), SHARED_CONFIG)


@pytest.fixture(scope="module")
def sluice(tmp_path_factory):
    args = ["--node-id", "1"]
    for k, v in SHARED_CONFIG.items():
        args += ["--set", f"{k}={v}"]
    yield from running_broker(tmp_path_factory.mktemp("sluice-differential"), args)


def _advertised(side):
    """ApiVersions v3: the advertised ranges; the finalized features go to side.features."""
    r = side.call("(setup)", "ApiVersions", {"client_software_name": "sluice-differential",
                                              "client_software_version": "1"},
                  version=3, record=False)
    assert r["error_code"] == 0, f"{side.name}: ApiVersions {r}"
    side.features = {f["name"]: f["max_version_level"]
                     for f in r.get("finalized_features") or []}
    return {k["api_key"]: (k["min_version"], k["max_version"]) for k in r["api_keys"]}


class Tally:
    def __init__(self):
        self.exchanges = 0
        self.allowed = {}  # reason -> [(sequence, label, path)]
        self.notes = set()
        self.failed = []


@pytest.fixture(scope="module")
def pair(kafka, sluice, request):
    k, s = Side("kafka", kafka.port), Side("sluice", sluice.port)
    for side in (k, s):
        side.reset()
        side.advertised = _advertised(side)
    for key, cls in REQUESTS.items():
        if key in k.advertised and key in s.advertised:
            kmin, kmax = k.advertised[key]
            smin, smax = s.advertised[key]
            hi = min(kmax, smax, cls.max_version)
            lo = max(kmin, smin)
            if hi >= lo:
                for side in (k, s):
                    side.chosen[key] = hi
                    side.sweep_range[key] = (lo, hi)
    tally = Tally()
    yield k, s, tally
    for side in (k, s):
        if side.conn is not None:
            side.conn.close()
    lines = ["", "== differential test against Apache Kafka 4.4.0 ==",
             f"Kafka formatted and started in {kafka.start_seconds:.1f} s",
             f"compared exchanges: {tally.exchanges}",
             f"allowed differences: {sum(len(v) for v in tally.allowed.values())} "
             f"(in {len(tally.allowed)} allow-list entries)"]
    for reason, where in tally.allowed.items():
        lines.append(f"  {len(where)} x {reason}")
        for seq, label, path in where[:6]:
            lines.append(f"      {seq} / {label}: {path}")
        if len(where) > 6:
            lines.append(f"      ... and {len(where) - 6} more")
    unused = [a.reason for a in ALLOWED if a.reason not in tally.allowed]
    for reason in unused:
        lines.append(f"  unused allow-list entry: {reason}")
    lines.append(f"exchanges with differences not allowed (failures): {len(tally.failed)}")
    lines.append("ApiVersions (reported, not failed):")
    lines += ["  " + line for line in api_versions_report(k.advertised, s.advertised)]
    for side in (k, s):
        features = ", ".join(f"{n}={v}" for n, v in sorted(side.features.items())) or "none"
        lines.append(f"  finalized features of {side.name}: {features}")
    for note in sorted(tally.notes):
        lines.append(f"  note: {note}")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


def _api_name(key):
    try:
        return ApiKey(key).name
    except ValueError:
        return API_NAMES.get(key, f"api {key}")


def api_versions_report(kafka, sluice):
    """Advertised ranges that differ; APIs only one broker offers on one line each."""
    out = []
    fmt = lambda r: f"v{r[0]}-v{r[1]}"
    for key in sorted(set(kafka) & set(sluice)):
        if kafka[key] != sluice[key]:
            out.append(f"{_api_name(key)} ({key}): Kafka {fmt(kafka[key])}, "
                       f"Sluice {fmt(sluice[key])}")
    for who, mine, other in (("Kafka", kafka, sluice), ("Sluice", sluice, kafka)):
        only = [f"{_api_name(k)} ({k})" for k in sorted(set(mine) - set(other))]
        if only:
            out.append(f"only {who} offers: " + ", ".join(only))
    return out


def _show(value, limit=6000):
    text = json.dumps(value, indent=1, sort_keys=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text)} chars)"


def compare_exchange(seq, ke, se, k, s, tally):
    """Failures (strings) of one exchange pair; allowed differences go to the tally."""
    if (ke.label, ke.api, ke.version) != (se.label, se.api, se.version):
        return [f"{seq}: the sequences diverged: Kafka ran {ke.label!r} ({ke.api} v{ke.version}),"
                f" Sluice {se.label!r} ({se.api} v{se.version})"]
    tally.exchanges += 1
    if ke.report_only:
        return []
    kr, sr = json.loads(json.dumps(ke.response, default=_jsonable)), \
        json.loads(json.dumps(se.response, default=_jsonable))
    restrict_configs(ke.api, kr, sr, tally.notes)
    km, sm = mask(kr, k, ke.api), mask(sr, s, se.api)
    if DUMP:
        with open(DUMP, "a") as out:
            out.write(json.dumps({"sequence": seq, "label": ke.label, "api": ke.api,
                                  "version": ke.version, "kafka": km, "sluice": sm},
                                 default=_jsonable) + "\n")
    if (_is_marker(km) or _is_marker(sm)) and km != sm:
        differences = [("<response>", km, sm)]
    else:
        differences = diff(km, sm)
    bad = []
    for path, kv, sv in differences:
        for a in ALLOWED:
            if a.matches(ke, path, kv, sv):
                tally.allowed.setdefault(a.reason, []).append((seq, ke.label, path))
                break
        else:
            bad.append((path, kv, sv))
    if not bad:
        return []
    lines = [f"{seq} / {ke.label!r}: {ke.api} v{ke.version}"]
    for path, kv, sv in bad:
        lines.append(f"  {path}: Kafka {json.dumps(kv, default=str)} "
                     f"!= Sluice {json.dumps(sv, default=str)}")
    lines.append("  request: " + _show(ke.request, 1500).replace("\n", "\n  "))
    lines.append("  Kafka:  " + _show(km).replace("\n", "\n  "))
    lines.append("  Sluice: " + _show(sm).replace("\n", "\n  "))
    return ["\n".join(lines)]


def _jsonable(value):
    """Bytes as text when they are printable, else as 0x-hex; sets sorted."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        try:
            text = value.decode()
            if text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
        return "0x" + value.hex()
    return str(value)


def _is_marker(response):
    """No response, or a "<connection closed>"-style marker instead of one."""
    return not isinstance(response, dict) or any(k.startswith("<") for k in response)


def run_sequence(side, fn):
    side.reset()
    try:
        fn(side)
    except Exception:  # noqa: BLE001 -- shown as the sequence's last exchange
        side.log.append(Exchange("<sequence stopped>", "-", -1, {},
                                 {"<exception>": traceback.format_exc(limit=4)}))
    return side.log


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_kafka_and_sluice_answer_alike(pair, name):
    k, s, tally = pair
    fn = SEQUENCES[name]
    klog = list(run_sequence(k, fn))
    slog = list(run_sequence(s, fn))
    failures = []
    for ke, se in zip(klog, slog):
        failures += compare_exchange(name, ke, se, k, s, tally)
    if len(klog) != len(slog):
        failures.append(f"{name}: Kafka recorded {len(klog)} exchanges, Sluice {len(slog)}; "
                        f"the last: Kafka {klog[-1].label!r} {klog[-1].response}, "
                        f"Sluice {slog[-1].label!r} {slog[-1].response}")
    tally.failed += failures
    assert not failures, f"{len(failures)} exchanges differ:\n\n" + "\n\n".join(failures)
