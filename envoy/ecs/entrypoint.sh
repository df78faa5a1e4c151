#!/usr/bin/env bash
# Entrypoint of the hokusai Envoy sidecar image (envoy/ecs/Dockerfile).
#
#   hokusai-entrypoint [command...]  write the certificates, then exec the command
#                                    (the image's CMD: Envoy, as user envoy)
#   hokusai-entrypoint write-certs   write the certificates and exit (a rotation job)
#   hokusai-entrypoint healthcheck [port]
#                                    exit 0 when Envoy's admin /ready on 127.0.0.1:port
#                                    (default 9901) answers 200; the ECS health check
#
# The certificates come from environment variables, which ECS fills from Secrets Manager:
#   HOKUSAI_TLS_CA_BUNDLE                             required: the CA certificate(s) peers
#                                                     must chain to (old + new in a rotation)
#   HOKUSAI_TLS_SERVER_CERT, HOKUSAI_TLS_SERVER_KEY   the MLflow sidecar's pair
#   HOKUSAI_TLS_CLIENT_CERT, HOKUSAI_TLS_CLIENT_KEY   a calling service's pair
# At least one pair is required; a certificate without its key (or the reverse) is refused.
# The MLflow sidecar's browser sign-in (oauth2 filter) also needs, both or neither:
#   HOKUSAI_OAUTH_CLIENT_SECRET                       the OIDC client secret
#   HOKUSAI_OAUTH_HMAC_SECRET                         the key of the session cookies (the same
#                                                     in every task)
# each one line of at least 16 printable characters, written as oauth-client-secret and
# oauth-hmac (0600, no trailing newline: Envoy reads the whole file as the secret).
#
# They land in HOKUSAI_TLS_DIR (default /etc/envoy/tls), the directory the SDS resources in
# /etc/envoy/sds/ point at and Envoy watches, as ca.crt, server.crt/.key, client.crt/.key.
# Each write is atomic as a whole: the files go into a fresh directory `..tls.XXXXXX`, and
# a symlink `..data` is renamed onto it; the stable names are symlinks through `..data`.
# Envoy sees the rename and reloads certificate, key and CA together, so it never pairs a
# new certificate with an old key. Older sets are removed afterwards.
#
# Keys are written 0600 and never printed. When run as root, the files are given to
# HOKUSAI_TLS_OWNER (default: envoy, the user the official image runs Envoy as; empty:
# leave them to the writer). The certificate variables are removed from the environment
# before Envoy starts.
set -euo pipefail

TLS_DIR="${HOKUSAI_TLS_DIR:-/etc/envoy/tls}"
OWNER="${HOKUSAI_TLS_OWNER-envoy}"

die() {
  echo "hokusai-entrypoint: $*" >&2
  exit 1
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

write_certs() {
  local ca="${HOKUSAI_TLS_CA_BUNDLE:-}"
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
  local oauth_secret="${HOKUSAI_OAUTH_CLIENT_SECRET:-}" oauth_hmac="${HOKUSAI_OAUTH_HMAC_SECRET:-}"
  if [[ -n $oauth_secret || -n $oauth_hmac ]]; then
    [[ -n $oauth_secret ]] || die "HOKUSAI_OAUTH_HMAC_SECRET is set but HOKUSAI_OAUTH_CLIENT_SECRET is not"
    [[ -n $oauth_hmac ]] || die "HOKUSAI_OAUTH_CLIENT_SECRET is set but HOKUSAI_OAUTH_HMAC_SECRET is not"
    local var
    for var in HOKUSAI_OAUTH_CLIENT_SECRET HOKUSAI_OAUTH_HMAC_SECRET; do
      [[ ${!var} =~ ^[[:graph:]]{16,}$ ]] ||
        die "$var must be one line of at least 16 printable characters, no spaces"
    done
  fi

  mkdir -p "$TLS_DIR"
  # The new set, complete, in a directory nobody reads yet.
  local new
  new="$(mktemp -d "$TLS_DIR/..tls.XXXXXX")"
  (
    umask 077
    local names=(ca.crt)
    pem_out "$ca" >"$new/ca.crt"
    if [[ -n $server_cert ]]; then
      pem_out "$server_cert" >"$new/server.crt"
      pem_out "$server_key" >"$new/server.key"
      names+=(server.crt server.key)
    fi
    if [[ -n $client_cert ]]; then
      pem_out "$client_cert" >"$new/client.crt"
      pem_out "$client_key" >"$new/client.key"
      names+=(client.crt client.key)
    fi
    if [[ -n $oauth_secret ]]; then
      printf '%s' "$oauth_secret" >"$new/oauth-client-secret"
      printf '%s' "$oauth_hmac" >"$new/oauth-hmac"
      chmod 0600 "$new/oauth-client-secret" "$new/oauth-hmac"
      names+=(oauth-client-secret oauth-hmac)
    fi
    chmod 0644 "$new"/*.crt
    chmod 0600 "$new"/*.key
    chmod 0755 "$new"
    if [[ -n $OWNER && $(id -u) == 0 ]]; then
      chown -R "$OWNER:" "$new" || die "cannot give $new to user $OWNER (HOKUSAI_TLS_OWNER)"
    fi

    # The switch: one rename(2) of a symlink, so readers see the old set or the new one.
    local base
    base="$(basename "$new")"
    ln -sfn "$base" "$TLS_DIR/..data.tmp"
    mv -Tf "$TLS_DIR/..data.tmp" "$TLS_DIR/..data"

    # Stable names, made once (they point through ..data, so they never change again).
    local name
    for name in "${names[@]}"; do
      if [[ $(readlink "$TLS_DIR/$name" 2>/dev/null) != "..data/$name" ]]; then
        ln -sfn "..data/$name" "$TLS_DIR/$name.tmp"
        mv -Tf "$TLS_DIR/$name.tmp" "$TLS_DIR/$name"
      fi
    done

    # Earlier sets: nothing points at them any more.
    local old
    for old in "$TLS_DIR"/..tls.*; do
      [[ $old == "$new" || ! -d $old ]] || rm -rf -- "$old"
    done
  )
  echo "hokusai-entrypoint: wrote $(cd "$new" && echo *) to $TLS_DIR ($(basename "$new"))" >&2
}

healthcheck() {
  local port="${1:-9901}" status
  # bash's /dev/tcp: the official image has no curl. HTTP/1.1, since Envoy refuses 1.0.
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null ||
    { echo "hokusai-entrypoint: nothing listens on 127.0.0.1:$port" >&2; exit 1; }
  printf 'GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 5 status <&3 || { echo "hokusai-entrypoint: no answer from /ready" >&2; exit 1; }
  [[ $status == "HTTP/1.1 200 "* ]] || { echo "hokusai-entrypoint: /ready: ${status%$'\r'}" >&2; exit 1; }
}

case "${1:-}" in
  write-certs)
    write_certs
    ;;
  healthcheck)
    shift
    healthcheck "$@"
    ;;
  "")
    die "no command to run (the image's CMD starts Envoy)"
    ;;
  *)
    write_certs
    unset HOKUSAI_TLS_CA_BUNDLE HOKUSAI_TLS_SERVER_CERT HOKUSAI_TLS_SERVER_KEY \
      HOKUSAI_TLS_CLIENT_CERT HOKUSAI_TLS_CLIENT_KEY \
      HOKUSAI_OAUTH_CLIENT_SECRET HOKUSAI_OAUTH_HMAC_SECRET
    exec "$@"
    ;;
esac
