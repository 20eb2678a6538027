#!/usr/bin/env bash
# Build the Go-made tools the tests and the demo need, once, into a cache.
#
# Every tool comes from its Go module through the module proxy at a pinned
# version and is built into "$PROXYREFRESH_CACHE/bin" (default
# ~/.cache/proxyrefresh/bin). A tool already there at the pinned version is
# not rebuilt, so this is cheap to run before every test run.
#
# Usage: hack/tools.sh [tool ...]   (default: all)
#        hack/tools.sh --path       print the bin directory and exit
set -euo pipefail

KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
# mubeng: the Go module proxy answers 403 for every version of
# github.com/mubeng/mubeng (and kitabisa/mubeng) here, so it is not built by
# default; `hack/tools.sh mubeng` tries.
MUBENG_VERSION=v0.22.0
HELM_VERSION=v3.19.5
# The node: containerd v2 (kubelet 1.34 needs its RuntimeConfig call, which
# Debian's 1.6 lacks) and crictl. runc and the CNI plugins come from Debian.
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.34.0

CACHE=${PROXYREFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proxyrefresh}
BIN=$CACHE/bin
SRC=$CACHE/src
mkdir -p "$BIN" "$SRC"

if [[ "${1:-}" == "--path" ]]; then echo "$BIN"; exit 0; fi

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "tools: Go is not installed; install Go >= 1.24 to build $*" >&2
    exit 3
  fi
}

# stamp NAME VERSION: true if BIN/NAME was built at VERSION.
built() { [[ -x "$BIN/$1" && "$(cat "$BIN/.$1.version" 2>/dev/null)" == "$2" ]]; }
mark() { echo "$2" >"$BIN/.$1.version"; }

# A throwaway module per tool: lets us pin one version, add replaces, and
# build with -mod=mod without touching any checkout.
module_dir() {
  local dir=$SRC/$1-$2
  mkdir -p "$dir"
  echo "$dir"
}

build_kube() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl) todo=()
  for n in "${names[@]}"; do built "$n" "$KUBE_VERSION" || todo+=("$n"); done
  ((${#todo[@]})) || return 0
  need_go "${todo[*]}"
  local dir minor gomod
  dir=$(module_dir kubernetes "$KUBE_VERSION")
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  (cd "$dir" && go mod download k8s.io/kubernetes@"$KUBE_VERSION")
  gomod=$(cd "$dir" && go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
  # k8s.io/kubernetes pins its staging modules at v0.0.0 and replaces them
  # with ./staging paths that do not exist outside its repository; point each
  # at the published v0.<minor>.<patch> of the same release instead.
  {
    echo "module proxyrefresh.local/kubetools"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 v0.'"${KUBE_VERSION#v1.}"'#p' "$gomod"
    echo ")"
  } >"$dir/go.mod"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for n in "${todo[@]}"; do
    local t0=$SECONDS
    echo "tools: building $n $KUBE_VERSION (cold builds take minutes)" >&2
    (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ld" \
      -o "$BIN/$n" "k8s.io/kubernetes/cmd/$n")
    mark "$n" "$KUBE_VERSION"
    echo "tools: built $n in $((SECONDS - t0))s" >&2
  done
}

build_etcd() {
  built etcd "$ETCD_VERSION" && return 0
  need_go etcd
  local dir t0=$SECONDS
  dir=$(module_dir etcd "$ETCD_VERSION")
  # etcd's own main module carries replace directives, so `go install` of it
  # is refused; its server module exports the same entry point.
  cat >"$dir/go.mod" <<MOD
module proxyrefresh.local/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  echo "tools: building etcd $ETCD_VERSION" >&2
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go mod tidy && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
  mark etcd "$ETCD_VERSION"
  echo "tools: built etcd in $((SECONDS - t0))s" >&2
}

build_simple() { # NAME VERSION PACKAGE
  built "$1" "$2" && return 0
  need_go "$1"
  local dir t0=$SECONDS
  dir=$(module_dir "$1" "$2")
  echo "tools: building $1 $2" >&2
  (cd "$dir" && GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$3@$2")
  mark "$1" "$2"
  echo "tools: built $1 in $((SECONDS - t0))s" >&2
}

# containerd has no replace directives, so `go install` builds it; btrfs
# support needs cgo, so it is tagged out (the node uses overlayfs).
build_containerd() {
  local names=(containerd containerd-shim-runc-v2 ctr) todo=()
  for n in "${names[@]}"; do built "$n" "$CONTAINERD_VERSION" || todo+=("$n"); done
  ((${#todo[@]})) || return 0
  need_go containerd
  local dir t0=$SECONDS mod=github.com/containerd/containerd/v2
  dir=$(module_dir containerd "$CONTAINERD_VERSION")
  echo "tools: building containerd $CONTAINERD_VERSION" >&2
  (cd "$dir" && GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -tags no_btrfs \
    -ldflags "-s -w -X $mod/version.Version=$CONTAINERD_VERSION" \
    "$mod/cmd/containerd@$CONTAINERD_VERSION" \
    "$mod/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$mod/cmd/ctr@$CONTAINERD_VERSION")
  for n in "${names[@]}"; do mark "$n" "$CONTAINERD_VERSION"; done
  echo "tools: built containerd in $((SECONDS - t0))s" >&2
}

build_mubeng() { build_simple mubeng "$MUBENG_VERSION" github.com/mubeng/mubeng; }
# With the version stamps helm's own release build sets: without them
# `helm template` assumes Kubernetes 1.20 and refuses the chart's kubeVersion.
build_helm() {
  local id="$HELM_VERSION-kube$KUBE_VERSION" minor
  built helm "$id" && return 0
  need_go helm
  local dir t0=$SECONDS mod=helm.sh/helm/v3
  minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  dir=$(module_dir helm "$HELM_VERSION")
  echo "tools: building helm $HELM_VERSION" >&2
  (cd "$dir" && GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w \
    -X $mod/internal/version.version=$HELM_VERSION \
    -X $mod/pkg/chartutil.k8sVersionMinor=$minor -X $mod/pkg/lint/rules.k8sVersionMinor=$minor" \
    "$mod/cmd/helm@$HELM_VERSION")
  mark helm "$id"
  echo "tools: built helm in $((SECONDS - t0))s" >&2
}
build_crictl() { build_simple crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl; }

tools=("$@")
((${#tools[@]})) || tools=(etcd kube helm node)
t_start=$SECONDS
for t in "${tools[@]}"; do
  case $t in
    kube|kubernetes) build_kube ;;
    etcd) build_etcd ;;
    mubeng) build_mubeng ;;
    helm) build_helm ;;
    node) build_containerd; build_crictl ;;
    *) echo "tools: unknown tool $t (mubeng, etcd, kube, helm, node)" >&2; exit 2 ;;
  esac
done
if ((SECONDS - t_start > 5)); then
  echo "tools: built ${tools[*]} in $((SECONDS - t_start))s (cache: $CACHE, $(du -sh "$CACHE" | cut -f1))" >&2
fi
