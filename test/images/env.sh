#!/usr/bin/env bash
# env.sh chooses the Redis and PostgreSQL images for the container tests, and
# the Go image the Dockerfile builds with (its GO_IMAGE build argument).
#
#   eval "$(test/images/env.sh)"   # prints export lines
#   source test/images/env.sh      # exports into the current shell
#
# For each of TEST_REDIS_IMAGE, TEST_POSTGRES_IMAGE and GO_IMAGE: a value
# already set wins; else the official image when it is present or can be
# pulled; else the local stand-in built by build.sh. It also sets
# TESTCONTAINERS_HOST_OVERRIDE when testcontainers would guess it wrong.

_env_pick() { # variable official local
	local var=$1 official=$2 local=$3
	if [[ -n ${!var:-} ]]; then
		echo "${!var}"
	elif docker image inspect "$official" >/dev/null 2>&1 ||
		timeout "${PULL_TIMEOUT:-20}" docker pull -q "$official" >/dev/null 2>&1; then
		echo "$official"
	else
		if ! docker image inspect "$local" >/dev/null 2>&1; then
			bash "$(dirname "${BASH_SOURCE[0]}")/build.sh" >&2 || return 1
		fi
		echo "$local"
	fi
}

_env_main() {
	local redis postgres golang
	redis=$(_env_pick TEST_REDIS_IMAGE redis:7-alpine wsserver-test/redis:7) || return 1
	postgres=$(_env_pick TEST_POSTGRES_IMAGE postgres:16-alpine wsserver-test/postgres:15) || return 1
	golang=$(_env_pick GO_IMAGE golang:1.26-bookworm wsserver-test/golang:1.26) || return 1
	# Where docker runs inside a container of its own but this shell shares
	# its network, testcontainers guesses the outer container's gateway as
	# the address of published ports; the daemon is local, so say so.
	local host=${TESTCONTAINERS_HOST_OVERRIDE:-}
	if [[ -z $host && ${DOCKER_HOST:-unix://} == unix://* && -e /sys/class/net/docker0 ]]; then
		host=127.0.0.1
	fi
	echo "env.sh: TEST_REDIS_IMAGE=$redis TEST_POSTGRES_IMAGE=$postgres GO_IMAGE=$golang TESTCONTAINERS_HOST_OVERRIDE=$host" >&2
	if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
		printf 'export TEST_REDIS_IMAGE=%q\nexport TEST_POSTGRES_IMAGE=%q\nexport GO_IMAGE=%q\n' "$redis" "$postgres" "$golang"
		[[ -z $host ]] || printf 'export TESTCONTAINERS_HOST_OVERRIDE=%q\n' "$host"
	else
		export TEST_REDIS_IMAGE=$redis TEST_POSTGRES_IMAGE=$postgres GO_IMAGE=$golang
		[[ -z $host ]] || export TESTCONTAINERS_HOST_OVERRIDE=$host
	fi
}

_env_main
