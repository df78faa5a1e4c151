#!/usr/bin/env bash
# Writes three sets next to this script:
#   the development PKI (CONTRACT section 3): ca.crt/.key, server.crt/.key,
#     client.crt/.key/.pem, unlisted-client.crt/.key, rogue-client.crt/.key,
#     expired-client.crt/.key, and revoked-client.crt/.key (client.crt's identity,
#     revoked in ca.crl)
#   the dev CA's revocation list: ca.crl (PEM, what Envoy's validation contexts load)
#     and crl-index.txt (openssl ca's database of what is revoked: the CRL's source)
#   the dev login service's JWT signing key: jwt-signing.key (EC P-256, for ES256)
#     and jwks.json (its public half as a JWKS, kid = RFC 7638 thumbprint), which
#     Envoy's jwt_authn reads
# Idempotent: a complete, valid set is left alone (so a running Envoy keeps
# working); anything missing, wrong or close to expiry regenerates that set (a new
# PKI also means a new CRL). `--force` always regenerates all three; `--list` prints
# every file it writes (the Makefile's targets); `--revoke FILE.crt` adds a
# certificate of the dev CA to the CRL (`make revoke CERT=...`). Needs only bash,
# coreutils and openssl (1.1 or 3.x).
set -euo pipefail

MODE=${1:-}
REVOKE=""
if [[ $MODE == --revoke ]]; then
  [[ -n ${2:-} ]] || { echo "usage: $0 --revoke FILE.crt" >&2; exit 2; }
  [[ -r $2 ]] || { echo "certs: cannot read $2" >&2; exit 2; }
  REVOKE="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
fi

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

CA_CN="Hokusai MLflow CA"
SERVER_CN="mlflow.hokusai-development.local"
CLIENT_CN="hokusai-api-client"
CLIENT_URI="spiffe://hokusai.internal/ns/development/sa/hokusai-api"
NOTEBOOK_CN="hokusai-notebook"
NOTEBOOK_URI="spiffe://hokusai.internal/ns/development/sa/notebook"

FILES=(ca.crt ca.key server.crt server.key client.crt client.key client.pem
  unlisted-client.crt unlisted-client.key rogue-client.crt rogue-client.key
  expired-client.crt expired-client.key revoked-client.crt revoked-client.key)
CRL_FILES=(ca.crl crl-index.txt)
JWT_FILES=(jwt-signing.key jwks.json)
# The dev CRL lives as long as the leaves; `make certs` renews it a day before it runs out.
CRL_DAYS=825

if [[ $MODE == --list ]]; then
  echo "${FILES[*]} ${CRL_FILES[*]} ${JWT_FILES[*]}"
  exit 0
fi

log() { echo "certs: $*"; }

