#!/usr/bin/env bash
# softhsm-setup.sh — give signet a private SoftHSM2 with an HSM token and two "USB" tokens.
#
# SoftHSM2 stands in for the CA's HSM and for subscribers' USB tokens in the quick start and
# in the test suite. This script installs what is missing, writes a private SoftHSM
# configuration (so the system-wide token store is never touched), initialises the tokens
# with random PINs kept in mode-600 files, and prints the environment to `eval`.
# Running it again changes nothing. Run `./softhsm-setup.sh --help` for details.
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly PROJECT_ROOT
readonly HSM_LABEL="signet-ca"
readonly TOKEN_LABELS=("$HSM_LABEL" "signet-usb-1" "signet-usb-2")
readonly USER_PIN_DIGITS=8
readonly KRYOPTIC_VERSION="1.5.4"
readonly SO_PIN_DIGITS=12
# Where distributions put the SoftHSM2 PKCS#11 module; the first that exists wins.
readonly MODULE_CANDIDATES=(
    /usr/lib/softhsm/libsofthsm2.so
    /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
    /usr/local/lib/softhsm/libsofthsm2.so
    /usr/lib64/pkcs11/libsofthsm2.so
)

usage() {
    cat <<EOF
Usage: ./softhsm-setup.sh [--dir DIR] [--with-test-tools] [--backup] [--quiet] [--help]

Prepares SoftHSM2 for signet, then prints shell lines to eval:

    eval "\$(./softhsm-setup.sh)"

What it does
  1. Installs SoftHSM2, OpenSC (pkcs11-tool), p11-kit and p11-kit-modules with apt-get
     when softhsm2-util, pkcs11-tool or p11-kit is missing (apt-get update runs first, and
     only when something has to be installed). Not root: uses sudo if present, else stops
     and says what to install.
  2. Writes DIR/softhsm2.conf, a private SoftHSM configuration:
         directories.tokendir = DIR/tokens
         objectstore.backend  = file
         log.level            = ERROR
         slots.removable      = false
  3. Initialises three tokens unless a token with exactly that label already exists
     (as listed by softhsm2-util --show-slots under that configuration):
         ${TOKEN_LABELS[0]}      the CA's HSM
         ${TOKEN_LABELS[1]}   plays a subscriber's USB token
         ${TOKEN_LABELS[2]}   plays a second USB token
     Each gets random decimal PINs from /dev/urandom (user PIN ${USER_PIN_DIGITS} digits,
     SO PIN ${SO_PIN_DIGITS} digits), stored in
         DIR/pins/<label>.user-pin   DIR/pins/<label>.so-pin
     with mode 600. PIN files are created once and reused on later runs; PINs are never
     printed and never put on a command line (pkcs11-tool reads them with env:VAR).
  4. Builds the SM2 soft token, signet's stand-in for an SM2 HSM (sm2-softtoken/, a
     PKCS#11 module with the vendor SM2/SM3 mechanisms): cargo build --release
     -p sm2-softtoken, into Cargo's target directory (CARGO_TARGET_DIR is honoured).
     Its tokens live in DIR/sm2-softtoken (created on first use; none is initialised here).
  5. Prints, on stdout, to be eval'ed:
         export SOFTHSM2_CONF=DIR/softhsm2.conf
         export SIGNET_PKCS11_MODULE=<libsofthsm2.so found on this system>
         export SIGNET_HSM_PIN_FILE=DIR/pins/${HSM_LABEL}.user-pin
         export SIGNET_SM2_SOFTTOKEN_MODULE=<target dir>/release/libsm2_softtoken.so
         export SIGNET_SM2_SOFTTOKEN_DIR=DIR/sm2-softtoken
         # token <label> serial <serial>     (one comment line per token)
     Progress goes to stderr, so eval sees only those lines.

Running it again changes nothing: no token is re-initialised, no PIN file and no
configuration is rewritten.

Options
  --dir DIR           Where the configuration, tokens and PIN files live.
                      Default: \$SIGNET_SOFTHSM_DIR if set, else <project root>/var/softhsm
                      (currently ${PROJECT_ROOT}/var/softhsm).
  --with-test-tools   Also install what the test suite needs, each only when missing:
                      Debian packages openssl gnutls-bin sqlite3 protobuf-compiler
                      faketime strace (clock steps and fault injection in the tests),
                      libnss3-tools (NSS's vfychain and certutil) and
                      openjdk-17-jdk-headless (javac and java: Java's PKIX validator),
                      libbcprov-java libbcpkix-java (BouncyCastle, which checks SM2 chains),
                      prometheus (promtool, which checks the metrics exposition),
                      systemd (systemd-analyze) and adduser for the package test;
                      and pkg-config libssl-dev libclang-dev to build kryoptic;
                      kryoptic ${KRYOPTIC_VERSION}, a second PKCS#11 soft token the token and
                      CA tests also run on, built from crates.io by
                      tests/tools/build-kryoptic.sh into \$SIGNET_KRYOPTIC_DIR (default
                      <project root>/var/kryoptic; about 1.5 minutes the first time,
                      nothing once built);
                      Python packages pkilint grpcio grpcio-tools (python3 -m pip install,
                      only if 'import pkilint, grpc, grpc_tools' fails);
                      cargo-nextest (cargo install cargo-nextest --locked, only if
                      'cargo nextest --version' fails).
  --backup            Also copy the token directory (every token, the CA's keys included) to
                      DIR/backup/manual-<Unix time>/ and print where. Run it after a key
                      ceremony made outside the quick start (the quick start keeps its own
                      copy, DIR/backup/ceremony-<Unix time>/). SoftHSM 2.6 rewrites a
                      token's file in place at every login: a process killed at that moment
                      leaves it empty and the token gone; the copy brings it back (stop
                      signet, copy the token's folder back into DIR/tokens/).
  --quiet             No progress messages; output of installers is shown only if they fail.
  -h, --help          This text.

Environment
  SIGNET_SOFTHSM_DIR  Default for --dir.

The test suite's command (README) is:
  ./softhsm-setup.sh --with-test-tools && cargo nextest run --no-fail-fast
EOF
}

# Everything except the final eval-able lines goes to stderr: keep the real stdout on fd 3.
exec 3>&1 1>&2

QUIET=0
WITH_TEST_TOOLS=0
BACKUP=0
DIR="${SIGNET_SOFTHSM_DIR:-$PROJECT_ROOT/var/softhsm}"

say() { [[ $QUIET == 1 ]] || printf 'softhsm-setup: %s\n' "$*"; }
die() { printf 'softhsm-setup: error: %s\n' "$*"; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) [[ $# -ge 2 && -n $2 ]] || die "--dir needs a directory"; DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#--dir=}"; [[ -n $DIR ]] || die "--dir needs a directory"; shift ;;
        --with-test-tools) WITH_TEST_TOOLS=1; shift ;;
        --backup) BACKUP=1; shift ;;
        --quiet|-q) QUIET=1; shift ;;
        --help|-h) usage >&3; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
done

# Runs a noisy command (installer). Quiet: its output is kept and shown only on failure.
run() {
    if [[ $QUIET == 1 ]]; then
        local log rc=0
        log="$(mktemp)"
        "$@" >"$log" 2>&1 || rc=$?
        if [[ $rc != 0 ]]; then cat "$log"; fi
        rm -f "$log"
        return "$rc"
    fi
    "$@"
}

# ---------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------

SUDO=()
need_root() {
    [[ $(id -u) == 0 ]] && return 0
    command -v sudo >/dev/null 2>&1 ||
        die "not root and sudo is not available; install as root: apt-get install $*"
    SUDO=(sudo)
}

APT_UPDATED=0
apt_install() {
    [[ $# -gt 0 ]] || return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install these packages (or their equivalents) yourself: $*"
    need_root "$@"
    if [[ $APT_UPDATED == 0 ]]; then
        say "apt-get update"
        run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

deb_installed() {
    command -v dpkg-query >/dev/null 2>&1 || return 0 # not Debian: trust the commands found
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

missing=()
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
command -v p11-kit >/dev/null 2>&1 || missing+=(p11-kit)
deb_installed p11-kit-modules || missing+=(p11-kit-modules)
if [[ $WITH_TEST_TOOLS == 1 ]]; then
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v certtool >/dev/null 2>&1 || missing+=(gnutls-bin)
    command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
    command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
    command -v faketime >/dev/null 2>&1 || missing+=(faketime)
    deb_installed libfaketime || missing+=(libfaketime)
    command -v strace >/dev/null 2>&1 || missing+=(strace)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    { command -v vfychain && command -v certutil; } >/dev/null 2>&1 || missing+=(libnss3-tools)
    { command -v javac && command -v java; } >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
    [[ -f /usr/share/java/bcprov.jar && -f /usr/share/java/bcpkix.jar ]] ||
        missing+=(libbcprov-java libbcpkix-java)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The package test: systemd-analyze judges the unit, adduser makes the signet user.
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    command -v adduser >/dev/null 2>&1 || missing+=(adduser)
    # kryoptic's build: the system OpenSSL (headers found by pkg-config) and bindgen's libclang.
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    deb_installed libssl-dev || missing+=(libssl-dev)
    deb_installed libclang-dev || missing+=(libclang-dev)
fi
apt_install "${missing[@]}"

if [[ $WITH_TEST_TOOLS == 1 ]]; then
    if ! python3 -c 'import pkilint, grpc, grpc_tools' >/dev/null 2>&1; then
        if ! python3 -m pip --version >/dev/null 2>&1; then
            apt_install python3-pip
        fi
        say "python3 -m pip install pkilint grpcio grpcio-tools"
        pip_log="$(mktemp)"
        if ! python3 -m pip install -q pkilint grpcio grpcio-tools >"$pip_log" 2>&1; then
            if grep -q externally-managed-environment "$pip_log"; then
                # Debian's own python3 refuses pip (PEP 668); the test tools go to /usr/local.
                say "system python is externally managed; retrying with --break-system-packages"
                run python3 -m pip install -q --break-system-packages pkilint grpcio grpcio-tools
            else
                cat "$pip_log"; rm -f "$pip_log"
                die "python3 -m pip install pkilint grpcio grpcio-tools failed"
            fi
        fi
        rm -f "$pip_log"
        # pyenv only sees new console scripts (lint_pkix_cert) after a rehash.
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
        python3 -c 'import pkilint, grpc, grpc_tools' >/dev/null 2>&1 ||
            die "pkilint/grpcio installed but python3 cannot import them"
    fi
    command -v lint_pkix_cert >/dev/null 2>&1 ||
        say "warning: lint_pkix_cert is not on PATH (pip may have put it in ~/.local/bin)"
    if ! cargo nextest --version >/dev/null 2>&1; then
        command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) first"
        say "cargo install cargo-nextest --locked (this compiles; a few minutes)"
        run cargo install cargo-nextest --locked
    fi
fi

if [[ $WITH_TEST_TOOLS == 1 ]]; then
    quiet_flag=()
    [[ $QUIET == 1 ]] && quiet_flag=(--quiet)
    kryoptic="$("$PROJECT_ROOT/tests/tools/build-kryoptic.sh" "${quiet_flag[@]}")" ||
        die "building kryoptic failed (tests/tools/build-kryoptic.sh)"
    say "kryoptic module: ${kryoptic##*$'\n'}"
fi

# The SM2 soft token (workspace member sm2-softtoken/): signet's stand-in for an SM2 HSM,
# built in release mode into Cargo's target directory (CARGO_TARGET_DIR is honoured).
# Cargo rebuilds only what changed, so a second run takes a second.
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) first"
say "cargo build --release -p sm2-softtoken (the SM2 soft token; a few minutes the first time)"
cargo_quiet=()
[[ $QUIET == 1 ]] && cargo_quiet=(--quiet)
run cargo build --release -p sm2-softtoken --manifest-path "$PROJECT_ROOT/Cargo.toml" "${cargo_quiet[@]}" ||
    die "building sm2-softtoken failed (cargo build --release -p sm2-softtoken)"
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$PROJECT_ROOT/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
SM2_MODULE="$target_dir/release/libsm2_softtoken.so"
[[ -f $SM2_MODULE ]] || die "sm2-softtoken built but $SM2_MODULE is missing"
say "SM2 soft token module: $SM2_MODULE"

for c in softhsm2-util pkcs11-tool p11-kit; do
    command -v "$c" >/dev/null 2>&1 || die "$c still missing after installation"
done

MODULE=""
for m in "${MODULE_CANDIDATES[@]}"; do
    if [[ -f $m ]]; then MODULE="$m"; break; fi
done
[[ -n $MODULE ]] || die "libsofthsm2.so not found in: ${MODULE_CANDIDATES[*]}"

# ---------------------------------------------------------------------------------------
# Private configuration
# ---------------------------------------------------------------------------------------

umask 077
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd -P)"
CONF="$DIR/softhsm2.conf"
TOKENS="$DIR/tokens"
PINS="$DIR/pins"
mkdir -p "$TOKENS" "$PINS"

# Two runs at once (a developer and a script) must not both initialise a token.
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$DIR/.setup.lock"
    flock 9
fi

conf_text="# SoftHSM2 configuration for signet, written by softhsm-setup.sh.
directories.tokendir = $TOKENS
objectstore.backend = file
log.level = ERROR
slots.removable = false"
if [[ -f $CONF && "$(cat "$CONF")" == "$conf_text" ]]; then
    say "configuration $CONF is up to date"
else
    [[ -f $CONF ]] && say "rewriting $CONF (its content differed)"
    printf '%s\n' "$conf_text" >"$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
    say "wrote $CONF"
fi
export SOFTHSM2_CONF="$CONF"

# ---------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------

# One line per slot: slot-id <TAB> initialized <TAB> serial <TAB> label (padding removed).
slots() {
    softhsm2-util --show-slots | awk '
        /^Slot [0-9]+/          { slot = $2; init = ""; serial = "" }
        /^ +Initialized:/       { init = $2 }
        /^ +Serial number:/     { s = $0; sub(/^ +Serial number: */, "", s); sub(/ +$/, "", s); serial = s }
        /^ +Label:/             { l = $0; sub(/^ +Label: */, "", l); sub(/ +$/, "", l)
                                  printf "%s\t%s\t%s\t%s\n", slot, init, serial, l }'
}

# Serial of the initialised token labelled exactly $1; empty if there is none.
token_serial() {
    local found
    found="$(slots | awk -F'\t' -v label="$1" '$2 == "yes" && $4 == label { print $3 }')"
    [[ $found != *$'\n'* ]] ||
        die "more than one token is labelled '$1' in $TOKENS; remove the extra ones"
    printf '%s' "$found"
}

free_slot() {
    slots | awk -F'\t' '$2 == "no" { print $1; exit }'
}

# Random decimal string of $1 digits. Bytes '0'..'9' are kept from urandom, so each digit is
# uniform; reading a fixed amount avoids SIGPIPE under pipefail.
random_digits() {
    local want="$1" pool=""
    while [[ ${#pool} -lt $want ]]; do
        pool+="$(head -c 1024 /dev/urandom | LC_ALL=C tr -dc '0-9')"
    done
    printf '%s' "${pool:0:$want}"
}

# Creates $1 holding $2 random digits unless it exists. Mode 600 via umask 077.
ensure_pin_file() {
    local file="$1" digits="$2"
    if [[ -s $file ]]; then
        chmod 600 "$file"
        return 0
    fi
    printf '%s\n' "$(random_digits "$digits")" >"$file.tmp"
    mv -f "$file.tmp" "$file"
}

read_pin() {
    local pin
    pin="$(cat "$1")"
    pin="${pin%$'\r'}"
    printf '%s' "$pin"
}

p11() {
    pkcs11-tool --module "$MODULE" "$@"
}

# Removes a token this run initialised but could not finish, so the next run starts afresh
# instead of trusting a token whose PINs are not the ones on file.
discard_token() {
    softhsm2-util --delete-token --token "$1" >/dev/null 2>&1 || true
    die "$2 (the half-made token was deleted; run again to retry)"
}

init_token() {
    local label="$1" user_file="$PINS/$1.user-pin" so_file="$PINS/$1.so-pin" slot
    ensure_pin_file "$so_file" "$SO_PIN_DIGITS"
    ensure_pin_file "$user_file" "$USER_PIN_DIGITS"
    slot="$(free_slot)"
    [[ -n $slot ]] || die "SoftHSM offers no free slot in $TOKENS"
    say "initialising token $label"
    # PINs travel by environment (pkcs11-tool's env:VAR), never on a command line.
    SIGNET_SETUP_SO_PIN="$(read_pin "$so_file")" \
        p11 --slot "$slot" --init-token --label "$label" --so-pin env:SIGNET_SETUP_SO_PIN >/dev/null ||
        discard_token "$label" "could not initialise token $label"
    SIGNET_SETUP_SO_PIN="$(read_pin "$so_file")" SIGNET_SETUP_USER_PIN="$(read_pin "$user_file")" \
        p11 --token-label "$label" --init-pin --login --login-type so \
        --so-pin env:SIGNET_SETUP_SO_PIN --pin env:SIGNET_SETUP_USER_PIN >/dev/null ||
        discard_token "$label" "could not set the user PIN of token $label"
    # Log in through differently named variables: an OpenSC that took "env:..." literally
    # would have set the PINs to those strings, and these logins would then fail.
    SIGNET_CHECK_PIN="$(read_pin "$user_file")" \
        p11 --token-label "$label" --login --pin env:SIGNET_CHECK_PIN --list-objects >/dev/null 2>&1 ||
        discard_token "$label" "token $label does not accept the user PIN in $user_file"
    SIGNET_CHECK_PIN="$(read_pin "$so_file")" \
        p11 --token-label "$label" --session-rw --login --login-type so \
        --so-pin env:SIGNET_CHECK_PIN --list-objects >/dev/null 2>&1 ||
        discard_token "$label" "token $label does not accept the SO PIN in $so_file"
}

declare -A SERIAL
for label in "${TOKEN_LABELS[@]}"; do
    serial="$(token_serial "$label")"
    if [[ -n $serial ]]; then
        for f in "$PINS/$label.user-pin" "$PINS/$label.so-pin"; do
            [[ -s $f ]] || die "token $label exists but its PIN file $f is missing;" \
                "delete the token (SOFTHSM2_CONF=$CONF softhsm2-util --delete-token" \
                "--token $label) and run again"
            chmod 600 "$f"
        done
        say "token $label already initialised (serial $serial)"
    else
        init_token "$label"
        serial="$(token_serial "$label")"
        [[ -n $serial ]] || die "token $label not listed after initialisation"
        say "token $label initialised (serial $serial)"
    fi
    SERIAL[$label]="$serial"
done

# ---------------------------------------------------------------------------------------
# Environment for eval
# ---------------------------------------------------------------------------------------

if [[ $BACKUP == 1 ]]; then
    COPY="$DIR/backup/manual-$(date +%s)"
    [[ ! -e $COPY ]] || die "$COPY already exists; run again in a second"
    mkdir -p "$DIR/backup"
    cp -a "$TOKENS" "$COPY"
    sync -f "$COPY" 2>/dev/null || sync
    say "token directory $TOKENS copied to $COPY"
fi

say "done: $DIR (eval this script's output to use it)"
{
    printf 'export SOFTHSM2_CONF=%q\n' "$CONF"
    printf 'export SIGNET_PKCS11_MODULE=%q\n' "$MODULE"
    printf 'export SIGNET_HSM_PIN_FILE=%q\n' "$PINS/$HSM_LABEL.user-pin"
    printf 'export SIGNET_SM2_SOFTTOKEN_MODULE=%q\n' "$SM2_MODULE"
    printf 'export SIGNET_SM2_SOFTTOKEN_DIR=%q\n' "$DIR/sm2-softtoken"
    for label in "${TOKEN_LABELS[@]}"; do
        printf '# token %s serial %s\n' "$label" "${SERIAL[$label]}"
    done
} >&3
