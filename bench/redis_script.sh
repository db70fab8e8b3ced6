#!/usr/bin/env bash
# The shared limits' cost in Redis: the minute-policy script as built (TAT and the quota it was
# kept under, two keys) against the same script without the quota key (as it was before limits
# changed by an admin were rescaled), with redis-benchmark, each a key of 10,000 at random, the
# quota high enough that every call is allowed (so both write). Rounds alternate the two.
#   usage: bench/redis_script.sh [ROUNDS] [CLIENTS]   (defaults 3 and 4)
# Uses scripts/test-redis.sh's Redis; the bench:* keys it writes expire within a second.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; clients=${2:-4}
eval "$(scripts/test-redis.sh start)"
port=${TEST_REDIS_URL##*:}
command -v redis-benchmark >/dev/null || { echo "redis-benchmark not found (package redis-tools)" >&2; exit 1; }

# The script's Lua as api/src/limits/scripts.rs builds it, and the variant without the quota key.
python3 - <<'PY'
import re
s = open('api/src/limits/scripts.rs').read()
pre = re.search(r'macro_rules! gcra_preamble \{\s*\(\) => \{\s*r#"(.*?)"#', s, re.S).group(1)
body = s[s.index('pub(super) const MINUTE_SCRIPT: &str = concat!('):]
body = body[:body.index('\n);')]
parts = re.findall(r'r#"(.*?)"#|(gcra_preamble!\(\))', body, re.S)
built = ''.join(text if text or not macro else pre for text, macro in parts)
rescale = re.search(r"local kept, kept_tat = .*?\nend\n", built, re.S).group(0)
keep = re.search(r"  redis.call\('SET', KEYS\[#KEYS\].*\n", built).group(0)
carry = "if rescaled then\n  keep_tat(tat)\nend\n"
assert carry in built
built_tat_only = built.replace(rescale, '').replace(keep, '').replace(carry, '')
open('/tmp/herald_minute_built.lua', 'w').write(built)
open('/tmp/herald_minute_tat_only.lua', 'w').write(built_tat_only)
PY
declare -A sha
for variant in built tat_only; do
  sha[$variant]=$(redis-cli -p "$port" SCRIPT LOAD "$(cat /tmp/herald_minute_$variant.lua)")
done
declare -A rates
for ((round = 1; round <= rounds; round++)); do
  for variant in tat_only built; do
    rate=$(redis-benchmark -p "$port" -n 200000 -c "$clients" -r 10000 -q \
      EVALSHA "${sha[$variant]}" 2 bench:rl:__rand_int__ bench:rl:__rand_int__:quota 1000000000 0 \
      | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)
    echo "round $round $variant: $rate calls/s"
    rates[$variant]+="$rate "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
tat_only=$(median "${rates[tat_only]}"); built=$(median "${rates[built]}")
echo "median: TAT only $tat_only calls/s, TAT and quota $built calls/s, ratio $(awk -v b="$built" -v t="$tat_only" 'BEGIN {printf "%.2f", b / t}')"
