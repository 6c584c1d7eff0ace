#!/usr/bin/env bash
# build.sh builds the local stand-ins for the official redis, postgres and
# golang images, for machines that cannot pull from a registry: one Debian
# bookworm rootfs (debootstrap, from the machine's own apt mirror) holding
# redis-server and postgresql-15, imported three times with different
# CMD/EXPOSE/ENV; the golang one also holds this machine's Go.
#
#   wsserver-test/redis:7       CMD redis-server, EXPOSE 6379
#   wsserver-test/postgres:15   CMD postgres,     EXPOSE 5432
#   wsserver-test/golang:1.26   /usr/local/go from this machine, GOPATH=/go,
#                               the Dockerfile's builder (GO_IMAGE)
#
# The golang image trusts the certificate authorities this machine adds in
# /usr/local/share/ca-certificates (an egress proxy's, say), so that `go mod
# download` in `docker build` reaches the module proxy as the host does.
#
# It does nothing when the three images exist. Needs root and a docker daemon.
set -euo pipefail

REDIS_IMAGE=wsserver-test/redis:7
POSTGRES_IMAGE=wsserver-test/postgres:15
GO_IMAGE=wsserver-test/golang:1.26
GO_VERSION_PREFIX=go1.26
GOROOT_HOST=${GOROOT_HOST:-/usr/local/go}
SUITE=bookworm

log() { echo "build.sh: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if have_image "$REDIS_IMAGE" && have_image "$POSTGRES_IMAGE" && have_image "$GO_IMAGE"; then
	log "$REDIS_IMAGE, $POSTGRES_IMAGE and $GO_IMAGE already exist"
	exit 0
fi

if ! have_image "$GO_IMAGE"; then
	go_version=$(head -n 1 "$GOROOT_HOST/VERSION" 2>/dev/null || true)
	if [[ $go_version != "$GO_VERSION_PREFIX" && $go_version != "$GO_VERSION_PREFIX".* ]]; then
		log "$GO_IMAGE needs Go ${GO_VERSION_PREFIX#go} at $GOROOT_HOST (set GOROOT_HOST), found '${go_version:-nothing}'"
		exit 1
	fi
fi

# mirror prints the first apt source serving "$SUITE main" (not -security,
# not -updates), read from the one-line and the deb822 source formats.
mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		# deb [options] URL suite components...
		awk -v suite="$SUITE" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				if ($(i+1) != suite) next
				for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		# Paragraphs separated by blank lines; fields Types, URIs, Suites, Components.
		awk -v suite="$SUITE" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && (" " comps " ") ~ / main /) {
					split(uris, u, " "); print u[1]; found = 1; exit
				}
				types = uris = suites = comps = ""
			}
			/^[[:space:]]*#/ { next }
			/^[[:space:]]*$/ { flush(); next }
			{
				key = tolower($1); sub(/:$/, "", key)
				val = $0; sub(/^[^:]*:[[:space:]]*/, "", val)
				if (key == "types") types = val
				else if (key == "uris") uris = val
				else if (key == "suites") suites = val
				else if (key == "components") comps = val
			}
			END { if (!found) flush() }' "$f"
	done | head -n 1
}

MIRROR=$(mirror)
if [[ -z $MIRROR ]]; then
	log "no apt source serves '$SUITE main' in /etc/apt/sources.list{,.d/}"
	exit 1
fi
log "mirror: $MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wsserver-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs

log "debootstrap $SUITE into $ROOT (about a minute)"
debootstrap --variant=minbase --include=redis-server,postgresql-15,ca-certificates,tzdata \
	"$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
	tail -n 40 "$WORK/debootstrap.log" >&2
	exit 1
}

# The package's postinst creates a "main" cluster; the entrypoint makes its own.
rm -rf "$ROOT"/var/lib/postgresql/15 "$ROOT"/etc/postgresql/15/main
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
	"$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/*
mkdir -p "$ROOT"/data "$ROOT"/var/lib/postgresql/data "$ROOT"/docker-entrypoint-initdb.d
chroot "$ROOT" chown redis:redis /data
chroot "$ROOT" chown postgres:postgres /var/lib/postgresql/data
chmod 700 "$ROOT"/var/lib/postgresql/data

cat >"$ROOT"/usr/local/bin/docker-entrypoint.sh <<'ENTRYPOINT'
#!/bin/bash
# docker-entrypoint.sh stands in for the entrypoints of the official redis and
# postgres images, as far as the tests rely on them.
set -euo pipefail

as_user() { local user=$1; shift; setpriv --reuid="$user" --regid="$user" --init-groups "$@"; }
exec_as() { local user=$1; shift; exec setpriv --reuid="$user" --regid="$user" --init-groups "$@"; }

