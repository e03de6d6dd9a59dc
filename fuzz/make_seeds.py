#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/proto/, log/ and resp/ (see docs/fuzzing.md).

Run once from anywhere: `python3 fuzz/make_seeds.py`. Files are named `seed_*` because
.gitignore drops hex-named files (libFuzzer's own discoveries) from fuzz/corpus/*/.
The log seeds follow core/src/log.rs (frames) and core/src/replica/record.rs (records).
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# --- proto: protocol lines (shared/PROTOCOL.md, section 1) ------------------------------

LONG_KEY_256 = "k" * 256
LONG_KEY_257 = "k" * 257

PROTO = {
    # client port 8080: requests
    "getreq": '{"type":"getreq","key":"a"}',
    "getreq_id_int": '{"type":"getreq","key":"a","id":7}',
    "getreq_id_max": '{"id":18446744073709551615,"type":"getreq","key":"a"}',
    "getreq_id_neg_min": '{"type":"getreq","key":"a","id":-9223372036854775808}',
    "getreq_id_text": '{"type":"getreq","key":"a","id":"req-1 \\u00e9"}',
    "getreq_id_float": '{"type":"getreq","key":"a","id":1.5}',
    "getreq_id_too_big": '{"type":"getreq","key":"a","id":18446744073709551616}',
    "putreq": '{"type":"putreq","key":"k","value":"v","id":1}',
    "putreq_escapes": '{"type":"putreq","key":"line\\nbreak\\t\\"q\\"\\\\\\/","value":"\\u0000\\u001f\\b\\f\\r"}',
    "putreq_surrogate_pair": '{"type":"putreq","key":"\\ud83d\\udd11","value":"\\ud834\\udd1e music"}',
    "putreq_lone_surrogate": '{"type":"putreq","key":"\\ud800","value":"x"}',
    "putreq_raw_utf8": '{"type":"putreq","key":"ключ","value":"значение 🔑"}',
    "putreq_key_256": '{"type":"putreq","key":"%s","value":""}' % LONG_KEY_256,
    "putreq_key_257": '{"type":"putreq","key":"%s","value":""}' % LONG_KEY_257,
    "putreq_empty_key": '{"type":"putreq","key":"","value":"v","id":"e"}',
    "putreq_missing_value": '{"type":"putreq","key":"k"}',
    "putreq_value_number": '{"type":"putreq","key":"k","value":5}',
    "getreq_empty_key": '{"type":"getreq","key":"","id":2}',
    "delreq": '{"type":"delreq","key":"a","id":-1}',
    "delreq_key_257": '{"type":"delreq","key":"%s","id":"long"}' % LONG_KEY_257,
    "statusreq": '{"type":"statusreq"}',
    "statusreq_extra_fields": '{"type":"statusreq","consistency":"quorum","extra":[1,{"a":null}]}',
    "duplicate_field": '{"type":"getreq","key":"a","key":"b"}',
    "duplicate_id": '{"id":1,"type":"getreq","key":"a","id":2}',
    "nested_junk": '{"type":"getreq","key":"a","junk":[[[[{"x":[true,false,null,1e308,-0,0.5]}]]]]}',
    "deep_nesting": '{"type":"getreq","junk":' + "[" * 130 + "]" * 130 + "}",
    "not_an_object": '["getreq","a"]',
    "trailing_garbage": '{"type":"getreq","key":"a"} x',
    "unknown_type": '{"type":"frobnicate","key":"a","id":3}',
    "type_not_string": '{"type":1}',
    "whitespace_padded": ' \t{ "type" : "getreq" , "key" : "a" } \r',
    # client port 8080: answers
    "resp_value": '{"type":"resp","key":"a","value":"1","id":7}',
    "resp_success": '{"type":"resp","message":"Success"}',
    "resp_status": '{"type":"resp","servers":[{"id":1,"addr":"127.0.0.1:4000","up":true},{"id":18446744073709551615,"addr":"[::1]:4001","up":false}],"expected":2}',
    "resp_status_empty": '{"type":"resp","servers":[],"expected":0,"id":"s"}',
    "resp_status_bad_server": '{"type":"resp","servers":[{"id":-1,"addr":"x","up":1}],"expected":2}',
    "resp_error_not_found": '{"type":"resp","error":"not_found","message":"Data Error: Key does not exist","id":1}',
    "resp_error_aborted": '{"type":"resp","error":"aborted","message":"@1:=locked\\n@2:=value_too_large"}',
    "resp_error_frame_too_large": '{"type":"resp","error":"frame_too_large","message":"Line over the frame limit"}',
    "resp_error_unknown_code": '{"type":"resp","error":"timeout","message":"?"}',
    "resp_error_no_message": '{"type":"resp","error":"overloaded"}',
    # registration port 9090
    "register": '{"type":"register","id":3,"addr":"127.0.0.1:40123"}',
    "register_max_id": '{"type":"register","id":18446744073709551615,"addr":"[::1]:1"}',
    "register_negative_id": '{"type":"register","id":-3,"addr":"h:1"}',
    "register_ack": '{"type":"ack"}',
    "register_refused": '{"type":"resp","error":"refused","message":"ring is complete"}',
    # two-phase commit, a KV server's port
    "prepare_put": '{"type":"putreq","txid":42,"key":"k","value":"v","id":9}',
    "prepare_del": '{"type":"delreq","txid":18446744073709551615,"key":"k"}',
    "commit": '{"type":"commit","txid":42}',
    "abort_decision": '{"type":"abort","txid":42}',
    "participant_getreq": '{"type":"getreq","key":"k"}',
    "ping": '{"type":"ping","id":"p"}',
    "ready": '{"type":"ready","txid":42}',
    "abort_vote": '{"type":"abort","txid":42,"error":"locked","message":"key is locked by transaction 7"}',
    "ack": '{"type":"ack","txid":42}',
    "participant_resp_value": '{"type":"resp","key":"k","value":"\\u0000"}',
    "participant_resp_error": '{"type":"resp","error":"internal","message":"reading the log failed"}',
    "pong": '{"type":"pong","id":"p"}',
}

# Several lines in one input, for the line splitter: CRLF, blank lines, a line over the
# fuzz target's 64-byte limit, and a last line without its line end.
PROTO_STREAMS = {
    "stream_pipelined": '{"type":"getreq","key":"a","id":1}\r\n\n   \n{"type":"statusreq"}\n{"type":"ping"}',
    "stream_too_long": '{"type":"ping"}\n{"type":"putreq","key":"a","value":"%s"}\n{"type":"ping"}\n' % ("x" * 80),
    "stream_cr_at_limit": "x" * 64 + "\r\n" + "y" * 65 + "\r\n",
}

# --- log: valid logs of encoded records -------------------------------------------------

def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table

_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def frame(payload):
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", crc32c(length + payload)) + payload


def _key(key):
    raw = key.encode()
    return struct.pack("<H", len(raw)) + raw


def put(txid, key, value):
    raw = value.encode()
    return frame(b"\x01" + struct.pack("<Q", txid) + _key(key) + struct.pack("<I", len(raw)) + raw)


def delete(txid, key):
    return frame(b"\x02" + struct.pack("<Q", txid) + _key(key))


def commit(txid):
    return frame(b"\x03" + struct.pack("<Q", txid))


def abort(txid):
    return frame(b"\x04" + struct.pack("<Q", txid))


def carried(key, value):
    # What compaction writes: a committed value carried over (tag 5).
    raw = value.encode()
    return frame(b"\x05" + _key(key) + struct.pack("<I", len(raw)) + raw)


def _many_keys():
    # More committed keys than the default cache (16 sets x 8 ways) holds, so reading
    # some of them back goes through the LogReader.
    out = b""
    for i in range(140):
        out += put(i, "k%d" % i, "v%d" % i) + commit(i)
    return out


_BASE = put(1, "a", "1") + commit(1) + put(2, "b", "two") + abort(2)

LOG = {
    "empty": b"",
    "put_commit": put(1, "a", "hello") + commit(1),
    "put_abort": put(1, "a", "hello") + abort(1),
    "put_then_del": put(1, "a", "hello") + commit(1) + delete(2, "a") + commit(2),
    "overwrite": put(1, "a", "old") + commit(1) + put(2, "a", "new") + commit(2),
    "in_doubt": put(1, "a", "x") + commit(1) + put(2, "a", "y") + delete(3, "b"),
    "interleaved": put(1, "a", "1") + put(2, "b", "2") + commit(2) + put(3, "c", "3")
    + abort(1) + commit(3),
    "repeated_decisions": _BASE + commit(1) + abort(2) + abort(99),
    "anomalies": put(1, "a", "1") + put(1, "b", "2") + put(2, "a", "3") + commit(1)
    + abort(1) + commit(7) + put(1, "c", "reused txid"),
    "unicode": put(1, "ключ", "значение") + commit(1) + put(2, "🔑\u0000", "\n\t\"")
    + commit(2) + put(3, "", "empty key") + commit(3) + put(4, "k" * 300, "long key")
    + commit(4),
    "max_txids": put(2**64 - 1, "a", "max") + commit(2**64 - 1) + delete(0, "a") + abort(0),
    "empty_value": put(5, "a", "") + commit(5),
    "big_value": put(1, "big", "v" * 3000) + commit(1),
    "many_keys": _many_keys(),
    "torn_header": _BASE + put(3, "c", "3")[:5],
    "torn_payload": _BASE + put(3, "c", "3")[:-2],
    "bad_checksum": _BASE + bytes([b ^ 0x20 if i == 12 else b for i, b in enumerate(put(3, "c", "3"))]),
    "zero_tail": _BASE + b"\x00" * 64,
    "oversized_length": _BASE + struct.pack("<II", 0xFFFFFFFF, 0) + b"junk",
    "unknown_record_tag": _BASE + frame(b"\x09hello") + put(3, "c", "after"),
    "trailing_record_bytes": _BASE + frame(commit(3)[8:] + b"\x00"),
    "truncated_record": _BASE + frame(b"\x01\x05\x00"),
    "compacted": carried("a", "1") + carried("b", "two") + put(3, "a", "new") + commit(3)
    + put(4, "b", "in doubt"),
    "carried_under_a_lock": put(1, "a", "x") + carried("a", "y") + commit(1) + carried("a", "z"),
    "not_utf8_value": _BASE + frame(b"\x01" + struct.pack("<Q", 3) + _key("c") + struct.pack("<I", 2) + b"\xff\xfe"),
}


def multibulk(*args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


RESP = {
    "set_get": multibulk(b"SET", b"k", b"v") + multibulk(b"GET", b"k"),
    "benchmark_pipeline": multibulk(b"SET", b"key:000000000042", b"x" * 100) * 4
    + multibulk(b"GET", b"key:__rand_int__") * 4,
    "mget_del": multibulk(b"MGET", b"a", b"b", b"c") + multibulk(b"DEL", b"a", b"a"),
    "inline": b"PING\r\nSET k \"a b\\x41\\n\"\r\nGET 'k'\n\r\n  \r\nECHO x",
    "empty_and_null": b"*0\r\n*-1\r\n" + multibulk(b"PING"),
    "crlf_in_bulk": multibulk(b"SET", b"k", b"a\r\nb\r\n"),
    "bad_length": b"*x\r\n",
    "bad_bulk": b"*1\r\n$-1\r\n",
    "missing_dollar": b"*1\r\n:1\r\n",
    "bad_terminator": b"*1\r\n$1\r\nab\r\n",
    "unbalanced": b"GET \"k\r\n",
    "too_large_header": b"*2\r\n$3\r\nSET\r\n$100000\r\n",
    "too_many_args": b"*1000000\r\n",
    "long_inline": b"GET " + b"k" * 300 + b"\r\n",
    "structured": b"SET\xffk\xffv\xfeGET\xffk\xfe\xff",
}


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "seed_" + name + ".bin"), "wb") as f:
        f.write(data)


def main():
    proto_dir = os.path.join(HERE, "corpus", "proto")
    log_dir = os.path.join(HERE, "corpus", "log")
    for name, line in PROTO.items():
        write(proto_dir, name, line.encode() + b"\n")
    for name, stream in PROTO_STREAMS.items():
        write(proto_dir, name, stream.encode())
    for name, data in LOG.items():
        write(log_dir, name, data)
    resp_dir = os.path.join(HERE, "corpus", "resp")
    for name, data in RESP.items():
        write(resp_dir, name, data)
    print(
        "wrote %d proto, %d log and %d resp seeds"
        % (len(PROTO) + len(PROTO_STREAMS), len(LOG), len(RESP))
    )


if __name__ == "__main__":
    main()
