#!/usr/bin/env bash
# scripts/rabbitmq-next.sh [--release 4.0] up|down|status|exec CMD...: a newer RabbitMQ (and Python) than the
# system's, each in a Debian root of its own (debootstrap + chroot), for the test command's version matrix.
#
#   default (sid):   RabbitMQ 4.3.x / Erlang 29 and python3.14 from Debian unstable; node next@localhost,
#                    AMQP 127.0.0.1:5701, Erlang distribution port 25701
#   --release 4.0:   RabbitMQ 4.0.5 / Erlang 27 from Debian 13 (trixie); node next40@localhost, AMQP
#                    127.0.0.1:5702, distribution port 25702  (or PUBSUBPY_NEXT_RELEASE=4.0)
#
# up      builds the root once (about a minute; cached in ${PUBSUBPY_NEXT_DIR:-/var/cache/pubsubpy-next}/SUITE,
#         complete only with its stamp file .pubsubpy-next-stamp: a root without it is removed and rebuilt) from
#         the mirror of the machine's own apt sources, mounts /proc, /dev/pts and /dev/shm in it, and starts the
#         node as the root's rabbitmq user; it registers with the host's epmd. The root's rabbitmq-env.conf names
#         that node, so a plain `rabbitmqctl` run inside the root (what the tests call) talks to it. Idempotent;
#         returns once an AMQP handshake on the port succeeds (at most PUBSUBPY_NEXT_WAIT, 90 s).
# down    stops the node (politely, then SIGKILL after a bound) and any other RabbitMQ VM started inside the
#         root (the TLS node of tests/test_tls.py), unmounts everything mounted in the root; the root stays cached.
# status  exits 0 when the node answers (and prints its RabbitMQ and Erlang versions), 3 when it does not.
# exec    runs CMD inside the root, with the checkout bind-mounted at the same absolute path (a venv made
#         there, e.g. .venv-py314, works inside), cwd the checkout, CI / PIP_* / PUBSUBPY_* / PYTEST_* / proxy
#         variables passed through. Builds the root when needed; does not need the node.
# Exit 4: the root cannot be built here (not root, no debootstrap and no apt-get, no Debian mirror in the apt
# sources, debootstrap or apt failed); the caller skips what needs it (or fails under CI=true).
# The system's node (rabbit@localhost, 5672) and scripts/cluster.sh's nodes are left alone.
set -euo pipefail

CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BASE="${PUBSUBPY_NEXT_DIR:-/var/cache/pubsubpy-next}"
WAIT="${PUBSUBPY_NEXT_WAIT:-90}"   # seconds for the node to answer AMQP
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() { echo "usage: scripts/rabbitmq-next.sh [--release 4.0] up|down|status|exec CMD..." >&2; exit 2; }

RELEASE="${PUBSUBPY_NEXT_RELEASE:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --release) [ $# -ge 2 ] || usage; RELEASE="$2"; shift 2 ;;
    --release=*) RELEASE="${1#*=}"; shift ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
case "$RELEASE" in
  ""|sid|unstable|4.3)
    SUITE=sid; NAME=next; PORT=5701
    # openssl: scripts/tls-node.sh runs inside this root too (the TLS tests run on this leg)
    PACKAGES="rabbitmq-server python3.14 python3.14-venv openssl" ;;
  4.0|trixie)
    SUITE=trixie; NAME=next40; PORT=5702
    PACKAGES="rabbitmq-server" ;;
  *) echo "rabbitmq-next: unknown release '$RELEASE' (default: sid, RabbitMQ 4.3; or 4.0: trixie)" >&2; exit 2 ;;
esac
NODE="$NAME@localhost"
DIST_PORT=$((PORT + 20000))
ROOT="$BASE/$SUITE"
STAMP="$ROOT/.pubsubpy-next-stamp"
LOG="$ROOT/var/log/rabbitmq/$NODE.log"

PLUGINS=rabbitmq_consistent_hash_exchange   # what the tests need beyond the core (shards=N)
say() { echo "rabbitmq-next[$SUITE]: $*"; }
fail() { echo "rabbitmq-next[$SUITE]: $*" >&2; exit 1; }
unavailable() { echo "rabbitmq-next[$SUITE]: cannot build the root here: $*" >&2; exit 4; }

