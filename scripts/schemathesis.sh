#!/usr/bin/env bash
# Schemathesis against the demo: `portcullis demo` (the debug binary the
# test run built) behind its own OpenAPI document, fuzzed as alice (a user)
# and carol (an admin). Fails on any 5xx and on any answer whose body does
# not conform to the document's schema for its status. (The gateway's own
# refusals, 401/403/404/422/429 problem+json, are not all in the demo's
# document, so status-code and content-type conformance are not checked.)
#
# Called by scripts/test.sh; runs alone too: scripts/schemathesis.sh
# Environment: ST_MAX_EXAMPLES per operation and mode [30], ST_SEED [fixed].
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/debug/portcullis
VENV=target/st-venv
ST_VERSION=4.32.5
[ -x "$BIN" ] || cargo build -q --bin portcullis
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

dir=$(mktemp -d)
ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r HTTPS HTTP ADMIN <<<"$ports"
"$BIN" demo --dir "$dir" --https-port "$HTTPS" --http-port "$HTTP" --admin-port "$ADMIN" \
    >"$dir/demo.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 200); do
    [ -s "$dir/credentials.json" ] && curl -s -o /dev/null --cacert "$dir/cert.pem" "https://localhost:$HTTPS/health" && break
    sleep 0.1
done
# The fuzzer sends thousands of requests a minute: lift the demo's rate
# limits (the gateway reloads the edited file) so it tests the contract,
# not the limiter.
sed -i -E 's/limit = (100|300|20),/limit = 1000000,/; s/limit: 20,/limit: 1000000,/' "$dir/portcullis.toml"
sed -i -E 's/limit: 20,/limit: 1000000,/' "$dir/openapi.yaml"
if [ "$(grep -c 'limit = 1000000' "$dir/portcullis.toml")" -ne 2 ] || ! grep -q 'limit: 1000000' "$dir/openapi.yaml"; then
    echo "schemathesis.sh: the demo's rate limits were not found to lift; update the sed above" >&2
    exit 1
fi
kill -HUP $pid
sleep 1

login() {
    local pw
    pw=$(python3 -c "import json,sys;print([u['password'] for u in json.load(open('$dir/credentials.json'))['users'] if u['username']=='$1'][0])")
    curl -s --cacert "$dir/cert.pem" -H 'Content-Type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"$pw\"}" "https://localhost:$HTTPS/auth/login" |
        python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])'
}

status=0
for user in alice carol; do
    token=$(login "$user")
    echo "schemathesis: as $user" >&2
    "$VENV/bin/st" run "$dir/openapi.yaml" \
        --url "https://localhost:$HTTPS/api/v1" \
        --tls-verify "$dir/cert.pem" \
        -H "Authorization: Bearer $token" \
        --checks not_a_server_error,response_schema_conformance \
        --max-examples "${ST_MAX_EXAMPLES:-30}" \
        --seed "${ST_SEED:-20261123}" \
        --phases examples,fuzzing \
        --workers 2 \
        --warnings off \
        --no-color || status=1
done
if [ $status -ne 0 ]; then
    echo "schemathesis failed; the gateway's log:" >&2
    grep -v -e '"kind":"access"' -e '"kind":"audit"' "$dir/demo.log" | tail -40 >&2 || true
fi
exit $status
