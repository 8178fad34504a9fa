#!/bin/sh
# The WebSocket edge's fan-out (issue "The WebSocket edge"): N subscribers to depth, deals and
# their own orders and assets while orders that cross come over HTTP at a fixed rate; push latency
# from each order's acknowledgement, pushes per second, the edge thread's CPU, and order → ack
# latency against the same schedule without subscribers (loadgen --mode ws-fanout).
# Build first: cargo build --release --bin viaduct -p viaduct && cargo build --release -p viaduct-benches --bin loadgen
# Run from the repository root: sh benches/ws-figures.sh [subscribers] [rate] [seconds]
set -u
N=${1:-1000}
RATE=${2:-1000}
S=${3:-5}
HTTP=127.0.0.1:8080
AUTH_PORT=${AUTH_PORT:-9700}
CFG=/tmp/viaduct-ws-figures.toml
pkill -f "viaduct run --config $CFG"; sleep 0.5
rm -rf /tmp/viaduct-load
# The open-files limit is shared among the edges in proportion to their bounds: the few HTTP and
# TCP connections of the run leave the rest to the WebSocket edge.
{ sed 's/^bind = "127.0.0.1:7316"$/&\nconnections_max = 256/' benches/loadgen.toml
  printf '\n[edges.http]\nconnections_max = 256\n[edges.ws]\nbind = "127.0.0.1:8090"\nconnections_max = 12000\n'
  printf '[auth]\nurl = "http://127.0.0.1:%s/auth"\n' "$AUTH_PORT"; } > $CFG
${VIADUCT:-./target/release/viaduct} run --config $CFG > /tmp/viaduct-ws-figures.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://$HTTP/" -d '{"id":0,"method":"market.list","params":[]}' && break; sleep 0.1; done
./target/release/loadgen --mode ws-fanout --subscribers "$N" --rate "$RATE" --seconds "$S" --connections 8 \
  --auth-port "$AUTH_PORT" --pid $PID --out /tmp/loadgen-ws
kill $PID; wait $PID 2>/dev/null
