#!/usr/bin/env bash
# tests/soak/run.sh: the soak (issue 15, point 5; docs/reliability.md, "Soak").
#
# Unit tests and the mount tests run for seconds; a leak of one fd or a few bytes per
# request only shows after millions of requests. So this mounts each of
#   memfs-classic  memfs-uring  passthrough-classic  passthrough-uring
# (examples/memfs and examples/passthrough, -o transport=classic|uring, built with
# bazel build -c opt) in the foreground on a scratch directory and, for M minutes each,
# loads it with a fixed set of stress-ng filesystem stressors (--verify) and four fio jobs
# that write and read back checksummed blocks (tests/soak/soak.fio), while it records the
# server's RSS (VmRSS) and open fds every minute. Then it removes what the load left,
# unmounts, and judges:
#   - the load: stress-ng and fio both exit 0 (a stressor failure or a verify error fails);
#   - the server: it exits 0 after the unmount;
#   - fds: idle after the load (files removed, FORGETs answered: up to 30 s), the server
#     holds at most FD_SLACK more fds than idle right after the mount;
#   - RSS: over the load samples (the first after a warm-up, then one a minute), the mean
#     of the last third exceeds the middle third's by more than RSS_PCT % (of the middle
#     third's RSS) AND the warm-up sample by more than RSS_MIB MiB -> it grows without
#     bound: fail. A leak grows in every third; a plateau (caches, malloc arenas filled
#     once) does not. memfs holds file data by design: its samples are RSS minus the most
#     data the mount has held so far (df's used, polled every 2 s), because freed 4 KiB
#     blocks stay in malloc's free lists, so RSS keeps the high-water mark of the data,
#     not the data. (df counts fallocate's reserved blocks too, which take no memory, so
#     the difference may be negative; only its growth is judged.)
# A summary table (minutes, RSS, fds, stress-ng ops and failures, fio, verdict) is printed
# and written with every sample and log to OUT (default ./soak-results).
#
#   tests/soak/run.sh [--minutes M] [--only CONFIG,...] [--out DIR] [--interval S]
#                     [--bin-dir DIR]
#   tests/soak/run.sh --judge CSV      judge a samples.csv again (exit 0 pass, 1 fail)
#   tests/soak/run.sh --self-check     the judge on made-up samples: flat, plateau, fd
#                                      leak, RSS leak (no mount; exit 0 if all are right)
#
#   --minutes M   load time per configuration (default 15: an hour for all four);
#                 fractional is fine, at least 0.5. Runs shorter than 10 minutes warm up
#                 for a fifth of the run and then sample every tenth instead of every
#                 minute, so there are thirds to compare (9 samples).
#   --bin-dir DIR take memfs, passthrough and fusexx-ctl from DIR instead of building.
#
# Not in CI (tools/dev soak runs it; it wants stress-ng, which tools/dev soak installs).
# Needs /dev/fuse; root or not (root unmounts with umount, others with fusermount3).
# The load runs under nice -n 10. On exit, whatever way, it stops the load it started
# (its own process groups), unmounts what it mounted and stops the servers it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ALL_CONFIGS=(memfs-classic memfs-uring passthrough-classic passthrough-uring)

# The growth rules (see above and docs/reliability.md).
FD_SLACK=8     # fds
RSS_PCT=10     # % of the middle third's mean
RSS_MIB=32     # MiB above the warm-up sample
SETTLE_S=30    # how long the idle fd count may take to come back after the load
GRACE_S=300    # how long after its time the load may take to stop before it counts as hung

# stress-ng: one worker each, all at once for the whole run. Chosen for what they ask of
# a FUSE server (lookups, creates and forgets, renames, links, setattr, locks, xattrs,
# fallocate/punch, lseek data/hole, copy_file_range, mmap/msync, sync_file_range) and
# because they run on a FUSE mount here. Left out: fiemap, inode-flags (FUSE has no
# FIEMAP or FS_IOC_SETFLAGS: skipped or 0 ops), getdent and fstat (they walk /proc,
# /dev, /tmp..., not the mount), io (sync(2) of the whole machine), io-uring (0.15.06
# fails its IORING_OP_STATX check on this kernel on ext4 too), dirmany (fills a
# directory without bound), splice (not a filesystem stressor).
STRESSORS=(access chdir chmod chown copy-file dentry dir dirdeep fallocate fcntl file-ioctl
  filename flock fpunch fsize hdd inotify iomix link lockf lockofd mknod mmap msync open
  readahead rename seek sendfile symlink sync-file touch utime xattr)
