#!/usr/bin/env bash
# chat.sh runs the chat benchmarks of docs/BENCHMARKS.md: the server(s),
# Redis, PostgreSQL and wsbench together on this machine. Results go to $OUT
# (default a temp dir).
#
#   bash test/bench/chat.sh                    # every scenario
#   bash test/bench/chat.sh paced-250 burst-memory
#   bash test/bench/chat.sh paced-200 bedrock-200   # local model vs Bedrock adapters
#   bash test/bench/chat.sh paced-200 openai-200    # local model vs openai adapters
#   bash test/bench/chat.sh bedrock-guard-200          # issue 15: ApplyGuardrail taking 150 ms
#   bash test/bench/chat.sh resumable-250-pairs resume-60 # issue 12: resumable answers
#   bash test/bench/chat.sh burst-250-redis-postgres burst-redis-postgres # issue 13 §3's chat figures
#
# Needs redis-server on PATH and Docker with a PostgreSQL image
# ($BENCH_POSTGRES_IMAGE, default the one test/images/env.sh picks) for the
# Redis + PostgreSQL scenarios. bedrock-200 runs the server on the Bedrock
# adapters against test/fakebedrock's command, which streams an answer of
# the local model's sentence lengths at the local model's pace (50 tokens/s);
# openai-200 runs it on the openai adapters against test/fakeopenai's
# command, which streams the same answer as server-sent events.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DURATION=${DURATION:-30s}
# shellcheck source=test/bench/lib.sh
source test/bench/lib.sh

# Back-to-back chats send far more than 100 messages a second per socket
# when the model has no delay: lift the per-socket rate limit for them.
fast=(RATE_LIMIT_PER_SEC=100000 RATE_LIMIT_BURST=100000 LOCAL_MODEL_TOKEN_DELAY=0)
shared=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" DATABASE_URL="postgres://postgres:bench@127.0.0.1:$PG_PORT/postgres")
# The Bedrock adapters on a fake endpoint, with static credentials through
# the SDK's default chain (no instance metadata lookups).
bedrock=(AWS_BEDROCK_REGION=us-east-1 BEDROCK_MODEL_ID_CHAT=bench-model AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true)
long="Please explain in detail how streaming answers work here, what happens to my thread and its history when I come back later from another device or browser tab, who else can see it, and what I should do next."

