#!/usr/bin/env bash
# The one-command demo: signpost (server + agent), two time, two calc and
# one portal container, finding each other by DNS SRV with dynamic host
# ports, exactly as in "Service Discovery for Amazon ECS Using DNS".
#
#   examples/demo/demo.sh up     build, start, wait for the portal, print how to try it
#   examples/demo/demo.sh down   remove everything `up` created, and nothing else
#   examples/demo/demo.sh images only build the images (for compose.yaml)
#
# Everything it creates carries the label signpost.demo=<prefix>
# (DEMO_PREFIX, signpost-demo by default), and `down` removes exactly what
# carries it: demos of other prefixes, and everything else, are left alone.
# No image is pulled: the images are FROM scratch around static Go binaries.
#
# Settings (environment): DEMO_PREFIX, DEMO_NETWORK (default: the prefix),
# DEMO_STATE (token and password; default $TMPDIR/<prefix>), DEMO_DNS_PORT
# (8053), DEMO_API_PORT (8090), DEMO_PORTAL_PORT (8080): host ports, on
# 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PREFIX="${DEMO_PREFIX:-signpost-demo}"
LABEL="signpost.demo=$PREFIX"
NET="${DEMO_NETWORK:-$PREFIX}"
STATE="${DEMO_STATE:-${TMPDIR:-/tmp}/$PREFIX}"
DNS_PORT="${DEMO_DNS_PORT:-8053}"
API_PORT="${DEMO_API_PORT:-8090}"
PORTAL_PORT="${DEMO_PORTAL_PORT:-8080}"
ZONE="servicediscovery.internal"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

