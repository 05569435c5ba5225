#!/usr/bin/env bash
# Portcullis load benchmark: direct vs Portcullis vs nginx vs Envoy (vs Express).
#
# Four scenarios, measured in one run with interleaved rounds:
#
# "plain": GET /api/v1/users/1, no credentials
#   direct      wrk -> upstream
#   portcullis  wrk -> Portcullis (plain HTTP listener) -> upstream
#   nginx       wrk -> nginx reverse proxy adding the security headers -> upstream
#   envoy       wrk -> Envoy (route + response headers added) -> upstream
#
# "jwt": the same GET with `Authorization: Bearer <valid ES256 JWT>`
#   portcullis-noauth  the "portcullis" instance above (route public = true)
#   portcullis-jwt     a second Portcullis instance whose route needs a JWT
#   envoy-noauth       the "envoy" instance above (no jwt_authn filter)
#   envoy-jwt          a second Envoy with the jwt_authn filter on /api/
#   portcullis-authz   a third Portcullis instance whose route needs the JWT
#                      and authorizes it: a permission (require), path-bound
#                      ownership (owner = {param = "id"}, so it asks for
#                      /api/v1/users/bench-user, the token's subject) and one
#                      CEL condition (allow_if)
# Key pair, JWKS and token are minted per run by bench/mint_token.py.
#
# "ratelimit": the plain GET through limits that are active but never trigger
#   portcullis-nolimit  the "portcullis" instance above (no limits)
#   portcullis-memory   the route with two limits (per address, per route;
#                       sliding window, 10^9 a minute), memory backend, with
#                       the default X-RateLimit-* and IETF RateLimit headers
#   portcullis-redis    the same limits on the Redis backend (a local
#                       redis-server pinned to SUT_CPU, beside Portcullis)
#   nginx-nolimit       the "nginx" instance above
#   nginx-limitreq      nginx with two limit_req zones (per address, per
#                       server name; burst, nodelay; rate never reached)
#
# "contract": request validation and response filtering driven by an OpenAPI
# document (bench/contract/openapi.yaml), two request types, each measured
# on every target:
#   POST /api/v1/posts with a valid ~1 KiB JSON post (bench/contract/post.json,
#        sent by bench/contract/post.lua); the upstream answers 201
#   GET  /api/v1/users/u-1; the upstream's user row (bench/contract/user.json)
#        carries internal fields: password_hash, mfa_secret, internal_flags,
#        admin_notes
#   portcullis-unvalidated  Portcullis with the two [[routes]] (public = true):
#                           no validation, no filtering
#   portcullis-validated    Portcullis with [[apis]] spec = openapi.yaml
#                           (security: []): the POST body is validated against
#                           Post, the GET answer filtered down to User
#   express-zod             the application itself: Express (bench/express/,
#                           helmet, cors allowlist, express.json 1mb,
#                           express-rate-limit never reached, zod), one Node
#                           process pinned to SUT_CPU, no upstream; the same
#                           validation (zod strictObject) and filtering (zod
#                           object strips unknown keys) done in the app
# Before the rounds each target must answer 201 to the valid POST and 200 to
# the GET; the validated ones must also answer 400 to an invalid post (title
# "") and leave no internal field in the GET answer, or they are skipped.
#
# Prints one markdown table per scenario (stdout; two for "contract": POST and
# GET) with the median across rounds of requests/s, p50 and p99 latency, CPU
# per request, plus ratios (vs direct; JWT vs no-auth and Portcullis vs Envoy
# with JWT; limits vs none; validated vs unvalidated and Portcullis vs
# Express + zod).
# Progress and diagnostics go to stderr, so `bench/run.sh > result.md` works.
#
# CPU pinning: wrk and the upstream nginx on CPU 0 (LOAD_CPU), the system under
# test on CPU 1 (SUT_CPU). Every proxy gets exactly one worker.
#
# Environment (defaults in brackets):
#   DURATION        measured wrk run per target per round [10s]
#   WARMUP          un-measured wrk run right before each measurement [2s]
#   ROUNDS          rounds; the median per target is reported [3]
#   CONNECTIONS     wrk connections [50]
#   WRK_THREADS     wrk threads (wrk shares one core with the upstream) [1]
#   SCENARIOS       space-separated subset of: plain jwt ratelimit contract
#                   [all]
#   TARGETS         "plain" targets, subset of: direct portcullis nginx envoy
#                   [all four]
#   JWT_TARGETS     "jwt" targets, subset of: portcullis-noauth portcullis-jwt
#                   portcullis-authz envoy-noauth envoy-jwt [all five]
#   RL_TARGETS      "ratelimit" targets, subset of: portcullis-nolimit
#                   portcullis-memory portcullis-redis nginx-nolimit
#                   nginx-limitreq [all five]
#   CONTRACT_TARGETS "contract" targets, subset of: portcullis-unvalidated
#                   portcullis-validated express-zod [all three]
#   JWT_CACHE       1: both gateways may cache the verified token (Portcullis'
#                   default cache; Envoy jwt_cache_config); 0: both caches
#                   off, every request pays the ES256 verification [1]
#   BASE_PORT       ports BASE_PORT+1..+16 are used [61080]; the default range
#                   sits above Linux's ephemeral port range (32768-60999)
#   PORTCULLIS_BIN  Portcullis binary [target/release/portcullis, relative to
#                   the repository root]; its targets are skipped (with a
#                   message and a note under the table) if it is missing, if
#                   `portcullis check` rejects the config, or if it does not
#                   start; a binary older than src/ gets a warning
#   PYTHON          Python 3 with `cryptography`, for mint_token.py [python3]
#   NODE            Node.js (20 or later) for bench/express/server.js [node];
#                   express-zod is skipped (with a message and a note) if it
#                   or bench/express/node_modules (bench/setup.sh) is missing
#   ENVOY_BIN       Envoy binary [found/installed by bench/setup.sh]
#   LOAD_CPU        CPU for wrk + upstream [0]
#   SUT_CPU         CPU for the proxy under test [1]
#   SKIP_SETUP=1    do not run bench/setup.sh
#   KEEP_TMP=1      keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
WRK_THREADS="${WRK_THREADS:-1}"
SCENARIOS="${SCENARIOS:-plain jwt ratelimit contract}"
TARGETS="${TARGETS:-direct portcullis nginx envoy}"
JWT_TARGETS="${JWT_TARGETS:-portcullis-noauth portcullis-jwt portcullis-authz envoy-noauth envoy-jwt}"
RL_TARGETS="${RL_TARGETS:-portcullis-nolimit portcullis-memory portcullis-redis nginx-nolimit nginx-limitreq}"
CONTRACT_TARGETS="${CONTRACT_TARGETS:-portcullis-unvalidated portcullis-validated express-zod}"
JWT_CACHE="${JWT_CACHE:-1}"
PYTHON="${PYTHON:-python3}"
NODE="${NODE:-node}"
BASE_PORT="${BASE_PORT:-61080}"
LOAD_CPU="${LOAD_CPU:-0}"
SUT_CPU="${SUT_CPU:-1}"
PORTCULLIS_BIN="${PORTCULLIS_BIN:-target/release/portcullis}"
# Plain numbers mean seconds (DURATION=3 == DURATION=3s), as for wrk itself.
[[ "$DURATION" =~ ^[0-9]+$ ]] && DURATION="${DURATION}s"
[[ "$WARMUP" =~ ^[0-9]+$ ]] && WARMUP="${WARMUP}s"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 1; }
[[ "$JWT_CACHE" == 0 || "$JWT_CACHE" == 1 ]] || { echo "JWT_CACHE must be 0 or 1" >&2; exit 1; }
[[ "$PORTCULLIS_BIN" == /* ]] || PORTCULLIS_BIN="$REPO_DIR/$PORTCULLIS_BIN"

REQ_PATH="/api/v1/users/1"
# contract scenario
POST_PATH="/api/v1/posts"
USER_PATH="/api/v1/users/u-1"
POST_BODY="$BENCH_DIR/contract/post.json"
INTERNAL_FIELDS=(password_hash mfa_secret internal_flags admin_notes)

UPSTREAM_PORT=$((BASE_PORT + 1))
PORTCULLIS_PORT=$((BASE_PORT + 2))
NGINX_PORT=$((BASE_PORT + 3))
ENVOY_PORT=$((BASE_PORT + 4))
PORTCULLIS_JWT_PORT=$((BASE_PORT + 5))
ENVOY_JWT_PORT=$((BASE_PORT + 6))
PORTCULLIS_AUTHZ_PORT=$((BASE_PORT + 7))
ENVOY_JWT_ADMIN_PORT=$((BASE_PORT + 8))
ENVOY_ADMIN_PORT=$((BASE_PORT + 9))
PORTCULLIS_RLMEM_PORT=$((BASE_PORT + 10))
PORTCULLIS_RLREDIS_PORT=$((BASE_PORT + 11))
NGINX_RL_PORT=$((BASE_PORT + 12))
REDIS_PORT=$((BASE_PORT + 13))
PORTCULLIS_CU_PORT=$((BASE_PORT + 14))
PORTCULLIS_CV_PORT=$((BASE_PORT + 15))
EXPRESS_PORT=$((BASE_PORT + 16))

SEC_HEADERS=(strict-transport-security x-content-type-options x-frame-options
             content-security-policy referrer-policy x-request-id)

log() { echo "[bench] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
if [[ "${SKIP_SETUP:-0}" != 1 ]]; then
    ENVOY_FOUND="$("$BENCH_DIR/setup.sh" --print-envoy)"
    ENVOY_BIN="${ENVOY_BIN:-$ENVOY_FOUND}"
fi
for t in wrk nginx curl taskset; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run bench/setup.sh)"
done
NGINX_BIN="$(command -v nginx)"

nproc_online="$(nproc)"
((LOAD_CPU < nproc_online && SUT_CPU < nproc_online)) \
    || die "need CPUs $LOAD_CPU and $SUT_CPU, have $nproc_online"

# ---- which scenarios and targets -------------------------------------------------
# A "target" is one measured series. SERVER maps it to the process that serves
# it (whose CPU time is counted); the two scenarios share the upstream, the
# "portcullis" and the "envoy" instances.
declare -A SERVER=(
    [direct]=upstream [portcullis]=portcullis [nginx]=nginx [envoy]=envoy
    [portcullis-noauth]=portcullis [portcullis-jwt]=portcullis-jwt
    [portcullis-authz]=portcullis-authz
    [envoy-noauth]=envoy [envoy-jwt]=envoy-jwt
    [portcullis-nolimit]=portcullis [portcullis-memory]=portcullis-rlmem
    [portcullis-redis]=portcullis-rlredis [nginx-nolimit]=nginx [nginx-limitreq]=nginx-rl
    [portcullis-unvalidated]=portcullis-cu [portcullis-validated]=portcullis-cv
    [express-zod]=express-zod
)
# A contract target is measured as two series, "TARGET:post" and
# "TARGET:get", served by the same process.
for t in portcullis-unvalidated portcullis-validated express-zod; do
    SERVER[$t:post]="${SERVER[$t]}"; SERVER[$t:get]="${SERVER[$t]}"
done
WANT_PLAIN=0; WANT_JWT=0; WANT_RL=0; WANT_CT=0
for s in $SCENARIOS; do
    case "$s" in
        plain) WANT_PLAIN=1 ;;
        jwt) WANT_JWT=1 ;;
        ratelimit) WANT_RL=1 ;;
        contract) WANT_CT=1 ;;
        *) die "unknown scenario '$s' (valid: plain jwt ratelimit contract)" ;;
    esac
done
PLAIN=(); JWT=(); RL=(); CT=()
if ((WANT_PLAIN)); then
    for t in $TARGETS; do
        case "$t" in
            direct|portcullis|nginx|envoy) PLAIN+=("$t") ;;
            *) die "unknown target '$t' in TARGETS (valid: direct portcullis nginx envoy)" ;;
        esac
    done
fi
if ((WANT_JWT)); then
    for t in $JWT_TARGETS; do
        case "$t" in
            portcullis-noauth|portcullis-jwt|portcullis-authz|envoy-noauth|envoy-jwt) JWT+=("$t") ;;
            *) die "unknown target '$t' in JWT_TARGETS (valid: portcullis-noauth portcullis-jwt portcullis-authz envoy-noauth envoy-jwt)" ;;
        esac
    done
fi
if ((WANT_RL)); then
    for t in $RL_TARGETS; do
        case "$t" in
            portcullis-nolimit|portcullis-memory|portcullis-redis|nginx-nolimit|nginx-limitreq) RL+=("$t") ;;
            *) die "unknown target '$t' in RL_TARGETS (valid: portcullis-nolimit portcullis-memory portcullis-redis nginx-nolimit nginx-limitreq)" ;;
        esac
    done
fi
if ((WANT_CT)); then
    for t in $CONTRACT_TARGETS; do
        case "$t" in
            portcullis-unvalidated|portcullis-validated|express-zod) CT+=("$t") ;;
            *) die "unknown target '$t' in CONTRACT_TARGETS (valid: portcullis-unvalidated portcullis-validated express-zod)" ;;
        esac
    done
fi

SKIPPED_NOTES=()
PORTCULLIS_REL="${PORTCULLIS_BIN#"$REPO_DIR/"}"
PORTCULLIS_STALE=""

# Drops every target served by process $1 (e.g. when it cannot start).
drop_server() {
    local srv="$1" t keep=()
    for t in "${PLAIN[@]}"; do [[ "${SERVER[$t]}" == "$srv" ]] || keep+=("$t"); done
    PLAIN=("${keep[@]}"); keep=()
    for t in "${JWT[@]}"; do [[ "${SERVER[$t]}" == "$srv" ]] || keep+=("$t"); done
    JWT=("${keep[@]}"); keep=()
    for t in "${RL[@]}"; do [[ "${SERVER[$t]}" == "$srv" ]] || keep+=("$t"); done
    RL=("${keep[@]}"); keep=()
    for t in "${CT[@]}"; do [[ "${SERVER[$t]}" == "$srv" ]] || keep+=("$t"); done
    CT=("${keep[@]}")
}
# Process $1 is needed by some selected target.
needs() {
    local t
    for t in "${PLAIN[@]}" "${JWT[@]}" "${RL[@]}" "${CT[@]}"; do [[ "${SERVER[$t]}" == "$1" ]] && return 0; done
    return 1
}

if needs envoy || needs envoy-jwt; then
    [[ -n "${ENVOY_BIN:-}" && -x "$ENVOY_BIN" ]] \
        || die "envoy binary not found (set ENVOY_BIN or run bench/setup.sh)"
fi
if needs portcullis || needs portcullis-jwt || needs portcullis-authz \
    || needs portcullis-rlmem || needs portcullis-rlredis \
    || needs portcullis-cu || needs portcullis-cv; then
    if [[ ! -x "$PORTCULLIS_BIN" ]]; then
        log "SKIP portcullis targets: binary not found at $PORTCULLIS_BIN (build it with 'cargo build --release' or set PORTCULLIS_BIN)"
        SKIPPED_NOTES+=("portcullis skipped: no binary at \`$PORTCULLIS_REL\`")
        drop_server portcullis; drop_server portcullis-jwt; drop_server portcullis-authz
        drop_server portcullis-rlmem; drop_server portcullis-rlredis
        drop_server portcullis-cu; drop_server portcullis-cv
    elif [[ -d "$REPO_DIR/src" ]]; then
        newer="$(find "$REPO_DIR/src" -type f -newer "$PORTCULLIS_BIN" | wc -l)"
        if ((newer > 0)); then
            newest="$(find "$REPO_DIR/src" -type f -newer "$PORTCULLIS_BIN" -printf '%T@ %P\n' \
                | sort -n | tail -n1 | cut -d' ' -f2-)"
            PORTCULLIS_STALE="\`$PORTCULLIS_REL\` is older than $newer file(s) under src/ (newest: src/$newest)"
            log "WARNING: $PORTCULLIS_STALE; it may not match the source or the configs below. Rebuild: cargo build --release"
            SKIPPED_NOTES+=("$PORTCULLIS_STALE: the Portcullis figures may not be those of the current source")
        fi
    fi
fi
if ((${#JWT[@]})); then
    "$PYTHON" -c 'import cryptography.hazmat.primitives.asymmetric.ec' >/dev/null 2>&1 \
        || die "$PYTHON cannot import 'cryptography' (needed by bench/mint_token.py; run bench/setup.sh or pip install cryptography)"
fi
if needs portcullis-rlredis && ! command -v redis-server >/dev/null 2>&1; then
    log "SKIP portcullis-redis: redis-server not found (apt-get install redis-server)"
    SKIPPED_NOTES+=("portcullis-redis skipped: no redis-server")
    drop_server portcullis-rlredis
fi
NODE_VER=""
if needs express-zod; then
    why=""
    if ! command -v "$NODE" >/dev/null 2>&1; then
        why="no Node.js (\`$NODE\`; apt-get install nodejs npm, or set NODE)"
    else
        NODE_VER="$("$NODE" --version 2>/dev/null || true)"
        node_major="${NODE_VER#v}"; node_major="${node_major%%.*}"
        if [[ ! "$node_major" =~ ^[0-9]+$ ]] || ((node_major < 20)); then
            why="Node.js ${NODE_VER:-of unknown version} is older than 20"
        elif [[ ! -d "$BENCH_DIR/express/node_modules/zod" || ! -d "$BENCH_DIR/express/node_modules/express" ]]; then
            why="bench/express/node_modules is missing (run bench/setup.sh, or npm ci in bench/express)"
        fi
    fi
    if [[ -n "$why" ]]; then
        log "SKIP express-zod: $why"
        SKIPPED_NOTES+=("express-zod skipped: $why")
        drop_server express-zod
    fi
fi
((${#PLAIN[@]} + ${#JWT[@]} + ${#RL[@]} + ${#CT[@]})) || die "no target to measure"

# ---- temp dir and cleanup -----------------------------------------------------
TMP="$(mktemp -d /tmp/portcullis-bench.XXXXXX)"
chmod 755 "$TMP"   # nginx workers may run as an unprivileged user
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept temp dir $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$UPSTREAM_PORT" "$PORTCULLIS_PORT" "$NGINX_PORT" "$ENVOY_PORT" \
         "$PORTCULLIS_JWT_PORT" "$ENVOY_JWT_PORT" "$ENVOY_JWT_ADMIN_PORT" "$ENVOY_ADMIN_PORT" \
         "$PORTCULLIS_AUTHZ_PORT" "$PORTCULLIS_RLMEM_PORT" "$PORTCULLIS_RLREDIS_PORT" \
         "$NGINX_RL_PORT" "$REDIS_PORT" "$PORTCULLIS_CU_PORT" "$PORTCULLIS_CV_PORT" "$EXPRESS_PORT"; do
    port_in_use "$p" && die "port $p already in use (set BASE_PORT to another range)"
done

# Start "$@" in the background pinned to CPU $1, logging to $TMP/$2.log.
# taskset execs the command, so $! is the server's own pid.
declare -A PID
start_pinned() {
    local cpu="$1" name="$2"; shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Waits until process $1 answers 200 on $2 (extra curl arguments after that);
# returns 1, with the end of its log on stderr, if it exits or times out.
wait_200() {
    local name="$1" url="$2" pid="${PID[$1]}" code=""; shift 2
    for _ in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$TMP/$name.log" >&2 || true
            log "$name exited during startup"; return 1
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    tail -n 30 "$TMP/$name.log" >&2 || true
    log "$name did not answer 200 on $url (last status: ${code:-none})"; return 1
}

# ---- nginx temp paths (keep everything under $TMP) ----------------------------
nginx_common() { # $1 = prefix dir
    cat <<EOF
    client_body_temp_path $1/client_body;
    proxy_temp_path       $1/proxy;
    fastcgi_temp_path     $1/fastcgi;
    uwsgi_temp_path       $1/uwsgi;
    scgi_temp_path        $1/scgi;
EOF
}

# ---- upstream: nginx answering a small JSON body ------------------------------
# contract scenario: the application's user row, internal fields included
# (one line; no quote or dollar sign, it goes into an nginx string).
USER_JSON="$(tr -d '\n' <"$BENCH_DIR/contract/user.json")"
[[ "$USER_JSON" != *[\'\$\\]* ]] || die "bench/contract/user.json: no ', \$ or \\ allowed (nginx string)"
mkdir -p "$TMP/upstream/logs"
cat >"$TMP/upstream/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common "$TMP/upstream")
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        # Sent so that the proxies' stripping of it is exercised.
        add_header X-Powered-By upstream-app;
        location /api/v1/users/ {
            default_type application/json;
            return 200 '{"id":"1","username":"alice"}';
        }
        # contract scenario: users u-* get the full row, the same for every
        # id (a regex location wins over the prefix above, which keeps
        # serving /users/1 and the rest), and POST /api/v1/posts creates a
        # post (nginx reads and discards the request body).
        location ~ ^/api/v1/users/u-[^/]+\$ {
            default_type application/json;
            return 200 '$USER_JSON';
        }
        location = $POST_PATH {
            if (\$request_method != POST) { return 405; }
            default_type application/json;
            return 201 '{"id":"p-1","title":"Hello","content":"A short post.","tags":["api"],"publishedAt":"2026-11-23T12:00:00Z"}';
        }
        location / { return 404; }
    }
}
EOF

# ---- nginx reverse proxy ------------------------------------------------------
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common "$TMP/nginx")
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        # Same route as Portcullis: GET /api/v1/users/{id}
        location ~ ^/api/v1/users/[^/]+\$ {
            limit_except GET { deny all; }
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-Id \$request_id;
            # nginx already hides the upstream's Server header by default.
            proxy_hide_header X-Powered-By;
            add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
            add_header X-Content-Type-Options "nosniff" always;
            add_header X-Frame-Options "DENY" always;
            add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
            add_header Referrer-Policy "no-referrer" always;
            add_header X-Request-Id \$request_id always;
        }
        location / { return 404; }
    }
}
EOF

# ---- nginx with limit_req (the same proxy, two zones that never trigger) -------
if needs nginx-rl; then
    mkdir -p "$TMP/nginx-rl/logs"
    sed -e "s|$TMP/nginx/|$TMP/nginx-rl/|g" \
        -e "s|listen 127.0.0.1:$NGINX_PORT;|listen 127.0.0.1:$NGINX_RL_PORT;|" \
        -e 's|^    access_log off;|    access_log off;\n    map $request_method $rl_route { default users; }\n    limit_req_zone $binary_remote_addr zone=per_ip:10m rate=1000000r/s;\n    limit_req_zone $rl_route zone=per_route:1m rate=1000000r/s;|' \
        -e 's|limit_except GET { deny all; }|limit_except GET { deny all; }\n            limit_req zone=per_ip burst=100000 nodelay;\n            limit_req zone=per_route burst=100000 nodelay;|' \
        "$TMP/nginx/nginx.conf" >"$TMP/nginx-rl/nginx.conf"
    grep -q 'zone=per_route burst' "$TMP/nginx-rl/nginx.conf" || die "nginx-rl: could not derive the config"
fi

# ---- key pair, JWKS and token for the jwt scenario ----------------------------
TOKEN=""
if ((${#JWT[@]})); then
    # The token must outlive the run: at least 1 h, more for long runs.
    secs() { # wrk duration (10s, 2m, 1h, plain seconds) -> seconds
        local v="${1%[smh]}" u="${1: -1}"
        [[ "$v" =~ ^[0-9]+$ ]] || { echo 60; return; }
        case "$u" in m) echo $((v * 60)) ;; h) echo $((v * 3600)) ;; *) echo "$v" ;; esac
    }
    ntargets=$(( ${#PLAIN[@]} + ${#JWT[@]} + ${#RL[@]} + 2 * ${#CT[@]} ))
    run_secs=$(( ROUNDS * ntargets * ($(secs "$WARMUP") + $(secs "$DURATION")) ))
    ttl=$(( run_secs * 2 + 600 > 3600 ? run_secs * 2 + 600 : 3600 ))
    mkdir -p "$TMP/jwt"
    "$PYTHON" "$BENCH_DIR/mint_token.py" "$TMP/jwt" --ttl "$ttl" >&2 \
        || die "bench/mint_token.py failed"
    TOKEN="$(cat "$TMP/jwt/token")"
    JWKS_JSON="$(tr -d '\n' <"$TMP/jwt/jwks.json")"
    # Same token with one signature character changed: must be refused.
    sig="${TOKEN##*.}"
    [[ "${sig:0:1}" == A ]] && c=B || c=A
    BAD_TOKEN="${TOKEN%.*}.$c${sig:1}"
    log "minted ES256 key + JWKS (kid bench) and a token valid ${ttl}s (${#TOKEN} bytes) in $TMP/jwt"
fi
AUTH_HDR=(-H "Authorization: Bearer $TOKEN")

# ---- envoy --------------------------------------------------------------------
# envoy_yaml PORT ADMIN_PORT JWT(0|1): the plain Envoy config, plus with JWT=1
# the jwt_authn filter (before the router) requiring a token on /api/.
envoy_yaml() {
cat <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $2 }
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: $1 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: HTTP1
          # No access_log configured: access logging is off.
          generate_request_id: true
          always_set_request_id_in_response: true
          use_remote_address: true          # append X-Forwarded-For, set X-Forwarded-Proto
          server_header_transformation: PASS_THROUGH  # do not add "server: envoy"
          route_config:
            name: local
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match:
                  path_match_policy:
                    name: envoy.path.match.uri_template.uri_template_matcher
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                      path_template: "/api/v1/users/{id}"
                  headers:
                  - name: ":method"
                    string_match: { exact: GET }
                route: { cluster: app }
            response_headers_to_remove: [server, x-powered-by]
            response_headers_to_add:
            - header: { key: strict-transport-security, value: "max-age=31536000; includeSubDomains" }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: { key: x-content-type-options, value: nosniff }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: { key: x-frame-options, value: DENY }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: { key: content-security-policy, value: "default-src 'none'; frame-ancestors 'none'" }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: { key: referrer-policy, value: no-referrer }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
EOF
if [[ "$3" == 1 ]]; then
cat <<EOF
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: https://idp.bench
                  audiences: [bench-api]
                  # Token from "Authorization: Bearer ..." (the default place).
                  local_jwks:
                    inline_string: '$JWKS_JSON'
                  # Keep the Authorization header towards the upstream, as
                  # Portcullis does.
                  forward: true
                  # Identity to the upstream, like Portcullis' X-Portcullis-User
                  # / -Scopes (Portcullis also sends -Auth and -Roles).
                  claim_to_headers:
                  - { header_name: x-jwt-user, claim_name: sub }
                  - { header_name: x-jwt-scopes, claim_name: scope }
EOF
if [[ "$JWT_CACHE" == 1 ]]; then
cat <<EOF
                  # Cache verified tokens (off unless configured; Portcullis
                  # caches by default).
                  jwt_cache_config: { jwt_cache_size: 1000 }
EOF
fi
cat <<EOF
              rules:
              - match: { prefix: /api/ }
                requires: { provider_name: bench }
EOF
fi
cat <<EOF
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    # HTTP/1.1 upstream with Envoy's per-worker keep-alive connection pool.
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: $UPSTREAM_PORT }
EOF
}
mkdir -p "$TMP/envoy" "$TMP/envoy-jwt"
envoy_yaml "$ENVOY_PORT" "$ENVOY_ADMIN_PORT" 0 >"$TMP/envoy/envoy.yaml"
needs envoy-jwt && envoy_yaml "$ENVOY_JWT_PORT" "$ENVOY_JWT_ADMIN_PORT" 1 >"$TMP/envoy-jwt/envoy.yaml"

# ---- portcullis ---------------------------------------------------------------
# portcullis_toml PORT MODE(0..6): same server settings; with MODE=1 the
# route requires a bearer JWT (a path cannot have a public and a protected
# route in one config, hence a second instance on its own port); MODE=2 adds
# authorization: a permission, path ownership and a CEL condition; MODE=3 the
# public route with two limits that never trigger (memory backend), MODE=4
# the same on the Redis backend; MODE=5 the public route plus a public
# POST /api/v1/posts route (contract scenario, unvalidated); MODE=6 the same
# two operations from the OpenAPI document (contract scenario, validated).
portcullis_toml() {
cat <<EOF
[server]
worker_threads = 1

[server.http]
listen = "127.0.0.1:$1"
mode = "behind_tls_proxy"

[log]
access = "off"

[upstreams.app]
url = "http://127.0.0.1:$UPSTREAM_PORT"
EOF
if [[ "$2" == 1 || "$2" == 2 ]]; then
    cat <<EOF

[auth.jwt]
$([[ "$JWT_CACHE" == 1 ]] && echo "# verified-token cache: default size" || echo "cache_entries = 0")

[[auth.jwt.issuers]]
issuer = "https://idp.bench"
audiences = ["bench-api"]
algorithms = ["ES256"]
jwks_file = "$TMP/jwt/jwks.json"

[[routes]]
name = "users-jwt"
path = "/api/v1/users/{id}"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
EOF
    if [[ "$2" == 2 ]]; then
        cat <<EOF
require = ["documents:read"]
owner = { param = "id", equals = "sub", unless = ["users:read:any"] }
allow_if = "'user' in identity.roles && request.method == 'GET'"

[authz.roles]
user = ["users:read"]
EOF
    fi
elif [[ "$2" == 6 ]]; then
    cat <<EOF

# bench/contract/openapi.yaml, copied beside this file: security: [] (public),
# createPost's body validated, the answers filtered to the declared schemas.
[[apis]]
spec = "openapi.yaml"
upstream = "app"
base_path = "/api/v1"
EOF
else
    cat <<EOF

[[routes]]
name = "users"
path = "/api/v1/users/{id}"
methods = ["GET"]
upstream = "app"
public = true
EOF
    if [[ "$2" == 3 || "$2" == 4 ]]; then
        cat <<EOF
rate_limits = [
  { key = "ip", algorithm = "sliding_window", limit = 1000000000, window = "1m" },
  { key = "route", algorithm = "sliding_window", limit = 1000000000, window = "1m" },
]
EOF
    fi
    if [[ "$2" == 4 ]]; then
        cat <<EOF

[rate_limit]
backend = "redis"

[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
EOF
    fi
    if [[ "$2" == 5 ]]; then
        cat <<EOF

[[routes]]
name = "posts"
path = "$POST_PATH"
methods = ["POST"]
upstream = "app"
public = true
EOF
    fi
fi
}
mkdir -p "$TMP/portcullis" "$TMP/portcullis-jwt" "$TMP/portcullis-authz"
portcullis_toml "$PORTCULLIS_PORT" 0 >"$TMP/portcullis/portcullis.toml"
needs portcullis-jwt && portcullis_toml "$PORTCULLIS_JWT_PORT" 1 >"$TMP/portcullis-jwt/portcullis.toml"
needs portcullis-authz && portcullis_toml "$PORTCULLIS_AUTHZ_PORT" 2 >"$TMP/portcullis-authz/portcullis.toml"
mkdir -p "$TMP/portcullis-rlmem" "$TMP/portcullis-rlredis"
needs portcullis-rlmem && portcullis_toml "$PORTCULLIS_RLMEM_PORT" 3 >"$TMP/portcullis-rlmem/portcullis.toml"
needs portcullis-rlredis && portcullis_toml "$PORTCULLIS_RLREDIS_PORT" 4 >"$TMP/portcullis-rlredis/portcullis.toml"
mkdir -p "$TMP/portcullis-cu" "$TMP/portcullis-cv"
needs portcullis-cu && portcullis_toml "$PORTCULLIS_CU_PORT" 5 >"$TMP/portcullis-cu/portcullis.toml"
if needs portcullis-cv; then
    portcullis_toml "$PORTCULLIS_CV_PORT" 6 >"$TMP/portcullis-cv/portcullis.toml"
    cp "$BENCH_DIR/contract/openapi.yaml" "$TMP/portcullis-cv/openapi.yaml"
fi

# ---- start everything ---------------------------------------------------------
nginx_start() { # name cpu
    "$NGINX_BIN" -t -q -p "$TMP/$1" -e "$TMP/$1/logs/error.log" -c "$TMP/$1/nginx.conf" \
        >"$TMP/$1.check.log" 2>&1 || { cat "$TMP/$1.check.log" >&2; die "$1: nginx config test failed"; }
    start_pinned "$2" "$1" "$NGINX_BIN" -p "$TMP/$1" -e "$TMP/$1/logs/error.log" -c "$TMP/$1/nginx.conf"
}

declare -A URL
URL[direct]="http://127.0.0.1:$UPSTREAM_PORT$REQ_PATH"
URL[portcullis]="http://127.0.0.1:$PORTCULLIS_PORT$REQ_PATH"
URL[nginx]="http://127.0.0.1:$NGINX_PORT$REQ_PATH"
URL[envoy]="http://127.0.0.1:$ENVOY_PORT$REQ_PATH"
URL[portcullis-noauth]="${URL[portcullis]}"
URL[portcullis-jwt]="http://127.0.0.1:$PORTCULLIS_JWT_PORT$REQ_PATH"
# The owner check needs the token's own subject in the path.
URL[portcullis-authz]="http://127.0.0.1:$PORTCULLIS_AUTHZ_PORT/api/v1/users/bench-user"
URL[envoy-noauth]="${URL[envoy]}"
URL[envoy-jwt]="http://127.0.0.1:$ENVOY_JWT_PORT$REQ_PATH"
URL[portcullis-nolimit]="${URL[portcullis]}"
URL[portcullis-memory]="http://127.0.0.1:$PORTCULLIS_RLMEM_PORT$REQ_PATH"
URL[portcullis-redis]="http://127.0.0.1:$PORTCULLIS_RLREDIS_PORT$REQ_PATH"
URL[nginx-nolimit]="${URL[nginx]}"
URL[nginx-limitreq]="http://127.0.0.1:$NGINX_RL_PORT$REQ_PATH"
URL[portcullis-unvalidated:post]="http://127.0.0.1:$PORTCULLIS_CU_PORT$POST_PATH"
URL[portcullis-unvalidated:get]="http://127.0.0.1:$PORTCULLIS_CU_PORT$USER_PATH"
URL[portcullis-validated:post]="http://127.0.0.1:$PORTCULLIS_CV_PORT$POST_PATH"
URL[portcullis-validated:get]="http://127.0.0.1:$PORTCULLIS_CV_PORT$USER_PATH"
URL[express-zod:post]="http://127.0.0.1:$EXPRESS_PORT$POST_PATH"
URL[express-zod:get]="http://127.0.0.1:$EXPRESS_PORT$USER_PATH"
# Every request of the jwt scenario carries the token, public routes included,
# so the only difference between noauth and jwt is the verification.
is_jwt_target() { [[ " ${JWT[*]} " == *" $1 "* ]]; }

envoy_start() { # name
    "$ENVOY_BIN" --mode validate -c "$TMP/$1/envoy.yaml" -l error >"$TMP/$1.check.log" 2>&1 \
        || { cat "$TMP/$1.check.log" >&2; die "$1: config validation failed"; }
    start_pinned "$SUT_CPU" "$1" "$ENVOY_BIN" -c "$TMP/$1/envoy.yaml" \
        --concurrency 1 --disable-hot-restart -l warn
}

# A Portcullis instance that cannot run this config is skipped, not fatal.
portcullis_start() { # name url [curl args]
    local name="$1" url="$2" why=""; shift 2
    if ! "$PORTCULLIS_BIN" check "$TMP/$name/portcullis.toml" >"$TMP/$name.check.log" 2>&1; then
        sed 's/^/[bench]     /' "$TMP/$name.check.log" | tail -n 20 >&2
        why="\`portcullis check\` rejects the benchmark config"
    else
        start_pinned "$SUT_CPU" "$name" "$PORTCULLIS_BIN" serve --config "$TMP/$name/portcullis.toml"
        wait_200 "$name" "$url" "$@" || { why="it did not start or answer 200"; stop_pid "${PID[$name]}"; }
    fi
    [[ -z "$why" ]] && return 0
    local hint=""
    [[ -n "$PORTCULLIS_STALE" ]] && hint=" (the binary is older than src/: rebuild with cargo build --release)"
    log "SKIP $name: $why$hint"
    SKIPPED_NOTES+=("$name skipped: $why$hint")
    drop_server "$name"
}

# Express + zod (contract scenario): the application itself, one Node process
# on the system-under-test's CPU. Skipped, not fatal, if it does not start.
express_start() {
    start_pinned "$SUT_CPU" express-zod env NODE_ENV=production HOST=127.0.0.1 PORT="$EXPRESS_PORT" \
        "$NODE" "$BENCH_DIR/express/server.js"
    wait_200 express-zod "${URL[express-zod:get]}" && return 0
    stop_pid "${PID[express-zod]}"
    log "SKIP express-zod: it did not start or answer 200"
    SKIPPED_NOTES+=("express-zod skipped: it did not start or answer 200")
    drop_server express-zod
}

log "temp dir: $TMP"
nginx_start upstream "$LOAD_CPU"
wait_200 upstream "${URL[direct]}" || die "upstream did not start"

if needs nginx; then
    nginx_start nginx "$SUT_CPU"
    wait_200 nginx "${URL[nginx]}" || die "nginx did not start"
fi
if needs envoy; then
    envoy_start envoy
    wait_200 envoy "${URL[envoy]}" || die "envoy did not start"
fi
if needs envoy-jwt; then
    envoy_start envoy-jwt
    wait_200 envoy-jwt "${URL[envoy-jwt]}" "${AUTH_HDR[@]}" || die "envoy-jwt did not start"
fi
needs portcullis && portcullis_start portcullis "${URL[portcullis]}"
needs portcullis-jwt && portcullis_start portcullis-jwt "${URL[portcullis-jwt]}" "${AUTH_HDR[@]}"
needs portcullis-authz && portcullis_start portcullis-authz "${URL[portcullis-authz]}" "${AUTH_HDR[@]}"
if needs nginx-rl; then
    nginx_start nginx-rl "$SUT_CPU"
    wait_200 nginx-rl "${URL[nginx-limitreq]}" || die "nginx-rl did not start"
fi
needs portcullis-rlmem && portcullis_start portcullis-rlmem "${URL[portcullis-memory]}"
if needs portcullis-rlredis; then
    # Redis on the system-under-test's CPU: what the Redis backend needs
    # beyond Portcullis is paid there, and the load side stays the same for
    # every target (its CPU time is reported below the table).
    mkdir -p "$TMP/redis"
    start_pinned "$SUT_CPU" redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$TMP/redis"
    for _ in $(seq 100); do
        [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
        sleep 0.05
    done
    portcullis_start portcullis-rlredis "${URL[portcullis-redis]}"
fi
needs portcullis-cu && portcullis_start portcullis-cu "${URL[portcullis-unvalidated:get]}"
needs portcullis-cv && portcullis_start portcullis-cv "${URL[portcullis-validated:get]}"
needs express-zod && express_start
((${#PLAIN[@]} + ${#JWT[@]} + ${#RL[@]} + ${#CT[@]})) || die "no target left to measure"
ALL=("${PLAIN[@]}" "${JWT[@]}" "${RL[@]}")

# ---- show and check the response headers of each target -----------------------
declare -A HDR_NOTE AUTH_NOTE
# Response headers (curl -D) -> "all", or what is missing / leaked.
sec_note() {
    local h missing=() leaked=() note="all"
    for h in "${SEC_HEADERS[@]}"; do grep -qi "^$h:" <<<"$1" || missing+=("$h"); done
    grep -qi '^x-powered-by:' <<<"$1" && leaked+=("x-powered-by")
    grep -qi '^server: nginx/' <<<"$1" && leaked+=("server version")
    ((${#missing[@]})) && note="missing ${missing[*]}"
    ((${#leaked[@]})) && note="$note; leaks ${leaked[*]}"
    echo "$note"
}
for t in "${ALL[@]}"; do
    hargs=()
    is_jwt_target "$t" && hargs=("${AUTH_HDR[@]}")
    hdrs="$(curl -sS -D - -o "$TMP/$t.body" "${hargs[@]}" "${URL[$t]}" | tr -d '\r')"
    status="$(head -n1 <<<"$hdrs")"
    log "---- $t: GET ${URL[$t]}${hargs:+ (with bearer token)} -> $status"
    sed -n '2,$p' <<<"$hdrs" | sed '/^$/d; s/^/[bench]     /' >&2
    log "     body: $(cat "$TMP/$t.body")"
    grep -q ' 200' <<<"$status" || die "$t: expected 200, got '$status'"
    if [[ "$t" == direct ]]; then HDR_NOTE[$t]="-"; continue; fi
    note="$(sec_note "$hdrs")"
    HDR_NOTE[$t]="$note"
    [[ "$note" == all ]] || log "WARNING: $t security headers: $note"
    # The limits must be active: Portcullis says so in its headers.
    if [[ "$t" == portcullis-memory || "$t" == portcullis-redis ]]; then
        grep -qi '^x-ratelimit-limit: 1000000000' <<<"$hdrs" && grep -qi '^ratelimit-policy:' <<<"$hdrs" \
            || die "$t: no rate-limit headers; the limits are not active"
    fi
done

# The JWT check must be active: no token and a tampered signature get 401.
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
for t in "${JWT[@]}"; do
    none="$(http_code "${URL[$t]}")"
    bad="$(http_code -H "Authorization: Bearer $BAD_TOKEN" "${URL[$t]}")"
    AUTH_NOTE[$t]="$none / $bad"
    case "$t" in
        *-jwt|*-authz)
            log "     $t without token -> $none, with a tampered signature -> $bad (expected 401 / 401)"
            [[ "$none" == 401 && "$bad" == 401 ]] \
                || die "$t: the JWT check is not active (without token: $none, bad signature: $bad; expected 401)" ;;
        *)
            log "     $t without token -> $none, with a tampered signature -> $bad (public route: token ignored)"
            AUTH_NOTE[$t]="$none / $bad (public)" ;;
    esac
done

# The contract targets: the valid post must get 201 and the user 200; the
# validated ones (portcullis-validated, express-zod) must refuse an invalid
# post with 400 and leave no internal field in the user answer, or they are
# skipped. Portcullis without validation passes both on (shown, as expected).
declare -A CHECK_NOTE
BAD_POST='{"title":"","content":"An empty title is refused."}'
for t in "${CT[@]}"; do
    : >"$TMP/$t.post.body"; : >"$TMP/$t.bad.body"; : >"$TMP/$t.get.body"
    ok_hdrs="$(curl -sS -D - -o "$TMP/$t.post.body" --max-time 5 -H 'Content-Type: application/json' \
        --data-binary "@$POST_BODY" "${URL[$t:post]}" | tr -d '\r' || true)"
    ok_post="$(head -n1 <<<"$ok_hdrs" | awk '{print $2}')"
    bad_post="$(curl -s -o "$TMP/$t.bad.body" -w '%{http_code}' --max-time 5 \
        -H 'Content-Type: application/json' --data-binary "$BAD_POST" "${URL[$t:post]}" || true)"
    get_hdrs="$(curl -sS -D - -o "$TMP/$t.get.body" --max-time 5 "${URL[$t:get]}" | tr -d '\r' || true)"
    get_status="$(head -n1 <<<"$get_hdrs" | awk '{print $2}')"
    log "---- $t: POST ${URL[$t:post]} (bench/contract/post.json, $(wc -c <"$POST_BODY") bytes) -> ${ok_post:-none}"
    log "     body: $(head -c 200 "$TMP/$t.post.body") ($(wc -c <"$TMP/$t.post.body") bytes)"
    log "     invalid post (title \"\") -> ${bad_post:-none}: $(head -c 300 "$TMP/$t.bad.body")"
    log "---- $t: GET ${URL[$t:get]} -> $(head -n1 <<<"$get_hdrs")"
    sed -n '2,$p' <<<"$get_hdrs" | sed '/^$/d; s/^/[bench]     /' >&2
    log "     body: $(cat "$TMP/$t.get.body")"
    passed=(); lost=()
    for f in "${INTERNAL_FIELDS[@]}"; do grep -q "\"$f\"" "$TMP/$t.get.body" && passed+=("$f"); done
    for f in username email; do grep -q "\"$f\"" "$TMP/$t.get.body" || lost+=("$f"); done
    why=()
    [[ "$ok_post" == 201 ]] || why+=("the valid post got ${ok_post:-no answer}, expected 201")
    [[ "$get_status" == 200 ]] || why+=("GET ${USER_PATH} got ${get_status:-no answer}, expected 200")
    ((${#lost[@]})) && why+=("the GET answer lacks ${lost[*]}")
    if [[ "$t" != portcullis-unvalidated ]]; then
        [[ "$bad_post" == 400 ]] || why+=("the invalid post (title \"\") got ${bad_post:-no answer}, expected 400")
        ((${#passed[@]})) && why+=("the GET answer still has ${passed[*]}")
    fi
    CHECK_NOTE[$t:post]="$bad_post"
    if ((${#passed[@]})); then CHECK_NOTE[$t:get]="passed on: ${passed[*]}"; else CHECK_NOTE[$t:get]="removed"; fi
    HDR_NOTE[$t:post]="$(sec_note "$ok_hdrs")"
    HDR_NOTE[$t:get]="$(sec_note "$get_hdrs")"
    log "     $t: invalid post -> ${bad_post:-none}; internal fields in the GET answer: ${CHECK_NOTE[$t:get]}"
    if ((${#why[@]})); then
        hint=""
        [[ "$t" == portcullis-* && -n "$PORTCULLIS_STALE" ]] \
            && hint=" (the binary is older than src/: rebuild with cargo build --release)"
        reason="$(printf '%s; ' "${why[@]}")"; reason="${reason%; }"
        log "SKIP $t: $reason$hint"
        SKIPPED_NOTES+=("$t skipped: $reason$hint")
        stop_pid "${PID[${SERVER[$t]}]}"
        drop_server "${SERVER[$t]}"
    fi
done
CT_SERIES=()
for t in "${CT[@]}"; do CT_SERIES+=("$t:post"); done
for t in "${CT[@]}"; do CT_SERIES+=("$t:get"); done
((${#ALL[@]} + ${#CT_SERIES[@]})) || die "no target left to measure"
ALL+=("${CT_SERIES[@]}")

# ---- wrk ---------------------------------------------------------------------
cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  local errs = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format("BENCH rps=%.2f p50=%d p99=%d requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), summary.requests, errs))
end
EOF
# contract scenario: POST of bench/contract/post.json, with the same report.
cat "$BENCH_DIR/contract/post.lua" "$TMP/report.lua" >"$TMP/contract-post.lua"

# The script's own arguments (after "--") go after the URL, where wrk passes
# them to its init().
run_wrk() { # url duration outfile script [extra wrk args, e.g. -H ...] [-- script args]
    local url="$1" dur="$2" out="$3" script="$4" opts=() sargs=(); shift 4
    while (($#)); do
        [[ "$1" == -- ]] && { shift; sargs=("$@"); break; }
        opts+=("$1"); shift
    done
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$dur" --latency \
        -s "$script" "${opts[@]}" "$url" "${sargs[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed on $url"; }
}

field() { sed -n "s/.*[[:space:]]$1=\([0-9.]*\).*/\1/p" "$2" | tail -n1; }

# CPU time (utime+stime, clock ticks) of a target's processes: the process
# and its children (nginx workers), all threads included.
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # target
    local root="${PID[${SERVER[$1]}]}" pids total=0
    pids="$root $(pgrep -P "$root" 2>/dev/null | tr '\n' ' ')"
    for p in $pids; do
        [[ -r "/proc/$p/stat" ]] || continue
        total=$(( total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') ))
    done
    echo "$total"
}

pid_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }
declare -A RPS P50 P99 ERR CPU
REDIS_CPU=""
n=${#ALL[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
        # Rotate the order each round so no target always runs first/last.
        t="${ALL[$(( (i + r - 1) % n ))]}"
        out="$TMP/wrk-$t-r$r.txt"
        wargs=(); wscript="$TMP/report.lua"
        is_jwt_target "$t" && wargs=("${AUTH_HDR[@]}")
        if [[ "$t" == *:post ]]; then wscript="$TMP/contract-post.lua"; wargs=(-- "$POST_BODY"); fi
        run_wrk "${URL[$t]}" "$WARMUP" "$TMP/wrk-$t-r$r-warmup.txt" "$wscript" "${wargs[@]}"
        c0="$(cpu_ticks "$t")"
        [[ "$t" == portcullis-redis ]] && r0="$(pid_ticks "${PID[redis]}")"
        run_wrk "${URL[$t]}" "$DURATION" "$out" "$wscript" "${wargs[@]}"
        c1="$(cpu_ticks "$t")"
        [[ "$t" == portcullis-redis ]] && r1="$(pid_ticks "${PID[redis]}")"
        rps="$(field rps "$out")"; p50="$(field p50 "$out")"; p99="$(field p99 "$out")"
        errs="$(field errors "$out")"; reqs="$(field requests "$out")"
        cpu_us="$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')"
        CPU[$t]+="$cpu_us "
        if [[ "$t" == portcullis-redis ]]; then
            REDIS_CPU+="$(awk -v d="$((r1 - r0))" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }') "
        fi
        [[ -n "$rps" && -n "$p50" && -n "$p99" ]] || { cat "$out" >&2; die "could not parse wrk output"; }
        RPS[$t]+="$rps "; P50[$t]+="$p50 "; P99[$t]+="$p99 "; ERR[$t]=$(( ${ERR[$t]:-0} + errs ))
        log "round $r/$ROUNDS $(printf '%-17s' "$t") rps=$rps p50=${p50}us p99=${p99}us cpu/req=${cpu_us}us errors=$errs"
    done
done

# Proof the Envoy cache setting took effect (verifications vs cache hits).
if [[ " ${JWT[*]} " == *" envoy-jwt "* ]]; then
    log "envoy-jwt $(curl -sG --max-time 2 --data-urlencode 'filter=jwt_authn\.(allowed|denied|jwt_cache_hit|jwt_cache_miss)$' \
        "http://127.0.0.1:$ENVOY_JWT_ADMIN_PORT/stats" \
        | sed 's/^http\.ingress_http\.jwt_authn\.//' | tr '\n' ' ')"
fi

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) exit 1; if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2 }'; }

