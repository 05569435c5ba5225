#!/usr/bin/env bash
# Portcullis load benchmark: direct vs Portcullis vs nginx vs Envoy.
#
# One run measures interleaved rounds of
#   direct      wrk -> upstream
#   portcullis  wrk -> Portcullis (plain HTTP listener) -> upstream
#   nginx       wrk -> nginx reverse proxy adding the security headers -> upstream
#   envoy       wrk -> Envoy (route + response headers added) -> upstream
# and prints a markdown table (stdout) with the median across rounds of
# requests/s, p50 and p99 latency, plus ratios / added latency vs direct.
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
#   TARGETS         space-separated subset of: direct portcullis nginx envoy
#                   [all four]
#   BASE_PORT       ports BASE_PORT+1..+9 are used [61080]; the default range
#                   sits above Linux's ephemeral port range (32768-60999)
#   PORTCULLIS_BIN  Portcullis binary [target/release/portcullis, relative to
#                   the repository root]; the target is skipped if missing
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
TARGETS="${TARGETS:-direct portcullis nginx envoy}"
BASE_PORT="${BASE_PORT:-61080}"
LOAD_CPU="${LOAD_CPU:-0}"
SUT_CPU="${SUT_CPU:-1}"
PORTCULLIS_BIN="${PORTCULLIS_BIN:-target/release/portcullis}"
# Plain numbers mean seconds (DURATION=3 == DURATION=3s), as for wrk itself.
[[ "$DURATION" =~ ^[0-9]+$ ]] && DURATION="${DURATION}s"
[[ "$WARMUP" =~ ^[0-9]+$ ]] && WARMUP="${WARMUP}s"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 1; }
[[ "$PORTCULLIS_BIN" == /* ]] || PORTCULLIS_BIN="$REPO_DIR/$PORTCULLIS_BIN"

REQ_PATH="/api/v1/users/1"

UPSTREAM_PORT=$((BASE_PORT + 1))
PORTCULLIS_PORT=$((BASE_PORT + 2))
NGINX_PORT=$((BASE_PORT + 3))
ENVOY_PORT=$((BASE_PORT + 4))
ENVOY_ADMIN_PORT=$((BASE_PORT + 9))

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

# ---- which targets ------------------------------------------------------------
ACTIVE=()
SKIPPED_NOTES=()
for t in $TARGETS; do
    case "$t" in
        direct|nginx) ACTIVE+=("$t") ;;
        envoy)
            if [[ -n "${ENVOY_BIN:-}" && -x "$ENVOY_BIN" ]]; then ACTIVE+=(envoy)
            else die "envoy binary not found (set ENVOY_BIN or run bench/setup.sh)"; fi ;;
        portcullis)
            if [[ -x "$PORTCULLIS_BIN" ]]; then ACTIVE+=(portcullis)
            else
                log "SKIP portcullis: binary not found at $PORTCULLIS_BIN (build it with 'cargo build --release' or set PORTCULLIS_BIN)"
                SKIPPED_NOTES+=("portcullis skipped: no binary at \`${PORTCULLIS_BIN#"$REPO_DIR/"}\`")
            fi ;;
        *) die "unknown target '$t' (valid: direct portcullis nginx envoy)" ;;
    esac
done
((${#ACTIVE[@]})) || die "no target to measure"

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
for p in "$UPSTREAM_PORT" "$PORTCULLIS_PORT" "$NGINX_PORT" "$ENVOY_PORT" "$ENVOY_ADMIN_PORT"; do
    port_in_use "$p" && die "port $p already in use (set BASE_PORT to another range)"
done

# Start "$@" in the background pinned to CPU $1, logging to $TMP/$2.log.
# taskset execs the command, so $! is the server's own pid.
start_pinned() {
    local cpu="$1" name="$2"; shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name}=$!"
}

wait_200() {
    local name="$1" url="$2" pid="$3" code=""
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name exited during startup"; }
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    tail -n 30 "$TMP/$name.log" >&2 || true
    die "$name did not answer 200 on $url (last status: ${code:-none})"
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

# ---- envoy --------------------------------------------------------------------
mkdir -p "$TMP/envoy"
cat >"$TMP/envoy/envoy.yaml" <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT }
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT }
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

# ---- portcullis ---------------------------------------------------------------
mkdir -p "$TMP/portcullis"
cat >"$TMP/portcullis/portcullis.toml" <<EOF
[server]
worker_threads = 1

[server.http]
listen = "127.0.0.1:$PORTCULLIS_PORT"
mode = "behind_tls_proxy"

[log]
access = "off"

[upstreams.app]
url = "http://127.0.0.1:$UPSTREAM_PORT"

[[routes]]
name = "users"
path = "/api/v1/users/{id}"
methods = ["GET"]
upstream = "app"
EOF

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

log "temp dir: $TMP"
nginx_start upstream "$LOAD_CPU"
wait_200 upstream "${URL[direct]}" "$PID_upstream"

for t in "${ACTIVE[@]}"; do
    case "$t" in
        nginx) nginx_start nginx "$SUT_CPU"; wait_200 nginx "${URL[nginx]}" "$PID_nginx" ;;
        envoy)
            "$ENVOY_BIN" --mode validate -c "$TMP/envoy/envoy.yaml" -l error >"$TMP/envoy.check.log" 2>&1 \
                || { cat "$TMP/envoy.check.log" >&2; die "envoy: config validation failed"; }
            start_pinned "$SUT_CPU" envoy "$ENVOY_BIN" -c "$TMP/envoy/envoy.yaml" \
                --concurrency 1 --disable-hot-restart -l warn
            wait_200 envoy "${URL[envoy]}" "$PID_envoy" ;;
        portcullis)
            start_pinned "$SUT_CPU" portcullis "$PORTCULLIS_BIN" serve --config "$TMP/portcullis/portcullis.toml"
            wait_200 portcullis "${URL[portcullis]}" "$PID_portcullis" ;;
    esac
done

# ---- show and check the response headers of each target -----------------------
declare -A HDR_NOTE
for t in "${ACTIVE[@]}"; do
    hdrs="$(curl -sS -D - -o "$TMP/$t.body" "${URL[$t]}" | tr -d '\r')"
    status="$(head -n1 <<<"$hdrs")"
    log "---- $t: GET ${URL[$t]} -> $status"
    sed -n '2,$p' <<<"$hdrs" | sed '/^$/d; s/^/[bench]     /' >&2
    log "     body: $(cat "$TMP/$t.body")"
    grep -q ' 200' <<<"$status" || die "$t: expected 200, got '$status'"
    if [[ "$t" == direct ]]; then HDR_NOTE[$t]="-"; continue; fi
    missing=()
    for h in "${SEC_HEADERS[@]}"; do grep -qi "^$h:" <<<"$hdrs" || missing+=("$h"); done
    leaked=()
    grep -qi '^x-powered-by:' <<<"$hdrs" && leaked+=("x-powered-by")
    grep -qi '^server: nginx/' <<<"$hdrs" && leaked+=("server version")
    note="all"
    ((${#missing[@]})) && note="missing ${missing[*]}"
    ((${#leaked[@]})) && note="$note; leaks ${leaked[*]}"
    HDR_NOTE[$t]="$note"
    [[ "$note" == all ]] || log "WARNING: $t security headers: $note"
done

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

run_wrk() { # url duration outfile
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$2" --latency \
        -s "$TMP/report.lua" "$1" >"$3" 2>&1 || { cat "$3" >&2; die "wrk failed on $1"; }
}

field() { sed -n "s/.*[[:space:]]$1=\([0-9.]*\).*/\1/p" "$2" | tail -n1; }

# CPU time (utime+stime, clock ticks) of a target's processes: the process
# and its children (nginx workers), all threads included.
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # target
    local root pids total=0
    case "$1" in
        direct) root="$PID_upstream" ;;
        *) eval "root=\${PID_$1}" ;;
    esac
    pids="$root $(pgrep -P "$root" 2>/dev/null | tr '\n' ' ')"
    for p in $pids; do
        [[ -r "/proc/$p/stat" ]] || continue
        total=$(( total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') ))
    done
    echo "$total"
}

declare -A RPS P50 P99 ERR CPU
n=${#ACTIVE[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
        # Rotate the order each round so no target always runs first/last.
        t="${ACTIVE[$(( (i + r - 1) % n ))]}"
        out="$TMP/wrk-$t-r$r.txt"
        run_wrk "${URL[$t]}" "$WARMUP" "$TMP/wrk-$t-r$r-warmup.txt"
        c0="$(cpu_ticks "$t")"
        run_wrk "${URL[$t]}" "$DURATION" "$out"
        c1="$(cpu_ticks "$t")"
        rps="$(field rps "$out")"; p50="$(field p50 "$out")"; p99="$(field p99 "$out")"
        errs="$(field errors "$out")"; reqs="$(field requests "$out")"
        cpu_us="$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')"
        CPU[$t]+="$cpu_us "
        [[ -n "$rps" && -n "$p50" && -n "$p99" ]] || { cat "$out" >&2; die "could not parse wrk output"; }
        RPS[$t]+="$rps "; P50[$t]+="$p50 "; P99[$t]+="$p99 "; ERR[$t]=$(( ${ERR[$t]:-0} + errs ))
        log "round $r/$ROUNDS $(printf '%-10s' "$t") rps=$rps p50=${p50}us p99=${p99}us cpu/req=${cpu_us}us errors=$errs"
    done
done

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

declare -A MRPS MP50 MP99 MCPU
for t in "${ACTIVE[@]}"; do
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
    esac
}

echo
echo "### GET $REQ_PATH — median of $ROUNDS round(s) × $DURATION"
echo
echo "| target | req/s | req/s vs direct | p50 (µs) | p99 (µs) | added p50 (µs) | added p99 (µs) | CPU µs/req | errors | security headers |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for t in "${ACTIVE[@]}"; do
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
