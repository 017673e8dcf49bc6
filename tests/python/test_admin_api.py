"""Contract tests of the admin HTTP API: the broker and its OpenAPI document are checked
against each other, and both against what real Kafka clients see.

Every answer goes through `AdminApi`, which takes the OpenAPI document the broker serves at
/openapi.json and, for each (path template, method, status) it receives, asserts that the
document lists that status for that operation, that the Content-Type is one the document
gives, and that a JSON body matches the document's schema (its `$ref`s resolved inside the
document; integers must be JSON integers and fit their int32/int64 format). Unknown paths and
methods a path does not list are checked against the document's NotFound and
MethodNotAllowed responses.

Coverage: `AdminApi` records every documented (template, method, status) it saw in SEEN. The
last test of the module asserts that every response the document lists was seen, so a status
that is documented but never produced (or produced but never tested) fails the run. The one
exemption is 503 `not_ready` of the /api/v1 operations: it exists only while a starting
broker recovers its logs, and test_ready_is_503_while_logs_recover sees it on a sample of
operations, not on every one. Refusals every operation documents (403 for a foreign Host
header) are exercised by a loop over the operations. The coverage test skips when only part
of the module ran.

Facts the Kafka protocol also exposes (ids, partitions, offsets, configs, group members) are
compared with what confluent-kafka's AdminClient, producer and consumer report. Nothing sleeps
for a fixed time to let something happen: waits are bounded loops on a condition.
"""

import http.client
import json
import re
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid

import jsonschema
import pytest
from confluent_kafka import (Consumer, ConsumerGroupState,
                             ConsumerGroupTopicPartitions, KafkaException,
                             Producer, TopicCollection, TopicPartition)
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.structs import OffsetAndMetadata
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from conftest import BIN, ROOT, Cluster, make_broker, running_broker
from test_hostile import connect, frame, parse_produce_v3, recv_frame
from test_transactions import read_all

DOC_FILE = ROOT / "crates" / "sluice-broker" / "src" / "admin" / "openapi.json"
WAIT_S = 60
HTTP_TIMEOUT_S = 30
# Data.text and Data.hex show at most this many bytes.
SHOWN_BYTES = 4096
# Timestamps of produced records: fixed, far from now, so they cannot be the broker's clock.
BASE_TS = 1_600_000_000_000
# Bytes of batches one message page may decompress, and event streams served at once.
PAGE_DECOMPRESSED_BYTES_MAX = 64 << 20
STREAMS_MAX = 32
JSON = "application/json"
# `host` of AdminApi.send: let http.client write the Host header (127.0.0.1:PORT).
DEFAULT_HOST = object()

# Every operation of the admin API spec (issue 7), as OpenAPI path templates.
SPEC_OPERATIONS = {
    ("/health/live", "get"),
    ("/health/ready", "get"),
    ("/api/v1/cluster", "get"),
    ("/api/v1/brokers", "get"),
    ("/api/v1/brokers/{node_id}", "get"),
    ("/api/v1/topics", "get"),
    ("/api/v1/topics", "post"),
    ("/api/v1/topics/{name}", "get"),
    ("/api/v1/topics/{name}", "delete"),
    ("/api/v1/topics/{name}/configs", "get"),
    ("/api/v1/topics/{name}/configs", "patch"),
    ("/api/v1/topics/{name}/partitions", "get"),
    ("/api/v1/topics/{name}/partitions/{partition}/messages", "get"),
    ("/api/v1/groups", "get"),
    ("/api/v1/groups/{group_id}", "get"),
    ("/api/v1/stats", "get"),
    ("/api/v1/stream", "get"),
    ("/openapi.json", "get"),
    ("/metrics", "get"),
    ("/", "get"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# The operations that read a JSON request body.
BODY_OPERATIONS = {("/api/v1/topics", "post"), ("/api/v1/topics/{name}/configs", "patch")}

# (path template, method, status) of every answer checked against the document.
SEEN = set()


# -- checking answers against the document --------------------------------------------------

def _strict_integer(checker, instance):
    # json.loads reads `5.0` as a float, which JSON Schema would accept as an integer; an
    # int64 field written as a float is drift all the same.
    return isinstance(instance, int) and not isinstance(instance, bool)


Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer",
                                                                       _strict_integer))

FORMATS = jsonschema.FormatChecker()  # uuid among them


@FORMATS.checks("int32")
def _is_int32(value):
    return not isinstance(value, int) or -2**31 <= value < 2**31


@FORMATS.checks("int64")
def _is_int64(value):
    return not isinstance(value, int) or -2**63 <= value < 2**63


