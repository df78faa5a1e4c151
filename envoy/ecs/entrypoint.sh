#!/usr/bin/env bash
# Entrypoint of the hokusai Envoy sidecar image (envoy/ecs/Dockerfile).
#
#   hokusai-entrypoint [command...]  write the certificates, then run the command (the
#                                    image's CMD: Envoy, as user envoy) and, on SIGTERM or
#                                    SIGINT, stop it gracefully (below)
#   hokusai-entrypoint write-certs   write the certificates and exit (a rotation job)
#   hokusai-entrypoint healthcheck [port]
#                                    exit 0 when Envoy's admin /ready on 127.0.0.1:port
#                                    (default HOKUSAI_ADMIN_PORT) answers 200: Envoy is up
#   hokusai-entrypoint healthcheck-mtls port server-name
#                                    exit 0 when a real mTLS request to the TLS listener on
#                                    127.0.0.1:port gets 200 from /health: the listener
#                                    serves a certificate for server-name that chains to the
#                                    CA bundle, and accepts the sidecar's own certificate as
#                                    a client (CA bundle and CRL in force). The MLflow
#                                    sidecar's ECS health check.
#
# The certificates come from environment variables, which ECS fills from Secrets Manager:
#   HOKUSAI_TLS_CA_BUNDLE                             required: the CA certificate(s) peers
#                                                     must chain to (old + new in a rotation)
#   HOKUSAI_TLS_CRL                                   required: a current CRL from every CA
#                                                     in the bundle (PEM, one after another)
#   HOKUSAI_TLS_SERVER_CERT, HOKUSAI_TLS_SERVER_KEY   the MLflow sidecar's pair; the
#                                                     certificate must allow TLS client use
#                                                     too (healthcheck-mtls presents it)
#   HOKUSAI_TLS_CLIENT_CERT, HOKUSAI_TLS_CLIENT_KEY   a calling service's pair
# At least one pair is required; a certificate without its key (or the reverse) is refused,
# and so is a set Envoy would refuse peers with: a CA without its CRL, a CRL past its
# nextUpdate (Envoy then refuses every client certificate of that CA), a certificate that
# does not chain to the bundle or that the CRL revokes. These checks use openssl.
#
# They land in HOKUSAI_TLS_DIR (default /etc/envoy/tls), the directory the SDS resources in
# /etc/envoy/sds/ point at and Envoy watches, as ca.crt, ca.crl, server.crt/.key,
# client.crt/.key. Each write is atomic as a whole: the files go into a fresh directory
# `..tls.XXXXXX`, and a symlink `..data` is renamed onto it; the stable names are symlinks
# through `..data`. Envoy sees the rename and reloads certificate, key, CA and CRL together,
# so it never pairs a new certificate with an old key. Older sets are removed afterwards.
#
# Keys are written 0600 and never printed. When run as root, the files are given to
# HOKUSAI_TLS_OWNER (default: envoy, the user the official image runs Envoy as; empty:
# leave them to the writer). The certificate variables are removed from the environment
# before Envoy starts.
#
# Graceful stop. ECS sends SIGTERM to this script (PID 1), then SIGKILL once the container's
# stopTimeout has passed. On SIGTERM (or SIGINT) it asks Envoy's admin on
# 127.0.0.1:HOKUSAI_ADMIN_PORT (default 9901) to fail its health checks and to drain
# (`/healthcheck/fail`, `/drain_listeners?graceful`): from then on every response tells its
# caller to close the connection, and the listeners keep accepting for Envoy's
# --drain-time-s (taken from the command line) so callers still on stale DNS get answers,
# then close. It waits until the drain time is over and no request is in flight (a slow
# upload finishes), or until HOKUSAI_STOP_SECONDS (default 25, for ECS's default 30 s
# stopTimeout) have passed, and then stops Envoy with SIGTERM and exits with its status.
set -euo pipefail

TLS_DIR="${HOKUSAI_TLS_DIR:-/etc/envoy/tls}"
OWNER="${HOKUSAI_TLS_OWNER-envoy}"
ADMIN_PORT="${HOKUSAI_ADMIN_PORT:-9901}"
STOP_SECONDS="${HOKUSAI_STOP_SECONDS:-25}"

