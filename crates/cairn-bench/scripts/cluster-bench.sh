#!/usr/bin/env bash
# Issue 5 benchmark: the same query and write load through two web nodes and the search
# service on PostgreSQL, against one node on a local index over SQLite, in one run.
#   crates/cairn-bench/scripts/cluster-bench.sh [ITEMS] [WORKDIR]
# Needs: target/release/{cairn,cairn-bench}, wrk, PostgreSQL server binaries (initdb, pg_ctl).
set -euo pipefail
ITEMS=${1:-100000}
WORK=${2:-/tmp/cairn-cluster-bench}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=$ROOT/target/release
SCRIPTS=$ROOT/crates/cairn-bench/scripts
KEY=cluster-bench-key-0123456789
SECRET=cluster-bench-secret-0123
DUR=${DUR:-15s}
source "$SCRIPTS/bench-lib.sh"
pg_start

"$BIN/cairn-bench" corpus --items "$ITEMS" --seed 42 --out "$WORK/corpus.jsonl" >/dev/null
echo "import into PostgreSQL:"; "$BIN/cairn" import --data "$WORK/svc" --database "$URL" "$WORK/corpus.jsonl" 2>/dev/null | tail -1
echo "import into SQLite:";     "$BIN/cairn" import --data "$WORK/local" "$WORK/corpus.jsonl" 2>/dev/null | tail -1


Q='/odata.svc/Root?query=Body%3Aat%20.SORT%3AName&$top=20&metadata=no&$select=Id,Name'
wrk_run() { # url connections script args...
  local url=$1 c=$2 script=$3; shift 3
  wrk -t2 -c"$c" -d"$DUR" --latency --timeout 30s -s "$SCRIPTS/$script" "$url" -- "$@"
}
parse() { # wrk output on stdin: req/s p50 p99
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}'
}

start svc search-service --data "$WORK/svc" --database "$URL" --listen 127.0.0.1:0 --search-secret "$SECRET"; SVC=$(url_of svc)
start a serve --data "$WORK/a" --database "$URL" --listen 127.0.0.1:0 --admin-key "$KEY" --search-service "$SVC" --search-secret "$SECRET"; A=$(url_of a)
start b serve --data "$WORK/b" --database "$URL" --listen 127.0.0.1:0 --admin-key "$KEY" --search-service "$SVC" --search-secret "$SECRET"; B=$(url_of b)
curl -s -X POST -H "Authorization: Bearer $KEY" "$A/odata.svc/Root" -d '{"__ContentType":"Folder","Name":"W"}' >/dev/null
echo; echo "| setup | load | req/s | p50 | p99 |"; echo "|---|---|---:|---:|---:|"
for load in query create; do
  if [ $load = query ]; then s=query.lua; args=("$KEY" "$Q"); else s=create.lua; args=("$KEY" /odata.svc/Root/W x "cluster bench"); fi
  wrk_run "$A" 32 $s "${args[@]}" > "$WORK/a.$load" & wa=$!
  wrk_run "$B" 32 $s "${args[@]/x/y}" > "$WORK/b.$load"; wait $wa
  read -r ra pa qa < <(parse < "$WORK/a.$load"); read -r rb pb qb < <(parse < "$WORK/b.$load")
  echo "| 2 web nodes + search service (PostgreSQL) | $load, 2x32 conns | $(python3 -c "print(round($ra+$rb))") | $pa / $pb | $qa / $qb |"
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=()
start local serve --data "$WORK/local" --listen 127.0.0.1:0 --admin-key "$KEY"; L=$(url_of local)
curl -s -X POST -H "Authorization: Bearer $KEY" "$L/odata.svc/Root" -d '{"__ContentType":"Folder","Name":"W"}' >/dev/null
for load in query create; do
  if [ $load = query ]; then s=query.lua; args=("$KEY" "$Q"); else s=create.lua; args=("$KEY" /odata.svc/Root/W x "cluster bench"); fi
  read -r r p q < <(wrk_run "$L" 64 $s "${args[@]}" | parse)
  echo "| 1 node, local index (SQLite) | $load, 64 conns | $r | $p | $q |"
done
du -sh "$WORK/svc/index" "$WORK/local/index" "$WORK/pg" "$WORK/local/cairn.db" 2>/dev/null
