#!/usr/bin/env bash
# session.sh runs the session-stream benchmarks of docs/BENCHMARKS.md: the
# server(s), Redis and wsbench together on this machine, so the load tool's
# own cost is inside every figure. Results go to $OUT (default a temp dir).
#
#   bash test/bench/session.sh            # every scenario (about 10 minutes)
#   bash test/bench/session.sh idle fanout-memory-10k
#
# Needs redis-server and redis-cli on PATH for the Redis and Redis Cluster
# scenarios (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DURATION=${DURATION:-60s}
# shellcheck source=test/bench/lib.sh
source test/bench/lib.sh

# The presence queriers ask as fast as answers come, above the default
# per-socket rate limit (100/s): lift it for them.
fast=(RATE_LIMIT_PER_SEC=100000 RATE_LIMIT_BURST=100000)

one_session_rate() {
	case $1 in
	*-100k) echo 20 ;;
	*-250k) echo 50 ;;
	esac
}

# presence_shape gives a presence scenario's sockets and sessions.
presence_shape() {
	case $1 in
	*-10k) echo "-sockets 10000 -sessions 100" ;;
	*) echo "-sockets 1000 -sessions 10" ;;
	esac
}

run() {
	case $1 in
	idle)
		server 8000
		bench idle idle -url ws://127.0.0.1:8000 -sockets 10000 -duration 30s -settle 15s -pid "$pid"
		;;
	fanout-memory-10k)
		server 8000
		bench fanout-memory-10k fanout -url ws://127.0.0.1:8000 -sockets 10000 -sessions 1000 -rate 1000 -duration "$DURATION" -pid "$pid"
		;;
	fanout-memory-20k)
		server 8000
		bench fanout-memory-20k fanout -url ws://127.0.0.1:8000 -sockets 10000 -sessions 1000 -rate 2000 -duration "$DURATION" -pid "$pid"
		;;
	fanout-redis-10k)
		redis
		server 8000 REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
		a=$pid
		server 8001 REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
		b=$pid
		bench fanout-redis-10k fanout -url ws://127.0.0.1:8000,ws://127.0.0.1:8001 -sockets 10000 -sessions 1000 -rate 1000 -duration "$DURATION" -pid "$a,$b"
		;;
	fanout-cluster-10k | fanout-cluster-sharded-10k)
		# The same on a Redis Cluster of three masters (a replica each):
		# plain PUBLISH, or sharded pub/sub in 16 partitions.
		redis_cluster
		local parts=0
		[[ $1 == fanout-cluster-sharded-10k ]] && parts=16
		server 8000 REDIS_URL="$cluster_url" REDIS_CLUSTER=1 REDIS_SHARDED_PUBSUB_PARTITIONS=$parts
		a=$pid
		server 8001 REDIS_URL="$cluster_url" REDIS_CLUSTER=1 REDIS_SHARDED_PUBSUB_PARTITIONS=$parts
		b=$pid
		bench "$1" fanout -url ws://127.0.0.1:8000,ws://127.0.0.1:8001 -sockets 10000 -sessions 1000 -rate 1000 -duration "$DURATION" -pid "$a,$b"
		;;
	fanout-one-session-100k | fanout-one-session-250k)
		# One session of 5,000 sockets at 20 or 50 broadcasts/s
		# (100,000 or 250,000 deliveries/s).
		server 8000 SEND_QUEUE_SIZE=4096
		bench "$1" fanout -url ws://127.0.0.1:8000 -sockets 5000 -sessions 1 -publishers 1 -rate "$(one_session_rate "$1")" -duration 30s -pid "$pid"
		;;
	bare-one-session-100k | bare-one-session-250k)
		# The same against the bare gorilla server (test/bench/bare), to
		# run beside the two above in one sitting.
		bare 8000
		bench "$1" fanout -url ws://127.0.0.1:8000 -sockets 5000 -sessions 1 -publishers 1 -rate "$(one_session_rate "$1")" -duration 30s -pid "$pid"
		;;
	presence-memory | presence-memory-10k)
		# 1,000 sockets over 10 sessions; -10k: issue 13's 10,000 over 100.
		server 8000 "${fast[@]}"
		bench "$1" presence -url ws://127.0.0.1:8000 $(presence_shape "$1") -queries 5000 -queriers 8 -pid "$pid"
		;;
	presence-redis | presence-redis-10k)
		redis
		server 8000 REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" "${fast[@]}"
		a=$pid
		server 8001 REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" "${fast[@]}"
		b=$pid
		bench "$1" presence -url ws://127.0.0.1:8000,ws://127.0.0.1:8001 $(presence_shape "$1") -queries 5000 -queriers 8 -pid "$a,$b"
		;;
	*)
		echo "unknown scenario $1" >&2
		return 2
		;;
	esac
	stop_all
}

scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
	scenarios=(idle fanout-memory-10k fanout-memory-20k fanout-redis-10k fanout-cluster-10k fanout-cluster-sharded-10k
		fanout-one-session-100k bare-one-session-100k fanout-one-session-250k bare-one-session-250k
		presence-memory presence-redis presence-memory-10k presence-redis-10k)
fi
echo "results in $OUT; $(nproc) cores, $(go version), $(uname -r)"
for s in "${scenarios[@]}"; do run "$s"; done