redis() {
	# Like the official image: no config file means no protected mode, so
	# clients outside the container may connect without a password.
	local arg
	for arg in "$@"; do
		if [[ $arg == --protected-mode ]]; then
			exec_as redis "$@"
		fi
	done
	exec_as redis "$@" --protected-mode no
}

postgres_init() {
	local user=${POSTGRES_USER:-postgres}
	local db=${POSTGRES_DB:-$user}
	local auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
	if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
		echo "Error: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
		exit 1
	fi

	local pwfile
	pwfile=$(mktemp)
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
	chown postgres "$pwfile"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list, as upstream.
	as_user postgres initdb --username="$user" --pwfile="$pwfile" \
		--auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-}
	rm -f "$pwfile"
	echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
	echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

	# A temporary server on the unix socket only, so nobody connects before
	# the database and the init scripts are in place.
	as_user postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
	local psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc)
	if [[ $db != postgres ]]; then
		# psql interpolates :"db" only in scripts, not in -c commands.
		echo 'CREATE DATABASE :"db";' |
			as_user postgres "${psql[@]}" --dbname postgres --set db="$db"
	fi
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case $f in
		*.sh) echo "running $f"; . "$f" ;;
		*.sql) echo "running $f"; as_user postgres "${psql[@]}" --dbname "$db" -f "$f" ;;
		*.sql.gz) echo "running $f"; gunzip -c "$f" | as_user postgres "${psql[@]}" --dbname "$db" ;;
		esac
	done
	as_user postgres pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
}

postgres() {
	export PGDATA=${PGDATA:-/var/lib/postgresql/data}
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	chmod 2775 /var/run/postgresql
	if [[ ! -s $PGDATA/PG_VERSION ]]; then
		postgres_init
	fi
	# docker import cannot set STOPSIGNAL, and postgres takes SIGTERM as a
	# "smart" shutdown that waits for every client to leave; like the official
	# image (STOPSIGNAL SIGINT), turn docker stop into a fast shutdown.
	setpriv --reuid=postgres --regid=postgres --init-groups "$@" &
	local pid=$! status=0
	trap 'kill -INT "$pid" 2>/dev/null || true' TERM INT
	while :; do
		wait "$pid" && status=0 || status=$?
		kill -0 "$pid" 2>/dev/null || break
	done
	exit "$status"
}

case ${1:-} in
redis-server) redis "$@" ;;
postgres) postgres "$@" ;;
*) exec "$@" ;;
esac
ENTRYPOINT
chmod 755 "$ROOT"/usr/local/bin/docker-entrypoint.sh

PATH_IN_IMAGE=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

import_image() { # name [docker import options...]
	local name=$1; shift
	log "importing $name"
	tar -C "$ROOT" --numeric-owner -c . | docker import "$@" - "$name" >/dev/null
}

have_image "$REDIS_IMAGE" || import_image "$REDIS_IMAGE" \
	--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
	--change "ENV PATH=$PATH_IN_IMAGE" \
	--change 'WORKDIR /data' \
	--change 'EXPOSE 6379' \
	--change 'CMD ["redis-server"]'
have_image "$POSTGRES_IMAGE" || import_image "$POSTGRES_IMAGE" \
	--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
	--change "ENV PATH=$PATH_IN_IMAGE" \
	--change 'ENV PGDATA=/var/lib/postgresql/data' \
	--change 'EXPOSE 5432' \
	--change 'CMD ["postgres"]'

if ! have_image "$GO_IMAGE"; then
	# Like the official golang image: Go in /usr/local/go, GOPATH /go, and
	# the toolchain in the image is the one used (no toolchain downloads).
	log "copying $GOROOT_HOST ($(head -n 1 "$GOROOT_HOST/VERSION")) into the rootfs"
	cp -a "$GOROOT_HOST" "$ROOT"/usr/local/go
	mkdir -p "$ROOT"/go/bin "$ROOT"/go/src
	chmod -R 1777 "$ROOT"/go
	shopt -s nullglob globstar
	for crt in /usr/local/share/ca-certificates/**/*.crt; do
		log "trusting $crt"
		cp "$crt" "$ROOT"/usr/local/share/ca-certificates/
		{ cat "$crt"; echo; } >>"$ROOT"/etc/ssl/certs/ca-certificates.crt
	done
	shopt -u nullglob globstar
	import_image "$GO_IMAGE" \
		--change "ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		--change 'ENV GOPATH=/go' \
		--change 'ENV GOTOOLCHAIN=local' \
		--change 'WORKDIR /go' \
		--change 'CMD ["bash"]'
fi
log "done: $REDIS_IMAGE $POSTGRES_IMAGE $GO_IMAGE"
