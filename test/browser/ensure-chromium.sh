#!/usr/bin/env bash
# ensure-chromium.sh makes sure the browser test has a Chromium: CHROME_PATH,
# or chromium / chromium-browser on PATH. Where none is found and this is a
# Debian or Ubuntu machine run as root, it installs Debian's chromium
# package, as test/images/build.sh does debootstrap; otherwise it says what
# to install and fails. `make test` runs it first.
set -euo pipefail

log() { echo "ensure-chromium.sh: $*" >&2; }

if [[ -n ${WSSERVER_SKIP_BROWSER:-} ]]; then
	exit 0
fi
if [[ -n ${CHROME_PATH:-} ]]; then
	[[ -x $CHROME_PATH ]] && exit 0
	log "CHROME_PATH=$CHROME_PATH is not an executable file"
	exit 1
fi
for name in chromium chromium-browser; do
	command -v "$name" >/dev/null 2>&1 && exit 0
done
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
	log "installing chromium (Debian's package) for test/browser"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
	exit 0
fi
log "no Chromium found: install Debian's chromium package (apt-get install chromium),"
log "or set CHROME_PATH to a Chromium or Chrome binary (WSSERVER_SKIP_BROWSER=1 skips the browser test)"
exit 1
