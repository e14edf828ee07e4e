#!/usr/bin/env bash
# Issue 16 benchmark: search replicas on one PostgreSQL, in one run.
#  1. Query throughput of five typical CQL queries through two web nodes with 1, 2 and 3
#     search replicas (wrk, 16 connections on each node).
#  2. Time to add a replica: seeded from an index backup made before WRITES more writes
#     (--seed-from, then catch-up), against one rebuilt from the database (empty data
#     folder); each timed from start until its /health says ok.
#   crates/cairn-bench/scripts/replicas-bench.sh [ITEMS] [WORKDIR]
# Needs: target/release/{cairn,cairn-bench}, wrk, PostgreSQL server binaries (initdb, pg_ctl).
# Everything shares this machine's cores: PostgreSQL, the replicas, both nodes and wrk.
set -euo pipefail
ITEMS=${1:-1000000}
WORK=${2:-/tmp/cairn-replicas-bench}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=$ROOT/target/release
SCRIPTS=$ROOT/crates/cairn-bench/scripts
KEY=replicas-bench-key-0123456789
SECRET=replicas-bench-secret-0123
DUR=${DUR:-10s}
WRITES=${WRITES:-20000}
source "$SCRIPTS/bench-lib.sh"
pg_start

"$BIN/cairn-bench" corpus --items "$ITEMS" --seed 42 --out "$WORK/corpus.jsonl" >/dev/null
echo "import $ITEMS items into PostgreSQL (replica 1's index built with it):"
"$BIN/cairn" import --data "$WORK/r1" --database "$URL" "$WORK/corpus.jsonl" 2>/dev/null | tail -1

stop() { # name
  local pid; pid=$(eval echo "\$PID_$1"); kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
}
healthy() { # url: wait until /health answers ok
  until curl -sf "$1/health" | grep -q '"Status":"ok"'; do sleep 0.05; done
}
replica() { # name [args...]
  local name=$1; shift
  start "$name" search-service --data "$WORK/$name" --database "$URL" --listen 127.0.0.1:0 --search-secret "$SECRET" "$@"
}
nodes() { # replica urls joined by commas: (re)start web nodes a and b on them
  stop a 2>/dev/null || true; stop b 2>/dev/null || true
  start a serve --data "$WORK/a" --database "$URL" --listen 127.0.0.1:0 --admin-key "$KEY" --search-service "$1" --search-secret "$SECRET"; A=$(url_of a)
  start b serve --data "$WORK/b" --database "$URL" --listen 127.0.0.1:0 --admin-key "$KEY" --search-service "$1" --search-secret "$SECRET"; B=$(url_of b)
}
enc() { python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1]))' "$1"; }
SUFFIX='&$top=20&metadata=no&$select=Id,Name'
QUERIES=(
  "term|at"
  "intree|InTree:'/Root/Corpus' AND TypeIs:Article .SORT:Name .TOP:20"
  "date|PublishDate:['2020-01-01' TO '2020-12-31']"
  "prefix|bra*"
  "count|at .COUNTONLY"
)
parse() { awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$4} END {print rps, p50, p99, bad+0}'; }
queries() { # label: the five queries through both nodes at once
  for q in "${QUERIES[@]}"; do
    local name=${q%%|*} cql=${q#*|}
    local path="/odata.svc/Root?query=$(enc "$cql")$SUFFIX"
    wrk -t1 -c16 -d"$DUR" --latency --timeout 30s -s "$SCRIPTS/query.lua" "$A" -- "$KEY" "$path" > "$WORK/qa" & local wa=$!
    wrk -t1 -c16 -d"$DUR" --latency --timeout 30s -s "$SCRIPTS/query.lua" "$B" -- "$KEY" "$path" > "$WORK/qb"; wait $wa
    read -r ra pa qa ba < <(parse < "$WORK/qa"); read -r rb pb qb bb < <(parse < "$WORK/qb")
    echo "| $1 | $name | $(python3 -c "print(round($ra+$rb))") | $pa / $pb | $qa / $qb | $((ba+bb)) |"
  done
}

replica r1; R1=$(url_of r1); healthy "$R1"
nodes "$R1"
echo; echo "| replicas | query | req/s (both nodes) | p50 | p99 | non-2xx |"; echo "|---|---|---:|---:|---:|---:|"
queries 1

# An index backup now, then writes after it: what a seeded replica catches up.
curl -sf -X POST -H "Content-Type: application/json" -H "Authorization: Bearer $KEY" "$A/odata.svc/('Root')/BackupIndex" -d '{"target":"seed"}' >/dev/null
until curl -sf -H "Authorization: Bearer $KEY" "$A/odata.svc/('Root')/QueryIndexBackup" | grep -q '"State":"Finished"'; do sleep 0.5; done
"$BIN/cairn-bench" corpus --items "$WRITES" --seed 7 --out "$WORK/late.jsonl" >/dev/null
sed -i 's#"/Root/Corpus#"/Root/Late#' "$WORK/late.jsonl"
"$BIN/cairn" import --data "$WORK/importer" --database "$URL" "$WORK/late.jsonl" >/dev/null 2>&1

T0=$(date +%s.%N)
replica r2 --seed-from "$WORK/r1/backups/seed"; R2=$(url_of r2); healthy "$R2"
SEED=$(python3 -c "print(round($(date +%s.%N)-$T0,1))")
T0=$(date +%s.%N)
replica r3; R3=$(url_of r3); healthy "$R3"
REBUILD=$(python3 -c "print(round($(date +%s.%N)-$T0,1))")

nodes "$R1,$R2"; queries 2
nodes "$R1,$R2,$R3"; queries 3
echo
echo "add a replica at $ITEMS items + $WRITES written after the backup: seeded from the backup ${SEED} s, rebuilt from the database ${REBUILD} s: seeding $(python3 -c "print(round($REBUILD/$SEED,1))")x faster"
du -sh "$WORK/r1/index" "$WORK/r1/backups/seed" "$WORK/pg" 2>/dev/null
