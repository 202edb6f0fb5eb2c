#!/usr/bin/env bash
# Builds bkd's two container images from Debian packages, with bkd itself:
#   root      (privileged pods; state in /var/lib/buildkit)
#   rootless  (user 1000:1000; state in /home/user/.local/share/buildkit;
#              newuidmap/newgidmap with file capabilities)
# The base root filesystem comes from mmdebstrap (no registry or internet
# needed, only the Debian mirror apt uses); buildkitd and buildctl are the
# ones scripts/setup.sh built, bkd is stripped and linked as
# buildctl-daemonless.sh. Run as root after scripts/setup.sh.
#
#   scripts/image.sh [--out DIR] [--push REPO] [--insecure-registry HOST:PORT]
#                    [--suite SUITE] [--mirror URL] [--bkd PATH] [--base-cache DIR]
#                    [--subids START:COUNT]
#
#   --out DIR       writes DIR/root.oci.tar and DIR/rootless.oci.tar (default: image/out)
#   --push REPO     also pushes REPO:root and REPO:rootless (e.g. registry.example.com/bkd)
#   --insecure-registry HOST:PORT  the push registry speaks plain HTTP (loopback needs no flag)
#   --suite SUITE   Debian suite of the base (default: this machine's, else bookworm)
#   --mirror URL    Debian mirror (default: mmdebstrap's, or this machine's apt sources)
#   --bkd PATH      the bkd binary to ship (default: target/release/bkd)
#   --base-cache DIR  keep the base root filesystem in DIR and reuse it while the
#                   suite and package list are the same
#   --subids START:COUNT  the rootless user's /etc/subuid and /etc/subgid range
#                   (default 100000:65536; for hostUsers: false pods, 1001:64535)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/image/out"
push=""
insecure=()
suite=""
mirror=""
bkd="$here/target/release/bkd"
base_cache=""
subids="100000:65536"
# What the base needs beyond minbase: the OCI runtime buildkitd runs, the
# rootless pieces, certificates for HTTPS registries, setcap for the build.
packages="runc,rootlesskit,uidmap,ca-certificates,libcap2-bin"

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --push) push="${2:?--push needs a repository}"; shift 2 ;;
    --insecure-registry) insecure+=(--insecure-registry "${2:?--insecure-registry needs HOST:PORT}"); shift 2 ;;
    --suite) suite="${2:?--suite needs a name}"; shift 2 ;;
    --mirror) mirror="${2:?--mirror needs a URL}"; shift 2 ;;
    --bkd) bkd="${2:?--bkd needs a path}"; shift 2 ;;
    --base-cache) base_cache="${2:?--base-cache needs a directory}"; shift 2 ;;
    --subids) subids="${2:?--subids needs START:COUNT}"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap and the privileged build need it)"
for tool in mmdebstrap strip; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup.sh"
done
[[ "$subids" =~ ^[0-9]+:[1-9][0-9]*$ ]] || die "--subids $subids: expected START:COUNT"
[ -x "$bkd" ] || die "$bkd not found: run scripts/setup.sh (it builds bkd)"
buildkitd="$(command -v buildkitd)" || die "buildkitd not found: run scripts/setup.sh"
buildctl="$(command -v buildctl)" || die "buildctl not found: run scripts/setup.sh"
if [ -z "$suite" ]; then
  suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
  suite="${suite:-bookworm}"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/bkd-image.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
started=$SECONDS

# The base root filesystem. Documentation and locales are left out; /dev is
# emptied (the runtime provides it).
make_base() {
  local dest="$1"
  local args=(--variant=minbase --include="$packages" --format=directory
              --dpkgopt='path-exclude=/usr/share/man/*'
              --dpkgopt='path-exclude=/usr/share/doc/*'
              --dpkgopt='path-include=/usr/share/doc/*/copyright'
              --dpkgopt='path-exclude=/usr/share/locale/*'
              --dpkgopt='path-exclude=/usr/share/info/*')
  log "making the base root filesystem ($suite, minbase + $packages)"
  rm -rf "$dest"
  if [ -n "$mirror" ]; then
    mmdebstrap --quiet "${args[@]}" "$suite" "$dest" "$mirror"
  else
    mmdebstrap --quiet "${args[@]}" "$suite" "$dest"
  fi
  find "$dest/dev" -mindepth 1 -delete
}

stamp="$suite $packages $mirror"
if [ -n "$base_cache" ]; then
  mkdir -p "$base_cache"
  if [ "$(cat "$base_cache/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$base_cache/rootfs" ]; then
    make_base "$base_cache/rootfs"
    printf '%s' "$stamp" >"$base_cache/stamp"
  else
    log "reusing the base root filesystem in $base_cache"
  fi
  base="$base_cache/rootfs"
else
  make_base "$work/base"
  base="$work/base"
fi

# The main context: the binaries and the Dockerfile.
ctx="$work/ctx"
mkdir -p "$ctx/bin"
install -m 0755 "$buildkitd" "$buildctl" "$ctx/bin/"
strip --strip-all -o "$ctx/bin/bkd" "$bkd"
chmod 0755 "$ctx/bin/bkd"
ln -s bkd "$ctx/bin/buildctl-daemonless.sh"
cp "$here/image/debian.Dockerfile" "$ctx/Dockerfile"
log "bkd stripped: $(du -h "$bkd" | cut -f1) -> $(du -h "$ctx/bin/bkd" | cut -f1)"

# One private daemon for both images, so the second reuses the first's
# base layer and context; stopped with the script.
state="$work/state"
# The daemon's temporary mounts go to a directory of this run's own, out of
# reach of anything cleaning the shared /tmp.
mkdir -p "$work/tmp"
for target in root rootless; do
  outputs=(-o "type=oci,dest=$out/$target.oci.tar")
  if [ -n "$push" ]; then
    outputs+=(-o "type=image,name=$push:$target,push=true")
  fi
  log "building $target"
  env -u BUILDKIT_HOST TMPDIR="$work/tmp" "$bkd" build --mode privileged --root "$state" --progress "${BKD_PROGRESS:-plain}" \
    "${insecure[@]}" --build-context "base=$base" --build-arg "SUBIDS=$subids" \
    --target "$target" "${outputs[@]}" "$ctx"
done
log "done in $((SECONDS - started))s: $out/root.oci.tar, $out/rootless.oci.tar${push:+ (pushed to $push:root, $push:rootless)}"
