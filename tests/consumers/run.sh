#!/usr/bin/env bash
# tests/consumers/run.sh: fusexx used the way its users use it, from outside this tree.
#
# Runs docs/tutorial.md: every block the page marks with `<!-- file: NAME -->` is written
# to a scratch project outside the tree, `<!-- patch: NAME -->` blocks are applied to it,
# and `<!-- run: CONSUMER -->` blocks are run there, in page order, with bash -euxo pipefail.
# The headers come from a scratch `tools/dev install PREFIX` (CMAKE_PREFIX_PATH and
# PKG_CONFIG_PATH point there), never from the source tree, except for the Bazel route,
# which takes @fusexx from this checkout by design (docs/using-from-bazel.md).
#
# One result per consumer, i.e. per name used in the run marks:
#   cmake     find_package(fusexx): build, mount, read, unmount
#   make      a Makefile with pkg-config: the same
#   bazel     a scratch workspace with local_repository(@fusexx): the same
#   tutorial  the later steps: a coroutine handler, an init() that fails the mount, the
#             benchmark suite run against the tutorial's filesystem
# A consumer fails when one of its blocks does (its log is shown); the last line is
# "consumers: N passed, N failed" (tools/dev test adds it to its totals).
#
#   tests/consumers/run.sh [--keep]     --keep: leave the scratch directory for a look
#
# Needs root (the page's commands unmount with umount; as another user it says so and runs
# nothing) and the packages tools/dev setup installs. Nothing stays mounted: every mount under
# the scratch directory is undone on exit, and the nested Bazel server is shut down.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PAGE="${FUSEXX_TUTORIAL_PAGE:-$ROOT/docs/tutorial.md}"  # another page only to test this script
CONSUMERS=(cmake make bazel tutorial)
BLOCK_TIMEOUT=600

KEEP=false
case "${1:-}" in
  --keep) KEEP=true ;;
  "") ;;
  *)
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

say() { printf 'consumers: %s\n' "$*"; }

if [[ -z "${HOME:-}" ]]; then
  HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
  export HOME="${HOME:-/root}"
fi

if [[ "$(id -u)" -ne 0 ]]; then
  say "skipped: docs/tutorial.md's commands mount and unmount as root"
  say "0 passed, 0 failed"
  exit 0
fi

SCRATCH="$(mktemp -d /tmp/fusexx-consumers.XXXXXX)" || {
  say "cannot make a scratch directory in /tmp"
  say "0 passed, ${#CONSUMERS[@]} failed"
  exit 1
}
PREFIX="$SCRATCH/prefix"
PROJECT="$SCRATCH/myfs"
BLOCKS="$SCRATCH/blocks"
LOGS="$SCRATCH/logs"
NESTED_BASE="$SCRATCH/bazel-base"
mkdir -p "$PROJECT" "$BLOCKS" "$LOGS" "$SCRATCH/tmp" "$SCRATCH/bin"
BAZEL="$(command -v bazel || echo /usr/bin/bazel)"

