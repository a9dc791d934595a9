#!/usr/bin/env bash
# Runs every `sh` block of docs/walkthrough.md, in order, in one shell, in a fresh directory,
# with the debug binaries on PATH; fails if any command fails. Background processes are
# stopped at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# Where cargo puts the binaries: target/ unless CARGO_TARGET_DIR says otherwise.
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
# `cargo test --workspace` has built the binaries already in CI; build them if not.
if [ ! -x "$bin/civic-coordinator" ] || [ ! -x "$bin/civic-agent" ] || [ ! -x "$bin/civic-board" ]; then
    cargo build --quiet --manifest-path "$repo/Cargo.toml" -p civic-server -p civic-client-sdk --bins
fi
work=$(mktemp -d)
cleanup() {
    pkill -P $$ 2>/dev/null || true
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT
ln -s "$repo/examples" "$work/examples"
script="$work/walkthrough.sh"
{
    echo 'set -euo pipefail'
    # Print each block's commands as they run, for the CI log.
    echo 'set -x'
    awk '/^```sh$/ { inside = 1; next } /^```$/ { inside = 0 } inside' "$repo/docs/walkthrough.md"
    echo 'kill $(jobs -p) 2>/dev/null || true'
    echo 'wait 2>/dev/null || true'
} > "$script"
cd "$work"
PATH="$bin:$PATH" timeout 300 bash "$script"
echo "walkthrough: every command ran"
