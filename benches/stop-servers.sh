# Sourced by the benches scripts (run from the repository root): `. benches/stop-servers.sh`.
# Stops the servers matching $1 and waits until they have exited (at most 10 s, then kills them):
# a server still writing its shutdown snapshot would take CPU from the next run.
stop_servers() {
  pkill -f "$1"
  for _ in $(seq 1 100); do pgrep -f "$1" >/dev/null || return 0; sleep 0.1; done
  pkill -9 -f "$1"
}
