#!/usr/bin/env bash
# Fuzzes a real coordinator from its own OpenAPI document (Schemathesis; see README.md here):
# every answer must have a status the document declares for the operation, a body matching
# the declared schema (problem+json for errors), and no 5xx but a declared 503.
#
# Starts civic-coordinator on a free loopback port with a fresh SQLite store in a temporary
# directory, creates the accounts with `civic-coordinator admin create-account`, seeds a
# dataset, a project, an allocation, two running queries with their rounds and a query awaiting
# approval (seed.py), then runs three passes of Schemathesis: each operation with a token of a
# role it admits, with one of a role it refuses, and with none. The coordinator (and the
# fuzzer) are stopped however the script ends.
#
# Binaries: CIVIC_BIN_DIR (civic-coordinator and civic-agent), default <repo>/target/debug;
# nothing is built here. Python: `python3 -m pip install -r tests/fuzz/requirements.txt`.
# CIVIC_FUZZ_EXAMPLES (100) and CIVIC_FUZZ_EXAMPLES_REFUSED (10): generated cases per operation.
# CIVIC_FUZZ_REPORTS=DIR keeps Schemathesis's JUnit and NDJSON reports of each pass there.
# CIVIC_FUZZ_KEEP=1 keeps the temporary directory (store, coordinator log, reports).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${CIVIC_BIN_DIR:-$repo/target/debug}
for b in civic-coordinator civic-agent; do
    [ -x "$bin/$b" ] || { echo "fuzz: $bin/$b is missing (build it, or set CIVIC_BIN_DIR)" >&2; exit 2; }
done
command -v schemathesis > /dev/null || {
    echo "fuzz: schemathesis is not installed: python3 -m pip install -r tests/fuzz/requirements.txt" >&2
    exit 2
}

work=$(mktemp -d)
coordinator= fuzzer=
cleanup() {
    status=$?
    if [ -n "$fuzzer" ] && kill -0 "$fuzzer" 2>/dev/null; then
        kill -TERM "$fuzzer" 2>/dev/null || true  # timeout passes it on to schemathesis
        wait "$fuzzer" 2>/dev/null || true
    fi
    if [ -n "$coordinator" ] && kill -0 "$coordinator" 2>/dev/null; then
        kill -TERM "$coordinator" 2>/dev/null || true
        # It drains for up to request_timeout_secs + 5 s; do not wait that long for a fuzz run.
        for _ in $(seq 1 50); do kill -0 "$coordinator" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$coordinator" 2>/dev/null || true
        wait "$coordinator" 2>/dev/null || true
    fi
    if [ "${CIVIC_FUZZ_KEEP:-0}" = 1 ]; then
        echo "fuzz: kept $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat > "$work/coordinator.toml" <<EOF
bind = "127.0.0.1:$port"
store_url = "sqlite://$work/civic.db"
# The seeded round stays open for the whole run (no agent answers it).
phase_deadline_secs = 3600
max_rows_per_partner = 1000000
EOF
cd "$work"

# The accounts, from the command line as an operator bootstraps them; tokens are printed once.
# accounts.json: `tokens` (role -> token; hooks.py keeps it current as the fuzzer rotates,
# reissues and revokes them), `names` (our account -> role), `partners` (name -> token, key).
account() {
    local t
    t=$("$bin/civic-coordinator" --config coordinator.toml admin create-account "$1" --role "$2" 2> admin.log |
        sed -n 's/^token[^:]*: //p')
    [ -n "$t" ] || { cat admin.log >&2; echo "fuzz: admin create-account $1 printed no token" >&2; exit 1; }
    printf '%s' "$t"
}
tokens= names=
ours() { # role, account name, account role
    tokens="$tokens${tokens:+, }\"$1\": \"$(account "$2" "$3")\""
    names="$names${names:+, }\"$2\": \"$1\""
}
ours admin fuzz-admin admin
# Issues the admin a new token if the fuzzer revokes the admin's own.
ours spare-admin fuzz-admin-spare admin
ours governance fuzz-board governance
ours researcher fuzz-researcher researcher
# Its token changes with every POST /v1/token/rotate the fuzzer sends.
ours rotator fuzz-rotator researcher
ours partner gp-north partner
# Reissued and revoked at will by the fuzzer (schemathesis.toml's `accounts` dictionary).
account fuzz-victim researcher > /dev/null
# The policy's other partners; each partner registers an identity key (civic-agent keygen).
partners=
for p in gp-north gp-central gp-south gp-east gp-west; do
    if [ "$p" = gp-north ]; then
        t=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["partner"])' "{$tokens}")
    else
        t=$(account "$p" partner)
    fi
    k=$("$bin/civic-agent" keygen --out "$p.key" | sed -n 's/^public key[^:]*: //p')
    partners="$partners${partners:+, }\"$p\": {\"token\": \"$t\", \"key\": \"$k\"}"
