#!/usr/bin/env python3
"""Lint many PEM or DER certificates with pkilint's RFC 5280 linter in one process.

The test suite calls this instead of `lint_pkix_cert lint FILE` once per certificate:
pkilint takes about a second to build its validators, and a profile matrix has dozens of
certificates. The validator set is exactly the one `lint_pkix_cert` builds.

Usage: pkilint_batch.py FILE...
Prints every finding of severity WARNING or worse as `FILE: SEVERITY code (node path)`;
exits 1 if any file has an ERROR or FATAL finding, 0 otherwise.
"""

import sys

from pkilint import loader, report
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity


def validator():
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


def main(paths):
    v = validator()
    doc_loader = loader.RFC5280CertificateDocumentLoader()
    failed = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(b"-----BEGIN"):
            doc = doc_loader.load_pem_document(data.decode(), path)
        else:
            doc = doc_loader.load_der_document(data, path)
        results = v.validate(doc.root)
        bad = False
        for result in results:
            for finding in result.finding_descriptions:
                sev = finding.finding.severity
                if sev <= ValidationFindingSeverity.WARNING:
                    print(f"{path}: {sev.name} {finding.finding.code} ({result.node.path})")
                if sev <= ValidationFindingSeverity.ERROR:
                    bad = True
        if bad:
            failed += 1
    print(f"pkilint: {len(paths)} certificates, {failed} with ERROR findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
