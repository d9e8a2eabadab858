#!/usr/bin/env bash
# Local stack of real components for container-factory, owned by this checkout.
#
#   scripts/stack.sh deps    install the Debian packages (root; prints the command otherwise)
#   scripts/stack.sh up      start containerd, mosquitto, nats, registry, cf-factory, cf-gateway
#   scripts/stack.sh down    stop everything `up` started and clean mounts/netns/bridge
#   scripts/stack.sh status  show which services run
#   scripts/stack.sh logs    follow .run/logs
#
# All state lives in .run/ (git-ignored). `up` does not build; the justfile runs `just build` first.
#
# Environment:
#   CF_DEMO_MQTT_PORT (1883) CF_DEMO_NATS_PORT (4222) CF_DEMO_REGISTRY_PORT (5001)
#   CF_DEMO_SUBNET (10.231.17.0/24)   container bridge subnet, must not overlap a host network
#   CF_STACK_TIMEOUT (30)             readiness wait per service, seconds
#   CF_STACK_NO_SERVICES=1            testing aid for the stack itself: start only the
#                                     infrastructure and skip cf-factory/cf-gateway (with a warning)
#   CF_* (e.g. CF_DEVICE__ID)         passed through to cf-factory/cf-gateway; they override .run/cf.toml
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN="$ROOT/.run"
LOGS="$RUN/logs"
PIDS="$RUN/pids"
BIN_DIR="$ROOT/target/release"
CFG="$RUN/cf.toml"
READY_FILE="$RUN/gateway.ready"
STATE_DIR="$RUN/state"

CTRD_DIR="$RUN/containerd"
CTRD_SOCK="$CTRD_DIR/containerd.sock"
CTRD_TTRPC="$CTRD_DIR/containerd.sock.ttrpc"

# The settings a running stack was started with fill in what the caller
# leaves unset, so that a later `up` (e.g. after a rebuild) restarts services
# the same way.
STACK_CONF="$RUN/stack.conf"
# shellcheck source=/dev/null
[[ -f "$STACK_CONF" ]] && . "$STACK_CONF"

MQTT_PORT="${CF_DEMO_MQTT_PORT:-1883}"
NATS_PORT="${CF_DEMO_NATS_PORT:-4222}"
REGISTRY_PORT="${CF_DEMO_REGISTRY_PORT:-5001}"
SUBNET="${CF_DEMO_SUBNET:-10.231.17.0/24}"
BRIDGE="${CF_NETWORK__BRIDGE:-cf0}"
TIMEOUT="${CF_STACK_TIMEOUT:-30}"

# Packages for the stack and the build (also used by .ci/run via `stack.sh deps`).
DEB_PACKAGES=(
  containerd runc nats-server mosquitto mosquitto-clients docker-registry umoci skopeo
  busybox-static containernetworking-plugins protobuf-compiler iptables iproute2 jq curl
  build-essential ca-certificates hyperfine util-linux procps
)

# Start order; `down` stops in reverse.
SERVICES=(containerd mosquitto nats registry cf-factory cf-gateway)

log() { printf '%s\n' "stack: $*"; }
warn() { printf '%s\n' "stack: WARNING: $*" >&2; }
die() { printf '%s\n' "stack: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- deps

missing_packages() {
  local p status
  for p in "${DEB_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == installed ]] || printf '%s\n' "$p"
  done
}

cmd_deps() {
  local missing
  missing="$(missing_packages)"
  if [[ -z "$missing" ]]; then
    log "all ${#DEB_PACKAGES[@]} Debian packages are installed"
    return 0
  fi
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  set -- $missing
  if [[ "$(id -u)" != 0 ]]; then
    printf 'Missing packages: %s\nRun as root:\n  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends %s\n' \
      "$*" "${DEB_PACKAGES[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # On a systemd host apt would start the packaged mosquitto/nats/registry/containerd and
  # take the stack's ports; policy-rc.d (exit 101) forbids service starts during this install.
  local policy=/usr/sbin/policy-rc.d
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y --no-install-recommends "${DEB_PACKAGES[@]}"
}

# ---------------------------------------------------------------- process helpers

# Expected executable name per service, so a recycled pid is never mistaken for ours.
service_exe() {
  case "$1" in
    nats) echo nats-server ;;
    registry) echo docker-registry ;;
    *) echo "$1" ;;
  esac
}