# ---- report ------------------------------------------------------------------
ver_nginx="$( ("$NGINX_BIN" -v 2>&1 || true) | sed 's/.*nginx\///')"
ver_wrk="$( (wrk -v 2>&1 || true) | head -n1 | awk '{print $2}' | sed 's|^debian/||; s|-.*||')"
ver_envoy="-"
[[ -n "${ENVOY_BIN:-}" && -x "${ENVOY_BIN:-}" ]] && \
    ver_envoy="$("$ENVOY_BIN" --version 2>/dev/null | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p')"
ver_portcullis="-"
[[ -x "$PORTCULLIS_BIN" ]] && ver_portcullis="$("$PORTCULLIS_BIN" --version 2>/dev/null | head -n1 || true)"
cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
npm_ver() { # package in bench/express/node_modules -> its version
    sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$BENCH_DIR/express/node_modules/$1/package.json" 2>/dev/null | head -n1
}
ver_express="$(npm_ver express)"; ver_zod="$(npm_ver zod)"

declare -A MRPS MP50 MP99 MCPU
for t in "${ALL[@]}"; do
    MCPU[$t]="$(median <<<"${CPU[$t]}")"
    MRPS[$t]="$(median <<<"${RPS[$t]}")"
    MP50[$t]="$(median <<<"${P50[$t]}")"
    MP99[$t]="$(median <<<"${P99[$t]}")"
