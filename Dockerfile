# The wsserver image: a static binary on an empty base, run as a non-root
# user. Written for the classic builder as well as BuildKit (no RUN --mount,
# no heredocs), so it builds wherever a docker daemon does.
#
#   docker build -t wsserver .
#   docker build --build-arg GO_IMAGE=wsserver-test/golang:1.26 -t wsserver .
#
# GO_IMAGE builds and RUNTIME_IMAGE runs. The defaults are official images
# (scratch is built into docker); where no registry answers,
# test/images/env.sh names a local Go image built by test/images/build.sh.
# Any RUNTIME_IMAGE works that runs a static binary, such as
# gcr.io/distroless/static-debian12:nonroot.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=scratch

FROM ${GO_IMAGE} AS modules
ARG GOPROXY=https://proxy.golang.org,direct
ENV CGO_ENABLED=0 GOPROXY=${GOPROXY} GOFLAGS=-buildvcs=false
WORKDIR /src
# The modules first, in a layer of their own: it is rebuilt only when
# go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

# The classic builder has no cache mounts, so the packages the server
# imports from other modules are compiled in a layer of their own, which
# stays cached while that list of packages does not change.
FROM modules AS imports
COPY . .
RUN go list -deps -f '{{if and .Module (not .Module.Main)}}{{.ImportPath}}{{end}}' ./cmd/wsserver >/imports

FROM modules AS build
COPY --from=imports /imports /imports
RUN xargs go build -trimpath </imports
COPY . .
RUN go build -trimpath -ldflags="-s -w" -o /out/wsserver ./cmd/wsserver
# What an empty base lacks: CA certificates (Bedrock, rediss://), time zones,
# a /tmp, and names for the user the server runs as.
RUN mkdir -p /out/etc/ssl/certs /out/usr/share /out/tmp && \
	chmod 1777 /out/tmp && \
	cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ && \
	cp -r /usr/share/zoneinfo /out/usr/share/ && \
	echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >/out/etc/passwd && \
	echo 'nonroot:x:65532:' >/out/etc/group

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/ /
USER 65532:65532
# The server's own default is 127.0.0.1:8000, unreachable from outside a
# container; here it listens on every interface. DJANGO_DEBUG is left unset,
# so off: run with no settings, the image refuses to start and names what it
# lacks (DJANGO_SECRET_KEY, AUTH_API_KEY or AUTH_DISABLED=1).
ENV LISTEN_ADDR=:8000
EXPOSE 8000
# The first check runs one interval after the start (the classic builder
# knows no --start-interval; on daemons with API 1.44 or later, compose's
# start_interval or docker run's --health-start-interval shortens it). The
# server answers /health/ well within a second of its start.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
	CMD ["/wsserver", "healthcheck"]
# SIGTERM drains (PROTOCOL.md §11): /health/ turns 503, answers finish within
# SHUTDOWN_GRACE (25 s by default; past it they are cancelled and get up to
# 5 s more to save), session sockets close with 1012, and the process exits
# 0. Give `docker stop -t` / stop_grace_period more than SHUTDOWN_GRACE plus
# 5 s, or docker kills the process at 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/wsserver"]
