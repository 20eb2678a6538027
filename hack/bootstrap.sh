#!/usr/bin/env bash
# Install what the tests and the demo need; cheap and idempotent, so the
# README's commands run it every time.
#
#   - the virtualenv at .venv with proxyrefresh and its test extras, at the
#     versions in hack/constraints.txt (reinstalled only when pyproject.toml
#     or the constraints change);
#   - Debian packages: redis-server, tinyproxy, squid, dante-server,
#     microsocks, chromium and chromium-driver (the live page's test), and for
#     the real node runc, the CNI plugins, buildah and mmdebstrap, when missing;
#   - Go-built tools, cached under $PROXYREFRESH_CACHE (hack/tools.sh);
#   - the project's image, built from the Dockerfile (hack/image.sh, cached
#     by the hash of its inputs).
#
# What cannot be installed is named at the end, and the exit status is
# non-zero, so a test run stops with a message instead of a mystery.
set -uo pipefail
cd "$(dirname "$0")/.."

missing=()
PYTHON=${PYTHON:-python3}
DEBIAN_PACKAGES=(redis-server tinyproxy squid openssl dante-server microsocks chromium chromium-driver
  runc containernetworking-plugins buildah mmdebstrap iproute2 gcc libc6-dev busybox-static)
GO_TOOLS=(${PROXYREFRESH_GO_TOOLS:-})

# --- Debian packages ---------------------------------------------------------
need_pkgs=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "bootstrap: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"; } \
      >/tmp/proxyrefresh-apt.log 2>&1 \
      || { echo "bootstrap: apt-get failed, see /tmp/proxyrefresh-apt.log" >&2; missing+=("${need_pkgs[@]}"); }
    # The packages' own services are not wanted: the tests start their own.
    for svc in redis-server tinyproxy squid danted; do
      command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1 || true
    done
  else
    missing+=("${need_pkgs[@]} (Debian packages: sudo apt-get install ${need_pkgs[*]})")
  fi
fi

# --- Python ------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  missing+=("Python >= 3.11 (set PYTHON=/path/to/python3.11)")
else
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  stamp=.venv/.proxyrefresh-installed
  want=$(cat pyproject.toml hack/constraints.txt | sha256sum | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "bootstrap: installing proxyrefresh[test] into .venv" >&2
    # At the versions the suite last passed with (hack/freeze-constraints.sh
    # says why); the variable, unlike -c, reaches pip's build environment too.
    # -qq: errors only (setuptools warns of every editable install).
    pins=$PWD/hack/constraints.txt
    if PIP_CONSTRAINT=$pins .venv/bin/python -m pip install -q --upgrade pip >/dev/null \
      && PIP_CONSTRAINT=$pins .venv/bin/python -m pip install -qq -e '.[test]'; then
      echo "$want" >"$stamp"
    else
      missing+=("Python packages (pip install -e '.[test]' failed; see above)")
    fi
  fi
fi

# --- Go-built tools ----------------------------------------------------------
if ((${#GO_TOOLS[@]})); then
  bash hack/tools.sh "${GO_TOOLS[@]}" || missing+=("Go tools: ${GO_TOOLS[*]} (see hack/tools.sh output above)")
fi

# --- the project's image, for the real node -----------------------------------
bash hack/image.sh >/dev/null || missing+=("the project's image (see hack/image.sh output above)")

# --- checkov, in a virtualenv of its own (its pins would fight ours) ----------
CHECKOV_VERSION=3.3.30
CACHE=${PROXYREFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proxyrefresh}
CHECKOV_VENV=$CACHE/checkov-$CHECKOV_VERSION
if [[ ! -x $CHECKOV_VENV/bin/checkov ]]; then
  echo "bootstrap: installing checkov $CHECKOV_VERSION into $CHECKOV_VENV" >&2
  { "$PYTHON" -m venv "$CHECKOV_VENV" && "$CHECKOV_VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"; } \
    || missing+=("checkov $CHECKOV_VERSION (pip install into $CHECKOV_VENV failed)")
fi
mkdir -p "$CACHE/bin"
[[ -x $CHECKOV_VENV/bin/checkov ]] && ln -sf "$CHECKOV_VENV/bin/checkov" "$CACHE/bin/checkov"

if ((${#missing[@]})); then
  echo "bootstrap: could not install:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
