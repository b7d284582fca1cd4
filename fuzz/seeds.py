#!/usr/bin/env python3
"""Builds the fuzz seed corpora from the test suite (run from fuzz/: python3 seeds.py).

SQL texts are the string literals of tests/ and src/ that look like statements; policy,
config and keyring seeds are the shipped config files and the YAML literals of the tests.
The data-path seeds wrap the SQL in the record format of fuzz_targets/common/mod.rs.
"""
import hashlib, os, re, struct, glob

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
STMT = re.compile(r'^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|COPY|CREATE|PREPARE|EXECUTE|SET|BEGIN|DO|VALUES|TABLE|DECLARE|FETCH|EXPLAIN|ALTER|MERGE|RESET|DISCARD|SHOW|GRANT|CALL)\b', re.I)

def put(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

def literals(text):
    for m in re.finditer(r'r#+"(.*?)"#+', text, re.S):
        yield m.group(1)
    for m in re.finditer(r'(?<![r#])"((?:[^"\\]|\\.)*)"', text, re.S):
        s = m.group(1)
        s = s.replace('\\n', '\n').replace('\\"', '"').replace('\\\\', '\\').replace('\\\n', '')
        yield s

def rec(tag, body):
    return bytes([tag]) + struct.pack(">H", len(body)) + body

def cstr(s):
    return s + b"\0"

sqls, yamls = set(), set()
for path in glob.glob(os.path.join(ROOT, "tests", "*.rs")) + glob.glob(os.path.join(ROOT, "src", "**", "*.rs"), recursive=True):
    text = open(path, encoding="utf-8", errors="replace").read()
    for s in literals(text):
        if STMT.match(s) and len(s) < 2000:
            sqls.add(s.replace("{p}", "x"))
        if "version: 1" in s and "tables" in s:
            yamls.add(s.replace("{p}", "x"))

sqls = sorted(sqls)
for s in sqls:
    b = s.encode()
    put("sql_analyze", b"\0" + b)
    for role in (0, 1, 2):
        put("datapath_frontend", bytes([role]) + rec(ord("Q"), cstr(b)))
    ext = (rec(ord("P"), b"\0" + cstr(b) + b"\0\0") + rec(ord("B"), b"\0\0\0\0\0\0\0")
           + rec(ord("D"), b"P\0") + rec(ord("E"), b"\0\0\0\0\0") + rec(ord("S"), b""))
    put("datapath_frontend", b"\0" + ext)

# Data-path sequences with server replies: a row description of t, encrypted rows, the end.
rowdesc = struct.pack(">h", 6)
for i, (name, oid) in enumerate([("id", 23), ("a", 17), ("b", 17), ("c", 17), ("d", 17), ("e", 23)]):
    rowdesc += cstr(name.encode()) + struct.pack(">IhIhih", 16400, i + 1, oid, -1, -1, 0)
replies = (rec(0x80 | ord("T"), rowdesc) + rec(0x01, b"2024-01-02") + rec(0x01, b"42")
           + rec(0x80 | ord("C"), cstr(b"SELECT 2")) + rec(0x80 | ord("Z"), b"I"))
for sel in range(0, 64, 3):
    put("datapath_backend", bytes([sel]) + replies)
copy = (rec(0x80 | ord("G"), b"\0\0\3\0\0\0\0\0\0") + rec(ord("d"), b"1\tsecret\t42\n")
        + rec(ord("c"), b"") + rec(0x80 | ord("C"), cstr(b"COPY 1")) + rec(0x80 | ord("Z"), b"I"))
put("datapath_backend", bytes([3]) + copy)
put("datapath_frontend", b"\0" + rec(ord("Q"), cstr(b"COPY t (id, a, b) FROM STDIN")) + copy)
copyout = (rec(0x80 | ord("H"), b"\0\0\6" + b"\0\0" * 6) + rec(0x80 | ord("d"), b"1\t\\\\x7063\t\\N\n")
           + rec(0x80 | ord("c"), b"") + rec(0x80 | ord("C"), cstr(b"COPY 1")) + rec(0x80 | ord("Z"), b"I"))
put("datapath_backend", bytes([2]) + copyout)

# Wire: startup bodies and framed streams.
put("wire_startup", b"\0" + struct.pack(">I", 196608) + b"user\0app\0database\0db\0\0")
put("wire_startup", b"\0" + struct.pack(">I", 80877103))
put("wire_startup", b"\0" + struct.pack(">Iii", 80877102, 1234, 5678))
put("wire_startup", b"\0" + struct.pack(">I", 196610) + b"user\0app\0_pq_.x\0y\0\0")
for s in sqls[:200]:
    b = cstr(s.encode())
    put("wire_startup", b"\x0f" + b"Q" + struct.pack(">I", len(b) + 4) + b)

# Policy, config, keyring.
for y in sorted(yamls):
    put("policy_config", b"\0" + y.encode())
for f in glob.glob(os.path.join(ROOT, "config", "*.yaml")):
    data = open(f, "rb").read()
    put("policy_config", (b"\0" if "policy" in f else b"\1") + data)
put("policy_config", b"\2" + b"version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: " + b"A" * 43 + b"=\n")

# Codec and envelope.
samples = [b"hello", b"42", b"-7", b"3.14159", b"1e10", b"NaN", b"true", b"f", b"2024-02-29",
           b"2024-01-01 12:34:56.789+02", b"infinity", b"0a0e7b1c-1111-4222-8333-444455556666",
           b'{"a": [1, 2.50, null]}', b"\\x00ff", b"12345678901234567890.5"]
for ty in range(14):
    for s in samples:
        put("envelope_codec", bytes([ty]) + s)
put("envelope_codec", b"\x80" + b"pc\1\1" + b"\0" * 40)
print(len(sqls), "sql,", len(yamls), "policies")
