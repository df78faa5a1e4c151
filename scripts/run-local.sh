#!/usr/bin/env bash
# Starts the local stack behind `make run`: dev auth service (:8000), MLflow (:5000) and
# Envoy with the filter (:10000 plain, :10443 TLS, admin :9901), then tails Envoy's
# access log until Ctrl-C, which stops everything this script started.
#
# Expects what `make run` provides first: .venv (venv), the .wasm (build), certs/ (certs).
# State (MLflow's sqlite db, artifacts, logs) lives in .run/, which git ignores.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
WASM=target/wasm32-wasip1/release/hokusai_auth_filter.wasm
RUN=.run
# The dev auth service checks this token on every validate call and the filter sends it
# (envoy.yaml forwards the variable into the VM), so the local chain has the same
# service-to-service authentication as production.
export HOKUSAI_AUTH_SERVICE_TOKEN="${HOKUSAI_AUTH_SERVICE_TOKEN:-hk_dev_service_token}"

die() { echo "run-local: $*" >&2; exit 1; }

for f in "$VENV/bin/envoy" "$VENV/bin/mlflow" "$WASM" certs/ca.crt certs/ca.crl certs/server.crt certs/client.pem \
  certs/jwks.json certs/jwt-signing.key; do
  [[ -e $f ]] || die "$f is missing; run 'make run' (it builds the venv, the filter and the certs first)"
done

# Refuse to start over something already listening: the curl lines below would talk to it.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8000 5000 10000 10443 9901; do
  port_busy "$port" && die "127.0.0.1:$port is already in use; stop whatever listens there first"
done

echo "run-local: building the dev auth service"
cargo build --quiet --release -p hokusai-devstack --bin dev-auth-service
mkdir -p "$RUN/artifacts"

# start, stop_all, stop_on_exit, follow: the services and their cleanup.
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
stop_on_exit

# wait_for name pid tries probe...: polls the probe every 0.25 s; fails early if the
# process died, and after `tries` attempts, showing the end of its log either way.
wait_for() {
  local name=$1 pid=$2 log=$3 tries=$4
  shift 4
  for _ in $(seq "$tries"); do
    "$@" && { echo "run-local: $name is ready"; return 0; }
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "$name exited; log: $log"; }
    sleep 0.25
  done
  tail -n 30 "$log" >&2
  die "$name did not become ready; log: $log"
}
http_up() { curl -s -o /dev/null --max-time 1 "$1"; } # any HTTP answer counts
http_ok() { curl -sf -o /dev/null --max-time 2 "$1"; }

DEV_AUTH="${CARGO_TARGET_DIR:-target}/release/dev-auth-service"
# --jwt-key: it also plays the login service (JWKS, dev login) with the key whose public
# half Envoy trusts (certs/jwks.json).
start auth-service "$RUN/auth-service.log" "$RUN/auth-service.log" \
  "$DEV_AUTH" --listen 127.0.0.1:8000 --keys devstack/dev-keys.json \
  --control --service-token-env HOKUSAI_AUTH_SERVICE_TOKEN --jwt-key certs/jwt-signing.key
wait_for auth-service "${PGIDS[-1]}" "$RUN/auth-service.log" 80 http_up http://127.0.0.1:8000/

# Job execution off: 2 processes (~0.5 GB) instead of ~9; nothing here needs MLflow jobs.
start mlflow "$RUN/mlflow.log" "$RUN/mlflow.log" env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  "$VENV/bin/mlflow" server --host 127.0.0.1 --port 5000 \
  --backend-store-uri "sqlite:///$RUN/mlflow.db" --artifacts-destination "$RUN/artifacts"
echo "run-local: waiting for MLflow (7-15 s, longer on a busy machine)"
wait_for mlflow "${PGIDS[-1]}" "$RUN/mlflow.log" 480 http_ok http://127.0.0.1:5000/health

# Envoy's stdout is the access log; its own diagnostics go to envoy.log.
# No hot restart here, so nothing is left behind in /dev/shm.
start envoy "$RUN/access.log" "$RUN/envoy.log" "$VENV/bin/envoy" -c envoy/envoy.yaml --disable-hot-restart
wait_for envoy "${PGIDS[-1]}" "$RUN/envoy.log" 80 http_ok http://127.0.0.1:9901/ready

cat <<EOF

Local stack is up. Logs: $RUN/{auth-service,mlflow,envoy}.log; Envoy's access log follows below.

# internal service: mTLS with the allow-listed client certificate, no API key (-> 200)
curl --cacert certs/ca.crt --cert certs/client.crt --key certs/client.key \\
  'https://localhost:10443/api/2.0/mlflow/experiments/search?max_results=5'

# the same identity on a revoked certificate (certs/ca.crl): refused at the handshake
curl --cacert certs/ca.crt --cert certs/revoked-client.crt --key certs/revoked-client.key \\
  'https://localhost:10443/api/2.0/mlflow/experiments/search?max_results=5'

# external client: API key on the plain listener (-> 200)
curl -H 'Authorization: Bearer hk_dev_readwrite_0001' \\
  'http://127.0.0.1:10000/api/2.0/mlflow/experiments/search?max_results=5'

# external user: a dev JWT (minted on the spot, 1 h), verified by Envoy's jwt_authn
curl -H "Authorization: Bearer \$($DEV_AUTH mint --sub user_123 --scopes 'mlflow:read mlflow:write')" \\
  'http://127.0.0.1:10000/api/2.0/mlflow/experiments/search?max_results=5'

# no API key (-> 401)
curl -i 'http://127.0.0.1:10000/api/2.0/mlflow/experiments/search?max_results=5'

# MLflow client, external path (API key)
MLFLOW_TRACKING_URI=http://127.0.0.1:10000/api/mlflow MLFLOW_TRACKING_TOKEN=hk_dev_readwrite_0001 \\
  $VENV/bin/python -c 'import mlflow; print(mlflow.search_experiments())'

# MLflow client, external path (a user's JWT)
MLFLOW_TRACKING_URI=http://127.0.0.1:10000/api/mlflow \\
  MLFLOW_TRACKING_TOKEN=\$($DEV_AUTH mint --sub user_123 --scopes 'mlflow:read mlflow:write') \\
  $VENV/bin/python -c 'import mlflow; print(mlflow.search_experiments())'

# MLflow client, internal path (client certificate)
MLFLOW_TRACKING_URI=https://localhost:10443 MLFLOW_TRACKING_CLIENT_CERT_PATH=certs/client.pem \\
  MLFLOW_TRACKING_SERVER_CERT_PATH=certs/ca.crt \\
  $VENV/bin/python -c 'import mlflow; print(mlflow.search_experiments())'

Ctrl-C stops everything.
EOF

# Follow the access log until Ctrl-C (or until Envoy dies, or our output's reader does);
# the EXIT trap then stops everything, tail included.
follow "$RUN/access.log" "${PGIDS[-1]}"