done

label() {
    case "$1" in
        direct) echo "direct (wrk → upstream)" ;;
        portcullis) echo "Portcullis" ;;
        nginx) echo "nginx $ver_nginx" ;;
        envoy) echo "Envoy $ver_envoy" ;;
        portcullis-noauth) echo "Portcullis, public route" ;;
        portcullis-jwt) echo "Portcullis, route requires JWT" ;;
        portcullis-authz) echo "Portcullis, JWT + permission + owner + CEL" ;;
        envoy-noauth) echo "Envoy $ver_envoy, no jwt_authn" ;;
        envoy-jwt) echo "Envoy $ver_envoy + jwt_authn" ;;
        portcullis-nolimit) echo "Portcullis, no limits" ;;
        portcullis-memory) echo "Portcullis, 2 limits, memory" ;;
        portcullis-redis) echo "Portcullis, 2 limits, Redis" ;;
        nginx-nolimit) echo "nginx $ver_nginx, no limits" ;;
        nginx-limitreq) echo "nginx $ver_nginx, 2 limit_req zones" ;;
        portcullis-unvalidated:*) echo "Portcullis, plain routes (no validation)" ;;
        portcullis-validated:*) echo "Portcullis, OpenAPI contract ([[apis]])" ;;
        express-zod:*) echo "Express $ver_express + zod $ver_zod (Node ${NODE_VER#v}), the app itself" ;;
    esac
}
has() { [[ -n "${MRPS[$1]:-}" ]]; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }

