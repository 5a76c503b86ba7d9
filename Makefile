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
# The chained CNI plugin (a static C binary, no runtime on the node needed); `skein cni install`
# copies it from here (override with CNI_OUT=... at build and --binary at install).
CNI_OUT := $(ROOT)/build/cni
CNI_BIN := $(CNI_OUT)/skein-cni
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

# Debian packages the build, the lab, the tests and the benchmarks use. Each is here for a
# command some target runs: clang/llvm (BPF objects), bpftool (vmlinux.h, e2e checks),
# libbpf-dev libelf-dev zlib1g-dev pkg-config cmake g++ make (the addon), iproute2 (ip, ss),
# nftables (Service VIPs), procps (sysctl), util-linux (nsenter), tshark (wire checks),
# openssl (unit tests, bench certificates), haproxy wrk nghttp2-client curl (bench), jq,
# prometheus (skein lab up --prometheus and the metrics e2e; the binary, never its service),
# chromium (the graph page e2e renders the controller's service graph in headless Chromium),
# containernetworking-plugins (the lab networks its pods with the standard CNI plugins, ptp and
# static IPAM from /usr/lib/cni, as a node's container runtime does), libc6-dev (skein-cni is
# linked statically, so it runs on any node whatever its libc).
DEB_PACKAGES := clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config cmake g++ make \
	iproute2 nftables iptables procps psmisc util-linux openssl curl jq tshark haproxy wrk \
	nghttp2-client prometheus chromium containernetworking-plugins libc6-dev

.PHONY: all deps deps-deb deps-npm build build-bpf build-native build-cni build-ts typecheck lint \
	test test-unit test-e2e test-reliability demo bench clean lab-gc

all: build

## deps: install what a fresh Debian machine lacks (idempotent).
deps: deps-deb deps-npm

deps-deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: Debian packages present"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "deps: missing Debian packages:$$missing; run as root (sudo make ...) to install them" >&2; exit 1; \
	else \
	  echo "deps: installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  case "$$missing" in *prometheus*) \
	    echo "deps: Prometheus runs per lab (skein lab up --prometheus), not as a service: disabling Debian's unit"; \
	    systemctl disable --now prometheus >/dev/null 2>&1 || { [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus stop >/dev/null 2>&1; } || true;; \
	  esac; \
	fi

# The locked npm packages, never rewriting the tracked lock file (a set-up that dirties the
# checkout hides real changes). `npm ci` installs exactly the lock; should it refuse the lock
# on some machine (npm's checks of optional platform packages have changed between
# releases), `npm install --no-save` still installs the locked versions and writes nothing
# back. A stamp of package.json + package-lock.json skips the ~20 s reinstall when nothing
# changed, so `make demo` / `make test` can run deps every time.
NPM_STAMP := node_modules/.skein-deps
deps-npm:
	@want="$$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"; \
	if [ -x node_modules/.bin/node ] && [ "$$(cat $(NPM_STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "deps: npm packages present"; \
	else \
	  if ! npm ci --no-audit --no-fund --loglevel=error; then \
	    echo "deps: npm ci refused package-lock.json; installing the locked versions with npm install --no-save" >&2; \
	    npm install --no-save --no-audit --no-fund --loglevel=error; \
	  fi; \
	  echo "$$want" > $(NPM_STAMP); \
	fi
	@echo "deps: node $$(node --version) from $$(command -v node)"

## build: BPF objects (CO-RE against the kernel's BTF), the native addon, skein-cni, the TypeScript.
build: build-bpf build-native build-cni build-ts

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

$(CNI_BIN): cni/skein-cni.c
	@mkdir -p $(CNI_OUT)
	cc -O2 -Wall -Wextra -Werror -static -o $@.tmp $< && mv $@.tmp $@

build-cni: $(CNI_BIN)

build-ts:
	tsc -p tsconfig.build.json

typecheck:
	tsc --noEmit -p tsconfig.json

lint:
	biome lint

## test: type-check, lint, unit tests (no root), e2e tests (root, real kernel, serial).
test: deps build
	@node test/run-suites.mjs

test-unit:
	@node test/run-suites.mjs unit

test-e2e: deps build
	@node test/run-suites.mjs e2e

## test-reliability: the reliability suite (test/e2e/reliability: controller down, CA down,
## 10 s certificates, peer vanish, flood, soak, agent restart and agent upgrade) in its long
## form, with the issue's durations (controller away 5 min, 10 s certificates for 5 min, a
## 30 min soak at 500 req/s, ...: about 50 minutes; root), whose figures the README quotes.
## `make test` runs the same files in their short form.
test-reliability: deps build
	node bin/skein.js lab gc
	SKEIN_RELIABILITY=long tap run --jobs=1 --disable-coverage --timeout=3600 test/e2e/reliability/
	node bin/skein.js lab gc

## demo: the demo cluster up, traffic between its pods, a summary, then down (KEEP=1 keeps it);
## then the canary cluster: the same, and a route shifting v1 -> v2 under load.
demo: deps build
	node bin/skein.js lab demo deploy/local/demo.yaml $(if $(KEEP),--keep,)
	node bin/skein.js lab demo deploy/local/canary.yaml $(if $(KEEP),--keep,)

## bench: benchmarks against direct traffic and peers measured in the same run (QUICK=1 shorter).
bench: deps build
	node test/bench/run.mjs $(if $(QUICK),--quick,)

lab-gc:
	node bin/skein.js lab gc

clean:
	rm -rf build dist native/build
