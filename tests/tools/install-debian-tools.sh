#!/usr/bin/env bash
# Installs the Debian tools the real-tool tests drive (nfdump, softflowd, FreeRADIUS, tshark), and
# tmux, the terminal tests/flows/test_terminal_display.py watches a run in.
# Does nothing when they are present; says so and carries on when it cannot install them
# (not root, no apt-get): those tests then skip outside CI and fail in CI.
set -u
tools="nfdump nfpcapd nfreplay softflowd freeradius radclient tshark nfacctd tmux"
missing=""
for t in $tools; do command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-debian-tools: missing$missing and cannot apt-get install here; real-tool tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && \
  apt-get install -y -qq --no-install-recommends nfdump softflowd freeradius freeradius-utils tshark pmacct tmux >/dev/null \
  || { echo "install-debian-tools: apt-get install failed" >&2; exit 1; }