# Sizes bounded so the data held at once stays under a GiB (memfs keeps it in RAM;
# copy-file's sparse file fills up to its size over minutes, 128m is its least),
# and the names that exist at once about 12000: passthrough holds an fd per node the
# kernel knows (symlink alone makes 8192 names; chdir, dir, dentry, dirdeep and open
# about 1000 each), so the load stays well under an fd limit of 20000.
STRESS_OPTS=(--hdd-bytes 32m --iomix-bytes 32m --fallocate-bytes 16m --readahead-bytes 32m
  --seek-size 16m --sync-file-bytes 32m --msync-bytes 8m --mmap-file --mmap-bytes 8m
  --chdir-dirs 512 --dir-dirs 512 --dentries 512 --dirdeep-inodes 1000 --open-max 512
  --sendfile-size 1m --copy-file-bytes 128m)
PASSTHROUGH_FDS=16384  # fds the passthrough server may need under this load, with room
MEMFS_OPTS=size=2g  # far above what the load holds: reaching it (ENOSPC) would be a finding

say() { printf 'soak: %s\n' "$*"; }
die() { printf 'soak: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,44p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# --- judging ----------------------------------------------------------------------------
# samples.csv: t_s,phase,rss_kib,fds,threads,data_kib,data_peak_kib
#   phase idle-start: right after the mount; load: during the load; idle-end: after it.
#   data_*: memfs's df used now and its highest so far (0 for passthrough).
# Prints "PASS" or "FAIL" and then one line per reason or note; exit 0 / 1.
judge() {
  local csv="$1"
  [[ -r "$csv" ]] || { echo "FAIL"; echo "no samples ($csv)"; return 1; }
  awk -F, -v slack="$FD_SLACK" -v pct="$RSS_PCT" -v mib="$RSS_MIB" '
    NR == 1 { next }
    $2 == "idle-start" && !have0 { fd0 = $4; have0 = 1 }
    $2 == "idle-end" { fd1 = $4; have1 = 1 }
    # in MiB: the RSS, and what is judged (memfs: minus the most data held so far)
    $2 == "load" { n++; t[n] = $1; raw[n] = $3 / 1024; v[n] = ($3 - $7) / 1024 }
    function mean(x, a, b,   i, s) { s = 0; for (i = a; i <= b; i++) s += x[i]; return s / (b - a + 1) }
    END {
      fail = 0
      if (!have0 || !have1) { r[++nr] = "no idle fd count at the start or the end"; fail = 1 }
      else if (fd1 - fd0 > slack) {
        r[++nr] = sprintf("fds grow: %d idle at the end, %d at the start (slack %d)", fd1, fd0, slack); fail = 1
      }
      if (n < 6) r[++nr] = sprintf("note: %d load samples, too few to judge RSS growth (6 needed)", n)
      else {
        a = int(n / 3); b = int(2 * n / 3)
        mid = mean(v, a + 1, b); last = mean(v, b + 1, n); warm = v[1]; base = mean(raw, a + 1, b)
        # least squares slope over the load samples, for the record
        sx = sy = sxx = sxy = 0
        for (i = 1; i <= n; i++) { sx += t[i]; sy += v[i]; sxx += t[i] * t[i]; sxy += t[i] * v[i] }
        d = n * sxx - sx * sx; slope = d > 0 ? (n * sxy - sx * sy) / d * 3600 : 0
        if (last - mid > base * pct / 100 && last - warm > mib) {
          r[++nr] = sprintf("RSS grows: last third %.1f MiB, middle third %.1f MiB (+%.1f > %d%% of %.1f), warm-up %.1f MiB (+%.1f > %d MiB); slope %.0f MiB/h", last, mid, last - mid, pct, base, warm, last - warm, mib, slope)
          fail = 1
        } else {
          r[++nr] = sprintf("note: RSS%s: warm-up %.1f, middle third %.1f, last third %.1f MiB; slope %.0f MiB/h", raw[1] != v[1] ? " less data" : "", warm, mid, last, slope)
        }
      }
      print fail ? "FAIL" : "PASS"
      for (i = 1; i <= nr; i++) print r[i]
      exit fail
    }' "$csv"
}

self_check() {
  local dir rc=0
  dir="$(mktemp -d "${TMPDIR:-/tmp}/fusexx-soak-check.XXXXXX")"
  # name expected: idle fds start/end, then per load sample "rss_kib data_kib data_peak_kib"
  make_csv() {
    local f="$dir/$1.csv" fd0="$2" fd1="$3" i=0 s
    shift 3
    echo "t_s,phase,rss_kib,fds,threads,data_kib,data_peak_kib" >"$f"
    echo "0,idle-start,4000,$fd0,5,0,0" >>"$f"
    for s in "$@"; do
      read -r rss data peak <<<"$s"
      i=$((i + 1))
      echo "$((i * 60)),load,$rss,$((fd0 + 40)),5,$data,$peak" >>"$f"
    done
    echo "$(((i + 1) * 60)),idle-end,4100,$fd1,5,0,0" >>"$f"
  }
  local flat=() plateau=() leak=() memfs=() memfs_leak=() i
  for ((i = 0; i < 15; i++)); do
    flat+=("$((20000 + (i % 3) * 500)) 0 0")
    plateau+=("$((i < 4 ? 20000 + i * 30000 : 110000)) 0 0")
    leak+=("$((20000 + i * 8192)) 0 0")  # 8 MiB a minute
    # memfs: data comes and goes; RSS keeps the high-water mark (peak) of it
    memfs+=("$((30000 + (i < 3 ? i * 100000 : 300000))) $(((i % 4) * 70000)) $((i < 3 ? i * 100000 : 300000))")
    memfs_leak+=("$((30000 + 300000 + i * 8192)) $(((i % 4) * 70000)) 300000")
  done
  make_csv flat 6 6 "${flat[@]}"
  make_csv plateau 40 44 "${plateau[@]}"
  make_csv fd-leak 40 90 "${flat[@]}"
  make_csv rss-leak 40 40 "${leak[@]}"
  make_csv memfs-data 6 6 "${memfs[@]}"
  make_csv memfs-leak 6 6 "${memfs_leak[@]}"
  make_csv short 6 6 "20000 0 0" "90000 0 0" "190000 0 0"
  local name want got
  for name in flat:PASS plateau:PASS fd-leak:FAIL rss-leak:FAIL memfs-data:PASS memfs-leak:FAIL short:PASS; do
    want="${name#*:}"
    name="${name%%:*}"
    got="$(judge "$dir/$name.csv" | head -n 1 || true)"
    printf 'soak: self-check %-11s %s (want %s)%s\n' "$name" "$got" "$want" \
      "$([[ "$got" == "$want" ]] || echo '  <-- WRONG')"
    [[ "$got" == "$want" ]] || rc=1
    if [[ "$got" == FAIL ]]; then judge "$dir/$name.csv" | sed -n '2,$s/^/soak:     /p' || true; fi
  done
  rm -rf "$dir"
  return "$rc"
}

# --- arguments ----------------------------------------------------------------------------
MINUTES=15
ONLY=""
OUT="soak-results"
INTERVAL=""
BIN_DIR=""
ARGS=("$@")
while (($#)); do
  case "$1" in
    --minutes) MINUTES="${2:?--minutes needs a number}"; shift 2 ;;
    --only) ONLY="${2:?--only needs a list}"; shift 2 ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --interval) INTERVAL="${2:?--interval needs seconds}"; shift 2 ;;
    --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
    --judge) judge "${2:?--judge needs a samples.csv}"; exit $? ;;
    --self-check) self_check; exit $? ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