pid_alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# True when pid is alive (not a zombie) and runs the executable of service $2.
pid_is_service() {
  local pid="$1" exe argv0
  [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  exe="$(service_exe "$2")"
  argv0="$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | head -n1)" || return 1
  [[ "$(basename -- "$argv0")" == "$exe" ]]
}

# Prints the pid of a running service; fails (and drops a stale pid file) otherwise.
service_pid() {
  local f="$PIDS/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  if pid_is_service "$pid" "$1"; then
    echo "$pid"
  else
    rm -f "$f"
    return 1
  fi
}

last_log() { tail -n "${2:-25}" "$LOGS/$1.log" 2>/dev/null | sed 's/^/    | /' >&2 || true; }

# start_service NAME CMD...: background, own session, logs and pid under .run.
start_service() {
  local name="$1" pid
  shift
  [[ -f "$LOGS/$name.log" ]] && mv -f "$LOGS/$name.log" "$LOGS/$name.log.1"
  # setsid: the service must outlive the recipe and not get its terminal's signals.
  # 9>&-: do not leak the stack lock into daemons.
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PIDS/$name.pid"
  # Until the exec completes the pid still shows our shell/setsid; give it a moment so
  # pid_is_service does not mistake the fork for a dead service.
  local i
  for ((i = 0; i < 50; i++)); do
    pid_is_service "$pid" "$name" || ! pid_alive "$pid" && break
    sleep 0.05
  done
  log "started $name (pid $pid)"
}

# wait_ready NAME CHECK...: run CHECK until it succeeds, the service dies, or TIMEOUT.
wait_ready() {
  local name="$1" deadline=$((SECONDS + TIMEOUT)) pid
  shift
  while :; do
    if ! pid="$(service_pid "$name")"; then
      warn "$name exited during startup; last log lines ($LOGS/$name.log):"
      last_log "$name"
      exit 1
    fi
    "$@" && return 0
    if ((SECONDS >= deadline)); then
      warn "$name (pid $pid) not ready after ${TIMEOUT}s; last log lines ($LOGS/$name.log):"
      last_log "$name"
      # a half-started service would be taken as running by the next `up`
      stop_service "$name" 5
      exit 1
    fi
    sleep 0.2
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
registry_ok() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null; }
containerd_ok() { ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; }
factory_ok() {
  local pid
  pid="$(service_pid cf-factory)" || return 1
  # "alive after 1 s": the process must have existed for at least a second.
  (($(ps -o etimes= -p "$pid" 2>/dev/null || echo 0) >= 1)) &&
    grep -q 'factory ready' "$LOGS/cf-factory.log"
}
gateway_ok() { [[ -e "$READY_FILE" ]]; }

# stop_service NAME [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL.
stop_service() {
  local name="$1" grace="${2:-10}" pid deadline
  pid="$(service_pid "$name")" || { rm -f "$PIDS/$name.pid"; return 0; }
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while pid_is_service "$pid" "$name" && ((SECONDS < deadline)); do sleep 0.1; done
  if pid_is_service "$pid" "$name"; then
    warn "$name (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while pid_is_service "$pid" "$name" && ((SECONDS < deadline)); do sleep 0.1; done
    pid_is_service "$pid" "$name" && warn "$name (pid $pid) survived SIGKILL (stuck in the kernel?)"
  fi
  rm -f "$PIDS/$name.pid"
}

# ---------------------------------------------------------------- checks

ip_to_int() {
  local IFS=. a b c d
  read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

# Prints "start end" of an IPv4 CIDR (a bare address is a /32).
cidr_range() {
  local addr="${1%/*}" len=32 ip mask
  [[ "$1" == */* ]] && len="${1#*/}"
  ip="$(ip_to_int "$addr")"
  mask=$(((0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF))
  echo "$((ip & mask)) $(((ip & mask) | (~mask & 0xFFFFFFFF)))"
}

check_subnet() {
  [[ "$SUBNET" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]] ||
    die "CF_DEMO_SUBNET='$SUBNET' is not an IPv4 CIDR like 10.231.17.0/24"
  local s e net ns ne dev
  read -r s e < <(cidr_range "$SUBNET")
  # Host networks: every address and route destination, except on our own bridge.
  while read -r net dev; do
    [[ "$dev" == "$BRIDGE" ]] && continue
    read -r ns ne < <(cidr_range "$net")
    if ((s <= ne && ns <= e)); then
      die "CF_DEMO_SUBNET=$SUBNET overlaps host network $net (dev $dev); set CF_DEMO_SUBNET to a free private /24"
    fi
  done < <(
    ip -4 -o addr show | awk '{print $4, $2}'
    ip -4 route show table all 2>/dev/null | awk '$1 ~ /^[0-9]/ {d=""; for (i=1;i<NF;i++) if ($i=="dev") d=$(i+1); print $1, d}'
  )
}

check_socket_path() {
  # sun_path is 108 bytes including the terminating NUL.
  local p
  for p in "$CTRD_SOCK" "$CTRD_TTRPC"; do
    ((${#p} <= 107)) ||
      die "unix socket path is ${#p} bytes, over the 107-byte limit: $p (move the checkout to a shorter path)"
  done
}

# A port that answers while our service is not running belongs to someone else.
check_port_free() {
  local name="$1" port="$2" var="$3"
  [[ "$port" =~ ^[0-9]+$ ]] || die "$var='$port' is not a port number"
  if tcp_open "$port"; then
    die "127.0.0.1:$port is already in use by another process (not our $name); stop it or set $var"
  fi
}

# ---------------------------------------------------------------- config files

write_containerd_config() {
  cat >"$CTRD_DIR/config.toml" <<EOF
# generated by scripts/stack.sh: private containerd for this checkout
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_TTRPC"

[debug]
  address = ""

[metrics]
  address = ""

# keep the opt plugin out of /opt/containerd
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
EOF
}

write_mosquitto_config() {
  cat >"$RUN/mosquitto/mosquitto.conf" <<EOF
# generated by scripts/stack.sh
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
# Nagle adds ~40 ms to every small request/answer exchange
set_tcp_nodelay true
# no per-client QoS 1 in-flight cap: bursts of creates must not queue behind 20 messages
max_inflight_messages 0
max_queued_messages 10000
# stderr is unbuffered; stdout to a file would hold the log back
log_dest stderr
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
}

write_registry_config() {
  cat >"$RUN/registry/config.yml" <<EOF
# generated by scripts/stack.sh
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $RUN/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
}

thing_id() {
  if [[ -n "${CF_DEVICE__THING_ID:-}" ]]; then
    echo "$CF_DEVICE__THING_ID"
  elif [[ -n "${CF_DEVICE__ID:-}" ]]; then
    echo "$CF_DEVICE__ID:edge:containers"
  else
    echo edge:device
  fi
}

write_cf_config() {
  {
    echo "# generated by scripts/stack.sh; CF_* environment variables override these values"
    echo "state_dir = \"$STATE_DIR\""
    echo "ready_file = \"$READY_FILE\""
    echo "[device]"
    if [[ -z "${CF_DEVICE__THING_ID:-}" && -z "${CF_DEVICE__ID:-}" ]]; then
      echo 'thing_id = "edge:device"'
    fi
    echo 'tenant = "local"'
    echo "[mqtt]"
    echo "url = \"mqtt://127.0.0.1:$MQTT_PORT\""
    echo "[nats]"
    echo "url = \"nats://127.0.0.1:$NATS_PORT\""
    echo "[containerd]"
    echo "address = \"$CTRD_SOCK\""
    echo 'namespace = "container-factory"'
    echo "[registry.mirrors]"
    echo "\"docker.io\" = \"http://127.0.0.1:$REGISTRY_PORT\""
    echo "[network]"
    echo "bridge = \"$BRIDGE\""
    echo "subnet = \"$SUBNET\""
    echo 'cni_bin_dir = "/usr/lib/cni"'
  } >"$CFG"
}

write_env_file() {
  local tmp="$RUN/env.tmp"
  {
    echo "# generated by scripts/stack.sh up; source it: . .run/env"
    printf 'export %s=%q\n' \
      CF_ROOT "$ROOT" \
      CF_BIN_DIR "$BIN_DIR" \
      CF_MQTT_HOST 127.0.0.1 \
      CF_MQTT_PORT "$MQTT_PORT" \
      CF_NATS_URL "nats://127.0.0.1:$NATS_PORT" \
      CF_THING_ID "$(thing_id)" \
      CF_TENANT "${CF_DEVICE__TENANT:-local}" \
      CF_STATE_DIR "$STATE_DIR" \
      CONTAINERD_ADDRESS "$CTRD_SOCK" \
      CONTAINERD_NAMESPACE "${CF_CONTAINERD__NAMESPACE:-container-factory}" \
      CF_REGISTRY "127.0.0.1:$REGISTRY_PORT"
  } >"$tmp"
  mv -f "$tmp" "$RUN/env"
}

# ---------------------------------------------------------------- up

# ensure NAME PORT_VAR PORT CHECK START_CMD...: start unless already running, then wait.
ensure() {
  local name="$1" var="$2" port="$3" check="$4" pid
  shift 4
  # cargo replaces a binary on rebuild while the running process keeps the
  # old one: restart our own services so `just test` tests what was built
  if pid="$(service_pid "$name")" && [[ "$name" == cf-* ]] \
    && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *" (deleted)" ]]; then
    log "$name (pid $pid) runs a binary that was rebuilt; restarting it"
    stop_service "$name"
    [[ "$name" == cf-gateway ]] && rm -f "$READY_FILE"
  fi
  if pid="$(service_pid "$name")"; then
    log "$name already running (pid $pid)"
    if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *" (deleted)" ]]; then
      warn "$name (pid $pid) runs a binary that has since been upgraded; 'just down && just up' to restart it"
    fi
  else
    [[ -n "$port" ]] && check_port_free "$name" "$port" "$var"
    start_service "$name" "$@"
  fi
  wait_ready "$name" $check
}

start_infra() {
  write_containerd_config
  write_mosquitto_config
  write_registry_config
  # a containerd on our socket without our pid file (lost .run/pids?) would hold the db lock
  if ! service_pid containerd >/dev/null && containerd_ok; then
    die "a containerd not started by this stack already serves $CTRD_SOCK; stop it first"
  fi
  ensure containerd "" "" containerd_ok containerd --config "$CTRD_DIR/config.toml"
  ensure mosquitto CF_DEMO_MQTT_PORT "$MQTT_PORT" "tcp_open $MQTT_PORT" \
    mosquitto -c "$RUN/mosquitto/mosquitto.conf"
  ensure nats CF_DEMO_NATS_PORT "$NATS_PORT" "tcp_open $NATS_PORT" \
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats"
  ensure registry CF_DEMO_REGISTRY_PORT "$REGISTRY_PORT" registry_ok \
    docker-registry serve "$RUN/registry/config.yml"
}

# Our own output variables (.run/env) are not config keys: keep them away from the binaries
# so a shell that sourced .run/env does not feed them unknown keys. NO_COLOR: logs are files.
CF_ENV=(env -u CF_ROOT -u CF_BIN_DIR -u CF_MQTT_HOST -u CF_MQTT_PORT -u CF_NATS_URL -u CF_THING_ID
  -u CF_TENANT -u CF_REGISTRY -u CONTAINERD_ADDRESS -u CONTAINERD_NAMESPACE NO_COLOR=1)

start_cf() {
  local b
  for b in cf-factory cf-gateway; do
    [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b is missing; run 'just build' (or set CF_STACK_NO_SERVICES=1 to test the infrastructure alone)"
  done
  write_cf_config
  ensure cf-factory "" "" factory_ok "${CF_ENV[@]}" "$BIN_DIR/cf-factory" --config "$CFG"
  if ! service_pid cf-gateway >/dev/null; then
    rm -f "$READY_FILE"
  fi
  ensure cf-gateway "" "" gateway_ok "${CF_ENV[@]}" "$BIN_DIR/cf-gateway" --config "$CFG"
}

summary() {
  local s pid
  log "services:"
  for s in "${SERVICES[@]}"; do
    if pid="$(service_pid "$s")"; then
      printf '  %-11s pid %-8s log %s\n' "$s" "$pid" "$LOGS/$s.log"
    else
      printf '  %-11s not running\n' "$s"
    fi
  done
  printf '  mqtt       mqtt://127.0.0.1:%s   nats nats://127.0.0.1:%s   registry http://127.0.0.1:%s\n' \
    "$MQTT_PORT" "$NATS_PORT" "$REGISTRY_PORT"
  printf '  containerd %s\n  thing id   %s   subnet %s\n' "$CTRD_SOCK" "$(thing_id)" "$SUBNET"
  log "environment in $RUN/env (. .run/env); stop with: just down"
}

write_stack_conf() {
  mkdir -p "$RUN"
  local pair name value
  for pair in CF_DEMO_MQTT_PORT:MQTT_PORT CF_DEMO_NATS_PORT:NATS_PORT \
    CF_DEMO_REGISTRY_PORT:REGISTRY_PORT CF_DEMO_SUBNET:SUBNET CF_NETWORK__BRIDGE:BRIDGE; do
    name="${pair%%:*}" value="${pair#*:}"
    # exported, so that the services started later see the same settings
    printf 'export %s="${%s:-%s}"\n' "$name" "$name" "${!value}"
  done >"$STACK_CONF"
}

cmd_up() {
  check_socket_path
  check_subnet
  write_stack_conf
  start_infra
  CF_REGISTRY_PORT="$REGISTRY_PORT" CF_IMAGES_DIR="$RUN/images" "$ROOT/scripts/images.sh"
  if [[ "${CF_STACK_NO_SERVICES:-}" == 1 ]]; then
    warn "CF_STACK_NO_SERVICES=1: NOT starting cf-factory and cf-gateway (infrastructure only)"
  else
    start_cf
  fi
  write_env_file
  summary
}

# ---------------------------------------------------------------- down

# Tasks still running in our containerd (e.g. no teardown binary): kill and delete them,
# otherwise their shims and processes outlive containerd.
reap_tasks() {
  local ns id
  for ns in $(ctr -a "$CTRD_SOCK" namespaces ls -q 2>/dev/null); do
    for id in $(ctr -a "$CTRD_SOCK" -n "$ns" tasks ls -q 2>/dev/null); do
      log "removing leftover task $ns/$id"
      ctr -a "$CTRD_SOCK" -n "$ns" tasks rm -f "$id" >/dev/null 2>&1 ||
        warn "could not remove task $ns/$id"
    done
  done
}

teardown_containers() {
  containerd_ok || return 0
  if [[ -x "$BIN_DIR/cf-factory" && -f "$CFG" ]]; then
    "${CF_ENV[@]}" timeout 120 "$BIN_DIR/cf-factory" --config "$CFG" teardown >>"$LOGS/teardown.log" 2>&1 ||
      warn "cf-factory teardown failed (see $LOGS/teardown.log)"
  fi
  reap_tasks
}

# Shims of our containerd are found by its socket in their command line.
kill_our_shims() {
  local pid sig
  for sig in TERM KILL; do
    for pid in $(pgrep -f -- "-address $CTRD_SOCK( |$)" || true); do
      log "killing leftover shim $pid (SIG$sig)"
      kill "-$sig" "$pid" 2>/dev/null || true
    done
    pgrep -f -- "-address $CTRD_SOCK( |$)" >/dev/null || break
    sleep 1
  done
}

# Every mount at or below .run, deepest first (paths in /proc/self/mounts escape blanks as \040).
unmount_run() {
  local m
  while read -r m; do
    log "unmounting $m"
    umount "$m" 2>/dev/null || umount -l "$m" || warn "could not unmount $m"
  done < <(
    awk '{print $2}' /proc/self/mounts | while read -r m; do printf '%b\n' "$m"; done |
      awk -v r="$RUN" 'index($0, r) == 1 && (length($0) == length(r) || substr($0, length(r) + 1, 1) == "/")' |
      awk '{print length($0) "\t" $0}' | sort -rn | cut -f2- | uniq
  )
}

# Only netns named after containers we recorded in .run/state: never touch anyone else's.
# IDs of containers this stack may still have network state for.
our_container_ids() {
  local f
  for f in "$STATE_DIR"/containers/*/ "$STATE_DIR"/cni/results/*.json; do
    [[ -e "$f" ]] || continue
    f="$(basename "$f")"
    printf '%s\n' "${f%.json}"
  done | sort -u
}

# Safety net after a failed teardown: nat rules whose CNI comment names one
# of our container IDs, and the per-container chains they jump to.
delete_our_iptables() {
  command -v iptables >/dev/null || return 0
  local id rule chains chain
  for id in $(our_container_ids); do
    chains=()
    while IFS= read -r rule; do
      [[ "$rule" =~ -j\ (CNI-[A-Za-z0-9-]+) ]] && chains+=("${BASH_REMATCH[1]}")
      # the rule is iptables' own output for our comment; replay it as a delete
      eval "iptables -w -t nat ${rule/#-A /-D }" 2>/dev/null || true
    done < <(iptables -w -t nat -S 2>/dev/null | grep -F -- "$id" | grep -- '^-A ' || true)
    for chain in "${chains[@]}"; do
      case "$chain" in CNI-HOSTPORT-*) continue ;; esac
      iptables -w -t nat -F "$chain" 2>/dev/null || true
      iptables -w -t nat -X "$chain" 2>/dev/null && log "deleted leftover iptables chain $chain"
    done
  done
}

# portmap's shared chains, once no port mapping is left in them: portmap
# creates them on its first ADD and recreates them whenever it needs them.
delete_portmap_chains() {
  command -v iptables >/dev/null || return 0
  iptables -w -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 || return 0
  [[ "$(iptables -w -t nat -S CNI-HOSTPORT-DNAT | grep -c '^-A')" == 0 ]] || return 0
  local rule chain
  while IFS= read -r rule; do
    eval "iptables -w -t nat ${rule/#-A /-D }" 2>/dev/null || true
  done < <(iptables -w -t nat -S | grep -E -- '^-A (PREROUTING|OUTPUT|POSTROUTING) .*-j CNI-HOSTPORT-' || true)
  for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
    iptables -w -t nat -F "$chain" 2>/dev/null || true
    iptables -w -t nat -X "$chain" 2>/dev/null || true
  done
  log "deleted portmap's unused shared chains"
}

delete_our_netns() {
  local d id
  for d in "$STATE_DIR"/containers/*/; do
    [[ -d "$d" ]] || continue
    id="$(basename "$d")"
    if [[ -e "/var/run/netns/cf-$id" ]]; then
      log "deleting network namespace cf-$id"
      ip netns delete "cf-$id" || warn "could not delete netns cf-$id"
    fi
  done
}

delete_bridge() {
  if ip link show dev "$BRIDGE" >/dev/null 2>&1; then
    log "deleting bridge $BRIDGE"
    ip link delete dev "$BRIDGE" || warn "could not delete bridge $BRIDGE"
  fi
}

cmd_down() {
  stop_service cf-gateway 10
  stop_service cf-factory 10
  # a stale env file would point tests at a stack that is gone
  rm -f "$READY_FILE" "$RUN/env"
  teardown_containers
  stop_service containerd 10
  stop_service nats 10
  stop_service mosquitto 10
  stop_service registry 10
  kill_our_shims
  unmount_run
  delete_our_iptables
  delete_portmap_chains
  delete_our_netns
  delete_bridge
  rm -f "$STACK_CONF"
}

# ---------------------------------------------------------------- main

cmd_status() {
  summary
}

cmd_logs() {
  compgen -G "$LOGS/*.log" >/dev/null || die "no logs in $LOGS (run just up)"
  exec tail -n 40 -F "$LOGS"/*.log
}

# One stack operation at a time (parallel `just up`/`just down` would race on pid files).
take_lock() {
  mkdir -p "$RUN" "$LOGS" "$PIDS" "$STATE_DIR" "$CTRD_DIR" "$RUN/mosquitto" "$RUN/nats" \
    "$RUN/registry/data" "$RUN/images"
  exec 9>"$RUN/stack.lock"
  flock 9
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    deps) cmd_deps ;;
    up) take_lock && cmd_up ;;
    down) take_lock && cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    *) die "usage: $0 deps|up|down|status|logs" ;;
  esac
}

main "$@"
