#!/usr/bin/env bash
# fuzz/make-corpus.sh — regenerate the seed corpora under fuzz/corpus/: CSRs, OCSP requests
# and RFC 3161 queries made with openssl, token attribute values taken from openssl keys and
# certificates, the configurations in hsm-config/, sample audit entries, PKCS#11 URIs,
# names and RA messages. Fresh keys each run, so the bytes differ from run to run; what
# each file is does not. Needs openssl and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
readonly OUT=corpus
readonly POLICY=1.3.6.1.4.1.99999.3161.1  # the policy fuzz_targets/tsa_query.rs checks
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

rm -rf "$OUT"
for t in csr csr_signed spki ra_request ocsp_request tsa_query token_values audit_entry \
    config pkcs11_uri names; do
    mkdir -p "$OUT/$t"
done

# Keys: the fixed RSA test key, fresh P-256, P-384 and Ed25519 ones.
openssl pkey -inform DER -in ../tests/data/rsa2048-test-ca.pk8.der -out "$TMP/rsa.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/p256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$TMP/p384.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$TMP/ed25519.pem"

# CSRs: each key, with and without SANs; RSA also with PSS; a copy of each with its
# signature's last byte flipped.
for k in rsa p256 p384 ed25519; do
    openssl req -new -key "$TMP/$k.pem" -utf8 -subj "/CN=fuzz $k/O=宁津县精神卫生中心" \
        -outform DER -out "$OUT/csr/$k.der"
    openssl req -new -key "$TMP/$k.pem" -subj "/CN=www.example.cn" \
        -addext "subjectAltName=DNS:www.example.cn,DNS:*.example.cn,IP:192.0.2.1,IP:2001:db8::1,email:pki@example.cn" \
        -outform DER -out "$OUT/csr/$k-sans.der"
    openssl pkey -in "$TMP/$k.pem" -pubout -outform DER -out "$OUT/spki/$k.der"
done
openssl req -new -key "$TMP/rsa.pem" -subj "/CN=pss" -sigopt rsa_padding_mode:pss \
    -sigopt rsa_pss_saltlen:32 -sha256 -outform DER -out "$OUT/csr/rsa-pss.der"
openssl req -new -key "$TMP/p384.pem" -subj "/CN=sha384" -sha384 -outform DER \
    -out "$OUT/csr/p384-sha384.der"
cp ../tests/data/rsa2048-test-ca.pk8.der "$OUT/csr/not-a-csr-pkcs8.der"

# A CA and a leaf for OCSP and for certificate values on tokens.
openssl req -x509 -new -key "$TMP/p256.pem" -subj "/CN=fuzz CA" -days 3650 -out "$TMP/ca.pem"
openssl req -new -key "$TMP/p384.pem" -subj "/CN=leaf" -out "$TMP/leaf.csr"
openssl x509 -req -in "$TMP/leaf.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/p256.pem" \
    -set_serial 0x7f01020304050607 -days 365 -out "$TMP/leaf.pem" 2>/dev/null
openssl x509 -req -in "$TMP/leaf.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/p256.pem" \
    -set_serial 0x80 -days 365 -out "$TMP/leaf2.pem" 2>/dev/null
openssl x509 -in "$TMP/ca.pem" -outform DER -out "$TMP/ca.der"
openssl x509 -in "$TMP/leaf.pem" -outform DER -out "$TMP/leaf.der"

# OCSP requests: with and without a nonce, SHA-1 and SHA-256 CertIDs, two certificates.
openssl ocsp -issuer "$TMP/ca.pem" -cert "$TMP/leaf.pem" -reqout "$TMP/ocsp-nonce.der"
openssl ocsp -issuer "$TMP/ca.pem" -cert "$TMP/leaf.pem" -no_nonce -reqout "$TMP/ocsp-plain.der"
openssl ocsp -issuer "$TMP/ca.pem" -sha256 -cert "$TMP/leaf.pem" -no_nonce \
    -reqout "$TMP/ocsp-sha256.der"
openssl ocsp -issuer "$TMP/ca.pem" -cert "$TMP/leaf.pem" -cert "$TMP/leaf2.pem" \
    -reqout "$TMP/ocsp-two.der"

# RFC 3161 queries: each digest signet takes, with and without certReq, nonce and policy;
# SHA-1 (refused as badAlg).
head -c 1000 ../Cargo.toml > "$TMP/data"
openssl ts -query -data "$TMP/data" -sha256 -cert -tspolicy "$POLICY" -out "$OUT/tsa_query/sha256-cert-policy.der" 2>/dev/null
openssl ts -query -data "$TMP/data" -sha384 -no_nonce -out "$OUT/tsa_query/sha384-no-nonce.der" 2>/dev/null
openssl ts -query -data "$TMP/data" -sha512 -cert -out "$OUT/tsa_query/sha512-cert.der" 2>/dev/null
openssl ts -query -data "$TMP/data" -sha1 -out "$OUT/tsa_query/sha1.der" 2>/dev/null
openssl ts -query -data "$TMP/data" -sha256 -tspolicy 1.2.3.4 -out "$OUT/tsa_query/other-policy.der" 2>/dev/null

