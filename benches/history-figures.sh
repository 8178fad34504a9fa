#!/bin/sh
# The whole engine with MySQL history (benches/README.md, "History"): viaduct with the load
# generator's config and `[history] url` on a fresh database `viaduct_load` of the MariaDB on
# 127.0.0.1:3306, HTTP order.put_limit at the sustained rate for $SECONDS_RUN s (default 30),
# then how many rows the writer had committed. Build first: cargo build --release --workspace
# Run from the repository root: sh benches/history-figures.sh
. benches/stop-servers.sh
set -u
SECS=${SECONDS_RUN:-30}
CONF=/tmp/viaduct-history-load.toml
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS viaduct_load; CREATE DATABASE viaduct_load"
{ cat benches/loadgen.toml; printf '\n[history]\nurl = "mysql://root@127.0.0.1:3306/viaduct_load"\n'; } > $CONF
stop_servers "viaduct run --config $CONF"
rm -rf /tmp/viaduct-load
./target/release/viaduct run --config $CONF > /tmp/viaduct-history-load.log 2>&1 &
sleep 3
./target/release/loadgen --mode max --flow "${FLOW:-cross}" --seconds "$SECS" --connections 8 --window 32 --out "${OUT:-loadgen-out}"
rows() {
  mysql -uroot -h127.0.0.1 -N viaduct_load -e "SELECT seq FROM history_state" | tr -d '\n'
}
echo "history committed sequence at the end of the run: $(rows)"
sleep 10
echo "history committed sequence 10 s later: $(rows)"
pkill -f "viaduct run --config $CONF"
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS viaduct_load"
