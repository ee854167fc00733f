#!/usr/bin/env python3
"""Independent computation (Python standard library only) of the values that
tests/it/vectors.rs pins as hex, straight from docs/FORMAT.md version 1.

Run: python3 tests/testdata/vectors/independent.py
Every input is derived from a public label; no key here protects anything.
"""
import hashlib
import hmac
import json


def sha256(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    # RFC 5869 with SHA-256; an empty salt means 32 zero bytes.
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def random_bytes(length: int, seed: int) -> bytes:
    # tests/it/common/mod.rs random_bytes (xorshift64*).
    m = (1 << 64) - 1
    x = ((seed * 0x9E3779B97F4A7C15) & m) | 1
    out = bytearray()
    while len(out) < length:
        x ^= x >> 12
        x ^= (x << 25) & m
        x ^= x >> 27
        out += ((x * 0x2545F4914F6CDD1D) & m).to_bytes(8, "little")
    return bytes(out[:length])


def split(gear_key: bytes, data: bytes, mn: int, avg: int, mx: int):
    # FORMAT.md section 12.
    g = hkdf(b"", gear_key, b"custody/v1/chunker-gear", 2048)
    gear = [int.from_bytes(g[8 * i:8 * i + 8], "little") for i in range(256)]
    bits = avg.bit_length() - 1
    top = lambda k: 0 if k <= 0 else (((1 << 64) - 1) << (64 - k)) & ((1 << 64) - 1)
    small, large = top(bits + 2), top(bits - 2)
    lens = []
    while data:
        n = min(len(data), mx)
        cut = n
        if n > mn:
            h, i = 0, mn
            while i < n:
                h = ((h << 1) + gear[data[i]]) & ((1 << 64) - 1)
                if h & (small if i < min(avg, n) else large) == 0:
                    cut = i + 1
                    break
                i += 1
        lens.append(cut)
        data = data[cut:]
    return lens


R = sha256("custody golden vector repository id")
M = sha256("custody golden vector repository secret")
DEK = sha256("custody golden vector session key")
P = sha256("custody golden vector pack id")
K = sha256("custody golden vector key")
SECRET_ID = sha256("custody golden vector secret id")
SESSION = sha256("custody golden vector session id")
SNAPSHOT = sha256("custody golden vector snapshot id")

k_id = hkdf(R, M, b"custody/v1/chunk-id", 32)
k_gear = hkdf(R, M, b"custody/v1/chunker-gear", 32)
k_index = hkdf(R, M, b"custody/v1/index", 32)
k_mac = hkdf(R, M, b"custody/v1/config-mac", 32)
k_cache = hkdf(R, M, b"custody/v1/local-parent-cache", 32)
k_pack = hkdf(R, DEK, b"custody/v1/pack" + P, 32)

print("R         ", R.hex())
print("K_id      ", k_id.hex())
print("K_gear    ", k_gear.hex())
print("K_index   ", k_index.hex())
print("K_mac     ", k_mac.hex())
print("K_cache   ", k_cache.hex())
print("K_pack(P) ", k_pack.hex())
print("chunk id  ", hmac256(k_id, b"custody golden vector chunk\n").hex())

# Per-object key and commitment of the snapshot envelope vector (section 4.4).
okm = hkdf(R, K, b"custody/v1/object" + bytes([5]) + bytes(32) + SNAPSHOT, 64)
print("snapshot enc key   ", okm[:32].hex())
print("snapshot commitment", okm[32:].hex())

# Config MAC over a fixed body (section 9): compact JSON, fields in order.
body = {
    "format": 1,
    "repository": R.hex(),
    "created": "2024-01-02T03:04:05Z",
    "chunker": {"min_size": 65536, "avg_size": 262144, "max_size": 1048576},
    "compression_level": 3,
    "pack_size": 16777216,
    "envelope_version": 1,
    "envelope_algorithm": "aes-256-gcm/hkdf-sha256/commit-v1",
    "secret_id": SECRET_ID.hex(),
}
mac_input = json.dumps(body, separators=(",", ":")).encode()
print("config mac", hmac256(k_mac, mac_input).hex())

# Chunk boundaries under the gear key derived from M (section 12), small parameters.
print("chunker   ", split(k_gear, random_bytes(32768, 7), 256, 1024, 4096))

# The tree vector's id (section 7): HMAC(K_id, exact tree JSON bytes).
import os, sys
tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tree.json")
if os.path.exists(tree):
    print("tree id   ", hmac256(k_id, open(tree, "rb").read()).hex())

# Writer provenance (section 17): the local owner anchor (standard library), and the signed
# object's Ed25519 signature (needs the `cryptography` package; skipped without it).
anchor = hkdf(R, sha256("custody golden vector data kek"),
              b"custody/v2/owner-anchor" + b"0123456789abcdef0123456789abcdef", 32)
print("local owner anchor", anchor.hex())
try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    sk = Ed25519PrivateKey.from_private_bytes(sha256("custody golden vector signer seed"))
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = b"signed body"
    obj = sha256("custody golden vector signed object")
    msg = (b"custody/v2/signed-object" + bytes([5]) + R + obj
           + len(body).to_bytes(8, "little") + body)
    print("signer            ", pk.hex())
    print("signature         ", sk.sign(msg).hex())
except ImportError:
    print("signature          (skipped: pip install cryptography)")
