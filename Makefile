# skein — build, test, demo and benchmarks.
#
# Every target runs on the Node.js the project installs into node_modules (the `node`
# package from npm, Node 24 LTS), never on an older machine node: node_modules/.bin leads PATH.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(CURDIR)
export PATH := $(ROOT)/node_modules/.bin:$(PATH)

# Where the build puts what it makes; the BPF objects and the addon are found there at run time.
BPF_OUT := $(ROOT)/build/bpf
VMLINUX_H := $(ROOT)/build/vmlinux.h
BTF := /sys/kernel/btf/vmlinux
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,$(BPF_OUT)/%.bpf.o,$(BPF_SRC))
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

# Debian packages the build, the lab, the tests and the benchmarks use.
DEB_PACKAGES := clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config cmake g++ make \
	iproute2 nftables iptables procps psmisc curl jq tshark haproxy wrk nghttp2-client

.PHONY: all deps deps-deb deps-npm build build-bpf build-native build-ts typecheck lint \
	test test-unit test-e2e demo bench clean lab-gc

all: build

## deps: install what a fresh Debian machine lacks (idempotent).
deps: deps-deb deps-npm

deps-deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "deps: Debian packages present"; fi

# `npm ci` installs exactly what the lock file says. npm 11 with
# omit-lockfile-registry-resolved (set on these machines) writes lock files whose optional
# platform packages (biome, esbuild) npm ci then calls "missing"; npm install still keeps
# every locked version, so it is the fallback.
deps-npm:
	@if [ -f package-lock.json ] && npm ci --no-audit --no-fund --loglevel=error 2>/dev/null; then :; \
	else npm install --no-audit --no-fund --loglevel=error; fi
	@echo "deps: node $$(node --version) from $$(command -v node)"

## build: BPF objects (CO-RE against the kernel's BTF), the native addon, the TypeScript.
build: build-bpf build-native build-ts

$(VMLINUX_H): | $(BTF)
	@mkdir -p $(dir $@)
	bpftool btf dump file $(BTF) format c > $@.tmp && mv $@.tmp $@

$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(VMLINUX_H)
	@mkdir -p $(BPF_OUT)
	clang -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) \
	  -I$(dir $(VMLINUX_H)) -Ibpf -c $< -o $@

build-bpf: $(BPF_OBJ)
	@echo "build: $(words $(BPF_OBJ)) BPF object(s) in $(BPF_OUT)"

build-native:
	@if [ -f native/CMakeLists.txt ]; then \
	  cmake-js compile --directory native --out $(ROOT)/build/native --log-level warn; \
	else echo "build: no native/CMakeLists.txt yet"; fi

build-ts:
	tsc -p tsconfig.build.json

typecheck:
	tsc --noEmit -p tsconfig.json

lint:
	biome lint

## test: type-check, lint, unit tests (no root), e2e tests (root, real kernel, serial).
test: build
	@node test/run-suites.mjs

test-unit:
	@node test/run-suites.mjs unit

test-e2e: build
	@node test/run-suites.mjs e2e

## demo: the demo cluster up, traffic between its pods, a summary, then down (KEEP=1 keeps it).
demo: build
	node bin/skein.js lab demo deploy/local/demo.yaml $(if $(KEEP),--keep,)

## bench: benchmarks against direct traffic and peers measured in the same run (QUICK=1 shorter).
bench: build
	node test/bench/run.mjs $(if $(QUICK),--quick,)

lab-gc:
	node bin/skein.js lab gc

clean:
	rm -rf build dist native/build
