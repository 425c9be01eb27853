#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite on the CPU.
# A throwaway PostgreSQL cluster on loopback serves the store tests (RLHAIF_TEST_POSTGRES_URL); it is
# removed on exit. Set RLHAIF_TEST_POSTGRES_URL yourself to use another server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-dev.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "${RLHAIF_TEST_POSTGRES_URL:-}" ] && [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ]; then
  PGDIR=$(mktemp -d /tmp/rlhaif-pg.XXXXXX)
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  AS=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; AS=(runuser -u postgres --); fi  # postgres refuses root
  "${AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=on -c max_connections=200" start >/dev/null
  trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"' EXIT
  export RLHAIF_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
fi
python3 -m pytest -q -p no:cacheprovider "$@"
