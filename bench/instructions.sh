#!/usr/bin/env bash
# Deterministic companion to run.sh: user-space instructions per proxied
# request, counted by valgrind's callgrind (independent of machine load).
# Each proxy is run twice under callgrind, once for N1 and once for N2
# keep-alive requests (ab -k, 10 connections); the difference divided by
# N2-N1 removes start-up and shut-down. Kernel work is not counted (it is the
# same syscalls for every proxy here: one read and one writev per hop).
#
# Targets (TARGETS, default all): portcullis (public route), nginx,
# portcullis-jwt (the route needs an ES256 JWT, sent with every request),
# portcullis-authz (the JWT route plus a permission, a path-bound owner check
# and one CEL condition; it asks for /api/v1/users/bench-user, the token's
# subject), portcullis-ratelimit (the public route with the demo's per-address
# limit, sliding window, set to 10^9 a minute so it never triggers),
# portcullis-ratelimit-redis (the same limit on the Redis backend, a local
# redis-server; only Portcullis' own instructions are counted) and
# portcullis-jwt-ratelimit (the JWT route with the demo's two limits, per
# address and per user, likewise), portcullis-jwt-ratelimit-bare (the same
# with `headers = []`: the checks without the five response headers). The
# JWT targets need Python's
# `cryptography` (bench/mint_token.py).
#
#   bench/instructions.sh
#   N1=500 N2=2500 TARGETS="portcullis-jwt portcullis-authz" bench/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N1="${N1:-500}"
N2="${N2:-2500}"
TARGETS="${TARGETS:-portcullis nginx portcullis-jwt portcullis-authz portcullis-ratelimit portcullis-jwt-ratelimit}"
PORTCULLIS_BIN="${PORTCULLIS_BIN:-target/release/portcullis}"
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null; }
command -v ab >/dev/null || { apt-get install -y apache2-utils >/dev/null; }
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
TMP="$(mktemp -d)"
UP=61191; PX=61192
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.5; [[ "${KEEP_TMP:-0}" == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"' EXIT

mkdir -p "$TMP/up/logs" "$TMP/ng/logs"
cat >"$TMP/up/nginx.conf" <<CONF
daemon off; worker_processes 1; error_log $TMP/up/logs/error.log; pid $TMP/up/nginx.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { default_type application/json;
    add_header X-Powered-By Express; return 200 '{"id":"1","username":"alice"}'; } } }
CONF
cat >"$TMP/ng/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $TMP/ng/logs/error.log; pid $TMP/ng/nginx.pid;
events { worker_connections 1024; }
http { access_log off; server_tokens off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$PX; location /api/v1/users/ {
    proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto https;
    proxy_set_header X-Request-Id \$request_id; proxy_hide_header X-Powered-By;
    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
    add_header X-Content-Type-Options nosniff always; add_header X-Frame-Options DENY always;
    add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
    add_header Referrer-Policy no-referrer always; add_header X-Request-Id \$request_id always; } } }
CONF
cat >"$TMP/portcullis.toml" <<CONF
[server]
worker_threads = 1
watch_config = false
[server.http]
listen = "127.0.0.1:$PX"
mode = "behind_tls_proxy"
[log]
access = "off"
level = "error"
[upstreams.app]
url = "http://127.0.0.1:$UP"
[[routes]]
path = "/api/v1/users/{id}"
methods = ["GET"]
upstream = "app"
CONF
cp "$TMP/portcullis.toml" "$TMP/portcullis-jwt.toml"
cp "$TMP/portcullis.toml" "$TMP/portcullis-authz.toml"
echo 'public = true' >>"$TMP/portcullis.toml"
cp "$TMP/portcullis.toml" "$TMP/portcullis-ratelimit.toml"
cat >>"$TMP/portcullis-ratelimit.toml" <<'CONF'
rate_limits = [{ key = "ip", algorithm = "sliding_window", limit = 1000000000, window = "1m" }]
CONF
RD=61193
cp "$TMP/portcullis-ratelimit.toml" "$TMP/portcullis-ratelimit-redis.toml"
printf '[rate_limit]\nbackend = "redis"\n[redis]\nurl = "redis://127.0.0.1:%s"\n' "$RD" >>"$TMP/portcullis-ratelimit-redis.toml"
if [[ " $TARGETS " == *" portcullis-ratelimit-redis "* ]]; then
    command -v redis-server >/dev/null || { apt-get install -y redis-server >/dev/null; }
    redis-server --port "$RD" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >/dev/null 2>&1 &
