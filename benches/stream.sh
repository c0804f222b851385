#!/usr/bin/env bash
# Weights streaming: a FLUX-shaped GGUF of >= GIB GiB (Q8_0 double blocks, Q4_0 single blocks,
# made by our GGUF writer) served over loopback HTTP with Range support (benches/range_server.py),
# streamed into GPU buffers by `iclora bench stream` (HttpSource + load_tensor_as) and fetched by
# `curl -o /dev/null` in the same run; RUNS runs of each, alternating, median reported.
# Peak RSS of both from /usr/bin/time -v (whole process, including the GPU adapter's memory).
# Usage: benches/stream.sh [GIB] [RUNS] [CONVERT]   (defaults 1, 3, keep)
#   BIN=path/to/iclora (default: the newer of target/release/iclora and target/debug/iclora)
# The file is written to a temporary directory and deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
GIB=${1:-1} RUNS=${2:-3} CONVERT=${3:-keep}
BIN=${BIN:-$(ls -t target/release/iclora target/debug/iclora 2>/dev/null | head -1)}
echo "binary: $BIN"
DIR=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
FILE="$DIR/flux-bench.gguf"
"$BIN" bench stream --make "$FILE" --gib "$GIB"
python3 benches/range_server.py "$FILE" 0 > "$DIR/port" &
SERVER=$!
for _ in $(seq 50); do [ -s "$DIR/port" ] && break; sleep 0.1; done
URL="http://127.0.0.1:$(head -1 "$DIR/port")/flux-bench.gguf"
SIZE=$(stat -c %s "$FILE")
rss() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }
for i in $(seq "$RUNS"); do
  /usr/bin/time -v -o "$DIR/curl.time" curl -sS -o /dev/null -w '%{time_total}\n' "$URL" > "$DIR/curl.out"
  echo "curl $(awk -v s="$SIZE" '{ printf "%.3f %.1f", $1, s / 1e6 / $1 }' "$DIR/curl.out") $(rss "$DIR/curl.time")" >> "$DIR/rows"
  /usr/bin/time -v -o "$DIR/ours.time" "$BIN" bench stream --url "$URL" --convert "$CONVERT" > "$DIR/ours.out" 2> "$DIR/ours.err"
  grep '^stream' "$DIR/ours.out" >&2
  line=$(grep '^stream' "$DIR/ours.out")
  secs=$(sed 's/.* secs=\([^ ]*\).*/\1/' <<< "$line"); mbs=$(sed 's/.* mb_s=\([^ ]*\).*/\1/' <<< "$line")
  echo "iclora $secs $mbs $(rss "$DIR/ours.time")" >> "$DIR/rows"
done
echo
echo "file: $SIZE bytes ($(awk -v s="$SIZE" 'BEGIN { printf "%.2f", s / 2^30 }') GiB), $RUNS runs each, median; convert=$CONVERT; $(grep '^adapter' "$DIR/ours.out")"
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf "%-8s %10s %10s %14s\n" tool secs MB/s peak_RSS_MiB
for tool in curl iclora; do
  s=$(awk -v t=$tool '$1 == t { print $2 }' "$DIR/rows" | median)
  m=$(awk -v t=$tool '$1 == t { print $3 }' "$DIR/rows" | median)
  r=$(awk -v t=$tool '$1 == t { print $4 }' "$DIR/rows" | median)
  printf "%-8s %10s %10s %14s\n" "$tool" "$s" "$m" "$r"
  eval "${tool}_mbs=$m"
done
awk -v a="$iclora_mbs" -v b="$curl_mbs" 'BEGIN { printf "throughput ratio iclora / curl: %.2f\n", a / b }'
/usr/bin/time -v -o "$DIR/info.time" "$BIN" info > /dev/null
echo "baseline: \`iclora info\` (process + GPU adapter, nothing streamed) peak RSS $(rss "$DIR/info.time") MiB"
echo "all runs (tool secs MB/s peak_RSS_MiB):"; cat "$DIR/rows"
