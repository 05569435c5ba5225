#!/usr/bin/env python3
"""Mint the benchmark's ES256 key, JWKS and bearer token (used by bench/run.sh).

    bench/mint_token.py OUT_DIR [--ttl SECONDS]

Writes into OUT_DIR:
    key.pem     the P-256 private key (PKCS#8 PEM)
    jwks.json   {"keys": [public key as JWK: kid "bench", alg ES256, use sig]}
                on one line (run.sh inlines it into the Envoy config)
    token       the compact JWS (header.payload.signature), no newline

Claims: iss https://idp.bench, aud bench-api, sub bench-user, roles ["user"],
scope "documents:read", iat now, exp now + TTL (default 3600 s).

JWS ES256 signatures are the raw r || s (32 + 32 bytes, big-endian),
base64url without padding, not the DER encoding `cryptography` returns;
the script converts, then verifies its own token once as a self-check.
Needs the `cryptography` package (bench/setup.sh installs it).
"""

import argparse
import base64
import json
import os
import sys
import time

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )
except ImportError:
    sys.exit("mint_token.py: the Python package 'cryptography' is missing "
             "(pip install cryptography, or run bench/setup.sh)")

ISSUER = "https://idp.bench"
AUDIENCE = "bench-api"
KID = "bench"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def compact_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--ttl", type=int, default=3600, help="token lifetime in seconds")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(pub.x.to_bytes(32, "big")),
        "y": b64url(pub.y.to_bytes(32, "big")),
        "kid": KID,
        "alg": "ES256",
        "use": "sig",
    }

    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": KID}
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench-user",
        "exp": now + args.ttl,
        "iat": now,
        "roles": ["user"],
        "scope": "documents:read",
    }
    signing_input = f"{b64url(compact_json(header))}.{b64url(compact_json(claims))}".encode("ascii")
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    token = f"{signing_input.decode('ascii')}.{b64url(sig)}"

    # Self-check: raw r||s back to DER, verify with the public key.
    raw = b64url_decode(token.rsplit(".", 1)[1])
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        sys.exit("mint_token.py: self-check failed: token does not verify")

    def write(name: str, data: bytes, mode: int = 0o644) -> None:
        path = os.path.join(args.out_dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)

    write("key.pem", key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ), 0o600)
    write("jwks.json", compact_json({"keys": [jwk]}) + b"\n")
    write("token", token.encode("ascii"))


if __name__ == "__main__":
    main()
