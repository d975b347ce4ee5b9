#!/usr/bin/env bash
# Failover drill on a local kind cluster: install the chart, write under verification, kill the
# primary three ways, and check that a new primary takes over and no acknowledged write is lost.
#
#   k8s/kind/drill.sh
#
# Needs: bash 3.2 or later (macOS's will do), docker, kind, kubectl, helm, curl, awk, and date with
# %N or perl (BSD date has no %N: fractions of a second come from perl then); and a Rust toolchain
# for scripts/build-images. All checked before anything starts.
# Steps:
#   1. create the kind cluster k8s/kind/cluster.yaml (1 control plane + 2 workers), unless it exists;
#      a reused cluster gets a fresh release: the namespace (Lease, claims, pods) is deleted first,
#      so every run starts from new supervisors and an empty Lease;
#   2. build the images (scripts/build-images: zeo-rs/{server,supervisor,app}:dev) and
#      `kind load docker-image` them (nothing is pulled);
#   3. `helm upgrade --install` helm/zeo-rs with k8s/kind/values.yaml, wait for the rollout and for
#      one pod labelled role=primary and one role=standby, run `helm test`;
#   4. four scenarios, each under a zeo-load --verify Job writing through the primary Service
#      (the Job runs on the control-plane node, which is never disturbed), each started at least
#      MIN_FAILOVER_INTERVAL after the last failover (the supervisors refuse a takeover sooner):
#        process   SIGKILL of the primary's zeo-server process. The image is `scratch` (no shell, no
#                  kill), so the drill finds the process's host PID with `crictl inspect` on the
#                  kind node (a docker container) and kills it from the node's PID namespace;
#        pod       kubectl delete pod --force --grace-period=0 of the primary pod;
#        node      `docker kill` (SIGKILL) of the kind node running the primary: no kubelet, no
#                  preStop, no SIGTERM, nothing graceful; started again afterwards;
#        partition `docker network disconnect` of the primary's node from the kind network: the
#                  node and its pods keep running, cut off from the API server and the peer, and
#                  must stop acknowledging on their own; reconnected afterwards (same address);
#      after each: the time until another pod is labelled role=primary, the Lease holder and
#      transitions, and zeo-load's JSON report (lost must be 0), then wait for the pair to heal;
#   5. scale the app Deployment from 1 to 3, write a key through its Service and read it back
#      through each app pod (kubectl port-forward + curl): every pod serves the same data;
#   6. print a report (also in target/drill/report.txt; zeo-load logs beside it).
#
# Knobs (environment): CLUSTER (zeo-drill), NAMESPACE (zeo), RELEASE (zeo), SKIP_BUILD=1 (use
# the images already built), LOAD_DURATION (60s), KILL_AFTER (15, seconds into the load),
# FAILOVER_TIMEOUT (60 s), HEAL_TIMEOUT (300 s), SCENARIOS ("process pod node partition"),
# MIN_FAILOVER_INTERVAL (30, seconds: the supervisors' min_failover_interval, their default),
# DELETE_CLUSTER=1 (delete the cluster at the end; by default it is kept for inspection).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${CLUSTER:-zeo-drill}"
ns="${NAMESPACE:-zeo}"
release="${RELEASE:-zeo}"
tag=dev
load_duration="${LOAD_DURATION:-60s}"
kill_after="${KILL_AFTER:-15}"
failover_timeout="${FAILOVER_TIMEOUT:-60}"
heal_timeout="${HEAL_TIMEOUT:-300}"
min_failover_interval="${MIN_FAILOVER_INTERVAL:-30}"
read -r -a scenarios <<<"${SCENARIOS:-process pod node partition}"
out="$repo/target/drill"
images=(zeo-rs/server zeo-rs/supervisor zeo-rs/app)
server_selector="app.kubernetes.io/instance=$release,app.kubernetes.io/component=server"
app_selector="app.kubernetes.io/instance=$release,app.kubernetes.io/component=app"

# zeo-load's command line, in one place (its flags may still change). The JSON report goes to
# stdout first (pretty-printed, top-level keys indented by two spaces), then the text report.
load_args() { # $1 = storage address
  printf '%s\n' --storage "$1" --duration "$load_duration" --verify --json /dev/stdout
}

