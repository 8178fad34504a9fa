#!/bin/sh
# Kafka publishing (benches/README.md, "Kafka"): in one run, rounds alternating between the same
# server without and with [kafka] (a private tansu broker, memory storage), the binary edge at
# its maximum order rate (tcp-max, resting orders by default, the default profile: fsync) and then order ->
# ack latency at a fixed 10,000 orders/s (tcp). With Kafka, also: messages the broker
# acknowledged per second during the saturating run and until the publisher caught up, and the
# publisher's lag (sampled every 0.5 s, at most and at the run's end).
# Build first: cargo build --release --workspace
# tansu: scripts/test fetches it into ~/.cache/viaduct-test/tansu (or set VIADUCT_TEST_TANSU).
# Run from the repository root: sh benches/kafka-figures.sh [rounds] [seconds]
set -u
ROUNDS=${1:-3}
S=${2:-5}
# book: resting orders (one `orders` message each, no history rows, so history's bound does not
# refuse them); cross: orders that trade (a deal and two order messages each, history rows too).
FLOW=${FLOW:-book}
TANSU=${VIADUCT_TEST_TANSU:-$HOME/.cache/viaduct-test/tansu/tansu}
KPORT=${KAFKA_PORT:-19092}
MPORT=${METRICS_PORT:-19100}
LG=./target/release/loadgen
O=${OUT:-loadgen-out}
OFF=/tmp/viaduct-kafka-off.toml
ON=/tmp/viaduct-kafka-on.toml
{ cat benches/loadgen.toml; printf '\n[metrics]\nbind = "127.0.0.1:%s"\n' "$MPORT"; } > $OFF
{ cat $OFF; printf '[kafka]\nbrokers = "127.0.0.1:%s"\n%s\n' "$KPORT" "${KAFKA_EXTRA:-}"; } > $ON

scrape() { curl -s "http://127.0.0.1:$MPORT/metrics"; }
lag() { scrape | awk '/^viaduct_consumer_lag_commands\{consumer="Kafka publisher"\}/ { print $NF; exit }'; }
acked() { scrape | awk '/^viaduct_kafka_messages\{/ { n += $NF } END { print n + 0 }'; }
now() { date +%s.%N; }
stop_all() {
  pkill -f "viaduct run --config /tmp/viaduct-kafka-"
  for _ in $(seq 1 300); do pgrep -f "viaduct run --config /tmp/viaduct-kafka-" > /dev/null || break; sleep 0.1; done
  pkill -f "tansu broker --listener-url tcp://127.0.0.1:$KPORT"
  for _ in $(seq 1 100); do pgrep -f "tansu broker --listener-url tcp://127.0.0.1:$KPORT" > /dev/null || break; sleep 0.1; done
}
start() {
  stop_all
  rm -rf /tmp/viaduct-load
  if [ "$1" = on ]; then
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
      --storage-engine memory://tansu/ > /tmp/tansu-figures.log 2>&1 &
    sleep 1
  fi
  ./target/release/viaduct run --config "/tmp/viaduct-kafka-$1.toml" > "/tmp/viaduct-kafka-$1.log" 2>&1 &
  for _ in $(seq 1 100); do
    curl -s -o /dev/null http://127.0.0.1:8080/ -d '{"id":0,"method":"market.list","params":[]}' && break
    sleep 0.1
  done
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    echo "### round $round, kafka $mode"
    start $mode
    t0=$(now)
    a0=$(acked)
    $LG --mode tcp-max --flow "$FLOW" --seconds "$S" --connections 4 --window 1024 --out "$O" --users 8 &
    lg=$!
    most=0
    while kill -0 $lg 2>/dev/null; do
      l=$(lag)
      [ -n "$l" ] && [ "$l" -gt "$most" ] && most=$l
      sleep 0.5
    done
    wait $lg
    if [ $mode = on ]; then
      t1=$(now)
      a1=$(acked)
      end=$(lag)
      for _ in $(seq 1 1200); do [ "$(lag)" = 0 ] && break; sleep 0.1; done
      t2=$(now)
      a2=$(acked)
      awk -v a0="$a0" -v a1="$a1" -v a2="$a2" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v end="$end" -v most="$most" 'BEGIN {
        printf "kafka: %d messages acknowledged during the run (%.0f/s); publisher lag at most %d commands, %d at the end; caught up %.1f s later; %d messages in all, %.0f/s from start to caught up\n",
          a1 - a0, (a1 - a0) / (t1 - t0), most, end, t2 - t1, a2 - a0, (a2 - a0) / (t2 - t0) }'
    fi
    $LG --mode tcp --rate 10000 --seconds "$S" --connections 4 --out "$O" --users 8
  done
done
stop_all
