#!/bin/bash
# Two builds of the server, alternated round by round on fresh servers (loopback only), with the
# same load generator: the figures "One pipeline you can read" must keep (benches/README.md).
# Each directory holds a release `viaduct`, `matcher-profile` and `replay`; the load generator is
# this tree's. Build first: cargo build --release --workspace
# Run from the repository root: bash benches/ab-figures.sh DIR_A DIR_B [rounds] > ab.txt
# Each round prints, per build, the lines of: echo and binary orders (rest flow) at 100 k/s and
# 10 k/s (`os` profile), tcp-max rest and book flows, HTTP order.put_limit with fsync at its
# maximum (`default`), matcher-profile and replay.
. benches/stop-servers.sh
set -u
A=$1
B=$2
ROUNDS=${3:-5}
LG=./target/release/loadgen
O=${OUT:-loadgen-out}
restart() { # build dir, profile
  stop_servers "viaduct run --config benches/loadgen.toml"
  rm -rf /tmp/viaduct-load
  "$1/viaduct" run --config benches/loadgen.toml --profile "$2" > /tmp/viaduct-load.log 2>&1 &
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:8080/" -d '{"id":0,"method":"market.list","params":[]}' && break
    sleep 0.1
  done
}
for r in $(seq 1 "$ROUNDS"); do
  for b in A B; do
    if [ $b = A ]; then D=$A; else D=$B; fi
    echo "=== $b round $r"
    restart "$D" benches/profile-os.toml
    $LG --mode echo --echo-bytes 48 --rate 100000 --seconds 3 --connections 4 --out "$O" | sed 's/^/echo100k /'
    $LG --mode tcp --flow rest --rate 100000 --seconds 3 --connections 4 --out "$O" --users 8 | sed 's/^/tcp100k /'
    $LG --mode echo --echo-bytes 48 --rate 10000 --seconds 3 --connections 4 --out "$O" | sed 's/^/echo10k /'
    $LG --mode tcp --flow rest --rate 10000 --seconds 3 --connections 4 --out "$O" --users 8 | sed 's/^/tcp10k /'
    restart "$D" benches/profile-os.toml
    $LG --mode tcp-max --flow rest --seconds 3 --connections 4 --window 256 --out "$O" --users 8 | sed 's/^/tcpmaxrest /'
    restart "$D" benches/profile-os.toml
    $LG --mode tcp-max --flow book --seconds 8 --connections 4 --window 1024 --out "$O" --users 8 | sed 's/^/tcpmaxbook /'
    restart "$D" default
    $LG --mode max --flow rest --seconds 5 --connections 8 --window 32 --out "$O" | sed 's/^/httpmax /'
    stop_servers "viaduct run --config benches/loadgen.toml"
    "$D/matcher-profile" 3 | tail -1 | sed 's/^/mprof /'
    "$D/replay" 1000000 1 2>&1 | grep -i "replay" | tail -2 | sed 's/^/replay /'
  done
done
pkill -f "viaduct run --config benches/loadgen.toml"
