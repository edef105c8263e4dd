#!/usr/bin/env python3
"""Lint many PEM or DER certificates with pkilint in one process.

The test suite calls this instead of a pkilint command once per certificate: pkilint takes
about a second to build its validators, and a profile matrix has dozens of certificates.

Usage: pkilint_batch.py [--linter pkix|cabf-serverauth|cabf-smime] FILE...

pkix (the default) runs exactly the validator set `lint_pkix_cert` builds. cabf-serverauth
and cabf-smime run `lint_cabf_serverauth_cert lint -d` and `lint_cabf_smime_cert lint -d`
themselves (pkilint's own command-line code, called in this process): the certificate type
is detected from its reserved CA/B policy OID, as a relying party's linter would, and is
printed as `FILE: type TYPE`.

Prints every finding of severity WARNING or worse as `FILE: SEVERITY code (node path)`
(pkix) or `FILE: code (SEVERITY): message [validator @ node path]` (CA/B);
exits 1 if any file has an ERROR or FATAL finding (or, for the CA/B linters, a type that
cannot be detected), 0 otherwise.
"""

import contextlib
import io
import sys

from pkilint import loader
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


def lint_pkix(paths):
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
    return failed


def lint_cabf(main, paths):
    """Run a pkilint CA/B command's main() on each file, with type detection."""
    failed = 0
    for path in paths:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["lint", "-d", "-o", "-s", "WARNING", path])
            except SystemExit:
                pass
        detected = err.getvalue().strip()
        print(f"{path}: type {detected or '(none)'}")
        bad = not detected or "Could not determine" in detected
        node = ""
        for line in out.getvalue().splitlines():
            if not line.startswith(" "):
                node = line.strip()
                continue
            text = line.strip()
            for sev in ("FATAL", "ERROR", "WARNING"):
                if f"({sev})" in text:
                    print(f"{path}: {text} [{node}]")
                    if sev != "WARNING":
                        bad = True
        if bad:
            failed += 1
    return failed


def main(argv):
    linter = "pkix"
    if len(argv) >= 2 and argv[0] == "--linter":
        linter, argv = argv[1], argv[2:]
    if linter == "pkix":
        failed = lint_pkix(argv)
    elif linter == "cabf-serverauth":
        from pkilint.bin import lint_cabf_serverauth_cert

        failed = lint_cabf(lint_cabf_serverauth_cert.main, argv)
    elif linter == "cabf-smime":
        from pkilint.bin import lint_cabf_smime_cert

        failed = lint_cabf(lint_cabf_smime_cert.main, argv)
    else:
        print(f"unknown linter {linter!r}", file=sys.stderr)
        return 2
    print(f"pkilint {linter}: {len(argv)} certificates, {failed} with ERROR findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
