# Shared by the benchmark scripts (source it after setting WORK and BIN): a work folder, a
# throwaway PostgreSQL in it, and cairn processes whose pids are kept and stopped at exit.

rm -rf "$WORK" && mkdir -p "$WORK" && chmod 777 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; runuser -u postgres -- pg_ctl -D "$WORK/pg" stop -m immediate >/dev/null 2>&1 || true; }
trap cleanup EXIT

pg_start() { # a PostgreSQL server in $WORK/pg on a free port: sets URL
  local pgbin port
  pgbin=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  runuser -u postgres -- "$pgbin/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync -E UTF8 --locale=C >/dev/null
  mkdir -p "$WORK/sock" && chown postgres "$WORK/sock"
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $port -k $WORK/sock -c max_connections=300 -c shared_buffers=512MB" start >/dev/null
  URL="postgres://postgres@127.0.0.1:$port/postgres"
}

start() { # name, args...: start a cairn process (not in a subshell: its pid is kept)
  local name=$1; shift
  "$BIN/cairn" "$@" > "$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  eval "PID_$name=$!"
}

url_of() { # name: wait for the process's printed address (an hour at most: a rebuild)
  for _ in $(seq 1 36000); do
    if grep -q "http://" "$WORK/$1.out"; then grep -o 'http://[0-9.:]*' "$WORK/$1.out" | head -1; return; fi
    sleep 0.1
  done
  echo "$1 did not start" >&2; exit 1
}