def pointer(*parts):
    """A JSON pointer to `parts` (RFC 6901 escaping)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class Reply:
    """One HTTP answer: status, media type (lowercase, no parameters) and body (parsed JSON
    for application/json, text otherwise)."""

    def __init__(self, status, media_type, body):
        self.status = status
        self.media_type = media_type
        self.body = body

    def __repr__(self):
        return f"Reply({self.status}, {self.media_type}, {str(self.body)[:500]})"


class AdminApi:
    """Client of one broker's admin listener that checks every answer against the OpenAPI
    document the broker serves."""

    def __init__(self, broker):
        assert broker.admin_port, "the broker logged no `admin listening on` line"
        self.port = broker.admin_port
        status, headers, raw = self.send("GET", "/openapi.json")
        assert status == 200, f"/openapi.json answered {status}: {raw[:300]!r}"
        self.raw_doc = raw
        self.doc = json.loads(raw)
        # The document's own address is its base URI; nothing is fetched from it.
        self.uri = f"{broker.admin_url}/openapi.json"
        self.registry = Registry().with_resource(self.uri,
                                                 DRAFT202012.create_resource(self.doc))
        self.check("/openapi.json", "get", status, headers, raw)

    # Transport.

    @property
    def host(self):
        """The Host header http.client sends, which is what a browser sends as well."""
        return f"127.0.0.1:{self.port}"

    def send(self, method, path, body=None, headers=None, host=DEFAULT_HOST):
        """One request on a new connection; `host` is the Host header to send instead of
        127.0.0.1:PORT, or None for none at all."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            try:
                conn.putrequest(method, path, skip_host=host is not DEFAULT_HOST)
                if host is not DEFAULT_HOST and host is not None:
                    conn.putheader("Host", host)
                for name, value in (headers or {}).items():
                    conn.putheader(name, value)
                if body is not None or method in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body or b"")))
                conn.endheaders(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered before the whole body was read; the answer may be there
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def call(self, method, template, params=None, query=None, json_body=None, raw_body=None,
             raw_path=None, content_type=JSON, headers=None, host=DEFAULT_HOST):
        """Sends a request to `template` with its {params} filled in (or to `raw_path`, for
        paths no client would build) and returns the checked Reply. `template` None means a
        path that is in no template. A body goes with `content_type` (None: no Content-Type
        header); `headers` are added and `host` replaces the Host header (see `send`)."""
        path = raw_path
        if path is None:
            path = template.format(**{k: urllib.parse.quote(str(v), safe="")
                                      for k, v in (params or {}).items()})
        if query:
            path += "?" + urllib.parse.urlencode(query)
        all_headers = dict(headers or {})
        body = raw_body
        if json_body is not None:
            body = json.dumps(json_body).encode()
        if body is not None and content_type is not None:
            all_headers["Content-Type"] = content_type
        status, resp_headers, raw = self.send(method, path, body, all_headers, host)
        return self.check(template, method.lower(), status, resp_headers, raw)

    def get(self, template, query=None, **params):
        return self.call("GET", template, params, query)

    def post(self, template, body, **params):
        return self.call("POST", template, params, json_body=body)

    def patch(self, template, body, **params):
        return self.call("PATCH", template, params, json_body=body)

    def delete(self, template, **params):
        return self.call("DELETE", template, params)

    # The document.

    def resolve(self, ptr):
        """The object at `ptr`, following a `$ref` it consists of; returns (pointer, obj)."""
        obj = self.doc
        for part in ptr.split("/")[1:]:
            obj = obj[part.replace("~1", "/").replace("~0", "~")]
        if "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            return self.resolve(ref[1:])
        return ptr, obj

    def response_pointer(self, template, method, status):
        """Where the document describes this answer; asserts that it does."""
        if template is None:
            assert status == 404, f"a path in no template answered {status}, not 404"
            return "/components/responses/NotFound"
        item = self.doc["paths"].get(template)
        assert item is not None, f"{template} is not in the document"
        if method not in item:
            assert status == 405, f"{method.upper()} {template} answered {status}, not 405"
            return "/components/responses/MethodNotAllowed"
        responses = item[method]["responses"]
        assert str(status) in responses, (
            f"{method.upper()} {template} answered {status}, which the document does not "
            f"list (it lists {sorted(responses)})")
        SEEN.add((template, method, status))
        return pointer("paths", template, method, "responses", str(status))

    def check(self, template, method, status, headers, raw):
        where = f"{method.upper()} {template} -> {status}"
        ptr, response = self.resolve(self.response_pointer(template, method, status))
        media = headers.get_content_type()
        content = {k.split(";")[0].strip().lower(): k for k in response.get("content", {})}
        assert media in content, (
            f"{where}: Content-Type {headers.get('Content-Type')!r}, the document gives "
            f"{sorted(content)}; body {raw[:300]!r}")
        if media != "application/json":
            return Reply(status, media, raw.decode())
        try:
            body = json.loads(raw)
        except ValueError as e:
            pytest.fail(f"{where}: body is not JSON ({e}): {raw[:300]!r}")
        self.validate(body, ptr + pointer("content", content[media], "schema"), where)
        return Reply(status, media, body)

    def validate(self, instance, schema_ptr, where):
        ref = self.uri + "#" + urllib.parse.quote(schema_ptr, safe="/~")
        validator = Validator({"$ref": ref}, registry=self.registry, format_checker=FORMATS)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        assert not errors, (
            f"{where}: the body does not match {schema_ptr}:\n"
            + "\n".join(f"  at {list(e.absolute_path)}: {e.message}" for e in errors[:10])
            + f"\nbody: {json.dumps(instance)[:2000]}")

    # Server-sent events.

    def open_stream(self, query, timeout):
        """Opens /api/v1/stream with a socket timeout of `timeout` seconds per read. Returns
        (Reply, None) for a refusal, checked against the document, or (None, EventStream)
        once the answer is an event stream, which the caller closes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/api/v1/stream?" + urllib.parse.urlencode(query))
            resp = conn.getresponse()
            if resp.status != 200:
                reply = self.check("/api/v1/stream", "get", resp.status, resp.headers,
                                   resp.read())
                conn.close()
                return reply, None
            ptr, response = self.resolve(self.response_pointer("/api/v1/stream", "get", 200))
            assert resp.headers.get_content_type() == "text/event-stream", resp.headers
            return None, EventStream(self, conn, resp, ptr, response)
        except BaseException:
            conn.close()
            raise

    def stream(self, query, count, timeout):
        """Opens /api/v1/stream, checks the answer's status and type against the document,
        and reads `count` events, each a (name, data) pair, with a socket timeout of
        `timeout` seconds per read."""
        refusal, events = self.open_stream(query, timeout)
        if refusal is not None:
            return refusal, []
        with events:
            return Reply(200, "text/event-stream", None), events.read(count)


class EventStream:
    """An open /api/v1/stream answer whose events are checked against the document."""

    def __init__(self, api, conn, resp, ptr, response):
        self.api, self.conn, self.resp, self.ptr = api, conn, resp, ptr
        self.media = response["content"]["text/event-stream"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.conn.close()

    def read(self, count):
        """The next `count` events, each a (name, data) pair."""
        events, name, data = [], None, []
        for _ in range(10_000):  # lines; a keep-alive comment every 15 s at most
            line = self.resp.readline()
            assert line, f"the stream ended after {len(events)} events"
            line = line.decode().rstrip("\r\n")
            if line == "":
                if data:
                    events.append((name or "message", "\n".join(data)))
                name, data = None, []
                if len(events) == count:
                    break
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
        assert len(events) == count, f"{len(events)} events in 10000 lines"
        parsed = []
        for i, (name, text) in enumerate(events):
            assert name in self.media["x-sse-events"], f"event {name!r} is not documented"
            body = json.loads(text)
            self.api.validate(body, self.ptr + pointer("content", "text/event-stream",
                                                       "x-sse-events", name),
                              f"stream event {i} ({name})")
            parsed.append((name, body))
        return parsed


def assert_error(reply, status, code, what):
    """A refusal: the given 4xx status and error code (the body was already checked against
    the document's Error schema)."""
    assert 400 <= reply.status < 500, f"{what}: answered {reply.status}, not a 4xx: {reply}"
    assert (reply.status, reply.body["code"]) == (status, code), (
        f"{what}: expected {status} {code}, got {reply}")


# -- Kafka helpers ---------------------------------------------------------------------------

def admin_client(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def produce(broker, topic, records, partition=0, conf=None):
    """Produces `records`, (key, value, headers, timestamp) each, to one partition and waits
    until every one is acknowledged; returns their offsets in order."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, **(conf or {})})
    offsets, errors = {}, []

    def delivered(i):
        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                offsets[i] = msg.offset()
        return cb

    for i, (key, value, headers, ts) in enumerate(records):
        kwargs = {"partition": partition, "key": key, "value": value, "on_delivery": delivered(i)}
        if headers:
            kwargs["headers"] = headers
        if ts is not None:
            kwargs["timestamp"] = ts
        producer.produce(topic, **kwargs)
    assert producer.flush(WAIT_S) == 0, "records were not acknowledged"
    assert not errors, errors[:3]
    return [offsets[i] for i in range(len(records))]


def produce_values(broker, topic, partition, values):
    return produce(broker, topic, [(None, v, None, None) for v in values], partition)


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def undecodable_batch(records, timestamp):
    """A v2 record batch that claims `records` gzip-compressed records but whose payload is
    not gzip. Everything a broker checks without decompressing is right: magic, lengths,
    record count against last offset delta, and the CRC-32C over attributes..end.

        base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 = 2
        | crc u32 | attributes i16 = 1 (gzip) | last_offset_delta i32 | base_timestamp i64
        | max_timestamp i64 | producer_id i64 | producer_epoch i16 | base_sequence i32
        | records_count i32 | payload
    """
    payload = b"these bytes are not a gzip stream"
    after_crc = struct.pack(">hiqqqhii", 1, records - 1, timestamp, timestamp, -1, -1, -1,
                            records) + payload
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_raw(broker, topic, partition, batch):
    """Sends `batch` as it is in a Produce v3 request (acks=1) over a plain socket and
    returns the base offset the broker gave it."""
    name = topic.encode()
    body = struct.pack(">hhi", -1, 1, 30_000)  # null transactional id, acks=1, timeout ms
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch
    s = connect(broker)
    try:
        s.sendall(frame(0, 3, 77, body))
        corr, error, base = parse_produce_v3(recv_frame(s))
    finally:
        s.close()
    assert (corr, error) == (77, 0), f"Produce answered error {error}"
    return base


def consume_all(broker, topic, partitions):
    """Reads every partition of `topic` from the start to its end without a group; returns
    the number of records read."""
    seen = read_all(broker, topic, partitions, "read_uncommitted")
    return sum(len(records) for records in seen.values())


def commit_without_joining(broker, group, topic, partition, offset, metadata=""):
    """Commits an offset with metadata for `group` without joining it (a group that only
    stores offsets); this also makes the broker create __consumer_offsets. kafka-python,
    because confluent-kafka sends metadata strings with their C terminator."""
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                      enable_auto_commit=False)
    try:
        c.commit({KafkaTopicPartition(topic, partition): OffsetAndMetadata(offset, metadata, -1)})
    finally:
        c.close()


def uuid_of(kafka_uuid):
    """confluent-kafka's Uuid as a standard UUID."""
    msb = kafka_uuid.get_most_significant_bits() & (2**64 - 1)
    lsb = kafka_uuid.get_least_significant_bits() & (2**64 - 1)
    return uuid.UUID(int=(msb << 64) | lsb)


def data_of(b):
    """The Data object the API must show for bytes `b` (None for null)."""
    if b is None:
        return None
    shown = b[:SHOWN_BYTES]
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"size": len(b), "text": text, "hex": shown.hex(), "truncated": len(b) > SHOWN_BYTES}


def log_bytes_on_disk(broker, topic, partition):
    """Bytes of the partition's segment (.log) files."""
    d = broker.data_dir / f"{topic}-{partition}"
    return sum(f.stat().st_size for f in d.glob("*.log"))


def wait_until(what, predicate, timeout=WAIT_S):
    """Polls `predicate` until it returns a true value, which it returns; fails the test
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def create_topic(api, name, partitions=1, configs=None):
    body = {"name": name, "partitions": partitions}
    if configs:
        body["configs"] = configs
    r = api.post("/api/v1/topics", body)
    assert r.status == 201, r
    return r.body


def summary_fields(topic_detail):
    return {k: v for k, v in topic_detail.items() if k not in ("partitions", "configs")}


# -- the document ----------------------------------------------------------------------------

def walk(node, path=()):
    """Every (path, dict) in a JSON tree."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def response_schemas(api):
    """Every schema an answer can carry, (where, schema), $refs followed into components."""
    seen, out = set(), []

    def visit(where, schema):
        for path, node in walk(schema):
            if "$ref" in node and node["$ref"] not in seen:
                seen.add(node["$ref"])
                _, target = api.resolve(node["$ref"][1:])
                out.append((node["$ref"], target))
                visit(node["$ref"], target)

    for template, item in api.doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for status in op["responses"]:
                ptr, resp = api.resolve(pointer("paths", template, method, "responses", status))
                for media, mt in resp.get("content", {}).items():
                    where = f"{method.upper()} {template} {status} {media}"
                    out.append((where, mt["schema"]))
                    visit(where, mt["schema"])
                    for name, s in mt.get("x-sse-events", {}).items():
                        out.append((f"{where} event {name}", s))
                        visit(where, s)
    return out


def test_openapi_document_is_openapi_3_1_and_describes_every_operation_of_the_spec(broker):
    """/openapi.json is the repository's openapi.json byte for byte, an OpenAPI 3.1.0 document
    whose operations are exactly those of the spec, with declared path parameters, resolvable
    $refs, valid JSON Schema 2020-12 schemas, closed response objects that require every
    property, sized integers, Error bodies for every error status whose codes the Error schema
    knows, 403 on every operation, 415 exactly where a JSON body is read, 429 only on the
    stream, and the spec's bounds on `limit` and `interval_ms`."""
    api = AdminApi(broker)
    assert api.raw_doc == DOC_FILE.read_bytes(), "served /openapi.json differs from the file"
    doc = api.doc
    assert doc["openapi"] == "3.1.0"
    assert (doc["info"]["title"], doc["info"]["version"]) == ("Sluice admin API", "1")

    operations = {(t, m) for t, item in doc["paths"].items() for m in item if m in HTTP_METHODS}
    assert operations == SPEC_OPERATIONS, (
        f"missing {sorted(SPEC_OPERATIONS - operations)}, extra {sorted(operations - SPEC_OPERATIONS)}")

    op_ids = []
    for template, item in doc["paths"].items():
        in_template = set(re.findall(r"\{([^}]+)\}", template))
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            op_ids.append(op["operationId"])
            params = shared + op.get("parameters", [])
            path_params = [p["name"] for p in params if p["in"] == "path"]
            assert sorted(path_params) == sorted(in_template), (template, method, path_params)
            assert all(p["required"] for p in params if p["in"] == "path")
            assert op["responses"], (template, method)
            for status in op["responses"]:
                assert re.fullmatch(r"[1-5][0-9][0-9]", status), (template, method, status)
                code = int(status)
                ptr, resp = api.resolve(pointer("paths", template, method, "responses", status))
                if code >= 400 and template != "/health/ready":
                    schema = resp["content"]["application/json"]["schema"]
                    assert {"$ref": "#/components/schemas/Error"} in schema.get("allOf", []) \
                        or schema == {"$ref": "#/components/schemas/Error"}, \
                        f"{method.upper()} {template} {status} is not an Error"
    assert len(op_ids) == len(set(op_ids)), "operationIds repeat"

    for path, node in walk(doc):
        if "$ref" in node:
            assert node["$ref"].startswith("#/"), (path, node["$ref"])
            api.resolve(node["$ref"][1:])  # raises if it does not resolve
    for name, schema in doc["components"]["schemas"].items():
        Validator.check_schema(schema)
        for path, node in walk(schema):
            if node.get("type") == "integer" or "integer" in (node.get("type") or []):
                assert node.get("format") in ("int32", "int64"), (name, path)

    for where, schema in response_schemas(api):
        Validator.check_schema(schema)
        for path, node in walk(schema):
            if "properties" in node and node.get("type") == "object":
                assert node.get("additionalProperties") is False, (where, path)
                assert sorted(node["required"]) == sorted(node["properties"]), (where, path)

    messages = doc["paths"]["/api/v1/topics/{name}/partitions/{partition}/messages"]["get"]
    limit = next(p for p in messages["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 500, 50)
    stream = doc["paths"]["/api/v1/stream"]["get"]
    interval = next(p for p in stream["parameters"] if p["name"] == "interval_ms")["schema"]
    assert (interval["minimum"], interval["maximum"], interval["default"]) == (100, 60000, 1000)

    def ref(name):
        return {"$ref": "#/components/responses/" + name}

    for template, method in sorted(operations):
        responses = doc["paths"][template][method]["responses"]
        where = f"{method.upper()} {template}"
        assert responses.get("403") == ref("Forbidden"), where
        assert responses.get("415") == (ref("UnsupportedMediaType")
                                        if (template, method) in BODY_OPERATIONS else None), where
        assert responses.get("429") == (ref("TooManyRequests")
                                        if template == "/api/v1/stream" else None), where
    codes = set(doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"])
    for name, response in doc["components"]["responses"].items():
        narrowing = response["content"]["application/json"]["schema"]["allOf"][1]
        code = narrowing["properties"]["code"]
        assert set(code.get("enum", [code.get("const")])) <= codes, name
    for name, code in (("Forbidden", "forbidden"), ("UnsupportedMediaType",
                                                    "unsupported_media_type"),
                       ("TooManyRequests", "too_many_requests")):
        schema = doc["components"]["responses"][name]["content"]["application/json"]["schema"]
        assert schema["allOf"][1]["properties"]["code"] == {"const": code}, name


# -- health ----------------------------------------------------------------------------------

def test_health_is_live_and_becomes_ready_after_start(broker):
    """/health/live answers {"live": true}; /health/ready turns 200 with every part true once
    the broker started (the coordinators load just after the Kafka listener opens)."""
    api = AdminApi(broker)
    r = api.get("/health/live")
    assert (r.status, r.body) == (200, {"live": True})

    def ready_reply():
        r = api.get("/health/ready")
        return r if r.status == 200 else None

    ready = wait_until("/health/ready to answer 200", ready_reply)
    assert ready.body == {"ready": True, "logs_recovered": True, "log_directory_online": True,
                          "groups_loaded": True, "transactions_loaded": True, "reasons": []}


def test_ready_is_503_while_logs_recover(tmp_path):
    """While a broker recovers a thousand partition logs after a SIGKILL, its admin listener
    already answers: /health/live 200, /health/ready 503 with `ready` and `logs_recovered`
    false, and the API 503 `not_ready`; once /health/ready says the logs are recovered the API
    answers 200, and /health/ready ends at 200."""
    b = make_broker(tmp_path)
    b.start()
    try:
        api = AdminApi(b)
        create_topic(api, "many", partitions=1000)
        b.kill()  # an unclean stop: the restart recovers every log
        failure = []

        def start():
            try:
                b.start()
            except BaseException as e:  # pytest.fail raises a BaseException
                failure.append(e)

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        seen = []  # (route, reply) in the order the answers came
        deadline = time.monotonic() + WAIT_S
        while not seen or seen[-1][0] != "ready" or seen[-1][1].status != 200:
            assert time.monotonic() < deadline, f"not ready after {WAIT_S}s: {seen[-3:]}"
            for route, template in (("topics", "/api/v1/topics"), ("live", "/health/live"),
                                    ("ready", "/health/ready")):
                try:
                    seen.append((route, api.get(template)))
                except (ConnectionRefusedError, ConnectionResetError):
                    break  # not bound yet
        starter.join(WAIT_S)
        assert not failure, failure

        assert all(r.status == 200 and r.body == {"live": True} for route, r in seen
                   if route == "live")
        readies = [r for route, r in seen if route == "ready"]
        assert any(r.status == 503 and r.body["ready"] is False
                   and r.body["logs_recovered"] is False for r in readies), \
            f"never saw /health/ready 503 during recovery: {readies[:3]}"
        assert all((r.status == 200) == r.body["ready"] for r in readies)
        assert readies[-1].body == {"ready": True, "logs_recovered": True,
                                    "log_directory_online": True, "groups_loaded": True,
                                    "transactions_loaded": True, "reasons": []}
        topics = [r for route, r in seen if route == "topics"]
        assert any(r.status == 503 and r.body["code"] == "not_ready" for r in topics), \
            f"never saw /api/v1/topics 503 during recovery: {topics[:3]}"
        recovered_at = next(i for i, (route, r) in enumerate(seen)
                            if route == "ready" and r.body["logs_recovered"])
        assert all(r.status == 200 for route, r in seen[recovered_at:] if route == "topics")
        t = api.get("/api/v1/topics/{name}", name="many")
        assert t.status == 200 and t.body["partition_count"] == 1000
    finally:
        try:
            b.stop()
        finally:
            b.kill()


# -- cluster and brokers ---------------------------------------------------------------------

@pytest.fixture
def node3_broker(tmp_path):
    yield from running_broker(tmp_path, ["--node-id", "3"])


def test_cluster_and_brokers_agree_with_kafka_metadata(node3_broker):
    """/api/v1/cluster, /api/v1/brokers and /api/v1/brokers/{node_id} show the node id, cluster
    id, controller and Kafka address that confluent-kafka's metadata reports, plus the admin
    address, version, data directory and a start time consistent with the uptime; another node
    id is 404 and a non-numeric one 400."""
    broker = node3_broker
    api = AdminApi(broker)
    before_ms = int(time.time() * 1000)
    cluster = api.get("/api/v1/cluster")
    after_ms = int(time.time() * 1000)
    assert cluster.status == 200
    md = admin_client(broker).list_topics(timeout=WAIT_S)
    assert cluster.body["cluster_id"] == md.cluster_id
    assert cluster.body["controller_id"] == md.controller_id == 3
    assert {(b["node_id"], b["host"], b["port"]) for b in cluster.body["brokers"]} == \
        {(b.id, b.host, b.port) for b in md.brokers.values()}
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    (me,) = cluster.body["brokers"]
    assert me["admin_address"] == f"127.0.0.1:{broker.admin_port}"
    assert me["version"] == version
    assert me["data_dir"] == str(broker.data_dir)
    assert me["started_at_ms"] <= after_ms and me["uptime_ms"] >= 0
    # started_at + uptime is the moment the answer was made.
    assert before_ms - 1000 <= me["started_at_ms"] + me["uptime_ms"] <= after_ms + 1000

    def without_uptime(b):
        return {k: v for k, v in b.items() if k != "uptime_ms"}

    brokers = api.get("/api/v1/brokers")
    assert brokers.status == 200
    assert [without_uptime(b) for b in brokers.body] == [without_uptime(me)]
    one = api.get("/api/v1/brokers/{node_id}", node_id=3)
    assert one.status == 200 and without_uptime(one.body) == without_uptime(me)
    assert one.body["uptime_ms"] >= me["uptime_ms"]
    assert_error(api.get("/api/v1/brokers/{node_id}", node_id=0), 404, "not_found", "node 0")
    assert_error(api.get("/api/v1/brokers/{node_id}", node_id="three"), 400, "bad_request",
                 "node three")

    create_topic(api, "led", partitions=2)
    for p in api.get("/api/v1/topics/{name}/partitions", name="led").body:
        assert (p["leader"], p["replicas"], p["isr"]) == (3, [3], [3]), p


def test_every_node_of_a_cluster_describes_topics_from_the_metadata_and_its_own_replicas(
        tmp_path):
    """On a three-node cluster, a topic of 3 partitions with 2 replicas each (so every node
    holds some partitions and not others): every node's /api/v1/topics/{name} and its
    topic list give replication factor 2 and, per partition, the leader, replicas and ISR
    that confluent-kafka's metadata reports; `hosted` says whether the node is one of the
    replicas. A hosted partition's high watermark reaches the records produced with
    acks=all and its messages are those records, read from that node's replica (a
    follower's too); a partition the node does not hold has no offsets, size or segments
    (null), and its messages are 421 not_hosted."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        a = AdminClient({"bootstrap.servers": cluster.bootstrap})
        a.create_topics([NewTopic("spread", 3, 2)])["spread"].result(WAIT_S)
        produced = {p: [f"v{p}-{i}" for i in range(4 + p)] for p in range(3)}
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        for p, values in produced.items():
            for v in values:
                producer.produce("spread", v.encode(), partition=p)
        assert producer.flush(WAIT_S) == 0
        md = a.list_topics("spread", timeout=WAIT_S).topics["spread"].partitions
        placed = {p: (m.leader, m.replicas, m.isrs) for p, m in md.items()}
        assert {len(r) for _, r, _ in placed.values()} == {2}, placed
        for i, node in enumerate(cluster.nodes, start=1):
            api = AdminApi(node)
            ours = {p for p, (_, replicas, _) in placed.items() if i in replicas}
            assert ours and len(ours) < 3, (i, placed)

            def caught_up():
                d = api.get("/api/v1/topics/{name}", name="spread").body
                hws = {q["partition"]: q["high_watermark"] for q in d["partitions"]}
                return d if all(hws[p] == len(produced[p]) for p in ours) else None
            detail = wait_until(f"node {i}'s replicas to reach the produced records",
                                caught_up)
            assert detail["replication_factor"] == 2
            (listed,) = [t for t in api.get("/api/v1/topics").body if t["name"] == "spread"]
            assert listed["replication_factor"] == 2
            for q in detail["partitions"]:
                p = q["partition"]
                assert (q["leader"], q["replicas"], q["isr"]) == placed[p], (i, q)
                assert q["hosted"] == (p in ours), (i, q)
                figures = [q[k] for k in ("log_start_offset", "high_watermark",
                                          "last_stable_offset", "size_bytes", "segments")]
                if p in ours:
                    assert figures[:3] == [0, len(produced[p]), len(produced[p])], (i, q)
                    assert figures[3] > 0 and figures[4] >= 1, (i, q)
                    page = messages(api, "spread", p)
                    assert [m["value"]["text"] for m in page["messages"]] == produced[p]
                else:
                    assert figures == [None] * 5, (i, q)
                    assert_error(api.get("/api/v1/topics/{name}/partitions/{partition}/messages",
                                         name="spread", partition=p),
                                 421, "not_hosted", f"node {i}, partition {p}")
    finally:
        cluster.stop()


# -- topics ----------------------------------------------------------------------------------

def test_created_topics_are_listed_and_described_as_the_admin_client_describes_them(broker):
    """POST /api/v1/topics creates a topic with its partitions and configs (201 TopicDetail);
    the sorted list, the detail and confluent-kafka's describe_topics agree on every topic,
    whether made through the API or the Kafka protocol; defaults fill what POST leaves out;
    creating an existing topic is 409 topic_exists."""
    api = AdminApi(broker)
    created = api.post("/api/v1/topics", {
        "name": "orders", "partitions": 3, "replication_factor": 1,
        "configs": {"retention.ms": "3600000", "cleanup.policy": "compact"}})
    assert created.status == 201, created
    d = created.body
    assert (d["name"], d["partition_count"], d["replication_factor"], d["internal"]) == \
        ("orders", 3, 1, False)
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2]
    assert d["configs"]["retention.ms"] == "3600000"
    assert d["configs"]["cleanup.policy"] == d["cleanup_policy"] == "compact"
    assert (d["size_bytes"], d["messages"]) == (0, 0)

    minimal = api.post("/api/v1/topics", {"name": "alpha"})
    assert minimal.status == 201, minimal
    assert minimal.body["partition_count"] == 1  # num.partitions
    assert minimal.body["cleanup_policy"] == "delete"
    admin = admin_client(broker)
    admin.create_topics([NewTopic("by-kafka", 2, 1)])["by-kafka"].result(WAIT_S)

    listed = api.get("/api/v1/topics")
    assert listed.status == 200
    names = [t["name"] for t in listed.body]
    assert names == sorted(names) == ["alpha", "by-kafka", "orders"]
    described = admin.describe_topics(TopicCollection(names))
    for summary in listed.body:
        name = summary["name"]
        detail = api.get("/api/v1/topics/{name}", name=name)
        assert detail.status == 200
        assert summary_fields(detail.body) == summary, name
        kafka = described[name].result(WAIT_S)
        assert summary["topic_id"] == str(uuid_of(kafka.topic_id)), name
        assert summary["internal"] == kafka.is_internal
        assert summary["partition_count"] == len(kafka.partitions)
        assert [(p["partition"], p["leader"], p["replicas"], p["isr"])
                for p in detail.body["partitions"]] == \
            [(p.id, p.leader.id, [r.id for r in p.replicas], [r.id for r in p.isr])
             for p in kafka.partitions], name
        assert summary["replication_factor"] == len(kafka.partitions[0].replicas)

    for name in ("orders", "by-kafka"):
        assert_error(api.post("/api/v1/topics", {"name": name, "partitions": 1}), 409,
                     "topic_exists", f"creating {name} again")
    # The refused creation changed nothing.
    again = api.get("/api/v1/topics/{name}", name="orders")
    assert again.body["topic_id"] == d["topic_id"] and again.body["partition_count"] == 3


def describe_configs(broker, topic):
    admin = admin_client(broker)  # kept alive until the answer is in
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return future.result(WAIT_S)


def assert_configs_agree(api, broker, topic, listed):
    """The config list agrees with confluent-kafka's describe_configs (names, values, and
    `topic` exactly for its DYNAMIC_TOPIC_CONFIG entries) and with TopicDetail.configs."""
    kafka = describe_configs(broker, topic)
    assert sorted(c["name"] for c in listed) == sorted(kafka)
    for c in listed:
        entry = kafka[c["name"]]
        assert c["value"] == entry.value, (c, entry)
        expected = "topic" if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value else "default"
        assert c["source"] == expected, (c, entry.source)
    detail = api.get("/api/v1/topics/{name}", name=topic).body
    assert detail["configs"] == {c["name"]: c["value"] for c in listed}


def test_topic_configs_get_and_patch_agree_with_describe_configs(broker):
    """GET /configs lists every topic config as describe_configs does; PATCH sets a value
    (source `topic`) and null resets one to its default (source `default`), answering the
    list GET then gives; refused patches (unknown key, bad value, wrong JSON) change nothing,
    even a patch whose other keys are fine."""
    api = AdminApi(broker)
    create_topic(api, "tuned", configs={"retention.ms": "3600000"})
    got = api.get("/api/v1/topics/{name}/configs", name="tuned")
    assert got.status == 200
    by_name = {c["name"]: c for c in got.body}
    assert by_name["retention.ms"] == {"name": "retention.ms", "value": "3600000",
                                       "source": "topic"}
    assert by_name["segment.bytes"]["source"] == "default"
    assert_configs_agree(api, broker, "tuned", got.body)

    patched = api.patch("/api/v1/topics/{name}/configs",
                        {"segment.bytes": "1048576", "retention.ms": None}, name="tuned")
    assert patched.status == 200, patched
    by_name = {c["name"]: c for c in patched.body}
    assert by_name["segment.bytes"] == {"name": "segment.bytes", "value": "1048576",
                                        "source": "topic"}
    assert by_name["retention.ms"] == {"name": "retention.ms", "value": "604800000",
                                       "source": "default"}
    assert api.get("/api/v1/topics/{name}/configs", name="tuned").body == patched.body
    assert_configs_agree(api, broker, "tuned", patched.body)

    refusals = [
        ("unknown key", {"no.such.config": "1"}, 400, "invalid_config"),
        ("not an integer", {"retention.ms": "soon"}, 400, "invalid_config"),
        ("below the minimum", {"segment.bytes": "3"}, 400, "invalid_config"),
        ("not one of the values", {"message.timestamp.type": "Whenever"}, 400,
         "invalid_config"),
        ("good key with an unknown one", {"segment.ms": "1000", "no.such.config": "1"}, 400,
         "invalid_config"),
        ("good key with a bad value", {"segment.ms": "1000", "cleanup.policy": "shred"}, 400,
         "invalid_config"),
        ("a number, not a string", {"retention.ms": 5}, 400, "bad_request"),
        ("an array, not an object", ["retention.ms"], 400, "bad_request"),
    ]
    for what, body, status, code in refusals:
        assert_error(api.patch("/api/v1/topics/{name}/configs", body, name="tuned"), status,
                     code, what)
    r = api.call("PATCH", "/api/v1/topics/{name}/configs", {"name": "tuned"},
                 raw_body=b'{"retention.ms": ')
    assert_error(r, 400, "bad_request", "malformed JSON")
    assert api.get("/api/v1/topics/{name}/configs", name="tuned").body == patched.body
    assert_error(api.patch("/api/v1/topics/{name}/configs", {"retention.ms": "1"},
                           name="missing"), 404, "not_found", "unknown topic")


def test_deleted_topic_is_gone_everywhere(broker):
    """DELETE /api/v1/topics/{name} answers {"deleted": name}; afterwards every route of the
    topic is 404, the Kafka metadata no longer has it, and a second delete is 404."""
    api = AdminApi(broker)
    create_topic(api, "doomed", partitions=2)
    produce_values(broker, "doomed", 0, [b"a", b"b"])
    r = api.delete("/api/v1/topics/{name}", name="doomed")
    assert (r.status, r.body) == (200, {"deleted": "doomed"})
    for template in ("/api/v1/topics/{name}", "/api/v1/topics/{name}/configs",
                     "/api/v1/topics/{name}/partitions"):
        assert_error(api.get(template, name="doomed"), 404, "not_found", template)
    assert_error(api.get("/api/v1/topics/{name}/partitions/{partition}/messages",
                         name="doomed", partition=0), 404, "not_found", "messages")
    assert_error(api.delete("/api/v1/topics/{name}", name="doomed"), 404, "not_found",
                 "second delete")
    assert "doomed" not in [t["name"] for t in api.get("/api/v1/topics").body]
    assert "doomed" not in admin_client(broker).list_topics(timeout=WAIT_S).topics


# -- partitions ------------------------------------------------------------------------------

def test_partition_offsets_and_sizes_move_with_produced_records(broker):
    """After producing 25 records to partition 0 and 7 to partition 1 of a three-partition
    topic, /partitions shows high watermarks 25, 7, 0 (as the consumer's watermarks say), last
    stable offsets equal to them, sizes equal to the segment files on disk, and the topic's
    summary sums them."""
    api = AdminApi(broker)
    create_topic(api, "moving", partitions=3)
    before = api.get("/api/v1/topics/{name}/partitions", name="moving")
    assert before.status == 200
    assert [(p["partition"], p["log_start_offset"], p["high_watermark"], p["size_bytes"])
            for p in before.body] == [(0, 0, 0, 0), (1, 0, 0, 0), (2, 0, 0, 0)]
    produce_values(broker, "moving", 0, [f"zero-{i}".encode() for i in range(25)])
    produce_values(broker, "moving", 1, [f"one-{i}".encode() for i in range(7)])
    after = api.get("/api/v1/topics/{name}/partitions", name="moving").body
    assert [p["high_watermark"] for p in after] == [25, 7, 0]
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    try:
        for p in after:
            low, high = c.get_watermark_offsets(TopicPartition("moving", p["partition"]),
                                                timeout=WAIT_S)
            assert (p["log_start_offset"], p["high_watermark"]) == (low, high), p
            assert p["last_stable_offset"] == p["high_watermark"], p
            assert p["size_bytes"] == log_bytes_on_disk(broker, "moving", p["partition"]), p
            assert p["segments"] >= 1, p
    finally:
        c.close()
    assert after[0]["size_bytes"] > 0 and after[1]["size_bytes"] > 0
    assert after[2]["size_bytes"] == 0
    detail = api.get("/api/v1/topics/{name}", name="moving").body
    assert detail["partitions"] == after
    assert detail["messages"] == 32
    assert detail["size_bytes"] == sum(p["size_bytes"] for p in after)


# -- messages --------------------------------------------------------------------------------

def messages(api, topic, partition=0, **query):
    r = api.get("/api/v1/topics/{name}/partitions/{partition}/messages", query=query or None,
                name=topic, partition=partition)
    assert r.status == 200, r
    return r.body


def test_messages_show_keys_values_headers_and_timestamps_as_produced(broker):
    """Records produced by confluent-kafka come back with their offsets, create-time
    timestamps, null or present keys and values, headers in order (null values, repeated
    keys), non-UTF-8 bytes as text null plus hex, and values over 4096 bytes cut and flagged;
    a LogAppendTime topic shows broker timestamps of type log_append_time."""
    api = AdminApi(broker)
    create_topic(api, "known")
    records = [
        (b"k0", b"hello", [("h1", b"v1")], BASE_TS),
        (None, b"no key", None, BASE_TS + 10),
        (b"k2", None, [("empty", b""), ("none", None)], BASE_TS + 20),
        (b"\x00\xff", b"\xff\xfe\x00binary", [("bin", b"\xc3\x28")], BASE_TS + 30),
        (b"k4", "h\u00e9llo w\u00f6rld \u2713".encode(), [("dup", b"1"), ("dup", b"2")],
         BASE_TS + 40),
        (b"k5", b"x" * 5000, None, BASE_TS + 50),
        (b"", b"", None, BASE_TS + 60),
    ]
    offsets = produce(broker, "known", records)
    page = messages(api, "known")
    assert (page["topic"], page["partition"], page["log_start_offset"], page["high_watermark"],
            page["next_offset"], page["skipped"]) == ("known", 0, 0, len(records), len(records), [])
    expected = [{"offset": o, "timestamp": ts, "timestamp_type": "create_time",
                 "key": data_of(k), "value": data_of(v),
                 "headers": [{"key": hk, "value": data_of(hv)} for hk, hv in (h or [])]}
                for o, (k, v, h, ts) in zip(offsets, records)]
    for got, want in zip(page["messages"], expected):
        assert got == want
    assert len(page["messages"]) == len(expected)
    binary = page["messages"][3]["value"]
    assert (binary["text"], binary["hex"]) == (None, "fffe0062696e617279")
    big = page["messages"][5]["value"]
    assert (big["size"], big["truncated"], len(big["hex"])) == (5000, True, 2 * SHOWN_BYTES)

    create_topic(api, "stamped", configs={"message.timestamp.type": "LogAppendTime"})
    before_ms = int(time.time() * 1000)
    produce(broker, "stamped", [(b"k", b"v", None, BASE_TS)])
    after_ms = int(time.time() * 1000)
    (m,) = messages(api, "stamped")["messages"]
    assert m["timestamp_type"] == "log_append_time"
    assert before_ms - 1000 <= m["timestamp"] <= after_ms + 1000, m


def test_messages_start_at_an_offset_or_timestamp_and_respect_the_limit(broker):
    """Without a start the page begins at the log start and holds 50 records; `limit` caps
    it; `offset` starts there; `timestamp` starts at the first record stamped at or after it;
    next_offset follows the last record; after DeleteRecords moved the log start to 30, an
    older offset or timestamp is clamped up to it."""
    api = AdminApi(broker)
    create_topic(api, "sixty")
    produce(broker, "sixty", [(None, f"v{i}".encode(), None, BASE_TS + 1000 * i)
                              for i in range(60)])

    def offsets(page):
        return [m["offset"] for m in page["messages"]]

    page = messages(api, "sixty")
    assert (offsets(page), page["next_offset"]) == (list(range(50)), 50)
    page = messages(api, "sixty", limit=500)
    assert (offsets(page), page["next_offset"]) == (list(range(60)), 60)
    page = messages(api, "sixty", limit=1)
    assert (offsets(page), page["next_offset"]) == ([0], 1)
    page = messages(api, "sixty", offset=10, limit=5)
    assert (offsets(page), page["next_offset"]) == ([10, 11, 12, 13, 14], 15)
    page = messages(api, "sixty", offset=55)
    assert (offsets(page), page["next_offset"]) == ([55, 56, 57, 58, 59], 60)
    assert offsets(messages(api, "sixty", offset=60)) == []
    assert offsets(messages(api, "sixty", offset=1000)) == []
    assert offsets(messages(api, "sixty", timestamp=BASE_TS + 20_000, limit=3)) == [20, 21, 22]
    assert offsets(messages(api, "sixty", timestamp=BASE_TS + 20_001, limit=3)) == [21, 22, 23]
    assert offsets(messages(api, "sixty", timestamp=0, limit=2)) == [0, 1]
    assert offsets(messages(api, "sixty", timestamp=BASE_TS + 60_000)) == []

    admin = admin_client(broker)
    (future,) = admin.delete_records([TopicPartition("sixty", 0, 30)]).values()
    future.result(WAIT_S)
    page = messages(api, "sixty", limit=2)
    assert (page["log_start_offset"], offsets(page)) == (30, [30, 31])
    assert offsets(messages(api, "sixty", offset=5, limit=2)) == [30, 31]
    assert offsets(messages(api, "sixty", timestamp=BASE_TS, limit=2)) == [30, 31]
    (p,) = api.get("/api/v1/topics/{name}/partitions", name="sixty").body
    assert (p["log_start_offset"], p["high_watermark"]) == (30, 60)
    assert api.get("/api/v1/topics/{name}", name="sixty").body["messages"] == 30


def test_messages_skip_transaction_markers_and_show_aborted_records(broker):
    """A committed transaction's records are listed without its commit marker, and an
    aborted one's records are listed (read_uncommitted) without its abort marker, and no
    marker counts as a skipped batch: the listed offsets are exactly those the producer was
    acknowledged, and the high watermark and last stable offset are past both markers."""
    api = AdminApi(broker)
    create_topic(api, "txn")
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "admin-api-txn",
                  "linger.ms": 5})
    p.init_transactions(WAIT_S)
    acked = {}

    def delivered(err, msg):
        assert err is None, err
        acked[msg.value()] = msg.offset()

    p.begin_transaction()
    for v in (b"c0", b"c1", b"c2"):
        p.produce("txn", value=v, partition=0, on_delivery=delivered)
    p.commit_transaction(WAIT_S)
    p.begin_transaction()
    p.produce("txn", value=b"a0", partition=0, on_delivery=delivered)
    assert p.flush(WAIT_S) == 0
    p.abort_transaction(WAIT_S)
    assert len(acked) == 4

    page = messages(api, "txn")
    listed = [(m["offset"], bytes.fromhex(m["value"]["hex"])) for m in page["messages"]]
    assert listed == sorted((o, v) for v, o in acked.items())
    assert page["high_watermark"] == 6, "four records and two markers"
    assert (page["next_offset"], page["skipped"]) == (6, [])
    # Starting at the commit marker skips it.
    after_commit = messages(api, "txn", offset=acked[b"c2"] + 1)
    assert [m["offset"] for m in after_commit["messages"]] == [acked[b"a0"]]
    assert after_commit["skipped"] == []
    (part,) = api.get("/api/v1/topics/{name}/partitions", name="txn").body
    assert part["last_stable_offset"] == part["high_watermark"] == 6


def test_messages_list_an_undecodable_batch_as_skipped_and_go_on_after_it(broker):
    """A gzip batch of three records whose payload is not gzip (the broker stores it as sent:
    its CRC is right and produce does not decompress) lies between two good records at
    offsets 0 and 4. The page lists both good records and, in `skipped`, the bad batch as
    offsets 1 to 3 with an error; a page starting at the bad batch skips it and goes on to
    offset 4; a page that stops at `limit` before the bad batch does not report it, and the
    next page does; a page starting after it reports nothing skipped."""
    api = AdminApi(broker)
    create_topic(api, "mixed")
    (before,) = produce(broker, "mixed", [(b"k", b"before", None, BASE_TS)])
    bad = produce_raw(broker, "mixed", 0, undecodable_batch(3, BASE_TS + 1))
    (after,) = produce(broker, "mixed", [(b"k", b"after", None, BASE_TS + 2)])
    assert (before, bad, after) == (0, 1, 4)

    def shown(page):
        return ([(m["offset"], m["value"]["text"]) for m in page["messages"]],
                [(s["base_offset"], s["last_offset"]) for s in page["skipped"]],
                page["next_offset"])

    page = messages(api, "mixed")
    assert shown(page) == ([(0, "before"), (4, "after")], [(1, 3)], 5)
    assert page["skipped"][0]["error"].strip(), page["skipped"]
    assert page["high_watermark"] == 5
    assert shown(messages(api, "mixed", offset=1)) == ([(4, "after")], [(1, 3)], 5)
    assert shown(messages(api, "mixed", offset=4)) == ([(4, "after")], [], 5)
    assert shown(messages(api, "mixed", limit=1)) == ([(0, "before")], [], 1)
    assert shown(messages(api, "mixed", offset=1, limit=1)) == ([(4, "after")], [(1, 3)], 5)


def test_a_page_ends_early_once_it_has_decompressed_64_mib(broker):
    """200 gzip records of 600 KiB each (117 MiB decompressed, little on disk), read with
    limit=500: the first page stops before the high watermark with fewer records than
    produced, holding at most 64 MiB of values (600 KiB does not divide 64 MiB, so a page
    that read one batch past the budget would show), and its next_offset is the offset after
    its last record; following next_offset, the pages return every record exactly once, in
    order, as produced, with nothing skipped."""
    api = AdminApi(broker)
    create_topic(api, "inflated")
    count, size = 200, 600 << 10
    values = [bytes([i % 251]) * size for i in range(count)]
    produce(broker, "inflated", [(None, v, None, BASE_TS + i) for i, v in enumerate(values)],
            conf={"compression.type": "gzip"})
    (part,) = api.get("/api/v1/topics/{name}/partitions", name="inflated").body
    assert part["size_bytes"] < count * size // 10, "the records were not stored compressed"

    first = messages(api, "inflated", limit=500)
    got = first["messages"]
    assert 0 < len(got) < count, len(got)
    assert sum(m["value"]["size"] for m in got) <= PAGE_DECOMPRESSED_BYTES_MAX
    assert first["next_offset"] == got[-1]["offset"] + 1 < first["high_watermark"] == count
    assert first["skipped"] == []
    page = first
    for _ in range(count):
        if page["next_offset"] >= page["high_watermark"]:
            break
        page = messages(api, "inflated", offset=page["next_offset"], limit=500)
        assert page["messages"] and page["skipped"] == [], shown_briefly(page)
        got += page["messages"]
    assert [m["offset"] for m in got] == list(range(count))
    for m in got:
        v = values[m["offset"]]
        assert m["value"] == data_of(v), m["offset"]


def shown_briefly(page):
    return {k: v for k, v in page.items() if k != "messages"} | {"messages": len(page["messages"])}


# -- groups ----------------------------------------------------------------------------------

@pytest.fixture
def quick_group_broker(tmp_path):
    # The first rebalance of an empty group would otherwise wait three seconds for more members.
    yield from running_broker(tmp_path, ["--set", "group.initial.rebalance.delay.ms=0"])


def group_lag(api, group):
    r = api.get("/api/v1/groups/{group_id}", group_id=group)
    assert r.status == 200, r
    return r.body


def test_groups_show_members_assignments_committed_offsets_and_lag(quick_group_broker):
    """While a confluent-kafka consumer of group G is alive, /api/v1/groups and
    /api/v1/groups/G show it as describe_consumer_groups does (member id, client id, host,
    assignment as one entry per topic with its partitions in assignment order, assignor,
    Stable), with the committed offsets and metadata that
    list_consumer_group_offsets reports and lag = end - committed, which grows as records
    arrive; after the consumer leaves the group is Empty and keeps its offsets. A group that
    only commits offsets is listed with no protocol type."""
    broker = quick_group_broker
    api = AdminApi(broker)
    create_topic(api, "events", partitions=2)
    produce_values(broker, "events", 0, [b"e"] * 10)
    produce_values(broker, "events", 1, [b"e"] * 4)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "G",
                         "client.id": "contract-consumer", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "partition.assignment.strategy": "roundrobin"})
    try:
        consumer.subscribe(["events"])
        got = 0
        deadline = time.monotonic() + WAIT_S
        while got < 14:
            assert time.monotonic() < deadline, f"consumed {got} of 14 in {WAIT_S}s"
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got += 1
        consumer.commit(offsets=[TopicPartition("events", 0, 7), TopicPartition("events", 1, 4)],
                        asynchronous=False)
        commit_without_joining(broker, "offsets-only", "events", 0, 2, metadata="two")

        listed = api.get("/api/v1/groups")
        assert listed.status == 200
        assert listed.body == [
            {"group_id": "G", "state": "Stable", "protocol_type": "consumer", "members": 1,
             "lag": 3},
            {"group_id": "offsets-only", "state": "Empty", "protocol_type": "", "members": 0,
             "lag": 8},
        ]
        admin = admin_client(broker)
        (offsets_future,) = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions("G")]).values()
        committed = {tp.partition: (tp.offset, tp.metadata or "")
                     for tp in offsets_future.result(WAIT_S).topic_partitions}
        g = group_lag(api, "G")
        assert (g["group_id"], g["state"], g["protocol_type"], g["protocol"], g["lag"]) == \
            ("G", "Stable", "consumer", "roundrobin", 3)
        assert g["offsets"] == [
            {"topic": "events", "partition": 0, "committed_offset": 7, "log_end_offset": 10,
             "lag": 3, "metadata": ""},
            {"topic": "events", "partition": 1, "committed_offset": 4, "log_end_offset": 4,
             "lag": 0, "metadata": ""},
        ]
        assert committed == {o["partition"]: (o["committed_offset"], o["metadata"])
                             for o in g["offsets"]}
        (member,) = g["members"]
        kafka = admin.describe_consumer_groups(["G"])["G"].result(WAIT_S)
        assert kafka.state == ConsumerGroupState.STABLE
        assert kafka.partition_assignor == g["protocol"]
        (km,) = kafka.members
        assert (member["member_id"], member["client_id"], member["client_host"],
                member["group_instance_id"]) == (km.member_id, km.client_id, km.host, None)
        assert member["client_id"] == "contract-consumer"
        only = group_lag(api, "offsets-only")
        assert (only["state"], only["protocol_type"], only["protocol"], only["members"]) == \
            ("Empty", "", "", [])
        assert only["offsets"] == [{"topic": "events", "partition": 0, "committed_offset": 2,
                                    "log_end_offset": 10, "lag": 8, "metadata": "two"}]
        assert "127.0.0.1" in member["client_host"]
        (assigned,) = member["assignments"]
        assert (assigned["topic"], sorted(assigned["partitions"])) == ("events", [0, 1])
        assert [(assigned["topic"], p) for p in assigned["partitions"]] == \
            [(tp.topic, tp.partition) for tp in km.assignment.topic_partitions]

        produce_values(broker, "events", 1, [b"late"] * 5)
        g = group_lag(api, "G")
        assert [o["lag"] for o in g["offsets"]] == [3, 5] and g["lag"] == 8
        stats = api.get("/api/v1/stats").body
        assert {"group_id": "G", "lag": 8} in stats["groups"]
        listed = api.get("/api/v1/topics").body
        assert [t["name"] for t in listed] == sorted(t["name"] for t in listed)
        internal = {t["name"]: t["internal"] for t in listed}
        assert internal == {"__consumer_offsets": True, "events": False}, internal
    finally:
        consumer.close()  # leaves the group
    g = group_lag(api, "G")
    assert (g["state"], g["members"], g["lag"]) == ("Empty", [], 8)
    assert [o["committed_offset"] for o in g["offsets"]] == [7, 4]
    assert_error(api.get("/api/v1/groups/{group_id}", group_id="no-such-group"), 404,
                 "not_found", "unknown group")


# -- stats and stream ------------------------------------------------------------------------

def test_stats_counters_increase_with_produced_and_fetched_records(broker):
    """/api/v1/stats counts 20 produced records of 100 bytes in messages_in and bytes_in of
    the broker and of the topic, then at least those records and bytes in messages_out and
    bytes_out once a consumer read them; time and uptime advance; the topic's size is its
    partitions' size; an open client connection is counted."""
    api = AdminApi(broker)
    create_topic(api, "metered")
    s0 = api.get("/api/v1/stats").body
    produce_values(broker, "metered", 0, [bytes([65 + i]) * 100 for i in range(20)])
    s1 = api.get("/api/v1/stats").body
    t1 = {t["name"]: t for t in s1["topics"]}["metered"]
    assert (t1["messages_in"], t1["messages_out"], t1["bytes_out"]) == (20, 0, 0), t1
    assert t1["bytes_in"] >= 2000, t1
    assert s1["messages_in"] - s0["messages_in"] >= 20
    assert s1["bytes_in"] - s0["bytes_in"] >= 2000
    (p,) = api.get("/api/v1/topics/{name}/partitions", name="metered").body
    assert t1["size_bytes"] == p["size_bytes"] > 0

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "stats-reader"})
    try:
        c.get_watermark_offsets(TopicPartition("metered", 0), timeout=WAIT_S)  # connects
        assert api.get("/api/v1/stats").body["connections"] >= 1
    finally:
        c.close()
    assert consume_all(broker, "metered", 1) == 20
    s2 = api.get("/api/v1/stats").body
    t2 = {t["name"]: t for t in s2["topics"]}["metered"]
    assert t2["messages_out"] >= 20 and t2["bytes_out"] >= 2000, t2
    assert t2["messages_in"] == 20
    assert s2["messages_out"] - s1["messages_out"] >= 20
    assert s2["bytes_out"] - s1["bytes_out"] >= 2000
    assert s0["time_ms"] <= s1["time_ms"] <= s2["time_ms"]
    assert s0["uptime_ms"] <= s1["uptime_ms"] <= s2["uptime_ms"]


def test_stream_sends_stats_events_at_once_and_then_every_interval(broker):
    """/api/v1/stream?interval_ms=100 is text/event-stream whose events are named `stats` and
    carry Stats JSON with advancing time; with interval_ms=60000 the first event still
    arrives at once (within a 10 s socket timeout)."""
    api = AdminApi(broker)
    _, events = api.stream({"interval_ms": 100}, count=3, timeout=10)
    assert [name for name, _ in events] == ["stats"] * 3
    times = [body["time_ms"] for _, body in events]
    assert times == sorted(times) and times[-1] > times[0], times
    started = time.monotonic()
    _, (first,) = api.stream({"interval_ms": 60000}, count=1, timeout=10)
    assert first[0] == "stats" and time.monotonic() - started < 10


# -- metrics and console ---------------------------------------------------------------------

def test_metrics_are_openmetrics_text_and_the_console_is_one_self_contained_page(broker):
    """/metrics is OpenMetrics text ending in `# EOF`; / is an HTML page that loads nothing
    from another host."""
    api = AdminApi(broker)
    m = api.get("/metrics")
    assert m.status == 200
    assert m.body.endswith("# EOF\n"), m.body[-200:]
    page = api.get("/")
    assert page.status == 200 and "<html" in page.body.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.body, re.I), \
        "the console loads something from elsewhere"


@pytest.fixture
def no_metrics_broker(tmp_path):
    yield from running_broker(tmp_path, ["--set", "metrics.enabled=false"])


def test_metrics_are_404_when_disabled(no_metrics_broker):
    """With metrics.enabled=false, /metrics is 404 not_found as JSON."""
    api = AdminApi(no_metrics_broker)
    assert_error(api.get("/metrics"), 404, "not_found", "/metrics with metrics off")


# -- bad input -------------------------------------------------------------------------------

CREATE_REFUSALS = [
    # (what, body: JSON-able or raw bytes, status, code)
    ("malformed JSON", b'{"name": "x",', 400, "bad_request"),
    ("empty body", b"", 400, "bad_request"),
    ("an array, not an object", [], 400, "bad_request"),
    ("name is a number", {"name": 5}, 400, "bad_request"),
    ("partitions is a string", {"name": "x", "partitions": "3"}, 400, "bad_request"),
    ("partitions is a fraction", {"name": "x", "partitions": 1.5}, 400, "bad_request"),
    ("configs is a list", {"name": "x", "configs": ["retention.ms"]}, 400, "bad_request"),
    ("a config value is a number", {"name": "x", "configs": {"retention.ms": 5}}, 400,
     "bad_request"),
    ("missing name", {"partitions": 1}, 400, "bad_request"),
    ("unknown field", {"name": "x", "partitionz": 3}, 400, "bad_request"),
    ("empty name", {"name": ""}, 400, "invalid_topic"),
    ("name with a slash", {"name": "a/b"}, 400, "invalid_topic"),
    ("name with a space", {"name": "a b"}, 400, "invalid_topic"),
    ("name ..", {"name": ".."}, 400, "invalid_topic"),
    ("name of 250 characters", {"name": "n" * 250}, 400, "invalid_topic"),
    ("an internal topic's name", {"name": "__consumer_offsets"}, 400, "invalid_topic"),
    ("zero partitions", {"name": "x", "partitions": 0}, 400, "bad_request"),
    ("negative partitions", {"name": "x", "partitions": -1}, 400, "bad_request"),
    ("10001 partitions", {"name": "x", "partitions": 10001}, 400, "bad_request"),
    ("2^31 partitions", {"name": "x", "partitions": 2**31}, 400, "bad_request"),
    ("2^70 partitions", {"name": "x", "partitions": 2**70}, 400, "bad_request"),
    ("replication factor 3", {"name": "x", "replication_factor": 3}, 400, "bad_request"),
    ("replication factor 0", {"name": "x", "replication_factor": 0}, 400, "bad_request"),
    ("unknown config", {"name": "x", "configs": {"no.such.config": "1"}}, 400,
     "invalid_config"),
    ("config value not an integer", {"name": "x", "configs": {"retention.ms": "soon"}}, 400,
     "invalid_config"),
    ("config value not allowed", {"name": "x", "configs": {"cleanup.policy": "shred"}}, 400,
     "invalid_config"),
]


def test_refused_topic_creations_get_a_4xx_json_error_with_a_specific_code(broker):
    """Each bad POST /api/v1/topics (malformed or mistyped JSON, missing or unknown fields,
    bad names, partition counts and replication factors out of range, unknown configs and bad
    config values) is refused with its 4xx status and code, and none creates a topic."""
    api = AdminApi(broker)
    for what, body, status, code in CREATE_REFUSALS:
        if isinstance(body, bytes):
            r = api.call("POST", "/api/v1/topics", raw_body=body)
        else:
            r = api.call("POST", "/api/v1/topics", json_body=body)
        assert_error(r, status, code, what)
    assert api.get("/api/v1/topics").body == []


def test_oversized_request_bodies_are_refused_as_json(broker):
    """A 1 MiB body to POST /api/v1/topics or PATCH /configs is refused with 413 (or 400) and
    a JSON error, and nothing changes."""
    api = AdminApi(broker)
    create_topic(api, "small")
    before = api.get("/api/v1/topics/{name}/configs", name="small").body
    huge = json.dumps({"name": "big", "configs": {"retention.ms": "1" + "0" * (1 << 20)}})
    for method, template in (("POST", "/api/v1/topics"),
                             ("PATCH", "/api/v1/topics/{name}/configs")):
        r = api.call(method, template, {"name": "small"}, raw_body=huge.encode())
        assert r.status in (400, 413), r
        expected_code = "payload_too_large" if r.status == 413 else "bad_request"
        assert_error(r, r.status, expected_code, f"{method} {template} with 1 MiB")
    assert [t["name"] for t in api.get("/api/v1/topics").body] == ["small"]
    assert api.get("/api/v1/topics/{name}/configs", name="small").body == before


def test_bad_paths_queries_and_methods_get_4xx_json_errors_with_specific_codes(broker):
    """Unknown topics, partitions and groups are 404; non-numeric or non-UTF-8 path values,
    bad `offset`/`timestamp`/`limit`/`interval_ms` values, and offset with timestamp are 400;
    a 10,000-character topic name is 404; unknown routes are 404 and known routes with another
    method 405, all with a JSON error; the internal topic cannot be deleted (400
    invalid_topic) and is still there afterwards."""
    api = AdminApi(broker)
    create_topic(api, "t")
    commit_without_joining(broker, "g", "t", 0, 0)  # creates __consumer_offsets
    msgs = "/api/v1/topics/{name}/partitions/{partition}/messages"
    cases = [
        # (what, reply, status, code)
        ("unknown topic", api.get("/api/v1/topics/{name}", name="nope"), 404, "not_found"),
        ("unknown topic configs", api.get("/api/v1/topics/{name}/configs", name="nope"), 404,
         "not_found"),
        ("unknown topic partitions", api.get("/api/v1/topics/{name}/partitions", name="nope"),
         404, "not_found"),
        ("unknown topic messages", api.get(msgs, name="nope", partition=0), 404, "not_found"),
        ("unknown topic delete", api.delete("/api/v1/topics/{name}", name="nope"), 404,
         "not_found"),
        ("unknown partition", api.get(msgs, name="t", partition=1), 404, "not_found"),
        ("negative partition", api.get(msgs, name="t", partition=-1), 404, "not_found"),
        ("unknown group", api.get("/api/v1/groups/{group_id}", group_id="nope"), 404,
         "not_found"),
        ("partition abc", api.get(msgs, name="t", partition="abc"), 400, "bad_request"),
        ("partition 1.5", api.get(msgs, name="t", partition="1.5"), 400, "bad_request"),
        ("partition 2^40", api.get(msgs, name="t", partition=2**40), 400, "bad_request"),
        ("offset abc", api.get(msgs, {"offset": "abc"}, name="t", partition=0), 400,
         "bad_request"),
        ("offset -1", api.get(msgs, {"offset": -1}, name="t", partition=0), 400,
         "bad_request"),
        ("timestamp abc", api.get(msgs, {"timestamp": "abc"}, name="t", partition=0), 400,
         "bad_request"),
        ("offset and timestamp", api.get(msgs, {"offset": 0, "timestamp": 0}, name="t",
                                         partition=0), 400, "bad_request"),
        ("limit 0", api.get(msgs, {"limit": 0}, name="t", partition=0), 400, "bad_request"),
        ("limit 501", api.get(msgs, {"limit": 501}, name="t", partition=0), 400,
         "bad_request"),
        ("limit abc", api.get(msgs, {"limit": "abc"}, name="t", partition=0), 400,
         "bad_request"),
        ("interval_ms 99", api.get("/api/v1/stream", {"interval_ms": 99}), 400, "bad_request"),
        ("interval_ms 60001", api.get("/api/v1/stream", {"interval_ms": 60001}), 400,
         "bad_request"),
        ("interval_ms abc", api.get("/api/v1/stream", {"interval_ms": "abc"}), 400,
         "bad_request"),
        ("10,000-character topic", api.get("/api/v1/topics/{name}", name="n" * 10_000), 404,
         "not_found"),
        ("10,000-character topic delete",
         api.delete("/api/v1/topics/{name}", name="n" * 10_000), 404, "not_found"),
        ("delete __consumer_offsets",
         api.delete("/api/v1/topics/{name}", name="__consumer_offsets"), 400, "invalid_topic"),
        ("alter __consumer_offsets",
         api.patch("/api/v1/topics/{name}/configs", {"retention.ms": "1"},
                   name="__consumer_offsets"), 400, "invalid_topic"),
        ("unknown route /api/v1/nope", api.call("GET", None, raw_path="/api/v1/nope"), 404,
         "not_found"),
        ("unknown route /api/v2/topics", api.call("GET", None, raw_path="/api/v2/topics"), 404,
         "not_found"),
        ("unknown route /api/v1/topics/t/nope",
         api.call("GET", None, raw_path="/api/v1/topics/t/nope"), 404, "not_found"),
        ("DELETE /api/v1/cluster", api.call("DELETE", "/api/v1/cluster"), 405,
         "method_not_allowed"),
        ("PUT /api/v1/topics", api.call("PUT", "/api/v1/topics", json_body={"name": "x"}),
         405, "method_not_allowed"),
        ("POST /api/v1/topics/t", api.call("POST", "/api/v1/topics/{name}", {"name": "t"},
                                           json_body={}), 405, "method_not_allowed"),
        ("DELETE /api/v1/groups/g", api.call("DELETE", "/api/v1/groups/{group_id}",
                                             {"group_id": "g"}), 405, "method_not_allowed"),
        ("POST /health/live", api.call("POST", "/health/live", raw_body=b"{}"), 405,
         "method_not_allowed"),
    ]
    # Path segments that are not UTF-8, on every operation with a path parameter.
    for method, template in [("GET", "/api/v1/brokers/{node_id}"),
                             ("GET", "/api/v1/topics/{name}"),
                             ("DELETE", "/api/v1/topics/{name}"),
                             ("GET", "/api/v1/topics/{name}/configs"),
                             ("PATCH", "/api/v1/topics/{name}/configs"),
                             ("GET", "/api/v1/topics/{name}/partitions"),
                             ("GET", msgs),
                             ("GET", "/api/v1/groups/{group_id}")]:
        raw_path = re.sub(r"\{[^}]+\}", "%FF", template)
        body = b"{}" if method == "PATCH" else None
        cases.append((f"{method} {raw_path}",
                      api.call(method, template, raw_path=raw_path, raw_body=body), 400,
                      "bad_request"))
    for what, reply, status, code in cases:
        assert_error(reply, status, code, what)
    internal = api.get("/api/v1/topics/{name}", name="__consumer_offsets")
    assert internal.status == 200 and internal.body["internal"] is True


# -- requests from elsewhere -----------------------------------------------------------------

# Host headers a loopback listener refuses (DNS rebinding) and accepts; {port} is its port.
FOREIGN_HOSTS = ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                 "localhost.evil.example", "10.0.0.1:{port}", "0.0.0.0:{port}", "[::2]:{port}"]
LOOPBACK_HOSTS = ["localhost", "localhost:{port}", "127.0.0.1", "127.0.0.1:{port}",
                  "127.1.2.3:{port}", "[::1]", "[::1]:{port}"]
# A path for every parameter of the templates, and a body for the operations that read one.
PARAMS = {"node_id": 0, "name": "t", "partition": 0, "group_id": "g"}
BODIES = {("/api/v1/topics", "post"): {"name": "from-elsewhere"},
          ("/api/v1/topics/{name}/configs", "patch"): {"retention.ms": "1"}}


def test_foreign_host_headers_are_refused_on_every_operation(broker):
    """On a loopback listener, a Host header that is not localhost, 127.x.y.z or [::1]
    (with or without a port) is 403 `forbidden` as JSON on every operation of the document,
    the console, /metrics and /openapi.json included, and a write with one changes nothing;
    names that only start like a loopback name are foreign too. Loopback names with and
    without a port, and a request with no Host header at all, are answered."""
    api = AdminApi(broker)
    create_topic(api, "t")
    configs_before = api.get("/api/v1/topics/{name}/configs", name="t").body
    port = api.port
    for host in FOREIGN_HOSTS:
        host = host.format(port=port)
        for template in ("/api/v1/cluster", "/", "/metrics", "/openapi.json"):
            assert_error(api.call("GET", template, host=host), 403, "forbidden",
                         f"GET {template} with Host {host}")
    for template, method in sorted(SPEC_OPERATIONS):
        params = {k: v for k, v in PARAMS.items() if "{" + k + "}" in template}
        r = api.call(method.upper(), template, params,
                     json_body=BODIES.get((template, method)), host="evil.example")
        assert_error(r, 403, "forbidden", f"{method.upper()} {template} with Host evil.example")
    assert [t["name"] for t in api.get("/api/v1/topics").body] == ["t"]
    assert api.get("/api/v1/topics/{name}/configs", name="t").body == configs_before

    for host in LOOPBACK_HOSTS + [None]:
        host = host and host.format(port=port)
        r = api.call("GET", "/api/v1/cluster", host=host)
        assert r.status == 200, f"Host {host}: {r}"
        page = api.call("GET", "/", host=host)
        assert page.status == 200 and "<html" in page.body.lower(), f"Host {host}: {page}"


def test_cross_site_writes_are_refused_and_same_origin_writes_accepted(broker):
    """A POST, PATCH or DELETE whose Origin header is not http:// plus its Host header (another
    site, `null`, https, or another name for the same listener) is 403 `forbidden` and changes
    nothing; with the matching Origin, under either loopback name, or with no Origin the write
    is done; a GET from another origin is answered (reads are not refused)."""
    api = AdminApi(broker)
    create_topic(api, "kept")
    configs_before = api.get("/api/v1/topics/{name}/configs", name="kept").body
    same = f"http://{api.host}"
    for origin in ("http://evil.example", "null", f"https://{api.host}",
                   f"http://localhost:{api.port}", same + ".evil.example"):
        what = f"with Origin {origin}"
        headers = {"Origin": origin}
        assert_error(api.call("POST", "/api/v1/topics", json_body={"name": "planted"},
                              headers=headers), 403, "forbidden", "POST " + what)
        assert_error(api.call("PATCH", "/api/v1/topics/{name}/configs", {"name": "kept"},
                              json_body={"retention.ms": "1"}, headers=headers),
                     403, "forbidden", "PATCH " + what)
        assert_error(api.call("DELETE", "/api/v1/topics/{name}", {"name": "kept"},
                              headers=headers), 403, "forbidden", "DELETE " + what)
    assert [t["name"] for t in api.get("/api/v1/topics").body] == ["kept"]
    assert api.get("/api/v1/topics/{name}/configs", name="kept").body == configs_before

    read = api.call("GET", "/api/v1/topics", headers={"Origin": "http://evil.example"})
    assert read.status == 200 and [t["name"] for t in read.body] == ["kept"]
    r = api.call("POST", "/api/v1/topics", json_body={"name": "same-origin"},
                 headers={"Origin": same})
    assert r.status == 201, r
    r = api.call("POST", "/api/v1/topics", json_body={"name": "by-localhost"},
                 headers={"Origin": f"http://localhost:{api.port}"},
                 host=f"localhost:{api.port}")
    assert r.status == 201, r
    r = api.call("PATCH", "/api/v1/topics/{name}/configs", {"name": "kept"},
                 json_body={"retention.ms": "1000"}, headers={"Origin": same})
    assert r.status == 200, r
    r = api.call("DELETE", "/api/v1/topics/{name}", {"name": "same-origin"},
                 headers={"Origin": same})
    assert (r.status, r.body) == (200, {"deleted": "same-origin"})
    assert [t["name"] for t in api.get("/api/v1/topics").body] == ["by-localhost", "kept"]


def test_json_writes_need_an_application_json_content_type(broker):
    """POST /api/v1/topics and PATCH /configs with a text/plain, look-alike or missing
    Content-Type are 415 `unsupported_media_type`, even for a body that is not JSON at all
    (the type is checked first), and change nothing; application/json with a charset
    parameter, or in other letter case, is accepted."""
    api = AdminApi(broker)
    create_topic(api, "typed")
    configs_before = api.get("/api/v1/topics/{name}/configs", name="typed").body
    refused = ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
               "application/jsonx", "application/json-patch+json", None]
    for content_type in refused:
        what = f"Content-Type {content_type}"
        assert_error(api.call("POST", "/api/v1/topics", json_body={"name": "untyped"},
                              content_type=content_type),
                     415, "unsupported_media_type", "POST " + what)
        assert_error(api.call("PATCH", "/api/v1/topics/{name}/configs", {"name": "typed"},
                              json_body={"retention.ms": "1"}, content_type=content_type),
                     415, "unsupported_media_type", "PATCH " + what)
    for method, template in (("POST", "/api/v1/topics"),
                             ("PATCH", "/api/v1/topics/{name}/configs")):
        assert_error(api.call(method, template, {"name": "typed"}, raw_body=b"name=x&y",
                              content_type="text/plain"),
                     415, "unsupported_media_type", f"{method} of a form body as text/plain")
    assert [t["name"] for t in api.get("/api/v1/topics").body] == ["typed"]
    assert api.get("/api/v1/topics/{name}/configs", name="typed").body == configs_before

    for i, content_type in enumerate(["application/json; charset=utf-8",
                                      "Application/JSON", "application/json ; charset=UTF-8"]):
        r = api.call("POST", "/api/v1/topics", json_body={"name": f"typed-{i}"},
                     content_type=content_type)
        assert r.status == 201, f"{content_type}: {r}"
        r = api.call("PATCH", "/api/v1/topics/{name}/configs", {"name": "typed"},
                     json_body={"retention.ms": str(1000 + i)}, content_type=content_type)
        assert r.status == 200, f"{content_type}: {r}"
        assert {c["name"]: c["value"] for c in r.body}["retention.ms"] == str(1000 + i)