log() { printf '[drill %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
# Seconds since the epoch with a fraction: GNU date has %N, BSD date (macOS) prints "N" for it.
if [[ $(date +%N) =~ ^[0-9]+$ ]]; then
  now() { date +%s.%N; }
else
  now() { perl -MTime::HiRes=time -e 'printf "%.3f\n", time'; }
fi
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
k() { kubectl --context "kind-$cluster" -n "$ns" "$@"; }

port_forward=""
cleanup() {
  [[ -z $port_forward ]] || kill "$port_forward" 2>/dev/null || true
  # A node the drill stopped or cut off comes back, whatever happened.
  [[ -z ${stopped_node:-} ]] || docker start "$stopped_node" >/dev/null 2>&1 || true
  [[ -z ${cut_node:-} ]] || docker network connect --ip "$cut_ip" kind "$cut_node" >/dev/null 2>&1 || true
  if [[ ${DELETE_CLUSTER:-0} == 1 ]]; then
    kind delete cluster --name "$cluster" || true
  fi
}
trap cleanup EXIT

# Requirements, all before anything starts.
((BASH_VERSINFO[0] > 3 || (BASH_VERSINFO[0] == 3 && BASH_VERSINFO[1] >= 2))) || die "needs bash 3.2 or later"
for tool in docker kind kubectl helm curl awk; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ $(date +%N) =~ ^[0-9]+$ ]] || command -v perl >/dev/null || die "needs date +%N (GNU) or perl for sub-second times"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info)"
[[ ${SKIP_BUILD:-0} == 1 ]] || command -v cargo >/dev/null || die "cargo is not installed (SKIP_BUILD=1 uses images built before)"
mkdir -p "$out"
report=()

# --- 1-3: cluster, images, install ----------------------------------------------------------------

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "cluster $cluster exists; reusing it, with a fresh release (deleting namespace $ns)"
  kubectl --context "kind-$cluster" delete namespace "$ns" --ignore-not-found --wait=true --timeout=5m
else
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --config "$repo/k8s/kind/cluster.yaml" --wait 5m
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building images (scripts/build-images --tag $tag)"
  "$repo/scripts/build-images" --tag "$tag"
fi
for image in "${images[@]}"; do
  log "kind load docker-image $image:$tag"
  kind load docker-image "$image:$tag" --name "$cluster"
done

log "helm upgrade --install $release"
helm --kube-context "kind-$cluster" upgrade --install "$release" "$repo/helm/zeo-rs" \
  --namespace "$ns" --create-namespace -f "$repo/k8s/kind/values.yaml" --wait --timeout 10m

sts="$(k get statefulset -l "$server_selector" -o jsonpath='{.items[0].metadata.name}')"
app="$(k get deployment -l "$app_selector" -o jsonpath='{.items[0].metadata.name}')"
primary_service="$(k get service -l "$server_selector" -o name | grep -- '-primary$' | cut -d/ -f2)"
primary_port="$(k get service "$primary_service" -o jsonpath='{.spec.ports[0].port}')"
lease="$sts-leader"
storage="$primary_service.$ns.svc:$primary_port"
k rollout status "statefulset/$sts" --timeout=5m
k rollout status "deployment/$app" --timeout=5m

# Pods labelled role=$1, as "name uid" lines.
pods_with_role() {
  k get pods -l "$server_selector,role=$1" \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.uid}{"\n"}{end}'
}

# Waits until exactly one pod is primary and one is standby, both Ready.
wait_healthy() {
  local deadline=$((SECONDS + heal_timeout)) p s ready
  while ((SECONDS < deadline)); do
    p="$(pods_with_role primary | grep -c . || true)"
    s="$(pods_with_role standby | grep -c . || true)"
    ready="$(k get pods -l "$server_selector" \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
    if [[ $p == 1 && $s == 1 && $ready == 2 ]]; then return 0; fi
    sleep 1
  done
  k get pods -l "$server_selector" -L role -o wide >&2 || true
  die "the pair did not become healthy (1 primary, 1 standby, both Ready) within ${heal_timeout}s"
}

log "waiting for one primary and one standby"
wait_healthy
# The supervisors refuse a takeover within min_failover_interval of the last one, the first
# election included: the drill waits it out before each scenario, from when it saw the primary.
last_failover=$SECONDS
wait_out_min_failover_interval() {
  local wait=$((last_failover + min_failover_interval + 2 - SECONDS))
  if ((wait > 0)); then
    log "waiting ${wait}s: min_failover_interval (${min_failover_interval}s) since the last failover"
    sleep "$wait"
  fi
}
log "helm test"
helm --kube-context "kind-$cluster" test "$release" -n "$ns" --logs || die "helm test failed"

# --- 4: failure scenarios ---------------------------------------------------------------------------

lease_field() { k get lease "$lease" -o jsonpath="{.spec.$1}" 2>/dev/null || true; }

