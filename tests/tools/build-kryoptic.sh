#!/usr/bin/env bash
# build-kryoptic.sh — build kryoptic's PKCS#11 module (a second soft token for the tests).
#
# signet's token and CA tests run against SoftHSM2 and against kryoptic, an independent
# PKCS#11 soft token written in Rust, so that what one module happens to do (keep a token's
# serial across C_InitToken, list only real objects, ...) is never mistaken for PKCS#11.
# kryoptic is not packaged by Debian 12: this script builds its cdylib,
# libkryoptic_pkcs11.so, from the crate published on crates.io, against the system OpenSSL
# (feature kryoptic-lib/dynamic; Debian 12 has OpenSSL 3.0). Nothing of kryoptic's source
# enters the repository: it is fetched into Cargo's registry cache and unpacked under the
# output directory.
#
# Output: $SIGNET_KRYOPTIC_DIR (default <project root>/var/kryoptic)/lib/libkryoptic_pkcs11.so.
# A stamp beside it records the version and features it was built with; a second run with
# the same ones does nothing and prints the path at once. The last line on stdout is always
# the module's path.
#
# Needs: cargo, a C toolchain, pkg-config, libssl-dev and libclang-dev (bindgen).
# softhsm-setup.sh --with-test-tools installs them and calls this script.
set -euo pipefail

readonly VERSION="1.5.4"
readonly FEATURES="kryoptic-lib/dynamic kryoptic-lib/sqlitedb kryoptic-lib/ecc_min kryoptic-lib/rsa kryoptic-lib/hash_all kryoptic-lib/aes kryoptic-lib/kdf_all"

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
readonly PROJECT_ROOT
OUT="${SIGNET_KRYOPTIC_DIR:-$PROJECT_ROOT/var/kryoptic}"
QUIET=0

usage() {
    cat <<EOF
Usage: tests/tools/build-kryoptic.sh [--dir DIR] [--quiet] [--help]

Builds kryoptic ${VERSION}'s PKCS#11 module from crates.io (--no-default-features, features
${FEATURES}) into DIR/lib/libkryoptic_pkcs11.so and prints its path. Cached: a second run
with the same version and features prints the path without building.

  --dir DIR   output directory (default \$SIGNET_KRYOPTIC_DIR, else ${PROJECT_ROOT}/var/kryoptic)
  --quiet     no progress; cargo's output is shown only if the build fails
EOF
}

say() { [[ $QUIET == 1 ]] || printf 'build-kryoptic: %s\n' "$*" >&2; }
die() { printf 'build-kryoptic: error: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) [[ $# -ge 2 && -n $2 ]] || die "--dir needs a directory"; OUT="$2"; shift 2 ;;
        --dir=*) OUT="${1#--dir=}"; [[ -n $OUT ]] || die "--dir needs a directory"; shift ;;
        --quiet|-q) QUIET=1; shift ;;
        --help|-h) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd -P)"
LIB="$OUT/lib/libkryoptic_pkcs11.so"
STAMP="$OUT/lib/build-stamp"
stamp_text="kryoptic ${VERSION} --no-default-features --features ${FEATURES}"

# Two runs at once (nextest setup and a developer) must not build into one directory.
if command -v flock >/dev/null 2>&1; then
    exec 8>>"$OUT/.build.lock"
    flock 8
fi

if [[ -f $LIB && -f $STAMP && "$(cat "$STAMP")" == "$stamp_text" ]]; then
    say "up to date: $LIB"
    printf '%s\n' "$LIB"
    exit 0
fi

# Runs cargo; quiet: its output is kept and shown only if it fails.
run() {
    if [[ $QUIET == 1 ]]; then
        local log rc=0
        log="$(mktemp)"
        "$@" >"$log" 2>&1 || rc=$?
        [[ $rc == 0 ]] || cat "$log" >&2
        rm -f "$log"
        return "$rc"
    fi
    "$@" >&2
}

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust first"
command -v pkg-config >/dev/null 2>&1 || die "pkg-config not found (apt-get install pkg-config)"
pkg-config --exists openssl || die "OpenSSL development files not found (apt-get install libssl-dev)"
if ! compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null &&
    ! compgen -G '/usr/lib/*/libclang*.so*' >/dev/null && [[ -z ${LIBCLANG_PATH:-} ]]; then
    die "libclang not found; bindgen needs it (apt-get install libclang-dev)"
fi

started=$SECONDS
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

# 1. Fetch the published crate into Cargo's registry cache through a throwaway manifest.
FETCH="$OUT/fetch"
mkdir -p "$FETCH/src"
cat >"$FETCH/Cargo.toml" <<EOF
# Written by tests/tools/build-kryoptic.sh: only fetches kryoptic ${VERSION}; never built.
[package]
name = "signet-kryoptic-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "src/lib.rs"

[dependencies]
kryoptic = { version = "=${VERSION}", default-features = false }

[workspace]
EOF
: >"$FETCH/src/lib.rs"
say "fetching kryoptic ${VERSION} from crates.io"
run cargo fetch --manifest-path "$FETCH/Cargo.toml" --target x86_64-unknown-linux-gnu ||
    die "cargo fetch of kryoptic ${VERSION} failed"

crate_file=""
for f in "$CARGO_HOME"/registry/cache/*/kryoptic-"$VERSION".crate; do
    [[ -f $f ]] && { crate_file="$f"; break; }
done
[[ -n $crate_file ]] || die "kryoptic-${VERSION}.crate not found under $CARGO_HOME/registry/cache"

# 2. Unpack it beside the output (never into the repository's sources).
SRC="$OUT/src"
rm -rf "$SRC"
mkdir -p "$SRC"
tar -xzf "$crate_file" -C "$SRC"
MANIFEST="$SRC/kryoptic-${VERSION}/Cargo.toml"
[[ -f $MANIFEST ]] || die "unexpected layout in $crate_file (no kryoptic-${VERSION}/Cargo.toml)"

# 3. Build the cdylib with the crate's own lock file, in a target directory of its own.
say "building libkryoptic_pkcs11.so (release; a few minutes on 2 cores)"
# shellcheck disable=SC2086 # the feature list is one word per feature
run env -u CARGO_TARGET_DIR cargo build --release --locked \
    --manifest-path "$MANIFEST" --target-dir "$OUT/target" \
    --no-default-features --features "$FEATURES" ||
    die "cargo build of kryoptic ${VERSION} failed"

built="$OUT/target/release/libkryoptic_pkcs11.so"
[[ -f $built ]] || die "the build finished but $built is missing"
mkdir -p "$OUT/lib"
cp -f "$built" "$LIB.tmp"
mv -f "$LIB.tmp" "$LIB"
printf '%s\n' "$stamp_text" >"$STAMP"
say "built $LIB in $((SECONDS - started))s"
printf '%s\n' "$LIB"