run() {
	case $1 in
	paced-250)
		server 8000 LOCAL_MODEL_TOKEN_DELAY=20ms
		bench paced-250 chat -url ws://127.0.0.1:8000 -conns 250 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$pid"
		;;
	paced-250-redis-postgres)
		redis
		postgres
		server 8000 LOCAL_MODEL_TOKEN_DELAY=20ms "${shared[@]}"
		a=$pid
		server 8001 LOCAL_MODEL_TOKEN_DELAY=20ms "${shared[@]}"
		b=$pid
		bench paced-250-redis-postgres chat -url ws://127.0.0.1:8000,ws://127.0.0.1:8001 -conns 250 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$a,$b"
		;;
	paced-200)
		port=${BENCH_PORT:-8000}
		server "$port" LOCAL_MODEL_TOKEN_DELAY=20ms
		bench paced-200 chat -url "ws://127.0.0.1:$port" -conns 200 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$pid"
		cpu paced-200 "$pid"
		;;
	bedrock-200)
		fakebedrock -pace 20ms
		server 8000 "${bedrock[@]}" BEDROCK_ENDPOINT_URL="$fake_url"
		bench bedrock-200 chat -url ws://127.0.0.1:8000 -conns 200 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$pid"
		cpu bedrock-200 "$pid" "$fake_pid"
		;;
	openai-200)
		fakeopenai -pace 20ms
		server 8000 OPENAI_BASE_URL="$fake_url" OPENAI_MODEL_ID_CHAT=bench-model
		bench openai-200 chat -url ws://127.0.0.1:8000 -conns 200 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$pid"
		cpu openai-200 "$pid" "$fake_pid"
		;;
	bedrock-guard-200)
		# Issue 15: the Bedrock adapters with ApplyGuardrail, each call
		# answered after 150 ms; wsbench reads the guardrail's calls per
		# answer from /metrics and the server's added part of the first
		# token (the fake's model answers at once: -model-first-token 0).
		# BENCH_PORT: another port than 8000, on a machine that runs
		# other servers.
		port=${BENCH_PORT:-8000}
		fakebedrock -pace 20ms -guardrail-delay 150ms
		server "$port" "${bedrock[@]}" BEDROCK_ENDPOINT_URL="$fake_url" BEDROCK_GUARDRAIL_ID=bench-guardrail BEDROCK_GUARDRAIL_VERSION=1 ${BENCH_SERVER_ENV:-}
		bench bedrock-guard-200 chat -url "ws://127.0.0.1:$port" -conns 200 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$pid"
		cpu bedrock-guard-200 "$pid" "$fake_pid"
		;;
	resumable-250 | resumable-250-baseline | resumable-250-pairs | resume-60)
		# Issue 12, on Redis + PostgreSQL, two instances on BENCH_PORT and
		# BENCH_PORT+1: 250 chats at 50 tokens/s with "resumable":true
		# (the answer log kept in Redis) and the same without; -pairs
		# alternates them $PAIRS times (default 2) on the same servers so
		# that the machine's load falls on both alike. resume-60: each
		# chat's socket is dropped after 20 tokens and its answer resumed
		# on the other instance after 60 tokens' time at the answer's pace
		# so far (60 missed). The local model's answers are 60 tokens, too
		# short for that: resume-60 runs on the Bedrock adapters against
		# test/fakebedrock streaming 120 words at 50/s.
		port=${BENCH_PORT:-8000}
		redis
		postgres
		model=(LOCAL_MODEL_TOKEN_DELAY=20ms)
		if [[ $1 == resume-60 ]]; then
			fakebedrock -pace 20ms -words 120
			model=("${bedrock[@]}" BEDROCK_ENDPOINT_URL="$fake_url")
		fi
		server "$port" "${model[@]}" "${shared[@]}"
		a=$pid
		server $((port + 1)) "${model[@]}" "${shared[@]}"
		b=$pid
		urls="ws://127.0.0.1:$port,ws://127.0.0.1:$((port + 1))"
		paced=(chat -url "$urls" -conns 250 -chats 0 -duration "$DURATION" -stagger 2s -new-thread -message "$long" -pid "$a,$b")
		case $1 in
		resumable-250) bench resumable-250 "${paced[@]}" -resumable ;;
		resumable-250-baseline) bench resumable-250-baseline "${paced[@]}" ;;
		resumable-250-pairs)
			for i in $(seq "${PAIRS:-2}"); do
				echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" | tee -a "$OUT/load.txt"
				bench "resumable-250-baseline-$i" "${paced[@]}"
				echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" | tee -a "$OUT/load.txt"
				bench "resumable-250-$i" "${paced[@]}" -resumable
			done
			;;
		resume-60) bench resume-60 "${paced[@]}" -resumable -resume-after 20 -resume-missed 60 ;;
		esac
		cpu "$1" "$a" "$b"
		;;
	burst-250-redis-postgres)
		# Issue 13 §3 (a): 250 chats sent in the same millisecond (no
		# -stagger), each connection's next chat as soon as its end
		# arrives, at the local model's 50 tokens/s, on Redis +
		# PostgreSQL with two instances on BENCH_PORT and BENCH_PORT+1.
		# Target: session_started p99 <= 20 ms.
		port=${BENCH_PORT:-8000}
		redis
		postgres
		server "$port" LOCAL_MODEL_TOKEN_DELAY=20ms "${shared[@]}"
		a=$pid
		server $((port + 1)) LOCAL_MODEL_TOKEN_DELAY=20ms "${shared[@]}"
		b=$pid
		echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" | tee -a "$OUT/load.txt"
		bench burst-250-redis-postgres chat -url "ws://127.0.0.1:$port,ws://127.0.0.1:$((port + 1))" -conns 250 -chats 0 -duration "$DURATION" -new-thread -message "$long" -pid "$a,$b"
		echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" | tee -a "$OUT/load.txt"
		cpu burst-250-redis-postgres "$a" "$b"
		;;
	burst-memory)
		server 8000 "${fast[@]}"
		bench burst-memory chat -url ws://127.0.0.1:8000 -conns 20 -chats 0 -duration "$DURATION" -new-thread -message "$long" -pid "$pid"
		;;
	burst-redis-postgres)
		# Issue 13 §3 (b): 20 connections back to back, no model delay,
		# Redis + PostgreSQL, two instances on BENCH_PORT and
		# BENCH_PORT+1. Target: >= 80,000 tokens/s.
		port=${BENCH_PORT:-8000}
		redis
		postgres
		server "$port" "${fast[@]}" "${shared[@]}"
		a=$pid
		server $((port + 1)) "${fast[@]}" "${shared[@]}"
		b=$pid
		echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" | tee -a "$OUT/load.txt"
		bench burst-redis-postgres chat -url "ws://127.0.0.1:$port,ws://127.0.0.1:$((port + 1))" -conns 20 -chats 0 -duration "$DURATION" -new-thread -message "$long" -pid "$a,$b"
		echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" | tee -a "$OUT/load.txt"
		cpu burst-redis-postgres "$a" "$b"
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
	scenarios=(paced-250 paced-250-redis-postgres burst-memory burst-redis-postgres paced-200 bedrock-200 openai-200)
fi
echo "results in $OUT; $(nproc) cores, $(go version), $(uname -r)"
for s in "${scenarios[@]}"; do run "$s"; done
