# lib.sh is sourced by the benchmark scripts: it builds the binaries and
# starts and stops the servers, Redis and PostgreSQL of one scenario.
# The caller sets OUT (the results folder) before sourcing it.

BIN=$(mktemp -d)
REDIS_PORT=${REDIS_PORT:-6393}
PG_PORT=${PG_PORT:-5493}
pids=()
pg=""

go build -o "$BIN/wsserver" ./cmd/wsserver
go build -o "$BIN/wsbench" ./cmd/wsbench
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# server PORT [ENV...]: starts a fresh server; its pid is left in $pid.
server() {
	local port=$1
	shift
	env LISTEN_ADDR="127.0.0.1:$port" LOG_LEVEL=warn INSTANCE_ID="bench-$port" "$@" \
		"$BIN/wsserver" >>"$OUT/server-$port.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 300); do
		curl -fs "http://127.0.0.1:$port/health/" >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "server on $port did not start; see $OUT/server-$port.log" >&2
	return 1
}

# redis: a fresh Redis without persistence on $REDIS_PORT.
redis() {
	redis-server --port "$REDIS_PORT" --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
	pids+=("$!")
	for _ in $(seq 50); do
		redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "redis did not start" >&2
	return 1
}

# postgres: a fresh PostgreSQL container on $PG_PORT.
postgres() {
	local image=${BENCH_POSTGRES_IMAGE:-}
	if [[ -z $image ]]; then
		eval "$(test/images/env.sh 2>/dev/null)"
		image=$TEST_POSTGRES_IMAGE
	fi
	pg=$(docker run -d --rm -p "127.0.0.1:$PG_PORT:5432" -e POSTGRES_PASSWORD=bench "$image" postgres)
	for _ in $(seq 300); do
		docker exec "$pg" pg_isready -h 127.0.0.1 -U postgres >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "postgres did not start" >&2
	return 1
}

# stop_all ends the scenario: newest first, the servers before Redis and
# PostgreSQL, so that they do not log their loss.
stop_all() {
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
	pids=()
	if [[ -n $pg ]]; then
		docker rm -f "$pg" >/dev/null 2>&1 || true
		pg=""
	fi
}

cleanup() {
	stop_all
	rm -rf "$BIN"
}
trap cleanup EXIT

# bench NAME ARGS...: runs wsbench, keeps its report in $OUT/NAME.txt.
bench() {
	local name=$1
	shift
	echo "== $name: wsbench $*" | tee "$OUT/$name.txt"
	"$BIN/wsbench" "$@" -q | tee -a "$OUT/$name.txt"
}
