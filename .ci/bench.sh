#!/usr/bin/env bash
# make bench: the short form of every benchmark against private Redis and
# PostgreSQL (.ci/local-services.sh ... bench), then one table.
#
#   .ci/bench.sh                 every benchmark
#   .ci/bench.sh rest stream     only these
#   .ci/bench.sh abuse           stream at 1,000/s, each run also with a hostile key (not in the default set)
#   .ci/bench.sh history         registration history on vs off at 1,000/s, and its query times on 1,000,000 sessions (not in the default set)
#   .ci/bench.sh failover        Redis Sentinel failover as subscribers see it (not in the default set)
#   .ci/bench.sh cluster         the cluster log: memory per million changes, a replica's cold start on 1,000,000 entries, failover, three replicas vs one process at 1,000/s (not in the default set)
#
# Each benchmark's long form and flags: bin/presencehub-bench <name> --help.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(rest stream idle resync expiry floor)

work=$(mktemp -d)
cleanup() {
  .ci/local-services.sh stop bench >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

while IFS= read -r line; do
  case $line in PRESENCEHUB_*=*) export "${line?}" ;; esac
done < <(.ci/local-services.sh start bench)
: "${PRESENCEHUB_REDIS_URL:?local-services printed no PRESENCEHUB_REDIS_URL}"
: "${PRESENCEHUB_DATABASE_URL:?local-services printed no PRESENCEHUB_DATABASE_URL}"
# A fixed, strong (256-bit hex) key: SHA-256 of the weak secret earlier
# benches used, which stays the legacy secret so that demo passwords a bench
# database holds from before key ids still read.
export PRESENCEHUB_ENCRYPTION_KEY=${PRESENCEHUB_ENCRYPTION_KEY:-$(printf presencehub-bench-only | sha256sum | cut -c1-64)}
export PRESENCEHUB_ENCRYPTION_KEY_LEGACY=${PRESENCEHUB_ENCRYPTION_KEY_LEGACY:-presencehub-bench-only}
# A leftover of an interrupted run must not skew the numbers.
redis-cli -u "$PRESENCEHUB_REDIS_URL" flushdb >/dev/null

mkdir -p bin
go build -o bin/presencehub ./cmd/presencehub
go build -o bin/presencehub-bench ./cmd/presencehub-bench
bin/presencehub migrate >/dev/null
PRESENCEHUB_ADMIN_KEY=$(bin/presencehub seed | sed -n 's/^admin_key=//p')
export PRESENCEHUB_ADMIN_KEY
[ -n "$PRESENCEHUB_ADMIN_KEY" ] || { echo "bench: seed printed no admin_key" >&2; exit 1; }

echo "bench: $(nproc) CPUs, $(go version | cut -d' ' -f3), open files $(ulimit -n), load average $(cut -d' ' -f1-3 /proc/loadavg); progress follows, the table comes last" >&2
failed=()
# REST load comes from wrk where it is installed (or installable): a C load
# generator leaves the server more of the 2 cores than Go's http.Client.
rest_args=()
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || true
fi
command -v wrk >/dev/null && rest_args=(--generator wrk)

for b in "${benches[@]}"; do
  start=$SECONDS
  echo "bench: --- $b" >&2
  extra=()
  cmd=$b
  [ "$b" = rest ] && extra=("${rest_args[@]}")
  [ "$b" = abuse ] && cmd=stream extra=(--hostile --rates 1000)
  if bin/presencehub-bench "$cmd" --tsv "${extra[@]}" >"$work/$b.tsv"; then
    echo "bench: $b took $((SECONDS - start))s" >&2
  else
    failed+=("$b")
    printf '%s\tFAILED (see its output above)\t-\t-\tNO\n' "$b" >>"$work/$b.tsv"
  fi
done

echo
{
  printf 'benchmark\tmetric\tvalue\ttarget\tok?\n'
  for b in "${benches[@]}"; do cat "$work/$b.tsv"; done
} >"$work/table.tsv"
column -t -s $'\t' "$work/table.tsv" 2>/dev/null || cat "$work/table.tsv"
missed=$(awk -F'\t' '$5 == "NO"' "$work/table.tsv" | wc -l)
echo
echo "$(nproc) CPUs; values are medians of the runs with (min–max); long forms: bin/presencehub-bench <name> --long"
[ "$missed" -eq 0 ] || echo "$missed row(s) missed their target"
[ ${#failed[@]} -eq 0 ] || { echo "failed to run: ${failed[*]}" >&2; exit 1; }
