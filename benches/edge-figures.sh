#!/bin/sh
# The edge figures of benches/README.md: three rounds, each with an `os` server and then an `fsync`
# server on a fresh /tmp/viaduct-load, every load beside its baseline. Build first:
#   cargo build --release --workspace
# Run from the repository root: sh benches/edge-figures.sh > figures.txt
set -u
LG=./target/release/loadgen
O=${OUT:-loadgen-out}
restart() {
  pkill -f "viaduct run --config benches/loadgen.toml"; sleep 0.5
  rm -rf /tmp/viaduct-load
  ./target/release/viaduct run --config benches/loadgen.toml --profile "$1" > /tmp/viaduct-load.log 2>&1 &
  sleep 1.5
}
for round in 1 2 3; do
  echo "### round $round"
  restart benches/profile-os.toml
  echo "## os"
  $LG --mode echo --echo-bytes 48 --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode echo --echo-bytes 48 --rate 100000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp --rate 100000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp-max --seconds 3 --connections 4 --window 256 --out $O --users 8
  # The same without trades (a bid below the market, then its cancel): no history rows.
  $LG --mode tcp --flow rest --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp --flow rest --rate 100000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp-max --flow rest --seconds 3 --connections 4 --window 256 --out $O --users 8
  restart default
  echo "## fsync"
  $LG --mode disk --seconds 3 --dir /tmp --out $O
  $LG --mode tcp --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode echo --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode http --rate 10000 --seconds 3 --connections 4 --out $O
  $LG --mode tcp-max --seconds 3 --connections 4 --window 256 --out $O --users 8
  $LG --mode max --seconds 3 --connections 8 --window 32 --out $O
  $LG --mode tcp --flow rest --rate 10000 --seconds 3 --connections 4 --out $O --users 8
  $LG --mode tcp-max --flow rest --seconds 3 --connections 4 --window 256 --out $O --users 8
done
pkill -f "viaduct run --config benches/loadgen.toml"
