#!/usr/bin/env bash
# What bkd and its test suite leave behind, checked around a run of the
# suite. `snapshot FILE` records what is there before; `check FILE` lists
# what appeared since and is still there, and fails if anything did:
# bkd's runtime directories (/run/buildkit/bkd-*, $XDG_RUNTIME_DIR/buildkit,
# the temp dir) other than ones a live bkd holds locked, temp dirs and files
# of the tests (bkd-*), the daemon's temporary mounts, mounts and runc
# containers under the temp dir, bkd guardians still running, and any
# process still running with the suite's TMPDIR in its environment.
#
# Run the suite with TMPDIR set to a directory of its own (as .ci/run does)
# so that the check sees only this run's files, not those of other runs on
# the same machine.
set -euo pipefail

tmp="${TMPDIR:-/tmp}"

# A run directory whose lock (bkd.lock) is held belongs to a live bkd.
live() {
  [ -e "$1/bkd.lock" ] && ! flock -n "$1/bkd.lock" true 2>/dev/null
}

inventory() {
  local d
  for d in /run/buildkit/bkd-* "$tmp"/bkd-* "$tmp"/.bkd-* "$tmp"/buildkit-mount* \
           "$tmp"/containerd-mount* "$tmp"/.buildkit-* /run/user/*/buildkit/bkd-*; do
    [ -e "$d" ] || continue
    live "$d" && continue
    echo "path $d"
  done
  if [ "$tmp" != /tmp ] && [ -d "$tmp" ]; then
    # The suite's own temp dir: anything at all left in it.
    find "$tmp" -mindepth 1 -maxdepth 1 | sed 's/^/path /'
  fi
  findmnt -rn -o TARGET 2>/dev/null | grep -F "$tmp/" | sed 's/^/mount /' || true
  if command -v runc >/dev/null; then
    runc list -q 2>/dev/null | while read -r id; do
      if grep -qF "\"$tmp/" "/run/runc/$id/state.json" 2>/dev/null; then
        echo "runc $id"
      fi
    done
  fi
  pgrep -a -f -- '__bkd-guard' 2>/dev/null | grep -F "$tmp/" | sed 's/^/process /' || true
  if [ "$tmp" != /tmp ]; then
    # Anything still running that the suite started: its environment has
    # the suite's TMPDIR (daemons, registries, servers a test left behind).
    local p
    for p in /proc/[0-9]*; do
      p="${p#/proc/}"
      mine "$p" && continue
      { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qxF "TMPDIR=$tmp" || continue
      echo "process $p $({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | cut -c1-120)"
    done
  fi
}

# Whether process $1 is this script, one of its ancestors or one of its
# children (the commands it runs while checking).
mine() {
  local q="$1"
  while [ -n "$q" ] && [ "$q" -gt 1 ]; do
    [ "$q" = "$$" ] && return 0
    q="$(awk '{print $4}' "/proc/$q/stat" 2>/dev/null)"
  done
  q="$$"
  while [ -n "$q" ] && [ "$q" -gt 1 ]; do
    [ "$q" = "$1" ] && return 0
    q="$(awk '{print $4}' "/proc/$q/stat" 2>/dev/null)"
  done
  return 1
}

case "${1:-}" in
  snapshot)
    inventory | sort -u >"$2"
    ;;
  check)
    left="$(comm -13 "$2" <(inventory | sort -u))"
    if [ -n "$left" ]; then
      echo "check-leftovers: the test suite left these behind:" >&2
      echo "$left" >&2
      exit 1
    fi
    echo "check-leftovers: nothing left behind" >&2
    ;;
  *)
    echo "usage: $0 snapshot FILE | check FILE" >&2
    exit 2
    ;;
esac
