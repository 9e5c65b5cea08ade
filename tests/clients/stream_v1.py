"""An independent reader of Custodian's streaming file format, version 1, written from
docs/formats.md#streaming-file-format with the `cryptography` package (no Custodian code).

  stream_v1.py vectors PATH     check every vector of tests/vectors/stream-v1.json
  stream_v1.py decrypt IN OUT   decrypt IN (made by `custodian encrypt-file`): the data key is
                                unwrapped by the server at $CUSTODIAN_ADDR with $CUSTODIAN_TOKEN

Prints one line per check; exits 1 on the first disagreement.
"""
import base64
import hashlib
import json
import os
import struct
import sys
import urllib.request

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TAG = 16


class Refused(Exception):
    pass


def parse_header(data):
    if len(data) < 44:
        raise Refused("truncated")
    if data[:4] != b"CSTF" or data[4] != 1 or data[5] != 1:
        raise Refused("header")
    frame_size = struct.unpack(">I", data[6:10])[0]
    if not 64 <= frame_size <= 16 * 1024 * 1024:
        raise Refused("header")
    salt = data[10:42]
    wlen = struct.unpack(">H", data[42:44])[0]
    wrapped = data[44:44 + wlen]
    at = 44 + wlen
    clen = struct.unpack(">I", data[at:at + 4])[0]
    canonical = data[at + 4:at + 4 + clen]
    end = at + 4 + clen
    if end > len(data):
        raise Refused("truncated")
    n = struct.unpack(">I", canonical[:4])[0]
    ctx, i = {}, 4
    for _ in range(n):
        kl = struct.unpack(">I", canonical[i:i + 4])[0]
        k = canonical[i + 4:i + 4 + kl].decode()
        i += 4 + kl
        vl = struct.unpack(">I", canonical[i:i + 4])[0]
        ctx[k] = canonical[i + 4:i + 4 + vl].decode()
        i += 4 + vl
    return data[:end], frame_size, salt, wrapped, ctx, data[end:]


def decrypt(data, data_key):
    header, frame_size, salt, _wrapped, _ctx, body = parse_header(data)
    info = b"custodian/stream/v1" + hashlib.sha256(header).digest()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)
    aead = AESGCM(key)
    out, index, pos, step = b"", 0, 0, frame_size + TAG
    while True:
        last = len(body) - pos <= step
        chunk = body[pos:pos + step]
        if len(chunk) < TAG:
            raise Refused("truncated")
        if last and len(chunk) == TAG and index > 0:
            raise Refused("frame")
        nonce = b"\0\0\0" + struct.pack(">Q", index) + (b"\x01" if last else b"\x00")
        try:
            out += aead.decrypt(nonce, chunk, None)
        except Exception:
            raise Refused("frame")
        if last:
            return out
        index, pos = index + 1, pos + step


def vectors(path):
    doc = json.load(open(path))
    for v in doc["vectors"]:
        data, key = bytes.fromhex(v["file"]), bytes.fromhex(v["data_key"])
        try:
            got = ("ok", decrypt(data, key))
        except Refused as e:
            got = (str(e), None)
        want = v["expect"]
        if got[0] != want or (want == "ok" and got[1] != bytes.fromhex(v["plaintext"])):
            print("MISMATCH", v["name"], got[0], "expected", want)
            sys.exit(1)
        print(v["name"], want)


def decrypt_file(src, dst):
    data = open(src, "rb").read()
    _h, _f, _s, wrapped, ctx, _b = parse_header(data)
    req = urllib.request.Request(
        os.environ["CUSTODIAN_ADDR"] + "/v1/decrypt",
        data=json.dumps({"ciphertext": base64.b64encode(wrapped).decode(), "context": ctx}).encode(),
        headers={"Authorization": "Bearer " + os.environ["CUSTODIAN_TOKEN"],
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as res:
        data_key = base64.b64decode(json.load(res)["plaintext"])
    open(dst, "wb").write(decrypt(data, data_key))
    print("decrypted", src, "context", json.dumps(ctx, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "vectors":
        vectors(sys.argv[2])
    else:
        decrypt_file(sys.argv[2], sys.argv[3])