done
echo "{\"tokens\": {$tokens}, \"names\": {$names}, \"partners\": {$partners}}" > accounts.json
python3 -m json.tool accounts.json > /dev/null

"$bin/civic-coordinator" --config coordinator.toml serve 2> coordinator.log &
coordinator=$!
for _ in $(seq 1 150); do
    curl -sf "$base/healthz" > /dev/null 2>&1 && break
    kill -0 "$coordinator" 2>/dev/null || { cat coordinator.log >&2; echo "fuzz: the coordinator exited" >&2; exit 1; }
    sleep 0.2
done
curl -sf "$base/healthz" > /dev/null || { echo "fuzz: the coordinator did not answer /healthz" >&2; exit 1; }
python3 "$here/seed.py" "$base" accounts.json "$repo/examples/policies/diabetes.toml"

reports=${CIVIC_FUZZ_REPORTS:-$work/reports}
# hooks.py imports roles.py and examples.py from here: leave no __pycache__ in the tree.
export SCHEMATHESIS_HOOKS="$here/hooks.py" CIVIC_FUZZ_ACCOUNTS="$work/accounts.json" PYTHONDONTWRITEBYTECODE=1
failed=()
start=$SECONDS
# A pass: whose tokens (hooks.py), and the cases per operation in the fuzzing phase (the
# examples and coverage phases send what the document implies, whatever that number).
run_pass() {
    local pass=$1 examples=$2 filter
    printf '\n== fuzz pass: %s (%s cases per operation)\n' "$pass" "$examples"
    rm -rf "${reports:?}/$pass"
    # The operations the pass concerns (roles.py): all of them, or those that need a token.
    mapfile -t filter < <(python3 "$here/roles.py" "$pass")
    # In the background and waited for, so that a TERM to this script stops it at once.
    CIVIC_FUZZ_PASS=$pass timeout 900 schemathesis --config-file "$here/schemathesis.toml" \
        run "$base/openapi.json" --url "$base" "${filter[@]}" --max-examples "$examples" --no-color \
        --report junit,ndjson --report-dir "$reports/$pass" &
    fuzzer=$!
    if ! wait "$fuzzer"; then
        failed+=("$pass")
    fi
    fuzzer=
    if ! kill -0 "$coordinator" 2>/dev/null; then
        failed+=("the coordinator died in the $pass pass")
        tail -50 coordinator.log >&2
    fi
}
run_pass roles "${CIVIC_FUZZ_EXAMPLES:-100}"
run_pass wrong-role "${CIVIC_FUZZ_EXAMPLES_REFUSED:-10}"
run_pass anonymous "${CIVIC_FUZZ_EXAMPLES_REFUSED:-10}"
# A panic in a background task (the round driver) answers no request with a 5xx.
if grep -q 'panicked' coordinator.log; then
    failed+=("the coordinator panicked")
    grep -A5 'panicked' coordinator.log | head -40 >&2
fi
printf '\n== fuzz: distinct findings (tests/fuzz/summarize.py)\n'
python3 "$here/summarize.py" "$reports/roles" "$reports/wrong-role" "$reports/anonymous" || true
echo "fuzz: $((SECONDS - start)) s of fuzzing"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every pass conforms to the document"