# Mounts below the scratch directory, deepest first.
scratch_mounts() {
  awk -v p="$SCRATCH/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# Processes running a program built in the scratch project (servers the page started).
scratch_servers() {
  local d exe
  for d in /proc/[0-9]*; do
    exe="$(readlink "$d/exe" 2>/dev/null)" || continue
    [[ "$exe" == "$PROJECT"/* ]] && printf '%s\n' "${d#/proc/}"
  done
}

unmount_all() {
  local m
  while IFS= read -r m; do
    [[ -n "$m" ]] || continue
    say "unmounting what a block left mounted: $m"
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
  done < <(scratch_mounts)
}

cleanup() {
  trap - EXIT INT TERM
  unmount_all
  local pid
  for pid in $(scratch_servers); do kill -TERM "$pid" 2>/dev/null || true; done
  if [[ -d "$NESTED_BASE" ]]; then
    "$BAZEL" --output_base="$NESTED_BASE" shutdown >/dev/null 2>&1 || true
  fi
  sleep 0.2
  for pid in $(scratch_servers); do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -n "$(scratch_mounts)" ]]; then
    say "warning: still mounted under $SCRATCH; left in place"
  elif $KEEP; then
    say "kept $SCRATCH"
  else
    chmod -R u+w "$SCRATCH" 2>/dev/null || true
    rm -rf "$SCRATCH"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Bazel inside the scratch project gets an output base of its own under the scratch
# directory (removed with it); anywhere else (the page's benchmark step runs in this
# checkout) it is the ordinary bazel.
cat >"$SCRATCH/bin/bazel" <<EOF
#!/bin/sh
case "\$PWD/" in
  "$PROJECT"/*) exec "$BAZEL" --output_base="$NESTED_BASE" "\$@" ;;
esac
exec "$BAZEL" "\$@"
EOF
chmod +x "$SCRATCH/bin/bazel"

declare -A STATUS=() SECONDS_TAKEN=() WHY=()
for c in "${CONSUMERS[@]}"; do STATUS[$c]=untested; SECONDS_TAKEN[$c]=0; done

fail_all() {
  for c in "${CONSUMERS[@]}"; do STATUS[$c]=failed; WHY[$c]="$1"; done
}

# --- 1. install into a scratch prefix ----------------------------------------------------
started=$SECONDS
if ! "$ROOT/tools/dev" install "$PREFIX" >"$LOGS/install.log" 2>&1; then
  cat "$LOGS/install.log"
  fail_all "tools/dev install $PREFIX failed"
fi
say "installed into $PREFIX ($((SECONDS - started)) s)"

# --- 2. take the page apart --------------------------------------------------------------
# blocks/NNN.KIND: one fenced block each; blocks/NNN.KIND.arg: the marker's argument.
n=0 pending="" arg="" in_block=false out=""
while IFS= read -r line || [[ -n "$line" ]]; do
  if $in_block; then
    if [[ "$line" =~ ^\`\`\`[[:space:]]*$ ]]; then
      in_block=false
    else
      printf '%s\n' "${line//\/path\/to\/fusexx/$ROOT}" >>"$out"
    fi
    continue
  fi
  if [[ "$line" =~ ^\<!--\ (file|patch|run):\ ([^ ]+)\ --\>$ ]]; then
    pending="${BASH_REMATCH[1]}" arg="${BASH_REMATCH[2]}"
    continue
  fi
  if [[ -n "$pending" && "$line" =~ ^\`\`\` ]]; then
    n=$((n + 1))
    out="$(printf '%s/%03d.%s' "$BLOCKS" "$n" "$pending")"
    : >"$out"
    printf '%s' "$arg" >"$out.arg"
    in_block=true pending=""
    continue
  fi
  [[ -z "$line" ]] || pending=""  # a mark belongs to the block right after it
done <"$PAGE"
if $in_block; then
  fail_all "docs/tutorial.md: a marked block is not closed"
fi

# --- 3. follow the page ------------------------------------------------------------------
export CMAKE_PREFIX_PATH="$PREFIX"
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
export TMPDIR="$SCRATCH/tmp"
export PATH="$SCRATCH/bin:$PREFIX/bin:$PATH"  # fusexx-ctl, as from /usr/local/bin

# Shows why a consumer failed: the end of its block's log.
explain() {
  local c="$1" log="$2"
  say "$c FAILED: ${WHY[$c]}"
  say "--- last 60 lines of $(basename "$log") ---"
  tail -n 60 "$log" | sed 's/^/    /'
  say "---"
}

PENDING=""
for block in "$BLOCKS"/*; do
  [[ -f "$block" && "$block" != *.arg ]] || continue
  kind="${block##*.}" arg="$(cat "$block.arg")"
  case "$kind" in
    file)
      mkdir -p "$(dirname "$PROJECT/$arg")"
      cp "$block" "$PROJECT/$arg"
      ;;
    patch)
      if ! (cd "$PROJECT" && patch --quiet -p0 --forward "$arg" <"$block") >"$LOGS/patch.log" 2>&1; then
        cat "$LOGS/patch.log"
        PENDING="the patch to $arg in docs/tutorial.md does not apply"
      fi
      ;;
    run)
      c="$arg"
      if [[ -z "${STATUS[$c]+set}" ]]; then
        say "docs/tutorial.md runs a block for '$c', which is not one of: ${CONSUMERS[*]}"
        c=tutorial
        PENDING="a block in docs/tutorial.md names an unknown consumer"
      fi
      if [[ -n "$PENDING" ]]; then
        # A patch before this block failed: the block would run on the wrong files.
        STATUS[$c]=failed WHY[$c]="$PENDING"
        PENDING=""
      fi
      [[ "${STATUS[$c]}" == failed ]] && continue
      log="$LOGS/$c.$(basename "$block").log"
      say "$c: running block $(basename "$block")"
      t0=$SECONDS rc=0
      (cd "$PROJECT" && timeout --kill-after=10 "$BLOCK_TIMEOUT" bash -euxo pipefail "$block") \
        </dev/null >"$log" 2>&1 || rc=$?
      SECONDS_TAKEN[$c]=$((SECONDS_TAKEN[$c] + SECONDS - t0))
      leftover="$(scratch_mounts)"
      unmount_all
      if ((rc != 0)); then
        STATUS[$c]=failed
        if ((rc == 124)); then WHY[$c]="block $(basename "$block") took more than $BLOCK_TIMEOUT s"
        else WHY[$c]="block $(basename "$block") exited with status $rc"; fi
        explain "$c" "$log"
      elif [[ -n "$leftover" ]]; then
        STATUS[$c]=failed
        WHY[$c]="block $(basename "$block") left a mount behind: $leftover"
        explain "$c" "$log"
      else
        STATUS[$c]=passed
      fi
      ;;
  esac
done

# --- 4. the results ----------------------------------------------------------------------
passed=0 failed=0
for c in "${CONSUMERS[@]}"; do
  case "${STATUS[$c]}" in
    passed)
      passed=$((passed + 1))
      say "$(printf '%-9s PASSED in %d s' "$c" "${SECONDS_TAKEN[$c]}")"
      ;;
    failed)
      failed=$((failed + 1))
      say "$(printf '%-9s FAILED: %s' "$c" "${WHY[$c]}")"
      ;;
    *)
      failed=$((failed + 1))
      say "$(printf '%-9s FAILED: docs/tutorial.md has no <!-- run: %s --> block' "$c" "$c")"
      ;;
  esac
done
say "$passed passed, $failed failed"
((failed == 0))
