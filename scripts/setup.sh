#!/usr/bin/env bash
# Installs everything bkd needs to build and to run its test suite on a fresh
# Debian machine, then builds bkd. Run as root. Idempotent: steps already done
# are skipped, so a second run takes seconds.
set -euo pipefail

BUILDKIT_VERSION="${BUILDKIT_VERSION:-v0.32.2}"
TEST_USER="${BKD_TEST_USER:-bkdtest}"
PREFIX=/usr/local/bin
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages, creates the test user)"
    exit 1
  fi
}

install_packages() {
  local pkgs=(runc rootlesskit uidmap docker-registry busybox-static slirp4netns
              iproute2 procps util-linux time openssh-client openssl apache2-utils
              mmdebstrap binutils libcap2-bin git)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The packaged registry starts a system service on :5000; tests run their own.
  if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
}

installed_buildkit_version() {
  "$PREFIX/buildkitd" --version 2>/dev/null | awk '{print $3}'
}

install_buildkit() {
  if [ "$(installed_buildkit_version)" = "$BUILDKIT_VERSION" ] && [ -x "$PREFIX/buildctl" ] \
     && [ -x "$PREFIX/buildctl-daemonless.sh" ]; then
    return
  fi
  log "building buildkitd and buildctl $BUILDKIT_VERSION from the Go module"
  # The module's go.mod has exclude directives, which `go install pkg@version`
  # refuses; build inside a writable copy of the downloaded module instead.
  local moddir src
  moddir="$(go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$moddir" ] || { log "go mod download of github.com/moby/buildkit@$BUILDKIT_VERSION failed"; exit 1; }
  src="$(mktemp -d /tmp/bkd-buildkit-src.XXXXXX)"
  cp -r "$moddir/." "$src"
  chmod -R u+w "$src"
  local ldflags="-X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit"
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ldflags" -o "$PREFIX/" ./cmd/buildkitd ./cmd/buildctl)
  rm -rf "$src"
  # buildctl-daemonless.sh ships in the module itself: it is the reference
  # the benchmarks and compatibility tests compare bkd against.
  install -m 0755 "$moddir/examples/buildctl-daemonless/buildctl-daemonless.sh" \
    "$PREFIX/buildctl-daemonless.sh"
}

# The pod tests run containers under Docker's default seccomp profile (what
# Kubernetes' RuntimeDefault amounts to). Debian ships it as data in the
# moby Go sources package; only that one file is extracted, nothing installed.
SECCOMP_PROFILE=/usr/local/share/bkd-test/seccomp/docker-default.json
install_seccomp_profile() {
  [ -s "$SECCOMP_PROFILE" ] && return
  log "extracting Docker's default seccomp profile from Debian's golang-github-docker-docker-dev"
  local tmp
  tmp="$(mktemp -d /tmp/bkd-seccomp.XXXXXX)"
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root golang-github-docker-docker-dev >/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/golang-github-docker-docker-dev_*.deb \
    | tar -x -C "$tmp" ./usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json
  install -D -m 0644 "$tmp/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json" \
    "$SECCOMP_PROFILE"
  rm -rf "$tmp"
}

# The differential tests build tests/differential/oracle, a small Go program
# around the .dockerignore matcher buildctl uses (moby/patternmatcher), with
# the module cache only; make sure the module is in it.
fetch_reference_matcher() {
  (cd "$here/tests/differential/oracle" && GOTOOLCHAIN=local go mod download)
}

create_test_user() {
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    log "creating unprivileged test user $TEST_USER"
    useradd --create-home --shell /bin/bash "$TEST_USER"
  fi
  local f
  for f in /etc/subuid /etc/subgid; do
    touch "$f"
    grep -q "^$TEST_USER:" "$f" || echo "$TEST_USER:200000:65536" >>"$f"
  done
}

build_bkd() {
  log "building bkd"
  (cd "$here" && cargo build --release --locked --all-targets 2>&1 | tail -n 3 >&2)
}

# bkd on PATH, with its manual pages and bash completion, so the README's
# quick start runs as written.
install_bkd() {
  local man=/usr/local/share/man/man1 completions=/usr/local/share/bash-completion/completions
  install -m 0755 "$here/target/release/bkd" "$PREFIX/bkd"
  mkdir -p "$man" "$completions"
  "$PREFIX/bkd" man >"$man/bkd.1"
  "$PREFIX/bkd" man build >"$man/bkd-build.1"
  "$PREFIX/bkd" completion bash >"$completions/bkd"
}

need_root
install_packages
install_buildkit
install_seccomp_profile
fetch_reference_matcher
create_test_user
build_bkd
install_bkd
log "done: buildkitd $(installed_buildkit_version), bkd $("$PREFIX/bkd" --version | awk 'NR == 1 {print $2}') at $PREFIX/bkd"
