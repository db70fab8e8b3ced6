#!/usr/bin/env bash
# The target of the audit trail and rate limits: job submission (POST) and reads (GET) with both
# on must keep at least 0.85 of their throughput with both off. For each connection count, runs
# ROUNDS rounds of bench/pair.sh, `off` then `on` (each on a fresh database), and prints every
# run, then per phase the median rates, the median of the per-round on/off ratios, and the
# median CPU per request of Herald and of PostgreSQL in each mode (and of the request log's
# writer, one of PostgreSQL's backends, with both on).
#   usage: bench/ratio.sh [ROUNDS] [CONNECTIONS...]     (3 rounds at 32 connections by default)
#   env: BENCH_SECONDS (10 per run), BENCH_BINARY (see bench/pair.sh; built once if unset)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}; shift || true
counts=("${@:-32}")
seconds=${BENCH_SECONDS:-10}
if [[ -z ${BENCH_BINARY:-} ]]; then
  cargo build --release --locked --bin herald >&2
  export BENCH_BINARY=target/release/herald
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for connections in "${counts[@]}"; do
  for what in get post; do
    for round in $(seq 1 "$rounds"); do
      for mode in off on; do
        line=$(BENCH_CONNECTIONS=$connections bench/pair.sh "$mode" "$what" "$seconds" | tail -1)
        echo "round $round: $line"
        rate=$(sed -E 's/.*: ([0-9.]+) req\/s.*/\1/' <<<"$line")
        # CPU per request (µs) of Herald, of PostgreSQL and of the request log's writer (one of
        # PostgreSQL's backends) over the measured middle of the run.
        cpu=$(sed -E 's/.*over ([0-9]+) s: herald ([0-9]+), postgres ([0-9]+) \(writer ([0-9]+)\).*/\1 \2 \3 \4/' <<<"$line" |
          awk -v r="$rate" '{printf "%.1f %.1f %.1f", $2 * 10000 / (r * $1), $3 * 10000 / (r * $1), $4 * 10000 / (r * $1)}')
        echo "$connections $what $round $mode $rate $cpu" >>"$results"
      done
    done
  done
done

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "phase           off (median)  on (median)  on/off per round       median on/off"
for connections in "${counts[@]}"; do
  for what in get post; do
    pick() { awk -v c="$connections" -v w="$what" -v m="$1" '$1 == c && $2 == w && $4 == m {print $3, $5}' "$results" | sort -n; }
    ratios=$(join <(pick off) <(pick on) | awk '{printf "%.2f\n", $3 / $2}')
    printf "%-4s c=%-6s  %12.0f  %11.0f  %-22s %.2f\n" "$what" "$connections" \
      "$(pick off | awk '{print $2}' | median)" "$(pick on | awk '{print $2}' | median)" \
      "$(paste -sd' ' <<<"$ratios")" "$(median <<<"$ratios")"
  done
done
echo
echo "CPU per request (µs, medians)   herald off  herald on  postgres off  postgres on  (writer on)"
for connections in "${counts[@]}"; do
  for what in get post; do
    cpu() { awk -v c="$connections" -v w="$what" -v m="$1" -v f="$2" '$1 == c && $2 == w && $4 == m {print $f}' "$results" | median; }
    printf "%-4s c=%-6s %26s  %9s  %12s  %11s  %11s\n" "$what" "$connections" \
      "$(cpu off 6)" "$(cpu on 6)" "$(cpu off 7)" "$(cpu on 7)" "$(cpu on 8)"
  done
done