subject_cn() { openssl x509 -in "$1" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p'; }

# openssl verify prints "<file>: OK" on success; anything else is a failure.
verifies() { openssl verify -CAfile "$1" ${3:+-purpose "$3"} "$2" 2>&1 | grep -qx "$2: OK"; }

verify_error() { openssl verify -CAfile "$1" "$2" 2>&1 || true; }

# Everything a consumer relies on, checked against the files in the current directory.
check_set() {
  local f
  for f in "${FILES[@]}"; do [[ -s $f ]] || { echo "missing $f"; return 1; }; done
  for f in ca server client unlisted-client rogue-client revoked-client; do
    openssl x509 -in "$f.crt" -noout -checkend 86400 >/dev/null ||
      { echo "$f.crt is unreadable or expires within a day"; return 1; }
  done
  for f in ca server client unlisted-client rogue-client expired-client revoked-client; do
    # The key must belong to the certificate.
    [[ $(openssl x509 -in "$f.crt" -noout -pubkey) == $(openssl pkey -in "$f.key" -pubout) ]] ||
      { echo "$f.key does not match $f.crt"; return 1; }
  done
  [[ $(subject_cn ca.crt) == "$CA_CN" ]] || { echo "ca.crt has the wrong CN"; return 1; }
  [[ $(subject_cn server.crt) == "$SERVER_CN" ]] || { echo "server.crt has the wrong CN"; return 1; }
  [[ $(subject_cn client.crt) == "$CLIENT_CN" ]] || { echo "client.crt has the wrong CN"; return 1; }
  [[ $(subject_cn unlisted-client.crt) == "$NOTEBOOK_CN" ]] || { echo "unlisted-client.crt has the wrong CN"; return 1; }
  [[ $(subject_cn rogue-client.crt) == "$CLIENT_CN" ]] || { echo "rogue-client.crt has the wrong CN"; return 1; }
  [[ $(subject_cn expired-client.crt) == "$CLIENT_CN" ]] || { echo "expired-client.crt has the wrong CN"; return 1; }
  [[ $(subject_cn revoked-client.crt) == "$CLIENT_CN" ]] || { echo "revoked-client.crt has the wrong CN"; return 1; }
  openssl x509 -in server.crt -noout -text | grep -q "DNS:$SERVER_CN, DNS:localhost, IP Address:127.0.0.1" ||
    { echo "server.crt has the wrong SANs"; return 1; }
  for f in client rogue-client expired-client revoked-client; do
    openssl x509 -in "$f.crt" -noout -text | grep -q "URI:$CLIENT_URI" || { echo "$f.crt lacks its URI SAN"; return 1; }
  done
  openssl x509 -in unlisted-client.crt -noout -text | grep -q "URI:$NOTEBOOK_URI" ||
    { echo "unlisted-client.crt lacks its URI SAN"; return 1; }
  verifies ca.crt server.crt sslserver || { echo "server.crt does not verify as a TLS server"; return 1; }
  # The ECS sidecar's health check presents the server certificate as a client (docs/deployment.md).
  verifies ca.crt server.crt sslclient || { echo "server.crt does not verify as a TLS client"; return 1; }
  verifies ca.crt client.crt sslclient || { echo "client.crt does not verify as a TLS client"; return 1; }
  verifies ca.crt unlisted-client.crt sslclient || { echo "unlisted-client.crt does not verify"; return 1; }
  verifies ca.crt revoked-client.crt sslclient || { echo "revoked-client.crt does not verify"; return 1; }
  verify_error ca.crt expired-client.crt | grep -q "certificate has expired" ||
    { echo "expired-client.crt is not rejected as expired"; return 1; }
  verify_error ca.crt rogue-client.crt | grep -q "unable to get local issuer certificate" ||
    { echo "rogue-client.crt is not rejected as untrusted"; return 1; }
  [[ $(cat client.crt client.key) == "$(cat client.pem)" ]] || { echo "client.pem is not client.crt + client.key"; return 1; }
}

# Serial numbers (upper-case hex) of the certificates crl-index.txt marks revoked.
revoked_serials() { awk -F'\t' '$1 == "R" { print toupper($4) }' crl-index.txt; }

# The CRL, checked against the PKI in the current directory: signed by ca.crt, a day or
# more before its nextUpdate, listing exactly what crl-index.txt revokes (revoked-client
# among them), and client.crt still good.
check_crl() {
  local f
  for f in "${CRL_FILES[@]}"; do [[ -s $f ]] || { echo "missing $f"; return 1; }; done
  openssl crl -in ca.crl -CAfile ca.crt -noout 2>&1 | grep -qx "verify OK" ||
    { echo "ca.crl is not a CRL signed by ca.crt"; return 1; }
  local next
  next=$(openssl crl -in ca.crl -noout -nextupdate | sed 's/^nextUpdate=//')
  (($(date -d "$next" +%s) > $(date +%s) + 86400)) || { echo "ca.crl runs out within a day"; return 1; }
  local listed wanted
  listed=$(openssl crl -in ca.crl -noout -text | sed -n 's/^ *Serial Number: *//p' | tr 'a-f' 'A-F' | sort)
  wanted=$(revoked_serials | sort)
  [[ $listed == "$wanted" ]] || { echo "ca.crl does not list exactly what crl-index.txt revokes"; return 1; }
  local revoked
  revoked=$(openssl x509 -in revoked-client.crt -noout -serial | sed 's/^serial=//' | tr 'a-f' 'A-F')
  grep -qx "$revoked" <<<"$wanted" || { echo "revoked-client.crt is not revoked"; return 1; }
  { openssl verify -crl_check -CAfile ca.crt -CRLfile ca.crl revoked-client.crt 2>&1 || true; } |
    grep -q "certificate revoked" || { echo "revoked-client.crt is not refused as revoked"; return 1; }
  { openssl verify -crl_check -CAfile ca.crt -CRLfile ca.crl client.crt 2>&1 || true; } |
    grep -qx "client.crt: OK" || { echo "client.crt does not verify against ca.crl"; return 1; }
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# The JWKS for an EC P-256 key, computed from the key alone, so it can be both
# written and checked. The public key's DER is a fixed 27-byte SPKI prefix ending
# in 0x04 (uncompressed point), then x and y, 32 bytes each.
jwks_for() {
  local x y kid
  openssl pkey -in "$1" -noout -text 2>/dev/null | grep -q 'ASN1 OID: prime256v1' || return 1
  [[ $(openssl pkey -in "$1" -pubout -outform DER | wc -c) -eq 91 ]] || return 1
  x=$(openssl pkey -in "$1" -pubout -outform DER | tail -c 64 | head -c 32 | b64url)
  y=$(openssl pkey -in "$1" -pubout -outform DER | tail -c 32 | b64url)
  # RFC 7638: SHA-256 of the required members in lexicographic order, no spaces.
  kid=$(printf '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' "$x" "$y" | openssl dgst -sha256 -binary | b64url)
  printf '{\n  "keys": [\n    {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "%s", "x": "%s", "y": "%s"}\n  ]\n}\n' \
    "$kid" "$x" "$y"
}

check_jwt() {
  local f
  for f in "${JWT_FILES[@]}"; do [[ -s $f ]] || { echo "missing $f"; return 1; }; done
  local want
  want=$(jwks_for jwt-signing.key) || { echo "jwt-signing.key is not an EC P-256 private key"; return 1; }
  [[ $(cat jwks.json) == "$want" ]] || { echo "jwks.json does not hold jwt-signing.key's public key"; return 1; }
}

# Each set is checked on its own: deleting jwks.json must not rotate the CA, a lost CRL
# is rewritten under the same CA, and a new CA must not invalidate tokens already minted.
pki_reason="--force"
crl_reason="--force"
jwt_reason="--force"
if [[ $MODE != --force ]]; then
  if pki_reason=$(check_set 2>/dev/null); then pki_reason=""; fi
  if [[ -n $pki_reason ]]; then
    crl_reason="a new PKI"
  elif crl_reason=$(check_crl 2>/dev/null); then
    crl_reason=""
  fi
  if jwt_reason=$(check_jwt 2>/dev/null); then jwt_reason=""; fi
fi
if [[ -n $REVOKE ]]; then
  [[ -z $pki_reason && -z $crl_reason ]] ||
    { log "the dev PKI is incomplete or invalid (${pki_reason:-$crl_reason}): run make certs first"; exit 1; }
  crl_reason="revoking $REVOKE"
fi
if [[ -z $pki_reason && -z $crl_reason && -z $jwt_reason ]]; then
  # Newer than generate.sh, so make sees every target as done.
  touch "${FILES[@]}" "${CRL_FILES[@]}" "${JWT_FILES[@]}"
  log "existing files are complete and valid; nothing to do (--force regenerates)"
  exit 0
fi

# Build in a private scratch dir, check, then move into place: an interrupted run
# never leaves a half-made set behind.
umask 077
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hokusai-certs.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# openssl chats on stderr even when all is well: show its output only on failure.
quiet() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}
newkey() { quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
serial() { echo "0x$(openssl rand -hex 15)"; }

# A self-signed CA: name, key, cert, CN.
make_ca() {
  newkey "$1.key"
  quiet openssl req -config openssl.cnf -new -x509 -key "$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -set_serial "$(serial)" -extensions ca_ext -out "$1.crt"
}

# A leaf signed by a CA: name, CN, extension section, CA name, days.
make_leaf() {
  newkey "$1.key"
  quiet openssl req -config openssl.cnf -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  quiet openssl x509 -req -in "$1.csr" -CA "$4.crt" -CAkey "$4.key" -set_serial "$(serial)" \
    -days "$5" -sha256 -extfile openssl.cnf -extensions "$3" -out "$1.crt"
}

write_openssl_cnf() {
  cat >openssl.cnf <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
# clientAuth too: the ECS sidecar's health check presents it to its own TLS listener.
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:$SERVER_CN, DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:$CLIENT_URI
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[notebook_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:$NOTEBOOK_URI
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# Only for the expired certificate: "openssl x509 -req" in OpenSSL 3.0 cannot
# set a start date, "openssl ca" can.
[ca]
default_ca = past_ca
[past_ca]
dir = ./past-ca
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
default_md = sha256
policy = any_policy
unique_subject = no
copy_extensions = none
[any_policy]
commonName = supplied
# The dev CA's revocation list (openssl ca -name crl_ca -revoke / -gencrl).
[crl_ca]
database = ./crl-index.txt
crlnumber = ./crlnumber
default_md = sha256
default_crl_days = $CRL_DAYS
unique_subject = no
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid:always
CNF
}

make_pki() {
  write_openssl_cnf
  make_ca ca "$CA_CN"
  make_leaf server "$SERVER_CN" server_ext ca 825
  make_leaf client "$CLIENT_CN" client_ext ca 825
  make_leaf unlisted-client "$NOTEBOOK_CN" notebook_ext ca 825
  # The allow-listed identity on a certificate whose key counts as leaked: make_crl revokes it.
  make_leaf revoked-client "$CLIENT_CN" client_ext ca 825

  # Throwaway CA: its key is never written out, so nothing can trust it by accident.
  make_ca rogue-ca "Hokusai Rogue CA"
  make_leaf rogue-client "$CLIENT_CN" client_ext rogue-ca 825

  newkey expired-client.key
  quiet openssl req -config openssl.cnf -new -key expired-client.key -subj "/CN=$CLIENT_CN" -out expired-client.csr
  mkdir past-ca && : >past-ca/index.txt && openssl rand -hex 15 >past-ca/serial
  quiet openssl ca -config openssl.cnf -batch -notext -cert ca.crt -keyfile ca.key \
    -startdate 20200101000000Z -enddate 20210101000000Z \
    -extfile openssl.cnf -extensions client_ext -in expired-client.csr -out expired-client.crt

  cat client.crt client.key >client.pem

  local reason
  reason=$(check_set 2>&1) || { log "generated PKI failed its own checks: $reason"; exit 1; }
  chmod 644 ./*.crt
}

# revoke FILE.crt: adds one certificate of ca.crt to crl-index.txt (a no-op when it is there).
revoke() {
  local serial
  serial=$(openssl x509 -in "$1" -noout -serial | sed 's/^serial=//' | tr 'a-f' 'A-F')
  if ! revoked_serials | grep -qx "$serial"; then
    quiet openssl ca -config openssl.cnf -name crl_ca -revoke "$1" -cert ca.crt -keyfile ca.key
  fi
}

# The CRL of ca.crt from crl-index.txt (kept when the CA is the same, else a new one), with
# revoked-client.crt always in it and, with --revoke, the given certificate too.
make_crl() {
  [[ -f openssl.cnf ]] || write_openssl_cnf
  local f
  for f in ca.crt ca.key client.crt revoked-client.crt; do
    [[ -f $f ]] || cp "$DIR/$f" "$f"
  done
  if [[ -z $pki_reason && -s $DIR/crl-index.txt ]]; then
    cp "$DIR/crl-index.txt" crl-index.txt
  else
    : >crl-index.txt
  fi
  revoke revoked-client.crt
  if [[ -n $REVOKE ]]; then
    { openssl verify -no_check_time -CAfile ca.crt "$REVOKE" 2>&1 || true; } | grep -q ": OK$" ||
      { log "$REVOKE is not a certificate of the dev CA (certs/ca.crt)"; exit 1; }
    revoke "$REVOKE"
    log "revoked $(openssl x509 -in "$REVOKE" -noout -subject -serial | tr '\n' ' ')"
  fi
  # CRL numbers only ever grow (RFC 5280): the time, as 16 hex digits.
  printf '%016X\n' "$(date +%s)" >crlnumber
  quiet openssl ca -config openssl.cnf -name crl_ca -gencrl -cert ca.crt -keyfile ca.key -out ca.crl
  chmod 644 ca.crl crl-index.txt
  local reason
  reason=$(check_crl 2>&1) || { log "generated CRL failed its own checks: $reason"; exit 1; }
}

make_jwt() {
  # Keep a good signing key (so tokens already minted stay valid) and rewrite only
  # the JWKS; a missing or unusable key is replaced.
  if jwks_for "$DIR/jwt-signing.key" >/dev/null 2>&1; then
    cp "$DIR/jwt-signing.key" jwt-signing.key
  else
    newkey jwt-signing.key
  fi
  jwks_for jwt-signing.key >jwks.json
  chmod 644 jwks.json
  local reason
  reason=$(check_jwt 2>&1) || { log "generated JWT key failed its own checks: $reason"; exit 1; }
}

written=()
if [[ -n $pki_reason ]]; then
  log "generating the PKI ($pki_reason)"
  make_pki
  written+=("${FILES[@]}")
fi
if [[ -n $crl_reason ]]; then
  log "writing the CRL ($crl_reason)"
  make_crl
  written+=("${CRL_FILES[@]}")
fi
if [[ -n $jwt_reason ]]; then
  log "generating the JWT signing key ($jwt_reason)"
  make_jwt
  written+=("${JWT_FILES[@]}")
fi
for f in "${written[@]}"; do mv -f "$f" "$DIR/$f"; done
cd "$DIR"
# The set left alone must also look up to date to make.
touch "${FILES[@]}" "${CRL_FILES[@]}" "${JWT_FILES[@]}"
log "wrote ${written[*]}"
