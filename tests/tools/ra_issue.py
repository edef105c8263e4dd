#!/usr/bin/env python3
"""Issue one certificate through signet's RA API with a client generated from proto/ by
grpcio-tools at run time: proof that the proto, not signet's own Rust client, defines the API.
Then find it again by its request id, as an RA reconciling after a lost answer does.

Usage: ra_issue.py --proto-dir proto --gen-dir DIR --target 127.0.0.1:PORT --root ROOT.pem
                   --cert RA.pem --key RA.key --csr CSR.der --agreement V --out CERT.der
Prints the serial on success; on a gRPC error prints CODE and the details and exits 2.
"""

import argparse
import os
import sys

import grpc
import grpc_tools
from grpc_tools import protoc


def generate(proto_dir, gen_dir):
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(gen_dir, exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{wkt}",
        f"--python_out={gen_dir}",
        f"--grpc_python_out={gen_dir}",
        os.path.join(proto_dir, "signet", "v1", "ca.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, gen_dir)


def main():
    p = argparse.ArgumentParser()
    for a in ("proto-dir", "gen-dir", "target", "root", "cert", "key", "csr", "agreement", "out"):
        p.add_argument(f"--{a}", required=True)
    a = p.parse_args()
    generate(a.proto_dir, a.gen_dir)
    from signet.v1 import ca_pb2, ca_pb2_grpc  # noqa: E402 (generated above)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(a.root),
        private_key=read(a.key),
        certificate_chain=read(a.cert),
    )
    with grpc.secure_channel(a.target, creds) as channel:
        stub = ca_pb2_grpc.CertificateAuthorityStub(channel)
        req = ca_pb2.IssueRequest(
            request_id="python-1",
            profile="organization",
            csr=read(a.csr),
            subject=[
                ca_pb2.SubjectAttribute(type="C", value="CN"),
                ca_pb2.SubjectAttribute(type="O", value="宁津县精神卫生中心"),
                ca_pb2.SubjectAttribute(type="organizationIdentifier", value="914403001922038216"),
                ca_pb2.SubjectAttribute(type="CN", value="宁津县精神卫生中心"),
            ],
            validity_years=2,
            approval=ca_pb2.Approval(
                officer="王芳", ra_reference="PY-0001", agreement_version=a.agreement
            ),
        )
        # validate_only: every check, what would be issued, nothing recorded.
        preview = ca_pb2.IssueRequest()
        preview.CopyFrom(req)
        preview.validate_only = True
        seen = stub.Issue(preview, timeout=30)
        if not seen.validate_only or seen.certificate or seen.serial:
            sys.exit(f"validate_only issued something: {seen}")
        if "CN=宁津县精神卫生中心" not in seen.subject or not seen.issuer or not seen.chain:
            sys.exit(f"validate_only answer incomplete: {seen}")
        try:
            stub.GetCertificate(ca_pb2.GetCertificateRequest(request_id="python-1"), timeout=30)
            sys.exit("validate_only recorded the request")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                sys.exit(f"after validate_only: {e.code().name}: {e.details()}")
        try:
            resp = stub.Issue(req, timeout=30)
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}")
            sys.exit(2)
        with open(a.out, "wb") as f:
            f.write(resp.certificate)
        # A garbage CSR is INVALID_ARGUMENT; the status details travel as binary metadata.
        bad = ca_pb2.IssueRequest()
        bad.CopyFrom(req)
        bad.request_id = "python-2"
        bad.csr = b"garbage"
        try:
            stub.Issue(bad, timeout=30)
            sys.exit("a garbage CSR was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                sys.exit(f"garbage CSR: {e.code().name}: {e.details()}")
            details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
            if not details or b"csr" not in details:
                sys.exit("INVALID_ARGUMENT without a BadRequest naming csr")
        # Reconciling after a lost answer: the office's own request id finds the certificate.
        got = stub.GetCertificate(ca_pb2.GetCertificateRequest(request_id="python-1"), timeout=30)
        if got.serial != resp.serial or got.certificate != resp.certificate:
            sys.exit(f"GetCertificate by request id: {got.serial} is not {resp.serial}")
        if got.status != ca_pb2.CERTIFICATE_STATUS_VALID or got.request_id != "python-1":
            sys.exit(f"GetCertificate by request id: status {got.status}, id {got.request_id!r}")
        for query, code in (
            (ca_pb2.GetCertificateRequest(request_id="never-sent"), grpc.StatusCode.NOT_FOUND),
            (
                ca_pb2.GetCertificateRequest(serial=resp.serial, request_id="python-1"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            try:
                stub.GetCertificate(query, timeout=30)
                sys.exit(f"GetCertificate({query}) was answered")
            except grpc.RpcError as e:
                if e.code() != code:
                    sys.exit(f"GetCertificate({query}): {e.code().name}: {e.details()}")
        # Incremental sync: what changed since the certificate's start of validity.
        since = ca_pb2.ListCertificatesRequest(page_size=100)
        since.updated_since.CopyFrom(resp.not_before)
        listed = stub.ListCertificates(since, timeout=30).certificates
        if [s.serial for s in listed] != [resp.serial] or not listed[0].HasField("updated_at"):
            sys.exit(f"ListCertificates(updated_since): {listed}")
        print(resp.serial)


if __name__ == "__main__":
    main()
