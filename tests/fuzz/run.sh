#!/usr/bin/env bash
# Builds every fuzz target (tests/fuzz/NAME_fuzz.cc) with clang-19's libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, and fuzzes each for a bounded
# time, starting from its seed corpus (tests/fuzz/corpus/NAME) and its regression
# inputs (tests/fuzz/regressions/NAME), which it first replays.
#
#   tests/fuzz/run.sh [--seconds N | --runs N] [--seed S] [--target NAME]... [--out DIR] [--jobs J]
#
#   --seconds N   fuzzing time in all, shared equally by the targets (default 60).
#                 A long run: --seconds 3600 --target dispatch_stream
#                 (docs/reliability.md, "Fuzzing").
#   --runs N      instead: N inputs per target (libFuzzer -runs), at most 120 s each.
#                 With --seed, runs of one tree try nearly the same inputs on any
#                 machine and at any load (the targets' threads and fds make it not
#                 quite the same): what tools/dev test does (--runs 50000 --seed 1),
#                 so a CI verdict depends little on luck; finding new bugs is the
#                 long runs' job.
#   --seed S      libFuzzer's random seed (default: a new one each run)
#   --target NAME only this target (repeatable; default: every tests/fuzz/*_fuzz.cc)
#   --out DIR     binaries, working corpora, logs and crash inputs (default: a
#                 fresh temporary directory, kept when something failed). The
#                 corpora in the tree are never written: to keep what a run found,
#                 copy DIR/corpus/NAME/* into tests/fuzz/corpus/NAME (after
#                 `-merge=1`, see docs/reliability.md).
#   --jobs J      fuzzing processes per target (libFuzzer -fork=J; default 1)
#
# Ends with "fuzz: N passed, N failed" (read by tools/dev test). A target fails if
# it does not build, if a regression input or the fuzzing breaks a check or
# trips a sanitizer (the input is saved as DIR/crashes/NAME-crash-*: reproduce with
# `DIR/bin/NAME FILE`, then add it to tests/fuzz/regressions/NAME with the fix), or
# if it ran no input at all.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds=60
runs=0
seed=""
out=""
jobs=1
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tests/fuzz/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'fuzz: %s\n' "$*"; }

CXX="${FUZZ_CXX:-clang++-19}"
if ! command -v "$CXX" >/dev/null; then
  say "$CXX not found: install clang-19 and libclang-rt-19-dev (tools/dev setup does)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
# Symbolized stacks: clang-19's package brings no llvm-symbolizer; any version reads the DWARF.
symbolizer="$(command -v llvm-symbolizer-19 || command -v llvm-symbolizer || true)"
[[ -n "$symbolizer" ]] && export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$symbolizer}"
# Leaks are reported by the Bazel ASan run of the replay tests; here a leak would
# only stop fuzzing early, so the fuzzers check for them too (the default).
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

if ((${#targets[@]} == 0)); then
  for src in "$ROOT"/tests/fuzz/*_fuzz.cc; do
    name="$(basename "$src" _fuzz.cc)"
    targets+=("$name")
  done
fi
for name in "${targets[@]}"; do
  [[ -f "$ROOT/tests/fuzz/${name}_fuzz.cc" ]] || { say "no target '$name' (tests/fuzz/${name}_fuzz.cc)"; exit 2; }
done

keep=0
if [[ -z "$out" ]]; then
  out="$(mktemp -d /tmp/fusexx-fuzz.XXXXXX)"
else
  mkdir -p "$out"
  keep=1
fi
mkdir -p "$out/bin" "$out/corpus" "$out/crashes" "$out/logs"

# 1. Build, two at a time (the machine may have two cores).
say "building ${#targets[@]} target(s) with $CXX into $out/bin"
build() {
  local name="$1"
  "$CXX" -std=c++23 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$ROOT" "$ROOT/tests/fuzz/${name}_fuzz.cc" -o "$out/bin/$name" -lfmt -luring -labsl_raw_logging_internal \
    >"$out/logs/$name.build" 2>&1
}
declare -A built=()
pids=()
names=()
for name in "${targets[@]}"; do
  build "$name" &
  pids+=("$!")
  names+=("$name")
  if ((${#pids[@]} == 2)); then
    for i in "${!pids[@]}"; do
      if wait "${pids[$i]}"; then built[${names[$i]}]=1; fi
    done
    pids=()
    names=()
  fi
done
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then built[${names[$i]}]=1; fi
done

# 2. Replay the regressions, then fuzz each target for its share of the time.
per_target=$((seconds / ${#targets[@]}))
((per_target >= 1)) || per_target=1
budget=("-max_total_time=$per_target")
((runs > 0)) && budget=("-runs=$runs" "-max_total_time=120")
[[ -n "$seed" ]] && budget+=("-seed=$seed")
passed=0
failed=0
for name in "${targets[@]}"; do
  if [[ -z "${built[$name]:-}" ]]; then
    say "$name: FAILED to build:"
    tail -n 30 "$out/logs/$name.build"
    failed=$((failed + 1))
    continue
  fi
  bin="$out/bin/$name"
  work="$out/corpus/$name"
  mkdir -p "$work"
  seeds=()
  for dir in "$ROOT/tests/fuzz/corpus/$name" "$ROOT/tests/fuzz/regressions/$name"; do
    if [[ -d "$dir" ]]; then
      cp -n "$dir"/* "$work"/ 2>/dev/null || true
      [[ "$dir" == */regressions/* ]] && seeds+=("$dir"/*)
    fi
  done
  log="$out/logs/$name.log"
  if ((${#seeds[@]})) && ! "$bin" "${seeds[@]}" >"$log.replay" 2>&1; then
    say "$name: FAILED: a regression input breaks it again:"
    tail -n 40 "$log.replay"
    failed=$((failed + 1))
    continue
  fi
  fork=()
  ((jobs > 1)) && fork=("-fork=$jobs" "-ignore_crashes=0")
  rc=0
  start=$SECONDS
  "$bin" "${fork[@]}" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$out/crashes/$name-" "$work" >"$log" 2>&1 || rc=$?
  # (awk alone: a grep that finds nothing would end this script, under pipefail.)
  execs="$(awk '/^stat::number_of_executed_units:/ {s += $2} END {print s + 0}' "$log")"
  if ((execs == 0)); then
    # -fork mode prints no final stats: its status lines ("#N: cov: ...") count
    # the executions of all its jobs.
    execs="$(awk -F'[#:]' '/^#[0-9]+:/ {n = $2} END {print n + 0}' "$log")"
  fi
  cov="$(awk '{for (i = 1; i < NF; ++i) if ($i == "cov:") c = $(i + 1)} END {print c}' "$log")"
  if ((rc != 0)) || compgen -G "$out/crashes/$name-*" >/dev/null; then
    say "$name: FAILED after ${execs:-?} executions (exit $rc):"
    grep -E 'fuzz check failed|ERROR: |runtime error|SUMMARY|Test unit written|deadly signal' "$log" | head -n 20
    failed=$((failed + 1))
  elif ((execs == 0)); then
    say "$name: FAILED: no input was executed (see $log)"
    failed=$((failed + 1))
  else
    say "$name: passed: $execs executions in $((SECONDS - start))s, coverage ${cov:-?} edges, corpus $(ls "$work" | wc -l) inputs"
    passed=$((passed + 1))
  fi
done

if ((failed == 0 && keep == 0)); then
  rm -rf "$out"
elif ((failed > 0)); then
  say "binaries, logs and crash inputs kept in $out"
fi
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
