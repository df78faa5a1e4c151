#!/usr/bin/env bash
# Makes sure the system tools `make test` uses are there: openssl (make certs), wrk (bench
# smoke run), promtool (alert rule tests; Debian's prometheus package), chromium and
# chromium-driver (the browser test, tests/e2e_browser.rs). Installs what is missing when it can (root with apt-get);
# otherwise stops and prints the one command that installs them. With arguments, only those
# commands (`test-tools.sh openssl`, what make certs needs, so make run sets itself up too).
set -euo pipefail

# command -> Debian package
declare -A PACKAGE=(
  [openssl]=openssl
  [wrk]=wrk
  [promtool]=prometheus
  [chromium]=chromium
  [chromedriver]=chromium-driver
)

WANTED=("$@")
((${#WANTED[@]} > 0)) || WANTED=(openssl wrk promtool chromium chromedriver)
for cmd in "${WANTED[@]}"; do
  [[ -n ${PACKAGE[$cmd]:-} ]] || { echo "test-tools.sh: unknown tool $cmd" >&2; exit 2; }
done

missing=()
for cmd in "${WANTED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGE[$cmd]}")
done
((${#missing[@]} == 0)) && exit 0

install="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make test: missing ${missing[*]}; install them with:" >&2
  echo "  sudo apt-get update && sudo $install" >&2
  exit 1
fi

echo "make test: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: promtool needs no node exporter, the browser no extras.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The prometheus package may start a server on a systemd machine; only promtool is wanted.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
for cmd in "${WANTED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "make test: $cmd still missing after the install" >&2; exit 1; }
done