# The rest is framing (fuzz_targets/*.rs say how each reads its input) and hand-written
# samples.
python3 - "$TMP" "$OUT" <<'PY'
import base64, hashlib, json, os, sys
tmp, out = sys.argv[1], sys.argv[2]

def read(p):
    with open(p, "rb") as f:
        return f.read()

def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)

def tlv(der, at=0):
    """(tag, content start, end) of the DER element at `at`."""
    tag, n = der[at], der[at + 1]
    if n < 0x80:
        return tag, at + 2, at + 2 + n
    k = n & 0x7F
    length = int.from_bytes(der[at + 2:at + 2 + k], "big")
    return tag, at + 2 + k, at + 2 + k + length

def children(der):
    _, start, end = tlv(der)
    items, at = [], start
    while at < end:
        _, s, e = tlv(der, at)
        items.append(der[at:e])
        at = e
    return items

def header(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(b)]) + b + content

# spki: key, then the CSR's algorithm, signature and signed info.
for k in ("rsa", "p256", "p384", "ed25519"):
    csr = read(os.path.join(out, "csr", k + ".der"))
    info, alg, sig = children(csr)
    write("spki", k + "-with-csr-signature.der", read(os.path.join(out, "spki", k + ".der")) + alg + sig + info)

# csr: copies with the signature's last byte flipped.
for k in ("rsa", "p256", "p384", "ed25519"):
    csr = bytearray(read(os.path.join(out, "csr", k + "-sans.der")))
    csr[-1] ^= 0x01
    write("csr", k + "-sans-bad-signature.der", bytes(csr))

# csr_signed: key choice, algorithm choice, a length-prefixed subject Name, no attributes.
name = children(read(os.path.join(out, "csr", "p256.der")))[0]
subject = children(name)[1]
for key in range(4):
    write("csr_signed", "key%d" % key, bytes([key, 0, len(subject)]) + subject + bytes([0, 0, 0]))

# ocsp_request: 0 + DER for POST, 1 + base64 text for GET (standard and URL-safe, the
# latter unpadded).
for f in sorted(os.listdir(tmp)):
    if f.startswith("ocsp-"):
        der = read(os.path.join(tmp, f))
        stem = f[:-4]
        write("ocsp_request", stem + "-post", b"\x00" + der)
        write("ocsp_request", stem + "-get", b"\x01" + base64.b64encode(der))
        write("ocsp_request", stem + "-get-urlsafe", b"\x01" + base64.urlsafe_b64encode(der).rstrip(b"="))

# token_values: kind byte, then (for two values) a 2-byte length and the first value.
def two(kind, first, rest):
    return bytes([kind]) + len(first).to_bytes(2, "big") + first + rest

def spki_key(der):
    alg, bits = children(der)
    return alg, bits[tlv(bits)[1] + 1:]  # skip the unused-bits octet

_, rsa_key = spki_key(read(os.path.join(out, "spki", "rsa.der")))
modulus, exponent = children(rsa_key)
write("token_values", "rsa", two(0, modulus[tlv(modulus)[1]:], exponent[tlv(exponent)[1]:]))
for k in ("p256", "p384"):
    alg, point = spki_key(read(os.path.join(out, "spki", k + ".der")))
    curve = children(alg)[1]
    write("token_values", k + "-wrapped", two(1, curve, header(0x04, point)))
    write("token_values", k + "-bare", two(1, curve, point))
_, ed = spki_key(read(os.path.join(out, "spki", "ed25519.der")))
write("token_values", "ed25519-wrapped", bytes([2]) + header(0x04, ed))
write("token_values", "ed25519-bare", bytes([2]) + ed)
sig = children(read(os.path.join(out, "csr", "p256.der")))[2]
der_sig = sig[tlv(sig)[1] + 1:]
r, s = children(der_sig)
raw = b"".join(x[tlv(x)[1]:].lstrip(b"\x00").rjust(32, b"\x00") for x in (r, s))
write("token_values", "ecdsa-p256-raw", bytes([3]) + raw)
write("token_values", "leaf-certificate", two(4, b"subscriber", read(os.path.join(tmp, "leaf.der"))))
write("token_values", "ca-certificate", two(4, b"fuzz CA", read(os.path.join(tmp, "ca.der"))))

# audit_entry: a control byte, then a chain in its JSON form.
def entry_text(prev, seq, at, e):
    q = lambda s: json.dumps(s, ensure_ascii=False)
    return ("signet-audit-entry-v2\nseq: %d\nat: %d\nactor: %s\naction: %s\nobject: %s\n"
            "request_digest: %s\ndetail: %s\nprev_hash: %s\n") % (
        seq, at, q(e["actor"]), q(e["action"]), q(e["object"]),
        "null" if e["request_digest"] is None else q(e["request_digest"]), q(e["detail"]), prev)

