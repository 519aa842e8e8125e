#!/usr/bin/env python3
"""Independent DARE 2.0 encoder used to produce the known-answer values in src/package.rs tests.

It follows docs/backup-format.md with the AEADs of the Python `cryptography` package (OpenSSL), so the
expected values do not come from the Rust code under test. Run: python3 gen_kat.py
"""
import hashlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

KEY = bytes(range(32))
STREAM_NONCE = bytes([0xC5]) + bytes(range(0xA1, 0xAC))  # top bit set: writers must clear it
PAYLOAD = 1 << 16


def plaintext(n):
    return bytes((i * 31 + 7) % 251 for i in range(n))


def encrypt(suite, data):
    aead = AESGCM(KEY) if suite == 0 else ChaCha20Poly1305(KEY)
    chunks = [data[i:i + PAYLOAD] for i in range(0, len(data), PAYLOAD)]
    out = b""
    for seq, chunk in enumerate(chunks):
        final = seq == len(chunks) - 1
        nonce = bytearray(STREAM_NONCE)
        nonce[0] = (nonce[0] | 0x80) if final else (nonce[0] & 0x7F)
        header = bytes([0x20, suite]) + (len(chunk) - 1).to_bytes(2, "little") + bytes(nonce)
        counter = int.from_bytes(nonce[8:], "little") ^ seq
        aead_nonce = bytes(nonce[:8]) + counter.to_bytes(4, "little")
        out += header + aead.encrypt(aead_nonce, chunk, header[:4])
    return out


for suite in (0, 1):
    small = encrypt(suite, plaintext(20))
    print(f"suite {suite} 20 bytes: {small.hex()}")
    big = encrypt(suite, plaintext(2 * PAYLOAD + 5))
    print(f"suite {suite} {2 * PAYLOAD + 5} bytes: len {len(big)} sha256 {hashlib.sha256(big).hexdigest()}")

salt = bytes(range(100, 132))
key = hashlib.scrypt(b"correct horse battery staple", salt=salt, n=32768, r=16, p=1, dklen=32,
                     maxmem=128 * 1024 * 1024)
print(f"scrypt key: {key.hex()}")