# in_root CMD...: CMD inside the root with a clean environment (none of the host's interpreters' variables).
in_root() {
  env -i PATH="$ROOT_PATH" HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" chroot "$ROOT" "$@" 9>&-
}

# Serialise up/down/exec of one root (two roots build at once: test.sh starts both in the background).
lock() {
  mkdir -p "$BASE"
  exec 9>"$BASE/.$SUITE.lock"
  flock -w 900 9 || fail "another rabbitmq-next.sh holds $BASE/.$SUITE.lock for more than 900 s"
}
unlock() { exec 9>&-; }

# mounts_under: every mount point at or under the root, deepest first.
mounts_under() {
  awk -v root="$ROOT" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r -u
}
mounted() { mounts_under | grep -qx "$1"; }

unmount_all() {
  local point left
  for point in $(mounts_under); do
    umount "$point" 2>/dev/null || umount -l "$point" 2>/dev/null || true
  done
  left="$(mounts_under)"
  if [ -n "$left" ]; then fail "still mounted under $ROOT: $left"; fi
}

# What the node and the tests need: /proc, the host's /dev/pts and /dev/shm (debootstrap made the static
# device nodes in the root's /dev), a /tmp of the root's own (its own dir, sticky, not the host's).
mount_basics() {
  mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  local dev
  for dev in /dev/pts /dev/shm; do
    [ -d "$dev" ] || continue
    mkdir -p "$ROOT$dev"
    mounted "$ROOT$dev" || mount --bind "$dev" "$ROOT$dev"
  done
  mkdir -p "$ROOT/tmp"; chmod 1777 "$ROOT/tmp"
}

mount_checkout() {
  mkdir -p "$ROOT$CHECKOUT"
  # a mount left by an earlier checkout at the same path (deleted and cloned again) shows the old directory
  if mounted "$ROOT$CHECKOUT" && [ "$(stat -c %d:%i "$CHECKOUT")" != "$(stat -c %d:%i "$ROOT$CHECKOUT" 2>/dev/null)" ]; then
    umount "$ROOT$CHECKOUT" 2>/dev/null || umount -l "$ROOT$CHECKOUT"
  fi
  mounted "$ROOT$CHECKOUT" || mount --bind "$CHECKOUT" "$ROOT$CHECKOUT"
}

# Local directories of PIP_FIND_LINKS (passed through to exec), read-only at the same path inside.
mount_find_links() {
  local dir
  for dir in ${PIP_FIND_LINKS:-}; do
    case "$dir" in file://*) dir="${dir#file://}" ;; /?*) ;; *) continue ;; esac
    [ -d "$dir" ] || continue
    case "$ROOT/" in "${dir%/}"/*) continue ;; esac   # never the root inside itself
    mkdir -p "$ROOT$dir"
    if ! mounted "$ROOT$dir"; then
      mount --bind "$dir" "$ROOT$dir" && { mount -o remount,bind,ro "$ROOT$dir" 2>/dev/null || true; }
    fi
  done
}

# The host's name resolution, pip settings and CA bundle (pip inside uses PIP_CERT / pip.conf's cert).
copy_host_files() {
  local file
  for file in /etc/hosts /etc/resolv.conf /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
    [ -f "$file" ] || continue
    mkdir -p "$ROOT$(dirname "$file")"
    cp -L --remove-destination "$file" "$ROOT$file"   # never through a symlink of the root's
  done
}

# The URIs of the machine's own apt sources (deb822 .sources and one-line .list), first Debian archive.
find_mirror() {
  local sources=() file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] && sources+=("$file")
  done
  [ ${#sources[@]} -gt 0 ] || return 1
  {
    for file in "${sources[@]}"; do
      case "$file" in
        *.sources) awk 'BEGIN { RS = ""; FS = "\n" }
                        { on = 1; uris = ""
                          for (i = 1; i <= NF; i++) {
                            if ($i ~ /^Enabled:[ \t]*[Nn]o/) on = 0
                            if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) } }
                          if (on && uris != "") { n = split(uris, u, /[ \t]+/); for (j = 1; j <= n; j++) print u[j] } }' "$file" ;;
        *) awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$file" ;;
      esac
    done
  } | grep -E '^(https?|file)://.*/debian/?$' | head -n 1 | grep .
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return 0
  command -v apt-get >/dev/null || unavailable "debootstrap is not installed and there is no apt-get to install it"
  say "installing debootstrap on the host (apt-get)"
  (
    flock -w 600 8 || exit 1
    command -v debootstrap >/dev/null && exit 0
    apt-get install -y -q -o DPkg::Lock::Timeout=300 debootstrap >/dev/null 2>&1 \
      || { apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 \
           && apt-get install -y -q -o DPkg::Lock::Timeout=300 debootstrap >/dev/null 2>&1; }
  ) 8>"$BASE/.host-apt.lock" || unavailable "apt-get install debootstrap failed"
  command -v debootstrap >/dev/null || unavailable "debootstrap is still missing after apt-get install"
}

