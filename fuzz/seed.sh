#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ with real inputs, made fresh each time (nothing here is
# committed): Envoy's x-forwarded-client-cert for the certificates `make certs` wrote, the dev
# auth service's actual replies, and the plugin configuration in envoy/*.yaml.
#
# usage: fuzz/seed.sh DEV_AUTH_SERVICE_BINARY   (run from the repo root, after `make certs`)
set -euo pipefail
cd "$(dirname "$0")/.."
dev_auth=${1:?usage: fuzz/seed.sh path/to/dev-auth-service}
corpus=fuzz/corpus
py=python3
[[ -x .venv/bin/python ]] && py=.venv/bin/python

seed() { # seed TARGET NAME < bytes
  mkdir -p "$corpus/$1"
  cat > "$corpus/$1/seed-$2"
}

# --- Envoy's XFCC for each client certificate (SANITIZE_SET with subject, cert, uri, dns):
# Hash is the SHA-256 of the DER, Cert the URL-encoded PEM, Subject the RFC 2253 DN as it is
# (its specials already escaped), quoted.
for name in client unlisted-client expired-client; do
  crt=certs/$name.crt
  [[ -f $crt ]] || { echo "fuzz/seed.sh: $crt missing; run make certs" >&2; exit 1; }
  openssl x509 -in "$crt" -outform der > "$corpus.$name.der.tmp"
  subject=$(openssl x509 -in "$crt" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
  uri=$(openssl x509 -in "$crt" -noout -ext subjectAltName | grep -o 'URI:[^,]*' | sed 's/^URI://' | head -1)
  xfcc=$("$py" - "$crt" "$corpus.$name.der.tmp" "$subject" "$uri" <<'EOF'
import hashlib, sys, urllib.parse
crt, der, subject, uri = sys.argv[1:]
pem = open(crt).read()
digest = hashlib.sha256(open(der, 'rb').read()).hexdigest()
cert = urllib.parse.quote(pem, safe='')
print(f'Hash={digest};Cert="{cert}";Subject="{subject}";URI={uri}', end='')
EOF
)
  printf '%s' "$xfcc" | seed identity_xfcc "$name"
  printf '\0%s' "$xfcc" | seed identity_allow_list "$name-listed"
  printf '\1%s' "$xfcc" | seed identity_allow_list "$name-own"
  seed identity_certificate "$name-der" < "$corpus.$name.der.tmp"
  rm -f "$corpus.$name.der.tmp"
  "$py" - "$xfcc" > "$corpus.hdr.tmp" <<'EOF'
import struct, sys
pairs = [(b':method', b'GET'), (b':path', b'/api/2.0/mlflow/experiments/get?experiment_id=1'),
         (b':authority', b'127.0.0.1:10443'), (b'x-forwarded-client-cert', sys.argv[1].encode()),
         (b'x-request-id', b'rid-1')]
out = struct.pack('<I', len(pairs))
out += b''.join(struct.pack('<II', len(n), len(v)) for n, v in pairs)
out += b''.join(n + b'\0' + v + b'\0' for n, v in pairs)
sys.stdout.buffer.write(out)
EOF
  seed pairs "mtls-$name" < "$corpus.hdr.tmp"
  seed request_facts "mtls-$name" < "$corpus.hdr.tmp"
  rm -f "$corpus.hdr.tmp"
done

# --- Request headers as Envoy hands them over (the pairs buffer), and credentials.
"$py" - "$corpus" <<'EOF'
import base64, json, os, struct, sys
corpus = sys.argv[1]
def put(target, name, data):
    os.makedirs(f'{corpus}/{target}', exist_ok=True)
    open(f'{corpus}/{target}/seed-{name}', 'wb').write(data)
def pairs(items):
    out = struct.pack('<I', len(items))
    out += b''.join(struct.pack('<II', len(n), len(v)) for n, v in items)
    return out + b''.join(n + b'\0' + v + b'\0' for n, v in items)
b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b'=').decode()
jwt = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64({'sub': 'user-1', 'scope': 'mlflow:read mlflow:write'})}.c2ln"
requests = {
    'search': [(b':method', b'POST'), (b':path', b'/api/2.0/mlflow/runs/search'),
               (b':authority', b'127.0.0.1:10000'), (b'authorization', b'Bearer hk_dev_readwrite_0001'),
               (b'content-type', b'application/json'), (b'user-agent', b'mlflow-python-client/3.17.2')],
    'upload': [(b':method', b'PUT'), (b':path', b'/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model.pkl'),
               (b'x-api-key', b'hk_dev_readonly_0002'), (b'x-auth-path', b'internal')],
    'preflight': [(b':method', b'OPTIONS'), (b':path', b'/api/2.0/mlflow/runs/create'),
                  (b'access-control-request-method', b'POST'), (b'origin', b'http://localhost:3000')],
    'jwt': [(b':method', b'GET'), (b':path', b'/api/2.0/mlflow/experiments/get'),
            (b'authorization', f'Bearer {jwt}'.encode()), (b'x-user-id', b'someone')],
    'health': [(b':method', b'GET'), (b':path', b'/health')],
}
for name, items in requests.items():
    put('pairs', name, pairs(items))
    put('request_facts', name, pairs(items))