start_load() { # $1 = job name
  local args arg
  args=""
  while IFS= read -r arg; do args+="            - \"$arg\""$'\n'; done < <(load_args "$storage")
  k apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $1
  labels:
    app.kubernetes.io/instance: $release
    app.kubernetes.io/component: drill
spec:
  backoffLimit: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: $release
        app.kubernetes.io/component: drill
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      # On the control plane: never stopped by the drill.
      nodeSelector:
        node-role.kubernetes.io/control-plane: ""
      tolerations:
        - key: node-role.kubernetes.io/control-plane
          operator: Exists
          effect: NoSchedule
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: zeo-load
          image: zeo-rs/app:$tag
          imagePullPolicy: Never
          command: [/usr/local/bin/zeo-load]
          args:
$args          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities:
              drop: [ALL]
EOF
}

# Waits for the Job to end; prints "succeeded" or "failed".
wait_job() { # $1 = job name
  local deadline=$((SECONDS + 600)) ok failed
  while ((SECONDS < deadline)); do
    ok="$(k get job "$1" -o jsonpath='{.status.succeeded}')"
    failed="$(k get job "$1" -o jsonpath='{.status.failed}')"
    if [[ ${ok:-0} -ge 1 ]]; then echo succeeded; return 0; fi
    if [[ ${failed:-0} -ge 1 ]]; then echo failed; return 0; fi
    sleep 2
  done
  echo timeout
}

# A top-level number of zeo-load's pretty JSON report ("null" if absent or null).
json_field() { # $1 = file, $2 = key
  local v
  v="$(sed -n "s/^  \"$2\": \([-0-9.][0-9.e+-]*\),\{0,1\}\$/\1/p" "$1" | head -1)"
  echo "${v:-null}"
}

kill_server_process() { # $1 = pod
  local node cid pid
  node="$(k get pod "$1" -o jsonpath='{.spec.nodeName}')"
  cid="$(k get pod "$1" -o jsonpath='{.status.containerStatuses[?(@.name=="server")].containerID}')"
  cid="${cid#*://}"
  # kind node names are their docker container names; crictl is in the node image.
  pid="$(docker exec "$node" crictl inspect --output go-template --template '{{.info.pid}}' "$cid" 2>/dev/null || true)"
  if ! [[ $pid =~ ^[0-9]+$ ]]; then
    pid="$(docker exec "$node" crictl inspect "$cid" | sed -n 's/^ *"pid": \([0-9][0-9]*\),*$/\1/p' | head -1)"
  fi
  [[ $pid =~ ^[0-9]+$ ]] || die "no host PID for container $cid on $node"
  log "SIGKILL zeo-server of $1: host PID $pid on node $node"
  docker exec "$node" kill -9 "$pid"
}

stopped_node=""
cut_node=""
cut_ip=""
run_scenario() { # $1 = process | pod | node | partition
  local scenario="$1" job old old_name old_uid transitions_before t0 new="" took outcome logf lost acked gap
  job="drill-load-$scenario-$(date +%s)"
  logf="$out/$scenario.log"
  wait_healthy
  wait_out_min_failover_interval
  old="$(pods_with_role primary)"
  old_name="${old%% *}"
  old_uid="${old##* }"
  transitions_before="$(lease_field leaseTransitions)"
  log "scenario $scenario: primary is $old_name; starting $job (zeo-load for $load_duration)"
  start_load "$job"
  sleep "$kill_after"

  t0="$(now)"
  case "$scenario" in
    process) kill_server_process "$old_name" ;;
    pod)
      log "force-deleting pod $old_name"
      k delete pod "$old_name" --force --grace-period=0 --wait=false
      ;;
    node)
      stopped_node="$(k get pod "$old_name" -o jsonpath='{.spec.nodeName}')"
      log "docker kill $stopped_node (the primary's node: SIGKILL, no graceful shutdown)"
      docker kill "$stopped_node" >/dev/null
      ;;
    partition)
      cut_node="$(k get pod "$old_name" -o jsonpath='{.spec.nodeName}')"
      cut_ip="$(docker inspect -f '{{with index .NetworkSettings.Networks "kind"}}{{.IPAddress}}{{end}}' "$cut_node")"
      [[ -n $cut_ip ]] || die "$cut_node has no address on the kind network"
      log "docker network disconnect kind $cut_node (the primary's node, $cut_ip: cut off, still running)"
      docker network disconnect kind "$cut_node"
      ;;
    *) die "unknown scenario $scenario" ;;
  esac

  # A new primary: a pod labelled role=primary that is not the old pod (another name, or the
  # same name recreated with another uid).
  local deadline=$((SECONDS + failover_timeout)) line
  while ((SECONDS < deadline)) && [[ -z $new ]]; do
    while read -r line; do
      [[ -n $line && $line != "$old_name $old_uid" ]] && new="${line%% *}"
    done < <(pods_with_role primary)
    [[ -n $new ]] || sleep 0.2
  done
  took="$(seconds_since "$t0")"
  if [[ -z $new ]]; then
    log "scenario $scenario: NO new primary within ${failover_timeout}s"
    took="timeout"
  else
    log "scenario $scenario: $new is primary after ${took}s (lease holder $(lease_field holderIdentity))"
  fi

  outcome="$(wait_job "$job")"
  k logs "job/$job" >"$logf" 2>&1 || true
  lost="$(json_field "$logf" lost)"
  acked="$(json_field "$logf" acknowledged)"
  gap="$(json_field "$logf" max_gap_ms)"
  log "scenario $scenario: zeo-load $outcome, acknowledged $acked, lost $lost, max write gap ${gap} ms"

  if [[ $scenario == node ]]; then
    log "docker start $stopped_node"
    docker start "$stopped_node" >/dev/null
    kubectl --context "kind-$cluster" wait --for=condition=Ready "node/$stopped_node" --timeout=5m
    stopped_node=""
  fi
  if [[ $scenario == partition ]]; then
    log "docker network connect kind $cut_node ($cut_ip)"
    docker network connect --ip "$cut_ip" kind "$cut_node"
    kubectl --context "kind-$cluster" wait --for=condition=Ready "node/$cut_node" --timeout=5m
    cut_node=""
  fi
  [[ -z $new ]] || last_failover=$SECONDS
  log "scenario $scenario: waiting for the pair to heal"
  wait_healthy
  report+=("$(printf '%-8s %-22s %-22s %9s %7s %6s %10s %s' "$scenario" "$old_name" "${new:-none}" "$took" \
    "$acked" "$lost" "$gap" "transitions ${transitions_before:-?}->$(lease_field leaseTransitions), load $outcome")")
  [[ -n $new && $lost == 0 && $outcome == succeeded ]]
}

