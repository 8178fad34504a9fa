#!/bin/bash
# What the matcher does per command, counted rather than timed: instructions, data references and
# first-level data-cache misses of one round of the `matcher` bench mix (200,000 commands), under
# valgrind's cachegrind (a simulated cache; the counts do not move with the machine's load). One
# round is the difference between runs of 3 rounds and 1, so the mix's setup cancels out.
# Usage: bash benches/instructions.sh MATCHER_PROFILE_A [MATCHER_PROFILE_B]
# (the `matcher-profile` binaries of two release builds: target/release/matcher-profile).
set -eu
count() { # binary rounds -> "instructions data_refs d1_misses"
  valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null "$1" "$2" 2>&1 |
    awk '/I *refs:/ {gsub(",", "", $4); i=$4} /D *refs:/ {gsub(",", "", $4); d=$4} /D1 *misses:/ {gsub(",", "", $4); m=$4} END {print i, d, m}'
}
for bin in "$@"; do
  read -r i1 d1 m1 <<< "$(count "$bin" 1)"
  read -r i3 d3 m3 <<< "$(count "$bin" 3)"
  awk -v b="$bin" -v i=$((i3 - i1)) -v d=$((d3 - d1)) -v m=$((m3 - m1)) \
    'BEGIN {n = 2 * 200000; printf "%s: per command %.1f instructions, %.1f data references, %.3f D1 misses\n", b, i/n, d/n, m/n}'
done
