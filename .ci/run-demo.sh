#!/usr/bin/env bash
# make run: private Redis + PostgreSQL in .data/dev, migrations, demo data, a
# simulated SBC writing registrations, and the server. Ctrl-C stops the
# server and the simulator; `make stop` stops Redis and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/presencehub

while IFS= read -r line; do export "$line"; done < <(.ci/local-services.sh start dev)
# The demo's encryption key: 32 random bytes in hex, made once and kept (a
# key file from before, 32 random bytes in base64, is strong too and kept).
keyfile=.data/dev/encryption-key
[ -s "$keyfile" ] || { (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$keyfile"); }
export PRESENCEHUB_ENCRYPTION_KEY=${PRESENCEHUB_ENCRYPTION_KEY:-$(cat "$keyfile")}
export PRESENCEHUB_LISTEN=${PRESENCEHUB_LISTEN:-127.0.0.1:8080}

$bin migrate >/dev/null
seed=$($bin seed)
admin_key=$(sed -n 's/^admin_key=//p' <<<"$seed")
account_sid=$(sed -n 's/^account_sid=//p' <<<"$seed")
realm=$(sed -n 's/^realm=//p' <<<"$seed")

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$bin serve &
pids+=($!)
url=http://$PRESENCEHUB_LISTEN
for _ in $(seq 100); do
  curl -fs "$url/readyz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "presencehub serve exited; see the log above" >&2; exit 1; }
  sleep 0.1
done

if [ "${PRESENCEHUB_DEMO_SIMULATE:-1}" != 0 ]; then
  $bin simulate --realm "$realm" --users "${PRESENCEHUB_DEMO_USERS:-40}" --rate "${PRESENCEHUB_DEMO_RATE:-2}" \
    --min-expires 30s --max-expires 5m --burst 20 --duration 0 2>.data/dev/simulate.log &
  pids+=($!)
fi

cat <<MSG

  presencehub is running
  ----------------------
  Dashboard:    $url/
  Demo account: $url/accounts/$account_sid   (realm $realm)
  Admin key:    $admin_key

  Try:  curl -H "Authorization: Bearer $admin_key" $url/v1/Accounts/$account_sid/RegisteredSipUsers
  The simulated SBC logs to .data/dev/simulate.log (PRESENCEHUB_DEMO_SIMULATE=0 turns it off).
  Ctrl-C stops the server; make stop stops Redis and PostgreSQL.

MSG
wait "${pids[0]}"