def test_at_most_32_event_streams_are_served_at_once(broker):
    """With 32 streams open (each has sent its first event), the 33rd is 429
    `too_many_requests` as JSON; once one of the 32 is closed a new stream is served again
    (the server notices within an interval of the closed one), and with 32 open again the
    next one is refused again."""
    api = AdminApi(broker)
    streams = []
    try:
        for _ in range(STREAMS_MAX):
            refusal, s = api.open_stream({"interval_ms": 100}, timeout=10)
            assert refusal is None, f"stream {len(streams) + 1} refused: {refusal}"
            streams.append(s)
            s.read(1)
        refusal, s = api.open_stream({"interval_ms": 100}, timeout=10)
        streams += [s] if s else []
        assert s is None, "a 33rd stream was served"
        assert_error(refusal, 429, "too_many_requests", "the 33rd stream")

        streams.pop(0).close()
        deadline = time.monotonic() + WAIT_S
        while True:
            refusal, s = api.open_stream({"interval_ms": 100}, timeout=10)
            if s is not None:
                break
            assert_error(refusal, 429, "too_many_requests", "a stream while 32 may be open")
            assert time.monotonic() < deadline, f"no stream served {WAIT_S}s after one closed"
            time.sleep(0.05)
        streams.append(s)
        ((name, _),) = s.read(1)
        assert name == "stats"
        refusal, s = api.open_stream({"interval_ms": 100}, timeout=10)
        streams += [s] if s else []
        assert s is None, "a 33rd stream was served after a closed one was replaced"
        assert_error(refusal, 429, "too_many_requests", "the 33rd stream again")
    finally:
        for s in streams:
            s.close()


# -- coverage --------------------------------------------------------------------------------

def test_zz_every_documented_response_was_exercised(request):
    """Every (path, method, status) the document lists was answered at least once by the
    tests above, except 503 not_ready of /api/v1 operations (see the module docstring)."""
    selected = {item.originalname for item in request.session.items
                if item.module is request.module}
    if selected != {n for n in dir(request.module) if n.startswith("test_")}:
        pytest.skip("coverage is only meaningful when the whole module runs")
    doc = json.loads(DOC_FILE.read_text())
    documented = {(t, m, int(s)) for t, item in doc["paths"].items() for m, op in item.items()
                  if m in HTTP_METHODS for s in op["responses"]}
    exempt = {(t, m, s) for t, m, s in documented if s == 503 and t.startswith("/api/v1/")}
    missing = sorted(documented - exempt - SEEN)
    assert not missing, f"documented responses no test produced: {missing}"