[[ "$MINUTES" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--minutes wants a number, e.g. 15 or 0.5"
LOAD_S="$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 + 0.5 }')"
((LOAD_S >= 30)) || die "--minutes must be at least 0.5"
# Warm-up and sampling: a minute each, or a fifth and a tenth of a shorter run.
WARMUP_S=$((LOAD_S >= 600 ? 60 : LOAD_S / 5))
if [[ -n "$INTERVAL" ]]; then
  if ! [[ "$INTERVAL" =~ ^[0-9]+$ ]] || ((INTERVAL < 2)); then
    die "--interval wants whole seconds, at least 2"
  fi
else
  INTERVAL=$((LOAD_S >= 600 ? 60 : LOAD_S / 10))
fi

CONFIGS=()
if [[ -n "$ONLY" ]]; then
  IFS=, read -r -a CONFIGS <<<"$ONLY"
  for c in "${CONFIGS[@]}"; do
    [[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration '$c' (${ALL_CONFIGS[*]})"
  done
else
  CONFIGS=("${ALL_CONFIGS[@]}")
fi

for tool in stress-ng fio awk setsid nice timeout stat; do
  command -v "$tool" >/dev/null || die "$tool is missing (tools/dev soak installs stress-ng; fio comes with tools/dev setup)"
done
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
IS_ROOT=false
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=true

mkdir -p "$OUT" || die "cannot create $OUT"
OUT="$(cd "$OUT" && pwd)"

# --- cleanup: only what this script started -------------------------------------------------
WORK=""
MOUNTS=()        # mountpoints this script mounted
SERVER_PIDS=()   # servers it started
LOAD_PGIDS=()    # stress-ng and fio, each the leader of its own process group (setsid)

is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
unmount_dir() {
  local dir="$1"
  is_mounted "$dir" || return 0
  if $IS_ROOT; then
    umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
  else
    fusermount3 -u "$dir" 2>/dev/null || fusermount3 -u -z "$dir" 2>/dev/null || true
  fi
}
alive() { kill -0 "$1" 2>/dev/null; }
stop_group() {  # the process group led by $1 (stress-ng or fio and their workers)
  local pg="$1" i
  kill -INT -- "-$pg" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 -- "-$pg" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL -- "-$pg" 2>/dev/null || true
}
stop_pid() {
  local pid="$1" i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local status=$? p m
  trap - EXIT INT TERM
  for p in "${LOAD_PGIDS[@]}"; do stop_group "$p"; done
  for m in "${MOUNTS[@]}"; do unmount_dir "$m"; done
  for p in "${SERVER_PIDS[@]}"; do stop_pid "$p"; done
  for m in "${MOUNTS[@]}"; do
    unmount_dir "$m"
    is_mounted "$m" && say "warning: $m is still mounted; unmount it with: umount -l $m"
  done
  if [[ -n "$WORK" ]]; then
    local busy=false
    for m in "${MOUNTS[@]}"; do is_mounted "$m" && busy=true; done
    $busy || rm -rf "$WORK"
  fi
  [[ -z "$OWN_BIN" ]] || rm -rf "$OWN_BIN"
  exit "$status"
}
# --- the binaries ------------------------------------------------------------------------------
OWN_BIN="${FUSEXX_SOAK_OWN_BIN:-}"  # a copy this run made: removed at the end
if [[ -z "$BIN_DIR" ]]; then
  say "bazel build -c opt //examples:memfs //examples:passthrough //tools:fusexx-ctl"
  (cd "$ROOT" && bazel build -c opt //examples:memfs //examples:passthrough //tools:fusexx-ctl) \
    || die "the build failed"
  BAZEL_BIN="$(cd "$ROOT" && bazel info -c opt bazel-bin 2>/dev/null)"
  # Copies, so a build elsewhere in the tree cannot swap them during the hour.
  BIN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fusexx-soak-bin.XXXXXX")"
  OWN_BIN="$BIN_DIR"
  cp "$BAZEL_BIN/examples/memfs" "$BAZEL_BIN/examples/passthrough" "$BAZEL_BIN/tools/fusexx-ctl" "$BIN_DIR/" \
    || { rm -rf "$OWN_BIN"; die "cannot copy the binaries from $BAZEL_BIN"; }
fi
for b in memfs passthrough fusexx-ctl; do
  [[ -x "$BIN_DIR/$b" ]] || { [[ -z "$OWN_BIN" ]] || rm -rf "$OWN_BIN"; die "$BIN_DIR/$b is missing"; }
done

# A mount namespace of its own (root): a mount namespace made while a soak mount exists
# (a Bazel sandbox, say) gets a copy of it, and the kernel ends a FUSE connection only
# when its last copy goes, so the server would outlive the unmount by as long as that
# process lives (seen: 10 s for a sandboxed compile, more than 30 s for a test). In its
# own private namespace, made after the build, nobody else copies the mounts, and
# whatever the script leaves mounted goes with its last process.
if $IS_ROOT && [[ -z "${FUSEXX_SOAK_NS:-}" ]]; then
  if unshare --mount --propagation private true 2>/dev/null; then
    FUSEXX_SOAK_NS=1 FUSEXX_SOAK_OWN_BIN="$OWN_BIN" \
      exec unshare --mount --propagation private -- "$0" "${ARGS[@]}" --bin-dir "$BIN_DIR"
  fi
  say "note: no mount namespace of its own (unshare --mount failed): a server may outlive its unmount while another namespace holds a copy of the mount"
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fusexx-soak.XXXXXX")"

# --- one configuration -------------------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fd_count() { local f=("/proc/$1/fd/"*); echo "${#f[@]}"; }
used_kib() {  # df's used, of the mount (one STATFS)
  local v
  v="$(timeout 10 stat -f -c '%b %f %S' "$1" 2>/dev/null | awk '{ printf "%d", ($1 - $2) * $3 / 1024 }' || true)"
  echo "${v:-0}"
}

# The processes with a cwd, root or open file under $1: "pid:comm ...".
holders() {
  local p l out=()
  for p in /proc/[0-9]*; do
    for l in "$p/cwd" "$p/root" "$p/fd/"*; do
      [[ "$(readlink "$l" 2>/dev/null)" == "$1"* ]] || continue
      out+=("${p#/proc/}:$(cat "$p/comm" 2>/dev/null)")
      break
    done
  done
  echo "${out[*]:-none found}"
}

# Processes of other mount namespaces that still have a copy of mount $1 (which keeps
# its FUSE connection alive): "pid:comm ..." (one per namespace).
mount_copies() {
  local p ns own seen=" " out=()
  own="$(readlink /proc/self/ns/mnt)"
  for p in /proc/[0-9]*; do
    ns="$(readlink "$p/ns/mnt" 2>/dev/null)" || continue
    [[ "$ns" != "$own" && "$seen" != *" $ns "* ]] || continue
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' "$p/mountinfo" 2>/dev/null || continue
    seen+="$ns "
    out+=("${p#/proc/}:$(cat "$p/comm" 2>/dev/null)")
  done
  echo "${out[*]:-none}"
}

# What a server that hangs is doing: each thread's name, state, kernel stack, and (with gdb)
# its user stack.
snapshot_server() {
  local pid="$1" t
  {
    echo "== $(date -u '+%H:%M:%S') pid $pid"
    for t in "/proc/$pid/task/"*; do
      echo "-- thread ${t##*/} $(cat "$t/comm" 2>/dev/null) $(awk '/^State:/ { print $2, $3 }' "$t/status" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
      cat "$t/stack" 2>/dev/null || true
    done
    if command -v gdb >/dev/null; then
      timeout 60 gdb -p "$pid" -batch -nx -ex 'set pagination off' -ex 'thread apply all bt' 2>&1 || true
    fi
  } >>"$2" 2>&1
}

SUMMARY_ROWS=()
FAILED=0

run_config() {
  local name="$1" fs="${1%%-*}" transport="${1##*-}"
  local res="$OUT/$name" dir="$WORK/$name"
  rm -rf "$res"
  mkdir -p "$res" "$dir/mnt" "$dir/src"
  local mnt="$dir/mnt" csv="$res/samples.csv"
  REASONS=() NOTES=()
  ROW=("$name" - - - - - - -)
  echo "t_s,phase,rss_kib,fds,threads,data_kib,data_peak_kib" >"$csv"

  say "$name: mounting $fs (-o transport=$transport) on $mnt for $((LOAD_S / 60))m$((LOAD_S % 60))s of load"
  local args=(-f -o "transport=$transport")
  if [[ "$fs" == memfs ]]; then
    "$BIN_DIR/memfs" "${args[@]}" -o "$MEMFS_OPTS" "$mnt" </dev/null >"$res/server.log" 2>&1 &
  else
    "$BIN_DIR/passthrough" "${args[@]}" "$dir/src" "$mnt" </dev/null >"$res/server.log" 2>&1 &
  fi
  local server=$!
  SERVER_PIDS+=("$server")
  MOUNTS+=("$mnt")
  local i
  for ((i = 0; i < 100; i++)); do
    is_mounted "$mnt" && break
    alive "$server" || break
    sleep 0.1
  done
  if ! is_mounted "$mnt"; then
    REASONS+=("did not mount (server log: $(tail -n 1 "$res/server.log"))")
    stop_pid "$server"
    finish_config
    return
  fi
  "$BIN_DIR/fusexx-ctl" "$mnt" status >"$res/status.txt" 2>&1 || true
  grep -i '^Max open files' "/proc/$server/limits" >>"$res/status.txt" 2>/dev/null || true
  local nofile
  nofile="$(awk '/^Max open files/ { print $4 }' "/proc/$server/limits" 2>/dev/null || echo 0)"
  if [[ "$fs" == passthrough && "$nofile" =~ ^[0-9]+$ ]] && ((nofile < PASSTHROUGH_FDS)); then
    NOTES+=("the server may open $nofile fds (soft RLIMIT_NOFILE) and this load needs up to ~12000 (one per node the kernel knows); expect EMFILE (ulimit -n $PASSTHROUGH_FDS first)")
    say "$name: warning: ${NOTES[-1]}"
  fi
  if ! grep -q "^transport *$transport" "$res/status.txt"; then
    REASONS+=("not on the $transport transport: $(grep '^transport' "$res/status.txt" || echo 'no status')")
  fi

  # Idle, right after the mount: the fd count the end must come back to.
  sleep 2
  local peak=0 data=0
  [[ "$fs" == memfs ]] && data="$(used_kib "$mnt")" && peak="$data"
  echo "0,idle-start,$(rss_kib "$server"),$(fd_count "$server"),$(threads "$server"),$data,$peak" >>"$csv"

  # The load, niced, each in a process group of its own.
  mkdir "$mnt/fio"
  local stressor_args=() s
  for s in "${STRESSORS[@]}"; do stressor_args+=("--$s" 1); done
  (cd "$dir" && exec setsid nice -n 10 stress-ng --temp-path "$mnt" "${stressor_args[@]}" \
    "${STRESS_OPTS[@]}" --timeout "${LOAD_S}s" --verify --metrics-brief \
    --yaml "$res/stress-ng.yaml" >"$res/stress-ng.log" 2>&1) &
  local stress=$!
  LOAD_PGIDS+=("$stress")
  (cd "$dir" && FIO_DIR="$mnt/fio" FIO_RUNTIME="$LOAD_S" exec setsid nice -n 10 \
    fio "$HERE/soak.fio" >"$res/fio.log" 2>&1) &
  local fio=$!
  LOAD_PGIDS+=("$fio")

  local start=$SECONDS now next="$WARMUP_S" hung=false
  while :; do
    now=$((SECONDS - start))
    if [[ "$fs" == memfs ]]; then
      data="$(used_kib "$mnt")"
      ((data > peak)) && peak="$data"
    fi
    if ((now >= next && next <= LOAD_S)); then
      echo "$now,load,$(rss_kib "$server"),$(fd_count "$server"),$(threads "$server"),$data,$peak" >>"$csv"
      next=$((next + INTERVAL))
    fi
    alive "$server" || break
    if ! alive "$stress" && ! alive "$fio"; then break; fi
    if ((now > LOAD_S + GRACE_S)); then hung=true; break; fi
    sleep 2
  done
  if ! alive "$server"; then
    stop_group "$stress"
    stop_group "$fio"
  fi
  local minutes
  minutes="$(awk -v s=$((SECONDS - start)) 'BEGIN { printf "%.1f", s / 60 }')"
  if $hung; then
    REASONS+=("the load did not stop ${GRACE_S}s after its time: a request hangs? ($(
      alive "$stress" && echo stress-ng) $(alive "$fio" && echo fio))")
    snapshot_server "$server" "$res/server-stacks.txt"
    stop_group "$stress"
    stop_group "$fio"
  fi
  local stress_rc=0 fio_rc=0 pg
  wait "$stress" || stress_rc=$?
  wait "$fio" || fio_rc=$?
  for pg in "$stress" "$fio"; do  # nothing of the load may outlive it (it would hold the mount)
    if kill -0 -- "-$pg" 2>/dev/null; then
      NOTES+=("left running by the load, stopped: $(ps -o pid=,comm= -g "$pg" | paste -sd' ')")
      stop_group "$pg"
    fi
  done
  LOAD_PGIDS=()
  ((stress_rc == 0)) || REASONS+=("stress-ng exited $stress_rc ($(stress_failures "$res/stress-ng.log"))")
  ((fio_rc == 0)) || REASONS+=("fio exited $fio_rc ($(grep -m1 -iE 'verify|error|err=[ ]*[1-9]' "$res/fio.log" | cut -c1-120))")

  if alive "$server"; then
    # What the load left (stress-ng removes its files unless killed; fio unlinks its own).
    rmdir "$mnt/fio" 2>/dev/null || true
    (cd "$mnt" && timeout 120 find . -mindepth 1 | head -n 1000) >"$res/leftovers.txt" 2>&1 || true
    local left
    left="$(grep -c . "$res/leftovers.txt" || true)"
    ((left == 0)) || NOTES+=("$left names left in the mount, removed (leftovers.txt)")
    timeout 300 find "$mnt" -mindepth 1 -delete 2>>"$res/leftovers.txt" || NOTES+=("could not remove all leftovers")
    # Idle again: wait for the FORGETs to bring the fd count back.
    local fd0
    fd0="$(awk -F, '$2 == "idle-start" { print $4 }' "$csv")"
    for ((i = 0; i < SETTLE_S; i++)); do
      (($(fd_count "$server") <= fd0 + FD_SLACK)) && break
      sleep 1
    done
    [[ "$fs" == memfs ]] && data="$(used_kib "$mnt")"
    echo "$((SECONDS - start)),idle-end,$(rss_kib "$server"),$(fd_count "$server"),$(threads "$server"),$data,$peak" >>"$csv"
    "$BIN_DIR/fusexx-ctl" "$mnt" stats >"$res/stats.txt" 2>&1 || true
  else
    REASONS+=("the server died during the load")
  fi

  # Unmount (not lazily, unless something still holds the mount: then say what); the
  # server must exit 0 by itself.
  local um_err
  if $IS_ROOT; then um_err="$(umount "$mnt" 2>&1)"; else um_err="$(fusermount3 -u "$mnt" 2>&1)"; fi \
    || NOTES+=("unmount: ${um_err:-failed}; held by: $(holders "$mnt"); unmounted lazily")
  unmount_dir "$mnt"
  for ((i = 0; i < 300; i++)); do
    alive "$server" || break
    sleep 0.1
  done
  local server_rc=0
  if alive "$server"; then
    REASONS+=("the server did not exit within 30 s of the unmount (its threads: server-stacks.txt; copies of the mount in other mount namespaces: $(mount_copies "$mnt"))")
    snapshot_server "$server" "$res/server-stacks.txt"
    stop_pid "$server"
  fi
  wait "$server" || server_rc=$?
  ((server_rc == 0)) || REASONS+=("the server exited $server_rc")
  is_mounted "$mnt" && REASONS+=("$mnt is still mounted")

  # Growth.
  local verdict
  verdict="$(judge "$csv" || true)"
  printf '%s\n' "$verdict" >"$res/judge.txt"
  local line
  while IFS= read -r line; do
    case "$line" in
      PASS | FAIL) ;;
      note:*) NOTES+=("${line#note: }") ;;
      *) REASONS+=("$line") ;;
    esac
  done <<<"$verdict"

  # The row.
  local rss fds ops fails fio_res
  rss="$(awk -F, 'NR > 1 && $2 == "load" { m = $3 > m ? $3 : m; if (!w) w = $3 }
                  $2 == "idle-end" { e = $3 }
                  END { printf "%.0f/%.0f/%.0f", w / 1024, m / 1024, e / 1024 }' "$csv")"
  fds="$(awk -F, 'NR > 1 { m = $4 > m ? $4 : m } $2 == "idle-start" { s = $4 } $2 == "idle-end" { e = $4 }
                  END { printf "%d/%d/%d", s, m, e }' "$csv")"
  local datapk
  datapk="$(awk -F, 'NR > 1 { m = $7 > m ? $7 : m } END { printf "%.0f", m / 1024 }' "$csv")"
  ops="$(awk '$1 == "bogo-ops:" { s += $2 } END { printf "%d", s }' "$res/stress-ng.yaml" 2>/dev/null || echo 0)"
  fails="$(stress_failures "$res/stress-ng.log")"
  if ((fio_rc == 0)) && [[ -s "$res/fio.log" ]]; then
    fio_res="ok $(awk -F'[=,]' '/issued rwts: total=/ { r += $2 } END { printf "%.0fk", r / 1e3 }' "$res/fio.log")"
  else
    fio_res="FAILED"
  fi
  local skipped
  skipped="$(grep -oE '\] [a-z0-9-]+: .*skipping stressor' "$res/stress-ng.log" | awk '{ print $2 }' | tr -d : | paste -sd, || true)"
  [[ -z "$skipped" ]] || NOTES+=("stress-ng skipped: $skipped")
  ROW=("$name" "$minutes" "$rss" "$datapk" "$fds" "$ops" "${fails%%:*}" "$fio_res")
  finish_config
  {
    local a
    for a in "${REASONS[@]}"; do echo "FAIL: $a"; done
    for a in "${NOTES[@]}"; do echo "note: $a"; done
  } >"$res/verdict.txt"
}

# The stressors that reported a failure: "N" or "N: name,name".
stress_failures() {
  local names
  names="$(grep -oE '(fail: +\[[0-9]+\] [a-z0-9-]+:|\([a-z0-9-]+\) terminated with an error)' "$1" 2>/dev/null \
    | sed -E 's/.*\] ([a-z0-9-]+):/\1/; s/\(([a-z0-9-]+)\).*/\1/' | sort -u | paste -sd, || true)"
  if [[ -z "$names" ]]; then echo 0; else echo "$(tr , '\n' <<<"$names" | wc -l): $names"; fi
}

ROW_FMT='%-20s %5s  %-17s %5s  %-12s %11s  %-6s %-8s %s\n'
REASONS=()
NOTES=()
ROW=()
# Adds ROW (name minutes rss data fds ops failed fio), its verdict, REASONS and NOTES
# to the summary.
finish_config() {
  local verdict=PASS a
  ((${#REASONS[@]} == 0)) || { verdict=FAIL; FAILED=$((FAILED + 1)); }
  [[ "${ROW[0]}" == memfs-* ]] || ROW[3]="-"
  # shellcheck disable=SC2059  # one format for the header and every row
  SUMMARY_ROWS+=("$(printf "$ROW_FMT" "${ROW[@]}" "$verdict")")
  for a in "${REASONS[@]}"; do SUMMARY_ROWS+=("    FAIL: $a"); done
  for a in "${NOTES[@]}"; do SUMMARY_ROWS+=("    note: $a"); done
  say "${ROW[0]}: $verdict"
}

say "results in $OUT; configurations: ${CONFIGS[*]}; ${MINUTES} min of load each, a sample every ${INTERVAL}s after ${WARMUP_S}s"
for c in "${CONFIGS[@]}"; do run_config "$c"; done

{
  echo "fusexx soak: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), stress-ng $(stress-ng --version | awk '{ print $3 }' | tr -d ,), $(fio --version)"
  echo "RSS MiB: warm-up sample / max under load / idle at the end; data: memfs's most data held (MiB);"
  echo "fds: idle after mount / max / idle at the end; ops: stress-ng bogo ops; fio: verify reads (blocks)"
  # shellcheck disable=SC2059
  printf "$ROW_FMT" configuration min "RSS MiB w/max/end" data "fds s/max/end" "stress ops" failed fio verdict
  printf '%s\n' "${SUMMARY_ROWS[@]}"
  echo "$((${#CONFIGS[@]} - FAILED)) passed, $FAILED failed"
} | tee "$OUT/summary.txt"
((FAILED == 0))
