# lib.sh is sourced by the benchmark scripts: it builds the binaries and
# starts and stops the servers, Redis and PostgreSQL of one scenario.
# The caller sets OUT (the results folder) before sourcing it.

# BENCH_BIN=dir runs the binaries already built there (wsserver, wsbench,
# fakebedrock, fakeopenai, bare, profsrv) instead of building them from this tree.
BIN=${BENCH_BIN:-$(mktemp -d)}
REDIS_PORT=${REDIS_PORT:-6393}
PG_PORT=${PG_PORT:-5493}
pids=()
pg=""

if [[ -z ${BENCH_BIN:-} ]]; then
	go build -o "$BIN/wsserver" ./cmd/wsserver
	go build -o "$BIN/wsbench" ./cmd/wsbench
	go build -o "$BIN/fakebedrock" ./test/fakebedrock/cmd/fakebedrock
	go build -o "$BIN/fakeopenai" ./test/fakeopenai/cmd/fakeopenai
	go build -o "$BIN/bare" ./test/bench/bare
	go build -o "$BIN/profsrv" ./test/bench/profsrv
fi
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# BENCH_SERVER_CPUS and BENCH_TOOL_CPUS (taskset lists, e.g. 1 and 0) pin
# the servers, and the load tool and the fake Bedrock, to separate CPUs, so
# that the tools' work does not delay the server's (unset: no pinning).
pin_server=() pin_tool=()
[[ -n ${BENCH_SERVER_CPUS:-} ]] && pin_server=(taskset -c "$BENCH_SERVER_CPUS")
[[ -n ${BENCH_TOOL_CPUS:-} ]] && pin_tool=(taskset -c "$BENCH_TOOL_CPUS")

# server PORT [ENV...]: starts a fresh server; its pid is left in $pid. It is
# a development server (DJANGO_DEBUG=1) without the per-address limit: every
# benchmark socket comes from 127.0.0.1. BENCH_PPROF=1 runs
# test/bench/profsrv instead, Go's profiler on 127.0.0.1:PORT+1000.
server() {
	local port=$1 bin=wsserver prof=()
	shift
	if [[ -n ${BENCH_PPROF:-} ]]; then
		bin=profsrv
		prof=(PPROF_ADDR="127.0.0.1:$((port + 1000))")
	fi
	"${pin_server[@]}" env DJANGO_DEBUG=1 MAX_CONNECTIONS_PER_IP=0 LISTEN_ADDR="127.0.0.1:$port" LOG_LEVEL=warn INSTANCE_ID="bench-$port" "${prof[@]}" "$@" \
		"$BIN/$bin" >>"$OUT/server-$port.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 300); do
		curl -fs "http://127.0.0.1:$port/health/" >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "server on $port did not start; see $OUT/server-$port.log" >&2
	return 1
}

# bare PORT: the bare gorilla server of test/bench/bare, the reference
# peer of the one-session fan-out; its pid is left in $pid.
bare() {
	local port=$1
	"${pin_server[@]}" "$BIN/bare" -listen "127.0.0.1:$port" -queue 4096 >>"$OUT/bare-$port.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$port/health/" >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "bare server on $port did not start; see $OUT/bare-$port.log" >&2
	return 1
}

# fakebedrock [FLAGS...]: a fresh fake Bedrock Runtime endpoint; its URL
# is left in $fake_url, its pid in $fake_pid.
fakebedrock() {
	rm -f "$OUT/fakebedrock.url"
	"${pin_tool[@]}" "$BIN/fakebedrock" -url-file "$OUT/fakebedrock.url" "$@" >>"$OUT/fakebedrock.log" 2>&1 &
	fake_pid=$!
	pids+=("$fake_pid")
	for _ in $(seq 100); do
		if [[ -s $OUT/fakebedrock.url ]]; then
			fake_url=$(<"$OUT/fakebedrock.url")
			return
		fi
		sleep 0.1
	done
	echo "fakebedrock did not start; see $OUT/fakebedrock.log" >&2
	return 1
}

# fakeopenai [FLAGS...]: a fresh fake OpenAI-compatible endpoint; its
# base URL is left in $fake_url, its pid in $fake_pid.
fakeopenai() {
	rm -f "$OUT/fakeopenai.url"
	"${pin_tool[@]}" "$BIN/fakeopenai" -url-file "$OUT/fakeopenai.url" "$@" >>"$OUT/fakeopenai.log" 2>&1 &
	fake_pid=$!
	pids+=("$fake_pid")
	for _ in $(seq 100); do
		if [[ -s $OUT/fakeopenai.url ]]; then
			fake_url=$(<"$OUT/fakeopenai.url")
			return
		fi
		sleep 0.1
	done
	echo "fakeopenai did not start; see $OUT/fakeopenai.log" >&2
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

# redis_cluster: a fresh Redis Cluster without persistence, three masters
# with a replica each, on ports $CLUSTER_PORT to $CLUSTER_PORT+5 (default
# 7101), made by redis-cli --cluster create; its URL is left in
# $cluster_url.
CLUSTER_PORT=${CLUSTER_PORT:-7101}
redis_cluster() {
	local port nodes=() i
	for i in 0 1 2 3 4 5; do
		port=$((CLUSTER_PORT + i))
		rm -rf "$OUT/cluster-$port"
		mkdir -p "$OUT/cluster-$port"
		redis-server --port "$port" --cluster-enabled yes \
			--dir "$OUT/cluster-$port" --save '' --appendonly no >"$OUT/redis-$port.log" 2>&1 &
		pids+=("$!")
		nodes+=("127.0.0.1:$port")
	done
	for port in $(seq "$CLUSTER_PORT" $((CLUSTER_PORT + 5))); do
		for _ in $(seq 50); do
			redis-cli -p "$port" ping >/dev/null 2>&1 && break
			sleep 0.1
		done
	done
	redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$OUT/cluster-create.log" 2>&1 || {
		echo "redis-cli --cluster create failed; see $OUT/cluster-create.log" >&2
		return 1
	}
	for _ in $(seq 100); do
		redis-cli -p "$CLUSTER_PORT" cluster info 2>/dev/null | grep -q cluster_state:ok && break
		sleep 0.1
	done
	cluster_url="redis://127.0.0.1:$CLUSTER_PORT"
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
	if [[ -z ${BENCH_BIN:-} ]]; then
		rm -rf "$BIN"
	fi
}
trap cleanup EXIT

# bench NAME ARGS...: runs wsbench, keeps its report in $OUT/NAME.txt.
bench() {
	local name=$1
	shift
	echo "== $name: wsbench $*" | tee "$OUT/$name.txt"
	"${pin_tool[@]}" "$BIN/wsbench" "$@" -q | tee -a "$OUT/$name.txt"
}

# cpu NAME PID...: adds the CPU time each process has used so far, and
# its resident memory, to $OUT/NAME.txt.
cpu() {
	local name=$1 p
	shift
	for p in "$@"; do
		# utime and stime, fields 14 and 15 of stat, are fields 12 and
		# 13 after the command's name; field 24, rss, is 22 (pages).
		awk -v p="$p" -v c="$(<"/proc/$p/comm")" -v hz="$(getconf CLK_TCK)" -v pg="$(getconf PAGESIZE)" \
			'{ sub(/^.*\) /, ""); printf "cpu: %s (pid %d) %.2fs, rss %.1f MiB\n", c, p, ($12 + $13) / hz, $22 * pg / 1048576 }' "/proc/$p/stat"
	done | tee -a "$OUT/$name.txt"
}