put('request_credential', 'bearer', b'ABearer hk_dev_readwrite_0001')
put('request_credential', 'x-api-key', b'Khk_dev_readonly_0002')
put('request_credential', 'basic-then-key', b'ABasic dTpw\nKhk_dev_limited_0004')
put('request_credential', 'repeated', b'Khk_dev_readonly_0002\nKhk_dev_readwrite_0001')
put('request_credential', 'jwt', f'ABearer {jwt}'.encode())
put('request_jwt_shape', 'rs256', jwt.encode())
put('request_jwt_shape', 'none', f"{b64({'alg': 'none'})}.{b64({'sub': 'u'})}.".encode())
put('identity_jwt_claims', 'scope', json.dumps({'sub': 'user-1', 'scope': 'mlflow:read mlflow:write'}).encode())
put('identity_jwt_claims', 'scopes', json.dumps({'sub': 'user-2', 'scopes': ['mlflow:read'], 'exp': 1800000000}).encode())
put('identity_jwt_claims', 'token', jwt.encode())
for name, text in {'utc': '2026-11-23T12:00:00Z', 'offset': '2026-11-23T14:00:00.123456+02:00',
                   'naive': '2026-11-23 12:00:00', 'expired': '2020-01-01T00:00:00Z'}.items():
    put('rfc3339', name, text.encode())
EOF

# --- The plugin configuration of every Envoy config in envoy/.
for yaml in envoy/*.yaml; do
  "$py" - "$yaml" "$corpus" <<'EOF' || echo "fuzz/seed.sh: no plugin configuration read from $yaml (PyYAML missing?)" >&2
import os, sys, yaml
path, corpus = sys.argv[1:]
found = []
def walk(node):
    if isinstance(node, dict):
        value = node.get('configuration', {})
        if isinstance(value, dict) and isinstance(value.get('value'), str):
            found.append(value['value'])
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
for doc in yaml.safe_load_all(open(path)):
    walk(doc)
os.makedirs(f'{corpus}/config', exist_ok=True)
base = os.path.basename(path).rsplit('.', 1)[0]
for i, text in enumerate(dict.fromkeys(found)):
    open(f'{corpus}/config/seed-{base}-{i}', 'w').write(text)
EOF
done

# --- The dev auth service's replies: each dev key, then each fault it can inject.
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$dev_auth" --listen "127.0.0.1:$port" --control --quiet &
auth_pid=$!
trap 'kill "$auth_pid" 2>/dev/null || true; wait "$auth_pid" 2>/dev/null || true' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 100); do
  curl -sf "$base/health" >/dev/null && break
  sleep 0.1
done
curl -sf "$base/health" >/dev/null || { echo "fuzz/seed.sh: dev-auth-service did not start" >&2; exit 1; }

# Input layout of the auth_service_reply target: status selector, 2 bytes of any status,
# retry-after length, retry-after, body.
reply_seed() { # reply_seed NAME [curl args...]
  local name=$1; shift
  local status headers body selector retry
  headers=$(mktemp); body=$(mktemp)
  status=$(curl -s -o "$body" -D "$headers" -w '%{http_code}' "$@" || echo 000)
  case $status in 200) selector=1 ;; 401) selector=2 ;; 403) selector=3 ;; 429) selector=4 ;;
    500) selector=5 ;; 503) selector=6 ;; 000) selector=0 ;; *) selector=7 ;; esac
  retry=$(grep -i '^retry-after:' "$headers" | tr -d '\r' | sed 's/^[^:]*: *//' || true)
  { printf "\\x$(printf %02x "$selector")\\x00\\x00\\x$(printf %02x ${#retry})%s" "$retry"
    cat "$body"; } | seed auth_service_reply "$name"
  rm -f "$headers" "$body"
}
validate() { # validate NAME KEY
  reply_seed "$1" -X POST "$base/api/v1/keys/validate" -H 'content-type: application/json' \
    -d "{\"api_key\":\"$2\",\"service_id\":\"ml-platform\",\"client_ip\":\"127.0.0.1\"}"
}
validate readwrite hk_dev_readwrite_0001
validate readonly hk_dev_readonly_0002
validate expired hk_dev_expired_0003
validate limited hk_dev_limited_0004
validate otherservice hk_dev_otherservice_0005
validate revoked hk_dev_revoked_0006
validate unknown hk_not_a_key
fault() { curl -sf -X POST "$base/__dev/fault" -d "$1" >/dev/null; }
fault '{"fault":"status","status":500}'; validate fault-500 hk_dev_readwrite_0001
fault '{"fault":"status","status":503}'; validate fault-503 hk_dev_readwrite_0001
fault '{"fault":"garbage"}'; validate fault-garbage hk_dev_readwrite_0001
fault '{"fault":"rate_limited","retry_after_s":5}'; validate fault-429 hk_dev_readwrite_0001
fault '{"fault":"close_connection"}'; validate fault-closed hk_dev_readwrite_0001

echo "fuzz/seed.sh: seeded $(find "$corpus" -name 'seed-*' | wc -l) inputs under $corpus/"