if ((${#PLAIN[@]})); then
echo
echo "### GET $REQ_PATH — median of $ROUNDS round(s) × $DURATION"
echo
echo "| target | req/s | req/s vs direct | p50 (µs) | p99 (µs) | added p50 (µs) | added p99 (µs) | CPU µs/req | errors | security headers |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for t in "${PLAIN[@]}"; do
    if [[ -n "${MRPS[direct]:-}" ]]; then
        ratio="$(awk -v a="${MRPS[$t]}" -v b="${MRPS[direct]}" 'BEGIN { printf "%.2f×", a / b }')"
        d50="$(awk -v a="${MP50[$t]}" -v b="${MP50[direct]}" 'BEGIN { printf "%+d", a - b }')"
        d99="$(awk -v a="${MP99[$t]}" -v b="${MP99[direct]}" 'BEGIN { printf "%+d", a - b }')"
        [[ "$t" == direct ]] && { ratio="1.00×"; d50="0"; d99="0"; }
    else
        ratio="n/a"; d50="n/a"; d99="n/a"
    fi
    printf '| %s | %.0f | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' \
        "$(label "$t")" "${MRPS[$t]}" "$ratio" "${MP50[$t]}" "${MP99[$t]}" \
        "$d50" "$d99" "${MCPU[$t]}" "${ERR[$t]}" "${HDR_NOTE[$t]}"
done
fi

# The issues' goals, per scenario (tables below).
# Per-round paired ratios: both targets ran back to back in each round,
# so their ratio cancels most of the machine's drift between rounds.
paired() { # num den -> median over rounds of num/den
    local -a a b; local i out=""
    read -ra a <<<"${RPS[$1]}"; read -ra b <<<"${RPS[$2]}"
    for i in "${!a[@]}"; do
        out+="$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { printf "%.4f", x / y }') "
    done
    median <<<"$out"
}
goal() { # label num den cmp(ge|gt) threshold goal-text
    local v="n/a" p="n/a" met="n/a"
    if has "$2" && has "$3"; then
        v="$(ratio "${MRPS[$2]}" "${MRPS[$3]}")"
        p="$(paired "$2" "$3")"
        met="$(awk -v r="$p" -v c="$4" -v t="$5" \
            'BEGIN { ok = (c == "ge") ? r >= t : r > t; print ok ? "yes" : "**no**" }')"
        p="$(awk -v r="$p" 'BEGIN { printf "%.2f×", r }')"
    fi
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$v" "$p" "$6" "$met"
}
if ((${#JWT[@]})); then
    # noauth counterpart of a target of the jwt scenario
    base_of() { case "$1" in portcullis-*) echo portcullis-noauth ;; envoy-*) echo envoy-noauth ;; esac; }
    echo
    echo "### GET $REQ_PATH with a valid ES256 bearer token — median of $ROUNDS round(s) × $DURATION"
    echo
    echo "| target | req/s | req/s vs same proxy, public route | p50 (µs) | p99 (µs) | CPU µs/req | CPU µs/req added by JWT | errors | no token / bad signature | security headers |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for t in "${JWT[@]}"; do
        b="$(base_of "$t")"
        if [[ "$t" == "$b" ]]; then rr="1.00×"; dc="0"
        elif has "$b"; then
            rr="$(ratio "${MRPS[$t]}" "${MRPS[$b]}")"
            dc="$(awk -v a="${MCPU[$t]}" -v b="${MCPU[$b]}" 'BEGIN { printf "%+.2f", a - b }')"
        else rr="n/a"; dc="n/a"; fi
        printf '| %s | %.0f | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' \
            "$(label "$t")" "${MRPS[$t]}" "$rr" "${MP50[$t]}" "${MP99[$t]}" \
            "${MCPU[$t]}" "$dc" "${ERR[$t]}" "${AUTH_NOTE[$t]}" "${HDR_NOTE[$t]}"
    done
    echo
    echo "| req/s ratio | ratio of medians | median of per-round ratios | goal | met (per-round) |"
    echo "|---|---:|---:|---:|---|"
    goal "Portcullis: JWT route vs public route" portcullis-jwt portcullis-noauth ge 0.9 "≥ 0.90×"
    goal "Portcullis JWT vs Envoy JWT" portcullis-jwt envoy-jwt gt 1 "> 1.00×"
    goal "Portcullis: authorized route vs JWT-only route" portcullis-authz portcullis-jwt ge 0.95 "≥ 0.95×"
    has envoy-jwt && has envoy-noauth && \
        printf '| %s | %s | %s | %s | %s |\n' "Envoy: jwt_authn vs none (reference)" \
            "$(ratio "${MRPS[envoy-jwt]}" "${MRPS[envoy-noauth]}")" \
            "$(paired envoy-jwt envoy-noauth | awk '{ printf "%.2f×", $1 }')" "–" "–"
    echo
    if [[ "$JWT_CACHE" == 1 ]]; then
        cache_txt="Token caches on (\`JWT_CACHE=1\`): Portcullis' verified-token cache at its default size, Envoy \`jwt_cache_config: { jwt_cache_size: 1000 }\`; with one token, nearly every request is a cache hit"
    else
        cache_txt="Token caches off (\`JWT_CACHE=0\`): Portcullis \`cache_entries = 0\`, Envoy without \`jwt_cache_config\`; every request pays an ES256 signature verification"
    fi
    echo "JWT scenario: every request, public routes included, sends \`Authorization: Bearer\` with one ES256 token"
    echo "(P-256 key and JWKS minted per run by \`bench/mint_token.py\`; iss, aud, sub, exp, iat, roles, scope; ${#TOKEN} bytes)."
    echo "Portcullis-jwt: a second instance (same settings, \`worker_threads = 1\`, pinned to CPU $SUT_CPU, idle while"
    echo "the other is measured) whose route has \`auth = [\"jwt\"]\`, \`[[auth.jwt.issuers]]\` with \`jwks_file\`, ES256 only."
    echo "Envoy-jwt: a second Envoy with \`envoy.filters.http.jwt_authn\` before the router (provider with issuer,"
    echo "audiences, \`local_jwks\` inline, \`forward: true\`, \`claim_to_headers\` sub/scope; rule: prefix \`/api/\`)."
    echo "The \"public route\" rows are the plain-scenario instances, measured again with the header. $cache_txt."
    echo "\"no token / bad signature\": status without the header / with one signature character changed."
fi
if ((${#RL[@]})); then
    rl_base() { case "$1" in portcullis-*) echo portcullis-nolimit ;; nginx-*) echo nginx-nolimit ;; esac; }
    echo
    echo "### GET $REQ_PATH through rate limits that never trigger — median of $ROUNDS round(s) × $DURATION"
    echo
    echo "| target | req/s | req/s vs same proxy, no limits | p50 (µs) | p99 (µs) | CPU µs/req | CPU µs/req added by the limits | errors | security headers |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for t in "${RL[@]}"; do
        b="$(rl_base "$t")"
        if [[ "$t" == "$b" ]]; then rr="1.00×"; dc="0"
        elif has "$b"; then
            rr="$(ratio "${MRPS[$t]}" "${MRPS[$b]}")"
            dc="$(awk -v a="${MCPU[$t]}" -v b="${MCPU[$b]}" 'BEGIN { printf "%+.2f", a - b }')"
        else rr="n/a"; dc="n/a"; fi
        printf '| %s | %.0f | %s | %.0f | %.0f | %s | %s | %s | %s |\n' \
            "$(label "$t")" "${MRPS[$t]}" "$rr" "${MP50[$t]}" "${MP99[$t]}" \
            "${MCPU[$t]}" "$dc" "${ERR[$t]}" "${HDR_NOTE[$t]}"
    done
    echo
    echo "| req/s ratio | ratio of medians | median of per-round ratios | goal | met (per-round) |"
    echo "|---|---:|---:|---:|---|"
    goal "Portcullis: memory limits vs none" portcullis-memory portcullis-nolimit ge 0.95 "≥ 0.95×"
    goal "Portcullis: Redis limits vs memory limits" portcullis-redis portcullis-memory ge 0.7 "≥ 0.70×"
    # Capacity of the gateway alone: requests per CPU-second of the Portcullis
    # process (Redis runs on the same CPU here, so req/s also pays for Redis).
    has portcullis-redis && has portcullis-memory && \
        printf '| %s | %s | %s | %s | %s |\n' "Portcullis process capacity (1 / CPU µs per request): Redis vs memory" \
            "$(awk -v a="${MCPU[portcullis-memory]}" -v b="${MCPU[portcullis-redis]}" 'BEGIN { printf "%.2f×", a / b }')" \
            "–" "≥ 0.70×" \
            "$(awk -v a="${MCPU[portcullis-memory]}" -v b="${MCPU[portcullis-redis]}" 'BEGIN { print (a / b >= 0.7) ? "yes" : "**no**" }')"
    has portcullis-memory && has nginx-limitreq && \
        printf '| %s | %s | %s | %s | %s |\n' "Portcullis (memory limits) vs nginx (limit_req)" \
            "$(ratio "${MRPS[portcullis-memory]}" "${MRPS[nginx-limitreq]}")" \
            "$(paired portcullis-memory nginx-limitreq | awk '{ printf "%.2f×", $1 }')" "–" "–"
    has nginx-limitreq && has nginx-nolimit && \
        printf '| %s | %s | %s | %s | %s |\n' "nginx: limit_req vs none (reference)" \
            "$(ratio "${MRPS[nginx-limitreq]}" "${MRPS[nginx-nolimit]}")" \
            "$(paired nginx-limitreq nginx-nolimit | awk '{ printf "%.2f×", $1 }')" "–" "–"
    echo
    echo "Limits: Portcullis \`rate_limits\` with two sliding windows of 10^9 a minute, keyed by address and by"
    echo "route, answering with the default five headers (X-RateLimit-Limit/-Remaining/-Reset, RateLimit-Policy,"
    echo "RateLimit); nginx \`limit_req_zone\` by \`\$binary_remote_addr\` and by a constant (rate 10^6 r/s, burst"
    echo "100000, nodelay; nginx sends no rate-limit headers). Redis: a local redis-server pinned to CPU $SUT_CPU"
    if [[ -n "$REDIS_CPU" ]]; then
        echo "beside Portcullis (not in the CPU column; it spent $(median <<<"$REDIS_CPU") µs of CPU per request)."
    else
        echo "beside Portcullis."
    fi
fi
if ((${#CT[@]})); then
    # ct_table post|get heading check-column-title
    ct_table() {
        local k="$1" t s b rr dc
        b="portcullis-unvalidated:$k"
        echo
        echo "### $2 — median of $ROUNDS round(s) × $DURATION"
        echo
        echo "| target | req/s | req/s vs Portcullis, no validation | p50 (µs) | p99 (µs) | CPU µs/req | CPU µs/req added by the contract | errors | $3 | security headers |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
        for t in "${CT[@]}"; do
            s="$t:$k"
            if [[ "$s" == "$b" ]]; then rr="1.00×"; dc="0"
            elif has "$b"; then
                rr="$(ratio "${MRPS[$s]}" "${MRPS[$b]}")"
                # Express is the application, not a proxy: nothing to add to.
                if [[ "$t" == express-zod ]]; then dc="–"; else
                    dc="$(awk -v a="${MCPU[$s]}" -v b="${MCPU[$b]}" 'BEGIN { printf "%+.2f", a - b }')"; fi
            else rr="n/a"; dc="n/a"; fi
            printf '| %s | %.0f | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' \
                "$(label "$s")" "${MRPS[$s]}" "$rr" "${MP50[$s]}" "${MP99[$s]}" \
                "${MCPU[$s]}" "$dc" "${ERR[$s]}" "${CHECK_NOTE[$s]}" "${HDR_NOTE[$s]}"
        done
    }
    ct_table post "POST $POST_PATH, valid ~1 KiB JSON post ($(wc -c <"$POST_BODY") bytes)" "invalid post (title \"\")"
    ct_table get "GET $USER_PATH, the upstream's user row with internal fields" "internal fields in the answer"
    echo
    echo "| req/s ratio | ratio of medians | median of per-round ratios | goal | met (per-round) |"
    echo "|---|---:|---:|---:|---|"
    goal "POST: Portcullis validated vs unvalidated" portcullis-validated:post portcullis-unvalidated:post ge 0.85 "≥ 0.85×"
    goal "GET: Portcullis filtered vs unfiltered" portcullis-validated:get portcullis-unvalidated:get ge 0.85 "≥ 0.85×"
    goal "POST: Portcullis validated vs Express + zod" portcullis-validated:post express-zod:post ge 10 "≥ 10×"
    goal "GET: Portcullis filtered vs Express + zod" portcullis-validated:get express-zod:get ge 10 "≥ 10×"
    # Capacity of one core (1 / CPU per request): steadier than req/s here,
    # and Express has no upstream hop while the gateways do.
    for k in post get; do
        has "portcullis-validated:$k" && has "express-zod:$k" && \
            printf '| %s | %s | %s | %s | %s |\n' \
                "${k^^}: capacity (1 / CPU µs per request), Portcullis validated vs Express + zod (reference)" \
                "$(awk -v a="${MCPU[express-zod:$k]}" -v b="${MCPU[portcullis-validated:$k]}" 'BEGIN { printf "%.2f×", a / b }')" \
                "–" "–" "–"
    done
    echo
    echo "Contract: \`bench/contract/openapi.yaml\` (OpenAPI 3.1, \`security: []\`): \`createPost\` takes a required JSON"
    echo "Post (title 1..200, content 1..50000, tags ≤ 10 × ≤ 50 chars, publishedAt date-time) and answers 201 Post + id;"
    echo "\`getUser\` answers 200 User (id, username, email, displayName, createdAt). The upstream (nginx on CPU $LOAD_CPU)"
    echo "answers the post with 201 and a small JSON post, the user with a row that also has password_hash, mfa_secret,"
    echo "internal_flags and admin_notes. Portcullis, no validation: the two operations as \`[[routes]]\` (\`public = true\`)."
    echo "Portcullis, OpenAPI contract: \`[[apis]] spec = \"openapi.yaml\", base_path = \"/api/v1\"\`: the body is parsed"
    echo "strictly and checked (objects closed), the answers are filtered to the declared properties."
    echo "Express + zod: \`bench/express/server.js\`, the application itself (no upstream hop): helmet(), cors with an"
    echo "allowlist, express.json({limit: '1mb'}), express-rate-limit (10^9 a minute), an X-Request-Id, zod strictObject"
    echo "for the post (400 with the issues; 201 echoing the parsed post with an id), the user row through a zod object of"
    echo "the User fields (unknown keys stripped); one Node process (no cluster), \`NODE_ENV=production\`, pinned to CPU $SUT_CPU."
    echo "POST: wrk \`-s bench/contract/post.lua\`, Content-Type application/json. \"invalid post\": status for"
    echo "\`{\"title\":\"\",...}\` (400 expected where the contract is enforced; without validation it reaches the upstream)."
fi
echo
echo "Setup: wrk $ver_wrk, ${CONNECTIONS} connections, ${WRK_THREADS} thread(s), ${WARMUP} warm-up before each ${DURATION} run;"
echo "rounds interleaved (order rotated each round). wrk and the upstream (nginx $ver_nginx, 1 worker, static"
echo "JSON body) pinned to CPU $LOAD_CPU; the proxy under test pinned to CPU $SUT_CPU with one worker each"
echo "(nginx \`worker_processes 1\`, Envoy \`--concurrency 1\`, Portcullis \`worker_threads = 1\`)."
echo "Access logs off everywhere (nginx \`access_log off\`, Envoy no access_log, Portcullis \`[log] access = \"off\"\`)."
echo "Every proxy adds HSTS, X-Content-Type-Options, X-Frame-Options, CSP, Referrer-Policy, X-Request-Id,"
echo "X-Forwarded-For/-Proto, strips X-Powered-By, and pools keep-alive upstream connections."
echo "Latency: wrk's recorded percentiles (closed loop, so not corrected for coordinated omission)."
echo "CPU µs/req: user+system CPU time of the target's processes (all threads; nginx master + worker) during"
echo "the measured run, divided by the requests wrk completed; for direct it is the upstream's. On a shared,"
echo "noisy machine this is steadier than req/s, which also moves with the load generator's share of CPU 0."
echo "Machine: ${cpu_model:-unknown CPU}, $(nproc) CPUs, $(uname -sr). Portcullis: ${ver_portcullis:-unknown}."
for note in "${SKIPPED_NOTES[@]}"; do echo "Note: $note."; done