die() {
  echo "hokusai-entrypoint: $*" >&2
  exit 1
}

say() {
  echo "hokusai-entrypoint: $*" >&2
}

# check_pem NAME VALUE LABEL-REGEX: VALUE must hold a PEM block with that label on a line
# of its own. A value pasted with literal "\n" in it, or a key in the certificate's place,
# fails here, naming the variable, rather than later inside Envoy.
check_pem() {
  local name=$1 value=$2 label=$3
  printf '%s\n' "$value" | tr -d '\r' | grep -Eq "^-----BEGIN ${label}-----\$" ||
    die "$name does not hold a PEM block (BEGIN ${label})"
}

# pem_out VALUE: the value without carriage returns, ending in exactly one newline.
pem_out() {
  printf '%s\n' "$(printf '%s' "$1" | tr -d '\r')"
}

# split_pem FILE LABEL PREFIX: each PEM block with that label in FILE into PREFIX.1.pem,
# PREFIX.2.pem, ...; prints how many.
split_pem() {
  awk -v label="$2" -v prefix="$3" '
    $0 == "-----BEGIN " label "-----" { n++; out = prefix "." n ".pem" }
    out != "" { print > out }
    $0 == "-----END " label "-----" { close(out); out = "" }
    END { print n + 0 }' "$1"
}

# check_set DIR: the set written into DIR, as Envoy will use it. Every CA of the bundle
# needs a CRL it signed that is still current: with a CRL configured, Envoy refuses every
# certificate whose chain has a CA without one, and every certificate of a CA whose CRL
# is past its nextUpdate. Each certificate of the set must chain to the bundle and not be
# revoked; the server certificate must be usable as a client too.
check_set() {
  local dir=$1 work=$1/.check
  command -v openssl >/dev/null || die "openssl is needed to check the certificates (the image has it)"
  mkdir "$work"
  local cas crls now i j found subject next
  cas=$(split_pem "$dir/ca.crt" CERTIFICATE "$work/ca")
  crls=$(split_pem "$dir/ca.crl" "X509 CRL" "$work/crl")
  now=$(date +%s)
  for ((i = 1; i <= cas; i++)); do
    subject=$(openssl x509 -in "$work/ca.$i.pem" -noout -subject -nameopt RFC2253 2>/dev/null) ||
      die "HOKUSAI_TLS_CA_BUNDLE: certificate $i is unreadable"
    subject=${subject#subject=}
    found=""
    for ((j = 1; j <= crls; j++)); do
      if openssl crl -in "$work/crl.$j.pem" -CAfile "$work/ca.$i.pem" -noout 2>&1 | grep -qx "verify OK"; then
        found="$work/crl.$j.pem"
        break
      fi
    done
    [[ -n $found ]] ||
      die "HOKUSAI_TLS_CRL holds no CRL signed by \"$subject\"; every CA in HOKUSAI_TLS_CA_BUNDLE needs one"
    next=$(openssl crl -in "$found" -noout -nextupdate | sed 's/^nextUpdate=//')
    (($(date -d "$next" +%s) > now)) ||
      die "HOKUSAI_TLS_CRL: the CRL of \"$subject\" ran out on $next (its nextUpdate); publish a new one"
  done
  rm -rf "$work"
  local role purpose purposes
  for role in server client; do
    [[ -f $dir/$role.crt ]] || continue
    local var="HOKUSAI_TLS_${role^^}_CERT" out
    purposes=(sslclient)
    [[ $role == client ]] || purposes=(sslserver sslclient)
    for purpose in "${purposes[@]}"; do
      out=$(openssl verify -crl_check_all -CAfile "$dir/ca.crt" -CRLfile "$dir/ca.crl" \
        -purpose "$purpose" "$dir/$role.crt" 2>&1) && continue
      case $out in
        *"certificate revoked"*) die "$var is revoked by HOKUSAI_TLS_CRL" ;;
        *"unsuitable certificate purpose"*)
          [[ $purpose == sslclient ]] || die "$var is not a TLS server certificate (extendedKeyUsage serverAuth)"
          [[ $role == client ]] || die "$var does not allow TLS client use (extendedKeyUsage needs clientAuth as well as serverAuth: healthcheck-mtls presents it)"
          die "$var is not a TLS client certificate (extendedKeyUsage clientAuth)" ;;
        *) die "$var does not verify against HOKUSAI_TLS_CA_BUNDLE and HOKUSAI_TLS_CRL: $(grep -m1 '^error' <<<"$out" || echo "${out##*$'\n'}")" ;;
      esac
    done
  done
}

