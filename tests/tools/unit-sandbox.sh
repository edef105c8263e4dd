#!/bin/sh
# unit-sandbox.sh — run a command under the sandbox signet's systemd unit asks for, where
# systemd is not there to apply it (a container whose PID 1 is not systemd). Needs root.
#
# Usage: tests/tools/unit-sandbox.sh RW_PATH USER COMMAND [ARG...]
#
# What it applies, as the unit's settings say:
#   ProtectSystem=strict  every mount is remounted read-only (except /proc, /sys, /dev)...
#   ReadWritePaths=       ...but RW_PATH, bound writable again
#   PrivateTmp=yes        fresh, empty /tmp and /var/tmp
#   User=/Group=          the command runs as USER and USER's group, no supplementary groups
#   NoNewPrivileges=yes   setpriv --no-new-privs
#   CapabilityBoundingSet= (empty) and AmbientCapabilities= (empty): no capability at all
set -eu
[ $# -ge 3 ] || { sed -n '5p' "$0" >&2; exit 2; }
exec unshare --mount --propagation private -- sh -eu -c '
rw=$1; user=$2; shift 2
mount --bind "$rw" "$rw"
for m in $(findmnt -rno TARGET | sort -u); do
    case $m in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
    [ "$m" = "$rw" ] && continue
    mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount -o remount,bind,rw "$rw"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
exec setpriv --reuid "$user" --regid "$user" --clear-groups --no-new-privs \
    --inh-caps=-all --bounding-set=-all -- "$@"
' unit-sandbox "$@"
