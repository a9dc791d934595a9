#!/usr/bin/env bash
# Runs every `sh` block of docs/walkthrough.md, then of docs/queries.md (which continues
# the walk-through's session: its coordinator, agents, tokens and project) and of
# docs/training.md (a partner's trainer, by hand), in order, in one
# shell, in a fresh directory, with the debug binaries on PATH; fails if any command fails.
# Background processes are stopped at the end.
#
# The binaries come from CIVIC_BIN_DIR when it is set (it must then hold civic-coordinator,
# civic-agent and civic-board); otherwise from target/debug (or $CARGO_TARGET_DIR/debug),
# built here if they are missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
docs=("$repo/docs/walkthrough.md" "$repo/docs/queries.md" "$repo/docs/training.md")
have_bins() { [ -x "$1/civic-coordinator" ] && [ -x "$1/civic-agent" ] && [ -x "$1/civic-board" ]; }
if [ -n "${CIVIC_BIN_DIR:-}" ]; then
    bin=$(cd "$CIVIC_BIN_DIR" && pwd)
    have_bins "$bin" || { echo "CIVIC_BIN_DIR=$CIVIC_BIN_DIR lacks civic-coordinator, civic-agent or civic-board" >&2; exit 1; }
else
    # Where cargo puts the binaries: target/ unless CARGO_TARGET_DIR says otherwise.
    bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
    # `cargo test --workspace` has built the binaries already in CI; build them if not.
    if ! have_bins "$bin"; then
        cargo build --quiet --manifest-path "$repo/Cargo.toml" -p civic-server -p civic-client-sdk --bins
    fi
fi
work=$(mktemp -d)
cleanup() {
    pkill -P $$ 2>/dev/null || true
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT
ln -s "$repo/examples" "$work/examples"
script="$work/docs.sh"
{
    echo 'set -euo pipefail'
    # The coordinator and agents the blocks start in the background stop when the script
    # ends, however it ends: at its last line, at a failing command, or when `timeout` (or
    # the cleanup above, through it) sends TERM.
    echo "trap 'kill \$(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT"
    echo "trap 'exit 143' TERM INT HUP"
    # Print each block's commands as they run, for the CI log.
    echo 'set -x'
    for doc in "${docs[@]}"; do
        echo ": '== ${doc#"$repo/"}'"
        awk '/^```sh$/ { inside = 1; next } /^```$/ { inside = 0 } inside' "$doc"
    done
} > "$script"
cd "$work"
start=$SECONDS
PATH="$bin:$PATH" timeout 300 bash "$script"
echo "docs: every command of walkthrough.md, queries.md and training.md ran ($((SECONDS - start)) s)"