failures=0
for scenario in "${scenarios[@]}"; do
  run_scenario "$scenario" || failures=$((failures + 1))
done

# --- 5: the app, scaled out, serves the same data from every pod -------------------------------------

# One port-forward at a time (bash 3.2: no negative array indices, so no stack of them).
forward() { # $1 = resource, $2 = local port, $3 = remote port; waits until /livez answers
  k port-forward "$1" "$2:$3" >/dev/null 2>&1 &
  port_forward=$!
  local i
  for i in $(seq 1 50); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$2/livez"; then return 0; fi
    sleep 0.2
  done
  die "port-forward to $1 did not answer ($i tries)"
}
unforward() {
  kill "$port_forward" 2>/dev/null || true
  wait "$port_forward" 2>/dev/null || true
  port_forward=""
}

log "scaling $app to 3 replicas"
k scale "deployment/$app" --replicas=3
k rollout status "deployment/$app" --timeout=5m
key="drill-$(date +%s)"
# A JSON string: its text has one form, whatever the app's serializer does with objects.
value="\"written by the drill as $key\""
app_port="$(k get service "$app" -o jsonpath='{.spec.ports[0].port}')"
forward "service/$app" 18080 "$app_port"
curl -fsS -X PUT -H 'Content-Type: application/json' --data "$value" "http://127.0.0.1:18080/api/kv/$key" >/dev/null \
  || die "PUT /api/kv/$key through the app Service failed"
unforward
app_ok=0
app_pods=0
while read -r pod; do
  app_pods=$((app_pods + 1))
  forward "$pod" 18081 8080
  got="$(curl -fsS "http://127.0.0.1:18081/api/kv/$key" || echo "<error>")"
  unforward
  if [[ $got == "$value" ]]; then
    app_ok=$((app_ok + 1))
    log "$pod serves $key: $got"
  else
    log "$pod serves $key as: $got (expected $value)"
  fi
done < <(k get pods -l "$app_selector" --field-selector=status.phase=Running -o name)
[[ $app_pods -ge 3 && $app_ok == "$app_pods" ]] || failures=$((failures + 1))

# --- 6: report ---------------------------------------------------------------------------------------------

{
  echo "zeo-rs failover drill on kind cluster $cluster ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo "lease $lease, storage $storage, zeo-load $load_duration, kill after ${kill_after}s"
  echo
  printf '%-8s %-22s %-22s %9s %7s %6s %10s %s\n' scenario "old primary" "new primary" failover_s acked lost max_gap_ms notes
  printf '%s\n' "${report[@]}"
  echo
  echo "app: $app_ok of $app_pods pods serve the key written through the Service"
  echo "zeo-load logs: $out/<scenario>.log"
  if ((failures)); then echo "RESULT: FAILED ($failures checks)"; else echo "RESULT: OK"; fi
} | tee "$out/report.txt"
if [[ ${DELETE_CLUSTER:-0} != 1 ]]; then
  log "cluster kept: kind delete cluster --name $cluster"
fi
((failures == 0))
