#!/usr/bin/env python3
"""Send raw bytes as gRPC request messages to signet over mutual TLS, through grpcio's
generic unary call (no generated code, no serializer): malformed protobuf, oversized
messages, whatever a careless or hostile client might send.

Usage: raw_grpc.py --target 127.0.0.1:PORT --root ROOT.pem --cert RA.pem --key RA.key
Reads a JSON list of {"method": "/pkg.Service/Method", "hex": "..."} (or "repeat":
[byte_hex, count] for a large payload) on standard input and prints a JSON list of
{"code", "details", "status_details_hex"}, one per call, in order.
"""

import argparse
import json
import sys

import grpc


def main():
    p = argparse.ArgumentParser()
    for a in ("target", "root", "cert", "key"):
        p.add_argument(f"--{a}", required=True)
    a = p.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(a.root),
        private_key=read(a.key),
        certificate_chain=read(a.cert),
    )
    calls = json.load(sys.stdin)
    out = []
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.secure_channel(a.target, creds, options=options) as channel:
        for c in calls:
            if "repeat" in c:
                byte, count = c["repeat"]
                payload = bytes.fromhex(c.get("hex", "")) + bytes.fromhex(byte) * count
            else:
                payload = bytes.fromhex(c["hex"])
            call = channel.unary_unary(
                c["method"], request_serializer=None, response_deserializer=None
            )
            try:
                call(payload, timeout=30)
                out.append({"code": "OK", "details": "", "status_details_hex": ""})
            except grpc.RpcError as e:
                md = dict(e.trailing_metadata() or ())
                details_bin = md.get("grpc-status-details-bin", b"")
                out.append(
                    {
                        "code": e.code().name,
                        "details": e.details() or "",
                        "status_details_hex": details_bin.hex(),
                    }
                )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
