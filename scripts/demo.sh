#!/usr/bin/env bash
# Publish the seed's two examples (create, createWithConfig) over MQTT, wait for the answers
# and print the container output. Needs a running stack (`just up` writes .run/env).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
ENV_FILE="$ROOT/.run/env"
ANSWER_TIMEOUT=60
LOG_WAIT=10

die() { printf '%s\n' "demo: ERROR: $*" >&2; exit 1; }

[[ -f "$ENV_FILE" ]] || die "$ENV_FILE missing; run 'just up' first"
# shellcheck source=/dev/null
. "$ENV_FILE"

THING="$CF_THING_ID"
# Ditto namespace/name: split the thing id at the first ':' (edge:device -> edge/device).
DITTO_THING="${THING%%:*}/${THING#*:}"
WORK="$(mktemp -d "$ROOT/.run/demo.XXXXXX")"
SUB_PID=""

cleanup() {
  [[ -n "$SUB_PID" ]] && kill "$SUB_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

new_uuid() { cat /proc/sys/kernel/random/uuid; }

body_create() {
  jq -cn --arg topic "$DITTO_THING/things/live/messages/create" --arg cid "$1" \
    '{"topic":$topic,"headers":{"response-required":true,"content-type":"application/json","correlation-id":$cid},"path":"/features/ContainerFactory/inbox/messages/create","value":{"imageRef":"docker.io/library/hello-world:latest","start":true}}'
}

body_create_with_config() {
  jq -cn --arg topic "$DITTO_THING/things/live/messages/createWithConfig" --arg cid "$1" \
    '{"topic":$topic,"headers":{"response-required":true,"content-type":"application/json","correlation-id":$cid},"path":"/features/ContainerFactory/inbox/messages/createWithConfig","value":{"config":{"extraHosts":["ctrhost:host_ip"],"portMappings":[{"containerPort":80,"hostPort":5000}]},"imageRef":"docker.io/library/hello-world:latest","start":true}}'
}

# Subscribe to both answer topics before publishing; -d prints the SUBACK we wait for
# (stdbuf: mosquitto_sub block-buffers stdout into a file, hiding SUBACK and answers).
subscribe() {
  stdbuf -oL mosquitto_sub -d -h "$CF_MQTT_HOST" -p "$CF_MQTT_PORT" -q 1 \
    -t "command//$THING/res//create" -t "command//$THING/res//createWithConfig" \
    >"$WORK/answers" 2>&1 &
  SUB_PID=$!
  local deadline=$((SECONDS + 10))
  until grep -qs 'received SUBACK' "$WORK/answers"; do
    kill -0 "$SUB_PID" 2>/dev/null || die "mosquitto_sub failed: $(cat "$WORK/answers")"
    ((SECONDS < deadline)) || die "no SUBACK from mosquitto within 10 s"
    sleep 0.1
  done
}

# wait_answer CORRELATION_ID: prints the answer (one JSON line) or fails after the timeout.
wait_answer() {
  local cid="$1" deadline=$((SECONDS + ANSWER_TIMEOUT)) answer
  while :; do
    answer="$(jq -cR --arg cid "$cid" 'fromjson? | select(.headers["correlation-id"]? == $cid)' \
      "$WORK/answers" | head -n1)"
    [[ -n "$answer" ]] && { printf '%s\n' "$answer"; return 0; }
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# The container id: a uuid in the answer value with a state directory, else the newest one.
container_dir() {
  local answer="$1" id
  for id in $(jq -r '[.value? | .. | strings | select(test("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))] | .[]' <<<"$answer"); do
    [[ -d "$CF_STATE_DIR/containers/$id" ]] && { echo "$CF_STATE_DIR/containers/$id"; return 0; }
  done
  ls -1dt "$CF_STATE_DIR"/containers/*/ 2>/dev/null | head -n1 | sed 's:/$::'
}

print_output() {
  local dir="$1" deadline=$((SECONDS + LOG_WAIT))
  [[ -n "$dir" ]] || { echo "  (no container state directory found under $CF_STATE_DIR/containers)"; return 0; }
  until [[ -s "$dir/json.log" ]]; do
    ((SECONDS < deadline)) || { echo "  (no output in $dir/json.log after ${LOG_WAIT}s)"; return 0; }
    sleep 0.2
  done
  sleep 0.5 # short-lived container: let it finish writing
  echo "--- output of container $(basename "$dir") ($dir/json.log):"
  jq -rj '.log // empty' "$dir/json.log"
  echo "---"
}

# run_example NAME BODY_FN
run_example() {
  local name="$1" cid answer
  cid="$(new_uuid)"
  echo "==> $name: publishing to command//$THING/req//$name (correlation-id $cid)"
  "$2" "$cid" | mosquitto_pub -h "$CF_MQTT_HOST" -p "$CF_MQTT_PORT" -q 1 \
    -t "command//$THING/req//$name" -s
  answer="$(wait_answer "$cid")" ||
    die "no answer on command//$THING/res//$name within ${ANSWER_TIMEOUT}s (see .run/logs/cf-gateway.log, cf-factory.log)"
  echo "<== answer:"
  jq . <<<"$answer"
  print_output "$(container_dir "$answer")"
}

main() {
  subscribe
  run_example create body_create
  run_example createWithConfig body_create_with_config
  echo
  echo "The stack keeps running. Logs: just logs. Stop it with: just down"
}

main "$@"
