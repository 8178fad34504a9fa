#!/bin/sh
# The edge figures of benches/README.md: three rounds, each with fresh servers on /tmp/viaduct-load,
# every load beside its baseline. The flows that write no history (`rest`, `book`) get a server of
# their own: after the crossing flows the history writer is still catching up, and a server past
# its lag bound answers everything with error 3. Build first:
#   cargo build --release --workspace
# Run from the repository root: sh benches/edge-figures.sh > figures.txt
. benches/stop-servers.sh
set -u
LG=./target/release/loadgen
O=${OUT:-loadgen-out}
restart() {
  stop_servers "viaduct run --config benches/loadgen.toml"
  rm -rf /tmp/viaduct-load
  ./target/release/viaduct run --config benches/loadgen.toml --profile "$1" > /tmp/viaduct-load.log 2>&1 &
  sleep 1.5
}
for round in 1 2 3; do
  echo "### round $round"
  restart benches/profile-os.toml
  echo "## os, crossing orders"
  $LG --mode echo --echo-bytes 48 --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode echo --echo-bytes 48 --rate 100000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp --rate 100000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp-max --seconds 3 --connections 4 --window 256 --out $O --users 8
  restart benches/profile-os.toml
  echo "## os, resting orders and their cancels (no history rows)"
  $LG --mode echo --echo-bytes 48 --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp --flow rest --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode echo --echo-bytes 48 --rate 100000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp --flow rest --rate 100000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp-max --flow rest --seconds 3 --connections 4 --window 256 --out $O --users 8
  $LG --mode tcp-max --flow rest --seconds 10 --connections 4 --window 1024 --out $O --users 8
  restart benches/profile-os.toml
  echo "## os, resting orders, never cancelled (the book grows)"
  $LG --mode tcp-max --flow book --seconds 10 --connections 4 --window 1024 --out $O --users 8
  $LG --mode echo-max --echo-bytes 48 --seconds 10 --connections 4 --window 1024 --out $O
  restart default
  echo "## fsync, crossing orders"
  $LG --mode disk --seconds 3 --dir /tmp --out $O
  $LG --mode tcp --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode echo --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode http --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp-max --seconds 3 --connections 4 --window 256 --out $O --users 8
  $LG --mode max --seconds 3 --connections 8 --window 32 --out $O
  restart default
  echo "## fsync, resting orders (no history rows)"
  $LG --mode tcp --flow rest --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp-max --flow rest --seconds 3 --connections 4 --window 256 --out $O --users 8
  $LG --mode max --flow rest --seconds 10 --connections 8 --window 64 --out $O
  restart default
  $LG --mode max --flow book --seconds 10 --connections 8 --window 64 --out $O
done
pkill -f "viaduct run --config benches/loadgen.toml"
