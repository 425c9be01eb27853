#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite on the CPU.
# A throwaway PostgreSQL cluster on loopback serves the store tests (RLHAIF_TEST_POSTGRES_URL); it is
# removed on exit. Set RLHAIF_TEST_POSTGRES_URL yourself to use another server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-dev.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

start_postgres() {  # a throwaway cluster on 127.0.0.1, trust auth, removed on exit
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || return 1
  PGDIR=$(mktemp -d /tmp/rlhaif-pg.XXXXXX)
  local port as=""
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; as="runuser -u postgres --"; fi  # postgres refuses root
  $as "$pgbin/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >/dev/null || return 1
  trap "$as $pgbin/pg_ctl -D $PGDIR/data -m immediate stop >/dev/null 2>&1; rm -rf $PGDIR" EXIT
  $as "$pgbin/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PGDIR -c max_connections=200" start >/dev/null || return 1
  export RLHAIF_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}
if [ -z "${RLHAIF_TEST_POSTGRES_URL:-}" ]; then
  start_postgres || echo "warning: could not start PostgreSQL; the PostgreSQL store tests will skip" >&2
fi
python3 -m pytest -q -p no:cacheprovider "$@"
