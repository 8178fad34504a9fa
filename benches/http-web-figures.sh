#!/bin/sh
# HTTP the way web back ends call it (issue "As fast as web back ends call it"): wrk with one
# request in flight per connection, order.put_limit that crosses about half the time, embedded
# history on, fsync; beside market.list in the same run. Prints each wrk summary and the server's
# CPU time per request from /proc. Build first: cargo build --release --bin viaduct
# Run from the repository root: sh benches/http-web-figures.sh [connections] [seconds]
# (VIADUCT=path names another build of the binary, to alternate two builds; PROFILE=name or path
# another profile than default.)
. benches/stop-servers.sh
set -u
C=${1:-32}
S=${2:-10}
HTTP=127.0.0.1:8080
stop_servers "viaduct run --config benches/loadgen.toml"
rm -rf /tmp/viaduct-load
${VIADUCT:-./target/release/viaduct} run --config benches/loadgen.toml --profile "${PROFILE:-default}" > /tmp/viaduct-load.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://$HTTP/" -d '{"id":0,"method":"market.list","params":[]}' && break; sleep 0.1; done
for u in $(seq 1 100); do
  curl -s -o /dev/null "http://$HTTP/" -d "{\"id\":1,\"method\":\"balance.update\",\"params\":[$u,\"BTC\",\"deposit\",1,\"1000000\",{}]}"
  curl -s -o /dev/null "http://$HTTP/" -d "{\"id\":2,\"method\":\"balance.update\",\"params\":[$u,\"BCH\",\"deposit\",1,\"1000000000\",{}]}"
done
cpu() { awk '{ print $14 + $15 }' /proc/$PID/stat; }
TICK=$(getconf CLK_TCK)
run() {
  name=$1; script=$2
  before=$(cpu)
  out=$(wrk -t1 -c"$C" -d"${S}s" --latency -s "$script" "http://$HTTP/")
  after=$(cpu)
  reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
  refused=$(echo "$out" | awk '/orders refused/ { print $(NF-2) }')
  ok=$(( reqs - ${refused:-0} ))
  echo "## $name ($C connections, ${S} s)"
  echo "$out" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx|refused"
  echo "answered without error: $(( ok / S )) per second; server CPU $(( (after - before) * 1000000 / TICK / (ok > 0 ? ok : 1) )) us per one"
}
run market.list benches/wrk/market_list.lua
run order.put_limit benches/wrk/put_limit.lua
run market.list benches/wrk/market_list.lua
run order.put_limit benches/wrk/put_limit.lua
kill $PID; wait $PID 2>/dev/null