write_node_config() {
  mkdir -p "$ROOT/etc/rabbitmq"
  cat > "$ROOT/etc/rabbitmq/rabbitmq-env.conf" <<EOF
# Written by pubsubpy's scripts/rabbitmq-next.sh: rabbitmqctl inside this root talks to $NODE by default.
NODENAME=$NODE
NODE_PORT=$PORT
DIST_PORT=$DIST_PORT
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  printf '%s\n' "# Written by pubsubpy's scripts/rabbitmq-next.sh" "listeners.tcp.local = 127.0.0.1:$PORT" \
    > "$ROOT/etc/rabbitmq/rabbitmq.conf"
  # no management/prometheus listeners to clash; the consistent-hash exchange for shards=N
  echo "[$PLUGINS]." > "$ROOT/etc/rabbitmq/enabled_plugins"
}

# install_packages: what PACKAGES names, into the (mounted) root; the stamp records the set.
install_packages() {
  say "apt-get install $PACKAGES (inside the root)"
  in_root apt-get update -q -o Acquire::Check-Valid-Until=false > "$BASE/$SUITE.apt.log" 2>&1 \
    || { tail -n 20 "$BASE/$SUITE.apt.log" >&2; unavailable "apt-get update failed inside the root (log: $BASE/$SUITE.apt.log)"; }
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends $PACKAGES >> "$BASE/$SUITE.apt.log" 2>&1 \
    || { tail -n 20 "$BASE/$SUITE.apt.log" >&2; unavailable "apt-get install failed inside the root (log: $BASE/$SUITE.apt.log)"; }
  in_root apt-get clean >/dev/null 2>&1 || true
}

stamp_packages() { sed -n 's/^packages=//p' "$STAMP" 2>/dev/null || true; }

# preflight: what building and entering a root takes, before anything is written.
preflight() {
  [ "$(id -u)" -eq 0 ] || unavailable "must run as root (debootstrap, chroot, mount)"
  local tool
  for tool in chroot mount umount flock awk timeout; do
    command -v "$tool" >/dev/null || unavailable "$tool is not installed"
  done
  mkdir -p "$BASE" 2>/dev/null || unavailable "cannot create $BASE (PUBSUBPY_NEXT_DIR)"
}

# ensure_root: a complete root (built, packages installed, node configured), mounts in place. Needs the lock.
ensure_root() {
  if [ -d "$ROOT" ] && [ ! -f "$STAMP" ]; then
    say "removing the incomplete root $ROOT (no stamp)"
    unmount_all   # never rm -rf across a bind mount (the checkout is one)
    rm -rf --one-file-system "$ROOT"
  fi
  if [ ! -f "$STAMP" ]; then
    local began=$SECONDS mirror
    ensure_debootstrap
    mirror="${PUBSUBPY_NEXT_MIRROR:-$(find_mirror || true)}"
    [ -n "$mirror" ] || unavailable "no Debian archive URI in /etc/apt/sources.list(.d) to debootstrap from"
    say "debootstrap --variant=minbase $SUITE $ROOT $mirror (about 30 s; log: $BASE/$SUITE.debootstrap.log)"
    if ! debootstrap --variant=minbase "$SUITE" "$ROOT" "$mirror" > "$BASE/$SUITE.debootstrap.log" 2>&1; then
      tail -n 20 "$BASE/$SUITE.debootstrap.log" >&2
      unmount_all; rm -rf --one-file-system "$ROOT"
      unavailable "debootstrap $SUITE from $mirror failed"
    fi
    # no service starts from package scripts (a node on 5672 would clash with the system's)
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
    printf 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n' \
      > "$ROOT/etc/apt/apt.conf.d/99pubsubpy-next"
    copy_host_files
    mount_basics
    install_packages
    copy_host_files   # the CA bundle again, in case a package replaced it
    write_node_config
    printf 'suite=%s\npackages=%s\nbuilt=%s\n' "$SUITE" "$PACKAGES" "$(date -Is)" > "$STAMP"
    say "root ready in $((SECONDS - began)) s ($(du -sh --one-file-system "$ROOT" 2>/dev/null | cut -f1))"
  elif [ "$(stamp_packages)" != "$PACKAGES" ]; then   # the package list grew since the root was built
    copy_host_files; mount_basics; install_packages; write_node_config
    printf 'suite=%s\npackages=%s\nbuilt=%s\n' "$SUITE" "$PACKAGES" "$(date -Is)" > "$STAMP"
  fi
  copy_host_files
  mount_basics
}

