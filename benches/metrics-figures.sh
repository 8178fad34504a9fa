#!/bin/sh
# The cost of the metrics (benches/README.md, "Metrics"): rounds alternating between the same
# server without [metrics] and with it while /metrics is scraped every second (Prometheus scrapes
# every 15 s or more), each: the binary edge at its maximum (tcp-max, resting orders, 4 x 1,024 in
# flight, default profile: fsync) and order -> ack latency at 10,000 binary orders/s.
# Build first: cargo build --release --workspace
# Run from the repository root: sh benches/metrics-figures.sh [rounds] [seconds]
set -u
ROUNDS=${1:-3}
S=${2:-5}
MPORT=${METRICS_PORT:-19101}
LG=./target/release/loadgen
O=${OUT:-loadgen-out}
OFF=/tmp/viaduct-metrics-off.toml
ON=/tmp/viaduct-metrics-on.toml
cp benches/loadgen.toml $OFF
{ cat benches/loadgen.toml; printf '\n[metrics]\nbind = "127.0.0.1:%s"\n' "$MPORT"; } > $ON
stop_all() {
  pkill -f "viaduct run --config /tmp/viaduct-metrics-"
  for _ in $(seq 1 300); do pgrep -f "viaduct run --config /tmp/viaduct-metrics-" > /dev/null || break; sleep 0.1; done
}
for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    echo "### round $round, metrics $mode"
    stop_all
    rm -rf /tmp/viaduct-load
    ./target/release/viaduct run --config "/tmp/viaduct-metrics-$mode.toml" > "/tmp/viaduct-metrics-$mode.log" 2>&1 &
    for _ in $(seq 1 100); do
      curl -s -o /dev/null http://127.0.0.1:8080/ -d '{"id":0,"method":"market.list","params":[]}' && break
      sleep 0.1
    done
    scraper=
    if [ $mode = on ]; then
      (while :; do curl -s -o /dev/null "http://127.0.0.1:$MPORT/metrics"; sleep 1; done) &
      scraper=$!
    fi
    $LG --mode tcp-max --flow book --seconds "$S" --connections 4 --window 1024 --out "$O" --users 8
    $LG --mode tcp --rate 10000 --seconds "$S" --connections 4 --out "$O" --users 8
    [ -n "$scraper" ] && kill $scraper
  done
done
stop_all