write_certs() {
  local ca="${HOKUSAI_TLS_CA_BUNDLE:-}" crl="${HOKUSAI_TLS_CRL:-}"
  local server_cert="${HOKUSAI_TLS_SERVER_CERT:-}" server_key="${HOKUSAI_TLS_SERVER_KEY:-}"
  local client_cert="${HOKUSAI_TLS_CLIENT_CERT:-}" client_key="${HOKUSAI_TLS_CLIENT_KEY:-}"

  [[ -n $ca ]] || die "HOKUSAI_TLS_CA_BUNDLE is empty or not set"
  check_pem HOKUSAI_TLS_CA_BUNDLE "$ca" CERTIFICATE
  local pairs=0 role
  for role in SERVER CLIENT; do
    local cert_var="HOKUSAI_TLS_${role}_CERT" key_var="HOKUSAI_TLS_${role}_KEY"
    local cert="${!cert_var:-}" key="${!key_var:-}"
    if [[ -z $cert && -z $key ]]; then continue; fi
    [[ -n $cert ]] || die "$key_var is set but $cert_var is not"
    [[ -n $key ]] || die "$cert_var is set but $key_var is not"
    check_pem "$cert_var" "$cert" CERTIFICATE
    check_pem "$key_var" "$key" '(RSA |EC )?PRIVATE KEY'
    pairs=$((pairs + 1))
  done
  ((pairs > 0)) || die "no certificate pair: set HOKUSAI_TLS_SERVER_CERT/_KEY or HOKUSAI_TLS_CLIENT_CERT/_KEY"
  [[ -n $crl ]] || die "HOKUSAI_TLS_CRL is empty or not set (a CRL from every CA in the bundle)"
  check_pem HOKUSAI_TLS_CRL "$crl" 'X509 CRL'

  mkdir -p "$TLS_DIR"
  # The new set, complete, in a directory nobody reads yet; removed again if anything below
  # fails, so the current set stays in use.
  local new
  new="$(mktemp -d "$TLS_DIR/..tls.XXXXXX")"
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf -- '$new'" EXIT
  local names=(ca.crt ca.crl)
  [[ -z $server_cert ]] || names+=(server.crt server.key)
  [[ -z $client_cert ]] || names+=(client.crt client.key)
  (
    umask 077
    pem_out "$ca" >"$new/ca.crt"
    pem_out "$crl" >"$new/ca.crl"
    if [[ -n $server_cert ]]; then
      pem_out "$server_cert" >"$new/server.crt"
      pem_out "$server_key" >"$new/server.key"
    fi
    if [[ -n $client_cert ]]; then
      pem_out "$client_cert" >"$new/client.crt"
      pem_out "$client_key" >"$new/client.key"
    fi
  )
  check_set "$new"
  chmod 0644 "$new"/*.crt "$new/ca.crl"
  chmod 0600 "$new"/*.key
  chmod 0755 "$new"
  if [[ -n $OWNER && $(id -u) == 0 ]]; then
    chown -R "$OWNER:" "$new" || die "cannot give $new to user $OWNER (HOKUSAI_TLS_OWNER)"
  fi

  # Stable names first (through ..data; a new one dangles until the switch), so that the
  # switch below is the one change Envoy sees, with every name already in place.
  local name
  for name in "${names[@]}"; do
    if [[ $(readlink "$TLS_DIR/$name" 2>/dev/null) != "..data/$name" ]]; then
      ln -sfn "..data/$name" "$TLS_DIR/$name.tmp"
      mv -Tf "$TLS_DIR/$name.tmp" "$TLS_DIR/$name"
    fi
  done

  # The switch: one rename(2) of a symlink, so readers see the old set or the new one.
  ln -sfn "$(basename "$new")" "$TLS_DIR/..data.tmp"
  mv -Tf "$TLS_DIR/..data.tmp" "$TLS_DIR/..data"
  trap - EXIT

  # Earlier sets: nothing points at them any more.
  local old
  for old in "$TLS_DIR"/..tls.*; do
    [[ $old == "$new" || ! -d $old ]] || rm -rf -- "$old"
  done
  say "wrote $(cd "$new" && echo *) to $TLS_DIR ($(basename "$new"))"
}

# admin_request METHOD PATH: one HTTP/1.1 request to Envoy's admin on loopback, over bash's
# /dev/tcp (the official image has no curl). Sets ADMIN_STATUS (the status line) and
# ADMIN_BODY (Envoy answers /stats chunked). Returns 1 when nothing answers.
admin_request() {
  local method=$1 path=$2 fd line size chunk length=""
  ADMIN_STATUS="" ADMIN_BODY=""
  { exec {fd}<>"/dev/tcp/127.0.0.1/$ADMIN_PORT"; } 2>/dev/null || return 1
  printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' \
    "$method" "$path" >&"$fd"
  if ! IFS= read -r -t 5 ADMIN_STATUS <&"$fd"; then
    exec {fd}>&-
    return 1
  fi
  ADMIN_STATUS=${ADMIN_STATUS%$'\r'}
  local chunked=""
  while IFS= read -r -t 5 line <&"$fd"; do
    line=${line%$'\r'}
    [[ -n $line ]] || break
    case ${line,,} in
      "transfer-encoding: chunked") chunked=1 ;;
      content-length:*) length=${line#*: } ;;
    esac
  done
  # Byte counts, not characters.
  local LC_ALL=C
  if [[ -n $chunked ]]; then
    while IFS= read -r -t 5 size <&"$fd"; do
      size=$((16#${size%$'\r'}))
      ((size > 0)) || break
      IFS= read -r -t 5 -N "$size" chunk <&"$fd" || break
      ADMIN_BODY+=$chunk
      IFS= read -r -t 5 line <&"$fd" || break
    done
  elif [[ -n $length && $length -gt 0 ]]; then
    IFS= read -r -t 5 -N "$length" ADMIN_BODY <&"$fd" || true
  fi
  exec {fd}>&-
}

# Requests in flight on Envoy's listeners (the admin's own excluded); empty when unknown.
requests_in_flight() {
  admin_request GET '/stats?filter=%5Ehttp%5C.%5B%5E.%5D%2B%5C.downstream_rq_active%24' || return 0
  [[ $ADMIN_STATUS == "HTTP/1.1 200 "* ]] || return 0
  awk -F': ' '$1 !~ /^http\.admin\./ { n += $2 } END { print n + 0 }' <<<"$ADMIN_BODY"
}

# Envoy's --drain-time-s in a command line; Envoy's default (600) when absent.
drain_seconds() {
  local want=""
  for arg in "$@"; do
    if [[ -n $want ]]; then
      echo "$arg"
      return
    fi
    case $arg in
      --drain-time-s) want=1 ;;
      --drain-time-s=*) echo "${arg#*=}" && return ;;
    esac
  done
  echo 600
}

CHILD=""
DRAIN_SECONDS=600
STOPPING=""

# Milliseconds on a monotonic-enough clock: bash's EPOCHREALTIME (SECONDS counts whole
# seconds from the shell's start, so a drain could end up to a second early).
now_ms() {
  local t=${EPOCHREALTIME:-}
  if [[ $t =~ ^([0-9]+)[.,]([0-9]{3}) ]]; then
    echo $((BASH_REMATCH[1] * 1000 + 10#${BASH_REMATCH[2]}))
  else
    echo $((SECONDS * 1000))
  fi
}

stop_gracefully() {
  # A second signal while draining stops Envoy at once.
  if [[ -n $STOPPING ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    return 0
  fi
  STOPPING=1
  local start elapsed active
  start=$(now_ms)
  say "stopping: Envoy stops taking new connections after ${DRAIN_SECONDS}s and is stopped once nothing is in flight (at most ${STOP_SECONDS}s)"
  admin_request POST /healthcheck/fail || say "admin on 127.0.0.1:$ADMIN_PORT did not answer /healthcheck/fail"
  admin_request POST '/drain_listeners?graceful' || say "admin on 127.0.0.1:$ADMIN_PORT did not answer /drain_listeners"
  while kill -0 "$CHILD" 2>/dev/null; do
    elapsed=$(($(now_ms) - start))
    active=$(requests_in_flight)
    if ((elapsed >= DRAIN_SECONDS * 1000)) && [[ $active == 0 ]]; then
      say "drained after $((elapsed / 1000)).$((elapsed % 1000 / 100))s: listeners closed, no request in flight"
      break
    fi
    if ((elapsed >= STOP_SECONDS * 1000)); then
      say "stop budget of ${STOP_SECONDS}s spent with ${active:-unknown} request(s) in flight: stopping Envoy now"
      break
    fi
    sleep 0.2
  done
  kill -TERM "$CHILD" 2>/dev/null || true
}

# Runs the command as a child, so that SIGTERM reaches this script first.
run() {
  DRAIN_SECONDS=$(drain_seconds "$@")
  [[ $DRAIN_SECONDS =~ ^[0-9]+$ && $STOP_SECONDS =~ ^[0-9]+$ ]] ||
    die "--drain-time-s ($DRAIN_SECONDS) and HOKUSAI_STOP_SECONDS ($STOP_SECONDS) must be whole seconds"
  ((DRAIN_SECONDS < STOP_SECONDS)) ||
    say "warning: --drain-time-s ${DRAIN_SECONDS} is not below HOKUSAI_STOP_SECONDS ${STOP_SECONDS}: a stop always takes the whole budget"
  trap stop_gracefully TERM INT
  "$@" &
  CHILD=$!
  local status=0
  while :; do
    # Returns early (above 128) when a signal arrives; the trap has run by then.
    wait "$CHILD" && status=0 || status=$?
    kill -0 "$CHILD" 2>/dev/null || break
  done
  exit "$status"
}

healthcheck() {
  local port="${1:-$ADMIN_PORT}" status
  # HTTP/1.1, since Envoy refuses 1.0.
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null ||
    { echo "hokusai-entrypoint: nothing listens on 127.0.0.1:$port" >&2; exit 1; }
  printf 'GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 5 status <&3 || { echo "hokusai-entrypoint: no answer from /ready" >&2; exit 1; }
  [[ $status == "HTTP/1.1 200 "* ]] || { echo "hokusai-entrypoint: /ready: ${status%$'\r'}" >&2; exit 1; }
}

healthcheck_mtls() {
  local port=${1:-} name=${2:-} file
  [[ -n $port && -n $name ]] || die "usage: healthcheck-mtls PORT SERVER-NAME"
  for file in ca.crt server.crt server.key; do
    [[ -r $TLS_DIR/$file ]] || die "healthcheck-mtls: no $file in $TLS_DIR"
  done
  local errors status
  errors="$(mktemp)"
  # shellcheck disable=SC2064 # expand now
  trap "rm -f '$errors'" EXIT
  # openssl checks the served certificate (chain to the bundle, the name) and presents the
  # sidecar's own; Envoy checks that one against the bundle and the CRL.
  status=$(printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$name" |
    timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername "$name" \
      -verify_hostname "$name" -verify_return_error -CAfile "$TLS_DIR/ca.crt" \
      -cert "$TLS_DIR/server.crt" -key "$TLS_DIR/server.key" -quiet 2>"$errors" | head -n 1) || true
  status=${status%$'\r'}
  [[ $status == "HTTP/1.1 200 "* ]] && return 0
  echo "hokusai-entrypoint: mTLS GET /health on 127.0.0.1:$port as $name: ${status:-no response}" \
    "$(grep -m1 -iE 'error|alert' "$errors" || true)" >&2
  exit 1
}

case "${1:-}" in
  write-certs)
    write_certs
    ;;
  healthcheck)
    shift
    healthcheck "$@"
    ;;
  healthcheck-mtls)
    shift
    healthcheck_mtls "$@"
    ;;
  "")
    die "no command to run (the image's CMD starts Envoy)"
    ;;
  *)
    write_certs
    unset HOKUSAI_TLS_CA_BUNDLE HOKUSAI_TLS_CRL HOKUSAI_TLS_SERVER_CERT HOKUSAI_TLS_SERVER_KEY \
      HOKUSAI_TLS_CLIENT_CERT HOKUSAI_TLS_CLIENT_KEY
    run "$@"
    ;;
esac