fi
if [[ " $TARGETS " == *" portcullis-jwt"* || " $TARGETS " == *" portcullis-authz "* ]]; then
    python3 bench/mint_token.py "$TMP/jwt" >/dev/null
    TOKEN="$(cat "$TMP/jwt/token")"
    cat >>"$TMP/portcullis-authz.toml" <<'CONF'
require = ["documents:read"]
owner = { param = "id", equals = "sub", unless = ["users:read:any"] }
allow_if = "'user' in identity.roles && request.method == 'GET'"
[authz.roles]
user = ["users:read"]
CONF
    for f in portcullis-jwt portcullis-authz; do
        # the route's last line, then the issuer
        sed -i 's/^upstream = "app"$/upstream = "app"\nauth = ["jwt"]/' "$TMP/$f.toml"
        [[ "$f" == portcullis-jwt ]] && cat >>"$TMP/$f.toml" <<'CONF'
rate_limits = []
CONF
        cat >>"$TMP/$f.toml" <<CONF
[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.bench"
audiences = ["bench-api"]
algorithms = ["ES256"]
jwks_file = "$TMP/jwt/jwks.json"
CONF
    done
    sed 's/^rate_limits = \[\]$/rate_limits = [\n  { key = "ip", algorithm = "sliding_window", limit = 1000000000, window = "1m" },\n  { key = "user", algorithm = "sliding_window", limit = 1000000000, window = "1m" },\n]/' \
        "$TMP/portcullis-jwt.toml" >"$TMP/portcullis-jwt-ratelimit.toml"
    # the same limits without rate-limit response headers (headers = [])
    cp "$TMP/portcullis-jwt-ratelimit.toml" "$TMP/portcullis-jwt-ratelimit-bare.toml"
    printf '[rate_limit]\nheaders = []\n' >>"$TMP/portcullis-jwt-ratelimit-bare.toml"
fi
"$NGINX_BIN" -p "$TMP/up" -c "$TMP/up/nginx.conf" -e "$TMP/up/logs/error.log" &
sleep 0.5

wait_up() { # url [header]
    for _ in $(seq 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' ${2:+-H "$2"} "$1")" == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}

count() { # name n -> total instructions
    local name="$1" n="$2" out="$TMP/cg.$1.$2"
    local url="http://127.0.0.1:$PX/api/v1/users/1" hdr=""
    case "$name" in
        portcullis*) valgrind --tool=callgrind --callgrind-out-file="$out" "$PORTCULLIS_BIN" serve --config "$TMP/$name.toml" >/dev/null 2>&1 & ;;
        nginx) valgrind --tool=callgrind --callgrind-out-file="$out" "$NGINX_BIN" -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -e "$TMP/ng/logs/error.log" >/dev/null 2>&1 & ;;
    esac
    local pid=$!
    [[ "$name" == portcullis-jwt* || "$name" == portcullis-authz ]] && hdr="Authorization: Bearer $TOKEN"
    [[ "$name" == portcullis-authz ]] && url="http://127.0.0.1:$PX/api/v1/users/bench-user"
    wait_up "$url" "$hdr" || { echo "$name did not start" >&2; exit 1; }
    ab -q -k -n "$n" -c 10 ${hdr:+-H "$hdr"} "$url" >"$TMP/ab.$name.$n" 2>&1
    grep -q "Failed requests:        0" "$TMP/ab.$name.$n" || { cat "$TMP/ab.$name.$n" >&2; exit 1; }
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    sed -n 's/^summary: //p' "$out" | head -n1
}

printf '| proxy | user-space instructions per request |\n|---|---:|\n'
for name in $TARGETS; do
    a="$(count "$name" "$N1")"; b="$(count "$name" "$N2")"
    printf '| %s | %s |\n' "$name" "$(( (b - a) / (N2 - N1) ))"
done
echo
echo "callgrind, ab -k -c 10, $N1 vs $N2 requests (the difference removes start-up); $(valgrind --version)."
