#!/usr/bin/env bash
# Build the project's image from the repository's Dockerfile without a Docker
# engine, the pause image a node's pods need, and the test suite's toolbox
# (busybox and kubectl, for the harness's own tests; it never ships), as
# docker-archive files a container runtime imports (`ctr images import`).
#
# No image registry is reachable on this project's machines, so nothing is
# pulled: the Dockerfile's base (build argument PYTHON_IMAGE, by default the
# official slim Python image for users) is made here from Debian packages
# with mmdebstrap, and the mubeng stage is left out (MUBENG=none; its Go
# module is refused here, and the native engine needs nothing from it).
# buildah builds the Dockerfile as it is, with chroot isolation.
#
# Every archive is cached under $PROXYREFRESH_CACHE/images by the hash of its
# inputs, so a build happens only when they change; the paths are printed,
# one per line: the project's image, the pause image, the toolbox.
#
# Usage: hack/image.sh            build what is missing, print the archives
#        hack/image.sh --check    exit 1 (naming what is missing) if a tool is absent
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${PROXYREFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proxyrefresh}
IMAGES=$CACHE/images
STORE=$CACHE/buildah
SUITE=bookworm
# The base: what the Dockerfile's stages use of the official Python image
# (python on PATH, its venv module, CA certificates for pip).
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
# The name the image is imported under: what the chart and the operator's
# default name (proxyrefresh:dev) resolve to.
IMAGE_NAME=docker.io/library/proxyrefresh:dev
PAUSE_NAME=localhost/proxyrefresh-pause:1
TOOLBOX_NAME=localhost/proxyrefresh-toolbox:1
BIN=$CACHE/bin

missing=()
for tool in buildah mmdebstrap gcc busybox; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -x $BIN/kubectl ]] || missing+=("$BIN/kubectl (hack/tools.sh kube)")
if ((${#missing[@]})); then
  echo "image: missing ${missing[*]} (Debian packages: apt-get install buildah mmdebstrap gcc libc6-dev busybox-static)" >&2
  exit 1
fi
[[ ${1:-} == --check ]] && exit 0

mkdir -p "$IMAGES"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
B=(buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay)
log() { echo "image: $*" >&2; }
# Working containers of a build that was interrupted (their overlay mounts
# too): this storage is ours alone, so none is in use now.
"${B[@]}" rm --all >/dev/null 2>&1 || true

# The host's APT sources, for the base: the same mirrors apt-get uses here.
apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -f $f ]] && grep -q "$SUITE" "$f" && { echo "$f"; return; }
  done
  echo "image: no APT sources for $SUITE found under /etc/apt" >&2
  exit 1
}

# --- the base: Debian $SUITE minbase with Python ------------------------------
base_key=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "mmdebstrap minbase v1" | sha256sum | cut -c1-16)
BASE=localhost/proxyrefresh-base:$base_key
if ! "${B[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  if [[ ! -s $IMAGES/base-$base_key.tar ]]; then
    t0=$SECONDS
    log "making the base from Debian packages ($SUITE, $BASE_PACKAGES)"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$IMAGES/base-$base_key.tar.part" "$(apt_sources)"
    mv "$IMAGES/base-$base_key.tar.part" "$IMAGES/base-$base_key.tar"
    log "base made in $((SECONDS - t0))s"
  fi
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$IMAGES/base-$base_key.tar" / >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 "$c"
  "${B[@]}" commit -q "$c" "$BASE" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
fi

# --- the project's image, from the Dockerfile ---------------------------------
inputs=(Dockerfile pyproject.toml README.md hack/constraints.txt hack/image.sh proxyrefresh operator worker)
image_key=$( {
  echo "$base_key"
  find "${inputs[@]}" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 \
    | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)
IMAGE_TAR=$IMAGES/proxyrefresh-$image_key.tar
if [[ ! -s $IMAGE_TAR ]]; then
  t0=$SECONDS
  log "building the Dockerfile (inputs $image_key)"
  secret=()
  # pip in the build trusts what pip here trusts (a TLS-inspecting proxy's CA).
  cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  [[ -n $cert && -f $cert ]] && secret=(--secret "id=ca-bundle,src=$cert")
  "${B[@]}" build --quiet --isolation chroot --pull=never --layers=false "${secret[@]}" \
    --build-arg "PYTHON_IMAGE=$BASE" --build-arg MUBENG=none \
    -t localhost/proxyrefresh:build -f Dockerfile . >"$IMAGES/build.log" 2>&1 \
    || { tail -40 "$IMAGES/build.log" >&2; log "the Dockerfile did not build (log: $IMAGES/build.log)"; exit 1; }
  "${B[@]}" push -q localhost/proxyrefresh:build "docker-archive:$IMAGE_TAR.part:$IMAGE_NAME"
  mv "$IMAGE_TAR.part" "$IMAGE_TAR"
  "${B[@]}" rmi -f localhost/proxyrefresh:build >/dev/null 2>&1 || true
  "${B[@]}" rmi --prune >/dev/null 2>&1 || true
  # Older builds' archives go: only the newest is imported.
  find "$IMAGES" -name 'proxyrefresh-*.tar' -not -name "proxyrefresh-$image_key.tar" -delete
  log "image built in $((SECONDS - t0))s"
fi

# --- the pause image: a sandbox that sleeps until it is told to stop ----------
PAUSE_TAR=$IMAGES/pause-1.tar
if [[ ! -s $PAUSE_TAR ]]; then
  cat >"$work/pause.c" <<'C'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  gcc -O2 -static -o "$work/pause" "$work/pause.c"
  c=$("${B[@]}" from scratch)
  "${B[@]}" copy "$c" "$work/pause" /pause >/dev/null
  "${B[@]}" config --entrypoint '["/pause"]' "$c"
  "${B[@]}" commit -q "$c" "$PAUSE_NAME" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
  "${B[@]}" push -q "$PAUSE_NAME" "docker-archive:$PAUSE_TAR.part:$PAUSE_NAME"
  mv "$PAUSE_TAR.part" "$PAUSE_TAR"
fi

# --- the toolbox: busybox and kubectl, for pods of the harness's own tests -----
toolbox_key=$( { busybox | head -1; cat "$BIN/.kubectl.version"; echo toolbox v1; } | sha256sum | cut -c1-16)
TOOLBOX_TAR=$IMAGES/toolbox-$toolbox_key.tar
if [[ ! -s $TOOLBOX_TAR ]]; then
  mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
  cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
  for applet in $(busybox --list); do
    [[ -e $work/rootfs/bin/$applet ]] || ln -s busybox "$work/rootfs/bin/$applet"
  done
  cp "$BIN/kubectl" "$work/rootfs/bin/kubectl"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65532:65532:nobody:/nonexistent:/bin/false\n' >"$work/rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65532:\n' >"$work/rootfs/etc/group"
  chmod 1777 "$work/rootfs/tmp"
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$work/rootfs/" / >/dev/null
  "${B[@]}" config --env PATH=/bin --cmd /bin/sh "$c"
  "${B[@]}" commit -q "$c" "$TOOLBOX_NAME" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
  "${B[@]}" push -q "$TOOLBOX_NAME" "docker-archive:$TOOLBOX_TAR.part:$TOOLBOX_NAME"
  mv "$TOOLBOX_TAR.part" "$TOOLBOX_TAR"
  find "$IMAGES" -name 'toolbox-*.tar' -not -name "toolbox-$toolbox_key.tar" -delete
fi

echo "$IMAGE_TAR"
echo "$PAUSE_TAR"
echo "$TOOLBOX_TAR"
