#!/usr/bin/env bash
# Tests of the Go package: go vet, go test with the strict cgo pointer checks
# (GODEBUG=cgocheck=2), and go test -race. Builds against an installed libnp: the one
# PKG_CONFIG_PATH finds, else a fresh install into a temporary prefix. Nothing is downloaded
# (GOPROXY=off; the package uses the standard library only). Extra arguments go to go test,
# e.g. `bash bindings/go/run_tests.sh -run Conformance -v` or `-bench . -run ^$`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! pkg-config --exists np 2>/dev/null; then
  bash "$here/../c/install.sh" "$work/prefix"
  export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
fi
export GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=1
# A cache of its own: a shared one can hold objects linked against another libnp prefix.
export GOCACHE="$work/go-build"
cd "$here"
go vet ./...
GODEBUG=cgocheck=2 go test -count=1 "$@" ./...
go test -race -count=1 "$@" ./...
