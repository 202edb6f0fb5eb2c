#!/usr/bin/env bash
# Re-records the status streams under tests/fixtures/progress/ from a real
# buildkitd, with `buildctl --progress=rawjson` (one SolveStatus per line on
# stderr). Run as root on a machine prepared by scripts/setup.sh, then
# re-bless the goldens:
#
#   scripts/record-progress-fixtures.sh
#   BKD_BLESS=1 cargo test --release --test progress_golden
#
# The live-*.jsonl streams come from the differential harness instead:
#   BKD_RECORD=1 cargo test --release --test differential_progress
#
# The daemon gets a small step log limit (BUILDKIT_STEP_LOG_MAX_SIZE) so the
# clipped-log fixture stays small; the daemon's clip behaviour is the same at
# its 2 MiB default.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/tests/fixtures/progress"
work="$(mktemp -d /tmp/bkd-record-XXXXXX)"
mkdir -p "$out"

log() { printf 'record: %s\n' "$*" >&2; }

daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

addr="unix://$work/buildkitd.sock"
BUILDKIT_STEP_LOG_MAX_SIZE=32768 buildkitd --root "$work/root" --addr "$addr" \
  >"$work/buildkitd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  buildctl --addr "$addr" debug workers >/dev/null 2>&1 && break
  sleep 0.2
done
buildctl --addr "$addr" debug workers >/dev/null

busybox_stage='FROM scratch AS bb
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
'

# record NAME EXPECT(ok|fail) DOCKERFILE
record() {
  local name=$1 expect=$2 dockerfile=$3
  local ctx="$work/ctx-$name"
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  printf '%s' "$dockerfile" >"$ctx/Dockerfile"
  printf 'hello from the context\n' >"$ctx/hello.txt"
  log "$name"
  set +e
  buildctl --addr "$addr" build --progress=rawjson \
    --frontend dockerfile.v0 --local context="$ctx" --local dockerfile="$ctx" \
    --output "type=image,name=bkd.test/fixture/$name:latest" \
    2>"$work/$name.stderr" >/dev/null
  local rc=$?
  set -e
  # Only the JSON lines; buildctl's final error line is not part of the stream.
  grep '^{' "$work/$name.stderr" >"$out/$name.jsonl"
  if [ "$expect" = ok ] && [ $rc -ne 0 ]; then
    log "$name failed unexpectedly:"; cat "$work/$name.stderr" >&2; exit 1
  fi
  if [ "$expect" = fail ] && [ $rc -eq 0 ]; then
    log "$name succeeded but should fail"; exit 1
  fi
}

multi_stage="${busybox_stage}
FROM bb AS gen
RUN echo generating && for i in 1 2 3; do echo line \$i; done && echo to-stderr >&2 && printf 'no newline at end' && sleep 0.3
RUN echo built > /built.txt

FROM bb
COPY --from=gen /built.txt /built.txt
COPY hello.txt /hello.txt
RUN cat /built.txt /hello.txt
"

record success ok "$multi_stage"
record cached ok "$multi_stage"
record failure fail "${busybox_stage}
FROM bb
RUN echo starting && echo about to fail >&2 && exit 3
"
record warning ok "${busybox_stage}
from bb as final
ENV SECRET_TOKEN=not-really
RUN echo warned
"
record clipped ok "${busybox_stage}
FROM bb
RUN yes 'a long log line that repeats until the daemon clips it' | head -c 60000 && echo tail-marker
"
log "wrote $(ls "$out"/*.jsonl | wc -l) streams to $out"