build_image() { # name package
  local name="$1" pkg="$2" ctx
  ctx="$(mktemp -d)"
  if ! (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$ctx/app" "$pkg"); then
    rm -rf "$ctx"
    return 1
  fi
  printf 'FROM scratch\nCOPY app /app\nENTRYPOINT ["/app"]\n' > "$ctx/Dockerfile"
  # The legacy builder warns about itself on stderr; show it only on failure.
  if ! docker build -q --label "$LABEL" -t "$PREFIX/$name:latest" "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2
    rm -rf "$ctx"
    return 1
  fi
  rm -rf "$ctx"
}

images() {
  command -v docker >/dev/null || { echo "demo: docker not found" >&2; exit 1; }
  say "building static binaries and FROM scratch images"
  build_image signpost ./cmd/signpost
  build_image time ./examples/time
  build_image calc ./examples/calc
  build_image portal ./examples/portal
}

# port_user prints who holds a port on this host (tcp or udp; "" if free).
port_user() { # port proto...
  local port="$1" proto out=""; shift
  for proto in "$@"; do
    if command -v ss >/dev/null; then
      out="$(ss -Hlnp -A "$proto" "sport = :$port" 2>/dev/null | head -1)"
      if [[ -n "$out" ]]; then
        local who; who="$(grep -o 'users:(("[^"]*"' <<<"$out" | cut -d'"' -f2)"
        echo "${proto}${who:+, by $who}"
        return
      fi
    elif [[ "$proto" == tcp ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "tcp"
      return
    fi
  done
}

# check_ports refuses to start when a host port the demo publishes is
# taken, and says which variable moves it; nothing is created before.
check_ports() {
  local bad=0 spec var port protos what used
  # Docker names: the prefix names containers, a network and images.
  if [[ ! "$PREFIX" =~ ^[a-z0-9]([a-z0-9_.-]*[a-z0-9])?$ ]]; then
    echo "demo: DEMO_PREFIX=\"$PREFIX\": want lower-case letters, digits, '_', '.' or '-', starting and ending with a letter or digit" >&2
    exit 2
  fi
  for spec in DEMO_DNS_PORT:"$DNS_PORT":"tcp udp":DNS DEMO_API_PORT:"$API_PORT":tcp:API DEMO_PORTAL_PORT:"$PORTAL_PORT":tcp:portal; do
    IFS=: read -r var port protos what <<<"$spec"
    if [[ ! "$port" =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); then
      echo "demo: $var=\"$port\": want a port number from 1 to 65535" >&2
      exit 2
    fi
    # A port this demo's own containers publish is freed when up replaces them.
    if command -v docker >/dev/null && [[ -n "$(docker ps -q --filter "label=$LABEL" --filter "publish=$port" 2>/dev/null)" ]]; then
      continue
    fi
    # shellcheck disable=SC2086
    used="$(port_user "$port" $protos)"
    if [[ -n "$used" ]]; then
      echo "demo: port $port for the demo's $what is taken ($used); move it with $var=<free port>, e.g. $var=$((port + 1000)) make demo" >&2
      bad=1
    fi
  done
  if ((bad)); then
    echo "demo: nothing was started (a running signpost up takes 127.0.0.1:8053 and 8080 too)." >&2
    exit 1
  fi
}

# cleanup_failed removes what a failed `up` created, so that no Created
# container, network or image is left behind.
cleanup_failed() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    echo "demo: start failed; removing what it created" >&2
    down 2>/dev/null || true
  fi
  exit "$rc"
}

up() {
  check_ports
  trap cleanup_failed EXIT
  images

  say "creating network $NET"
  docker network inspect "$NET" >/dev/null 2>&1 || docker network create --label "$LABEL" "$NET" >/dev/null
  local gw
  gw="$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "$NET")"

  mkdir -p "$STATE"
  [[ -s "$STATE/token" ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/token"
  [[ -s "$STATE/password" ]] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/password"
  chmod 600 "$STATE/token" "$STATE/password"
  local pw; pw="$(cat "$STATE/password")"

  say "starting signpost (server + agent) on $NET"
  docker rm -f "$PREFIX-signpost" >/dev/null 2>&1 || true
  # Services publish their ports on the network's gateway address, which
  # both the host and the containers reach; the agent registers that
  # address with each container's dynamic host port.
  docker run -d --name "$PREFIX-signpost" --label "$LABEL" --network "$NET" \
    -v /var/run/docker.sock:/var/run/docker.sock \
    -v "$STATE/token:/token:ro" \
    -p "127.0.0.1:$DNS_PORT:53/udp" -p "127.0.0.1:$DNS_PORT:53/tcp" -p "127.0.0.1:$API_PORT:8080" \
    "$PREFIX/signpost:latest" up \
      --dns 0.0.0.0:53 --http 0.0.0.0:8080 --token-file /token --data-dir /data \
      --node demo-host --advertise-ip "$gw" --only-label "$LABEL" >/dev/null
  local sip
  sip="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$PREFIX-signpost")"

  say "starting two time, two calc and one portal"
  local i
  for i in 1 2; do
    docker rm -f "$PREFIX-time-$i" "$PREFIX-calc-$i" >/dev/null 2>&1 || true
    docker run -d --name "$PREFIX-time-$i" --label "$LABEL" --network "$NET" -p "$gw::8081" \
      -e SERVICE_8081_NAME=_time._tcp -e TIME_USERNAME=demo -e TIME_PASSWORD="$pw" -e INSTANCE_ID=demo-host \
      "$PREFIX/time:latest" >/dev/null
    docker run -d --name "$PREFIX-calc-$i" --label "$LABEL" --network "$NET" -p "$gw::8081" \
      -e SERVICE_8081_NAME=_calc._tcp -e CALC_USERNAME=demo -e CALC_PASSWORD="$pw" -e INSTANCE_ID=demo-host \
      "$PREFIX/calc:latest" >/dev/null
  done
  # The agent serves an instance once its health check passes (it is
  # pending until then): start the portal when both of each are served, so
  # that its first lookups find them all.
  say "waiting for the time and calc instances to pass their health checks"
  local svc n wait_until
  for svc in time calc; do
    wait_until=$((SECONDS + 60))
    until n="$(curl -fsS --max-time 2 "http://127.0.0.1:$API_PORT/v1/services/$svc" 2>/dev/null | grep -o '"status": *"passing"' | wc -l)" && ((n >= 2)); do
      if ((SECONDS > wait_until)); then
        echo "demo: $svc has ${n:-0} passing instances after 60s, want 2" >&2
        docker logs --tail 30 "$PREFIX-signpost" >&2 || true
        exit 1
      fi
      sleep 0.2
    done
  done
  docker rm -f "$PREFIX-portal" >/dev/null 2>&1 || true
  # The portal is published on 127.0.0.1 only, which the agent (in its
  # own container) cannot reach: it is registered with its address on the
  # demo network instead, where the agent's health check reaches it.
  docker run -d --name "$PREFIX-portal" --label "$LABEL" --label signpost.address-mode=container \
    --network "$NET" -p "127.0.0.1:$PORTAL_PORT:8080" \
    -e SERVICE_8080_NAME=portal -e SIGNPOST_DNS="$sip:53" -e INSTANCE_ID=demo-host \
    -e TIME_USERNAME=demo -e TIME_PASSWORD="$pw" -e CALC_USERNAME=demo -e CALC_PASSWORD="$pw" \
    "$PREFIX/portal:latest" >/dev/null

  say "waiting for the portal to answer through signpost"
  local url="http://127.0.0.1:$PORTAL_PORT" deadline=$((SECONDS + 90)) body=""
  until body="$(curl -fsS --max-time 2 "$url/calc/%282%2B6%29%2A3" 2>/dev/null)" && [[ "$body" == *'"value":24'* ]]; do
    if ((SECONDS > deadline)); then
      echo "demo: the portal did not answer /calc/(2+6)*3 within 90s; last answer: ${body:-none}" >&2
      docker logs --tail 30 "$PREFIX-signpost" >&2 || true
      exit 1
    fi
    sleep 0.5
  done

  trap - EXIT
  local env=""
  [[ "$PREFIX" == signpost-demo ]] || env="DEMO_PREFIX=$PREFIX "
  cat <<MSG

signpost demo is up.

  portal:  $url
  try:     curl '$url/calc/%282%2B6%29%2A3'
           dig @127.0.0.1 -p $DNS_PORT _calc._tcp.$ZONE SRV
           dig @127.0.0.1 -p $DNS_PORT _time._tcp.$ZONE SRV
  UI:      http://127.0.0.1:$API_PORT/ui/
  API:     curl http://127.0.0.1:$API_PORT/v1/services
  stop a calc and watch it leave DNS:  docker stop $PREFIX-calc-1
  remove everything:                   ${env}examples/demo/demo.sh down   (or ${env}make demo-clean)
MSG
}

down() {
  say "removing the demo's containers, network and images"
  local ids
  ids="$(docker ps -aq --filter "label=$LABEL")"
  [[ -z "$ids" ]] || docker rm -f $ids >/dev/null
  ids="$(docker network ls -q --filter "label=$LABEL")"
  [[ -z "$ids" ]] || docker network rm $ids >/dev/null
  ids="$(docker images -q --filter "label=$LABEL" | sort -u)"
  [[ -z "$ids" ]] || docker rmi -f $ids >/dev/null
  rm -rf "$STATE"
}

case "${1:-}" in
  up) up ;;
  images) images ;;
  down) down ;;
  *) echo "usage: $0 up|down|images" >&2; exit 2 ;;
esac