events = [
    {"actor": "ceremony", "action": "ceremony.key_generated", "object": "signet-root-p384",
     "request_digest": None, "detail": "{\"key_type\":\"p384\"}"},
    {"actor": "ra-suzhou", "action": "certificate.issued", "object": "7f01020304050607",
     "request_digest": hashlib.sha256(b"request").hexdigest(),
     "detail": "{\"profile\":\"organization\",\"subject\":\"O=宁津县精神卫生中心\"}"},
    {"actor": "ra-suzhou", "action": "certificate.revoked", "object": "7f01020304050607",
     "request_digest": hashlib.sha256(b"revoke").hexdigest(),
     "detail": "{\"reason\":\"keyCompromise\",\"comment\":\"line one\\nline two\"}"},
    {"actor": "daemon", "action": "timestamp.issued", "object": "signet-tsa-p256",
     "request_digest": None, "detail": "{\"count\":1200,\"from\":1790000000,\"to\":1790000600}"},
    {"actor": "daemon", "action": "timestamp.issued", "object": "signet-tsa-p256",
     "request_digest": None, "detail": "{\"count\":18446744073709551615,\"from\":1,\"to\":2}"},
]
def chain(evs):
    prev, entries = "0" * 64, []
    for i, e in enumerate(evs):
        seq, at = i + 1, 1790000000 + i
        h = hashlib.sha256(entry_text(prev, seq, at, e).encode()).hexdigest()
        entries.append({"seq": seq, "at": at, "event": e, "prev_hash": prev, "hash": h})
        prev = h
    return entries
write("audit_entry", "chain", b"\x07" + json.dumps(chain(events[:4]), ensure_ascii=False).encode())
write("audit_entry", "chain-edit-second", b"\x0a" + json.dumps(chain(events[:3]), ensure_ascii=False).encode())
write("audit_entry", "usage-counts", b"\x07" + json.dumps(chain(events[3:]), ensure_ascii=False).encode())

# pkcs11_uri
uris = [
    "pkcs11:token=signet-ca", "pkcs11:serial=8df1e66f75d0e9e5",
    "pkcs11:token=a;serial=8df1e66f75d0e9e5",
    "pkcs11:token=My%20CA%3B%E4%B8%AD;object=key?pin-value=1",
    "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1a2b3c4d5e6f7a8b;token=subscriber",
    "pkcs11:slot-id=3", "pkcs11:library-description=x;token=t", "8df1e66f75d0e9e5",
    "slot:0:3:0123456789ab", "pkcs11:token=", "  1a2b  ",
]
for i, u in enumerate(uris):
    write("pkcs11_uri", "uri%02d" % i, u)

# names
names = [
    "CN=张三, O=宁津县精神卫生中心, C=CN", "CN=a\\,b\\\\c, OU=x", "serialNumber=914403001922038216, CN=dev-1",
    "dns:www.example.cn", "dns:*.example.com.cn", "dns:xn--fiqs8s.xn--fiqs8s", "ip:192.0.2.1",
    "ip:2001:db8::1", "email:pki@example.cn", "www.example.cn", "*.example.cn", "*.com.cn",
    "intranet.local", "914403001922038216", "9144030071526726XG",
]
for i, n in enumerate(names):
    write("names", "name%02d" % i, n)

# ra_request: a kind byte, then a protobuf message.
def varint(n):
    b = b""
    while True:
        x = n & 0x7F
        n >>= 7
        if n:
            b += bytes([x | 0x80])
        else:
            return b + bytes([x])
def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value
def attr(t, v):
    return field(1, t) + field(2, v)
approval = field(1, "officer 7") + field(2, "RA-2026-0001") + field(3, "v3")
csr = read(os.path.join(out, "csr", "p256-sans.der"))
issue = (field(1, "req-1") + field(2, "server") + field(4, csr)
         + field(5, attr("CN", "www.example.cn")) + field(5, attr("O", "宁津县精神卫生中心"))
         + field(6, field(1, "www.example.cn")) + field(6, field(2, "192.0.2.1"))
         + field(6, field(3, "pki@example.cn")) + field(7, 1) + field(8, approval))
write("ra_request", "issue", b"\x00" + issue)
write("ra_request", "renew", b"\x01" + field(1, "req-2") + field(2, "7f:01:02:03:04:05:06:07")
      + field(3, csr) + field(4, 2) + field(5, approval))
write("ra_request", "revoke", b"\x02" + field(1, "req-3") + field(2, "7f01020304050607")
      + field(3, 1) + field(4, field(1, 1790000000)) + field(5, "key lost"))
write("ra_request", "personalize", b"\x03" + field(1, "1a2b3c4d5e6f7a8b") + field(2, "123456")
      + field(3, 2) + field(4, "personal") + field(6, attr("CN", "张三"))
      + field(7, field(3, "zhang@example.cn")) + field(8, 1) + field(9, "req-4") + field(10, approval))
write("ra_request", "issue-structured", b"\x80" + bytes(range(64)))
PY

# config: the example configurations.
cp ../hsm-config/*.toml "$OUT/config/"

echo "$(cat "$OUT"/*/* | wc -c) bytes in $OUT/"
for d in "$OUT"/*/; do printf '%-14s %3s files\n' "$(basename "$d")" "$(ls "$d" | wc -l)"; done