# pids_in_root: every process whose root directory is this root.
pids_in_root() {
  local dir pid
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    [ "$(readlink "$dir/root" 2>/dev/null)" = "$ROOT" ] && echo "$pid"
  done
  return 0
}

# vm_name PID: the RabbitMQ node name in a VM's environment.
vm_name() { { tr '\0' '\n' < "/proc/$1/environ"; } 2>/dev/null | sed -n 's/^RABBITMQ_NODENAME=//p' | head -n 1; }

# rabbit_vms: "PID NAME" of each RabbitMQ VM (beam.smp) running inside the root.
rabbit_vms() {
  local pid
  for pid in $(pids_in_root); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] && echo "$pid $(vm_name "$pid")"
  done
  return 0
}

node_pid() { rabbit_vms | awk -v node="$NODE" '$2 == node { print $1; found = 1; exit } END { exit !found }'; }

# amqp_answers: the port answers an AMQP 0-9-1 protocol header with a frame (Connection.Start).
amqp_answers() {
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && printf 'AMQP\\x00\\x00\\x09\\x01' >&3 && head -c 1 <&3 | od -An -tx1" \
    2>/dev/null | grep -q 01
}
port_taken() { timeout 2 bash -c "echo > /dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# The host's epmd (127.0.0.1:4369) serves the root's nodes; one the root started itself would die with `down`.
ensure_host_epmd() {
  port_taken 4369 && return 0
  command -v epmd >/dev/null || fail "no epmd answers on 127.0.0.1:4369 and the host has none to start"
  ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 9>&-
  local until=$((SECONDS + 10))
  until port_taken 4369; do [ "$SECONDS" -lt "$until" ] || fail "epmd did not start on 127.0.0.1:4369"; sleep 0.2; done
}

versions() {   # "RabbitMQ X, Erlang Y" as the running node reports them
  local rabbit erlang
  rabbit="$(in_root timeout 30 rabbitmq-diagnostics -q server_version 2>/dev/null | tail -n 1)" || return 1
  erlang="$(in_root timeout 30 rabbitmqctl -q eval \
    '{ok, V} = file:read_file(filename:join([code:root_dir(), "releases", erlang:system_info(otp_release), "OTP_VERSION"])), string:trim(binary_to_list(V)).' \
    2>/dev/null | tr -d '"' | tail -n 1)" || return 1
  echo "RabbitMQ $rabbit, Erlang $erlang"
}

start_node() {
  local began=$SECONDS
  write_node_config
  if node_pid >/dev/null; then
    say "$NODE's VM already runs: waiting for it"
  else
    local port
    for port in "$PORT" "$DIST_PORT"; do
      port_taken "$port" && fail "127.0.0.1:$port is taken by another process, not by $NODE of $ROOT"
    done
    ensure_host_epmd
    mkdir -p "$ROOT/var/lib/rabbitmq" "$ROOT/var/log/rabbitmq"
    in_root chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    say "starting $NODE (AMQP 127.0.0.1:$PORT, distribution port $DIST_PORT)"
    in_root su rabbitmq -s /bin/sh -c "env RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_PORT=$PORT \
        RABBITMQ_DIST_PORT=$DIST_PORT ERL_EPMD_ADDRESS=127.0.0.1 \
        /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >/dev/null 2>&1 \
      || fail "rabbitmq-server -detached failed to launch; its log: $LOG"
  fi
  until amqp_answers; do
    if [ $((SECONDS - began)) -ge "$WAIT" ] || { [ $((SECONDS - began)) -ge 10 ] && ! node_pid >/dev/null; }; then
      echo "rabbitmq-next[$SUITE]: $NODE did not answer AMQP on 127.0.0.1:$PORT within ${WAIT}s; its log ($LOG):" >&2
      tail -n 30 "$LOG" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
  # a plain rabbitmqctl inside the root (what the tests run) must reach this node, not another
  local answered
  answered="$(in_root timeout 60 rabbitmqctl -q eval 'node().' 2>&1 | tail -n 1)" || true
  [ "$answered" = "$NODE" ] || [ "$answered" = "'$NODE'" ] \
    || fail "rabbitmqctl inside the root does not reach $NODE by default (it said: $answered)"
  # a node started before the plugin was in its enabled_plugins gets it now (idempotent, online)
  in_root timeout 60 rabbitmqctl -q eval "lists:keymember($PLUGINS, 1, application:which_applications())." \
      2>/dev/null | grep -q true \
    || in_root timeout 120 rabbitmq-plugins -q enable "$PLUGINS" >/dev/null \
    || fail "could not enable $PLUGINS on $NODE"
  say "$NODE up in $((SECONDS - began)) s: $(versions || echo 'versions unknown') (AMQP 127.0.0.1:$PORT)"
}

# stop_vm PID NAME: a polite stop (30 s at most), then SIGKILL for a VM still there 15 s later.
stop_vm() {
  local pid="$1" name="$2"
  if [ -n "$name" ]; then in_root timeout 30 rabbitmqctl -q -n "$name" stop >/dev/null 2>&1 || true; fi
  local until=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$until" ]; do sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

take_down() {
  local pid name
  if [ -d "$ROOT" ]; then
    if pid="$(node_pid)"; then stop_vm "$pid" "$NODE"; fi
    while read -r pid name; do   # other nodes started in the root (the TLS node of the tests, left running)
      [ -n "$pid" ] && stop_vm "$pid" "$name"
    done < <(rabbit_vms)
    for pid in $(pids_in_root); do   # their helpers (erl_child_setup, inet_gethost), never epmd
      case "$(cat "/proc/$pid/comm" 2>/dev/null)" in erl_child_setup|inet_gethost|heart) kill -9 "$pid" 2>/dev/null || true ;; esac
    done
  fi
  unmount_all
}

command="${1:-status}"
case "$command" in
  up)
    preflight
    lock
    ensure_root
    start_node
    ;;
  down)
    if [ ! -d "$ROOT" ]; then say "no root at $ROOT: nothing to stop"; exit 0; fi
    [ "$(id -u)" -eq 0 ] || fail "must run as root (it stops the node and unmounts)"
    lock
    take_down
    say "down ($NODE stopped, mounts removed; the root stays cached in $ROOT)"
    ;;
  status)
    if [ ! -f "$STAMP" ]; then say "$NODE: not running (no root built at $ROOT)"; exit 3; fi
    if ! node_pid >/dev/null; then say "$NODE: not running"; exit 3; fi
    if ! v="$(versions)"; then say "$NODE: its VM runs but it does not answer rabbitmqctl"; exit 3; fi
    if ! amqp_answers; then say "$NODE: runs but AMQP 127.0.0.1:$PORT does not answer"; exit 3; fi
    say "$NODE: running (AMQP 127.0.0.1:$PORT), $v, root $ROOT"
    ;;
  exec)
    shift
    [ $# -gt 0 ] || usage
    preflight
    lock
    ensure_root
    mount_checkout
    mount_find_links
    unlock
    passed=()
    while read -r var; do
      case "$var" in
        CI|PIP_*|PUBSUBPY_*|PYTEST_*|HYPOTHESIS_*|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|COLUMNS|NO_COLOR|FORCE_COLOR)
          passed+=("$var=${!var}") ;;
      esac
    done < <(compgen -e)
    cwd="$(pwd -P)"
    case "$cwd/" in "$CHECKOUT"/*) ;; *) cwd="$CHECKOUT" ;; esac
    exec env -i PATH="$ROOT_PATH" HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" "${passed[@]}" \
      chroot "$ROOT" /bin/sh -c 'cd "$1" || exit 1; shift; exec "$@"' sh "$cwd" "$@"
    ;;
  *) usage ;;
esac
