# vxdp: set-up, build, test, demo and benchmark entry points.
#
# GNU make on Debian bookworm, run as root (namespaces, TAP devices). Everything a fresh machine
# needs is installed from here: `make test` on a bare box installs the apt tools, makes the venv,
# compiles the Cython fast path and runs the suite; run again, it only re-runs pytest.
#
#   make test   [PYTEST_ARGS=...] [TESTS=tests/unit]   CI=true: skips of root/extension tests fail
#   make demo   [ARGS=...]                              the reference/ walkthrough
#                                                       (ARGS=--docker: with real Docker)
#   make bench  [ARGS=--json]                           benchmarks (run from the repo root)
#   make relay                                          build/vxrelay, bench_e2e's floor (in build)
#   make venv VENV=/tmp/v                               a venv elsewhere (default .venv)
#   make clean | distclean                              build artefacts | and the venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-builtin-rules

PYTHON      ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
NPROC       := $(shell nproc 2>/dev/null || echo 2)
TESTS       ?= tests
PYTEST_ARGS ?=
ARGS        ?=

# Read by tests/conftest.py and dataplane: passed through from the environment or the command
# line (`make test CI=true`), and left unset, not set empty, when not given.
PASS_THROUGH := CI VXDP_REQUIRE_ROOT VXDP_REQUIRE_EXTENSIONS VXDP_NO_EXTENSIONS HYPOTHESIS_PROFILE
$(foreach v,$(PASS_THROUGH),$(if $(filter undefined,$(origin $(v))),,$(eval export $(v))))

# ---------------------------------------------------------------------------------------------
# System packages (apt). Checked with dpkg-query, so apt only runs when something is missing.
# gcc + libc6-dev: --no-install-recommends would otherwise leave gcc without libc headers.
# etcd-server: the real etcd (3.4) that the store's tests, benchmark and demo run in a lab
# namespace (on a systemd host the package also enables its own etcd on localhost; vxdp never
# uses that one).
APT_PACKAGES := iproute2 iputils-ping arping tcpdump tshark iperf3 ethtool procps psmisc \
                gcc libc6-dev make etcd-server
# Docker and CNI, for the container tests and `vxdp demo --docker`: each test runs its own
# dockerd (and podman) with private state in a lab namespace (dataplane/lab/docker.py). A system
# dockerd or containerd must never run: dockerd would use a system containerd answering on
# /run/containerd/containerd.sock, and the services take /run/docker.sock and /var/lib/docker.
# So nothing may start during the install (policy-rc.d exiting 101 is Debian's switch, honoured
# by invoke-rc.d and deb-systemd-invoke), and on a systemd host the units are disabled and
# stopped afterwards.
CONTAINER_PACKAGES := docker.io busybox-static containernetworking-plugins podman
CONTAINER_UNITS    := docker.service docker.socket containerd.service
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# $(call apt_install,PACKAGES): non-interactive install. The debconf answers keep tshark
# (wireshark-common asks whether non-root may capture) and iperf3 (daemon?) from prompting.
apt_install = echo "deps: apt-get install$(1)"; \
	printf '%s\n' 'wireshark-common wireshark-common/install-setuid boolean false' \
	              'iperf3 iperf3/start_daemon boolean false' | $(SUDO) debconf-set-selections; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0 update </dev/null; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0 install -y \
	        --no-install-recommends $(1) </dev/null >/dev/null

# $(call apt_install_quiet,PACKAGES): apt_install with no service started by the packages
# (a policy-rc.d made for the install and removed after it, even when apt fails), then the
# container daemons' units disabled and stopped where systemd runs.
apt_install_quiet = made=""; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
	  printf '\043!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	  $(SUDO) chmod 755 /usr/sbin/policy-rc.d; made=1; \
	  trap '$(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT; fi; \
	$(call apt_install,$(1)); \
	if [ -n "$$made" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi; \
	if [ -d /run/systemd/system ]; then \
	  $(SUDO) systemctl disable --now $(CONTAINER_UNITS) >/dev/null 2>&1 || true; fi

# $(call apt_missing,PACKAGES): sets shell variable `missing` to those not installed.
apt_missing = missing=""; for p in $(1); do \
	dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q ' ok installed$$' \
	  || missing="$$missing $$p"; done

# ---------------------------------------------------------------------------------------------
HAS_PYTHON_H := import os, sys, sysconfig; \
  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
VENV_STAMP  := $(VENV)/.stamp
BUILD_STAMP := build/.ext-stamp
PYX         := $(wildcard _fastpath/*.pyx)
FASTPATH_DEPS := $(PYX) $(wildcard _fastpath/*.pxd _fastpath/core/*.pyx _fastpath/core/*.pxd \
                           _fastpath/includes/*.pxd _fastpath/includes/*.h)
# A .pyx whose extension module is gone (deleted by hand) forces a rebuild despite the stamp.
MISSING_SO  := $(foreach p,$(PYX),$(if $(wildcard $(p:.pyx=).*.so),,$(p)))

.PHONY: help deps venv build relay test demo bench bench-fastpath bench-e2e bench-store clean distclean FORCE

help:
	@echo "targets: deps venv build relay test demo bench bench-fastpath bench-e2e clean distclean"
	@echo "vars:    VENV=$(VENV) PYTHON=$(PYTHON) TESTS=$(TESTS) PYTEST_ARGS= ARGS= CI="

deps:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "deps: no dpkg here (not Debian?): install by hand: $(APT_PACKAGES) $(CONTAINER_PACKAGES)"; exit 0; fi; \
	$(call apt_missing,$(APT_PACKAGES) $(CONTAINER_PACKAGES)); \
	if [ -z "$$missing" ]; then echo "deps: system packages present"; exit 0; fi; \
	$(call apt_install_quiet,$$missing); \
	echo "deps: done"

# The project is installed editable with the [test] extra. VXDP_NO_BUILD_EXT keeps pip from
# compiling the fast path (a broken .pyx must not break the venv); `build` compiles it in place.
# --no-build-isolation: the build requirements are installed into the venv just before, so
# no throw-away build env is downloaded and `build` can use the same Cython.
venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml setup.py | deps
	@if ! $(VPY) -c '' >/dev/null 2>&1; then \
	  echo "venv: creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); \
	  if ! { $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	         && $(PYTHON) -m venv $(VENV); }; then \
	    echo "venv: '$(PYTHON) -m venv' failed or python < 3.11; using Debian's /usr/bin/python3"; \
	    rm -rf $(VENV); \
	    $(call apt_missing,python3 python3-venv python3-dev); \
	    if [ -n "$$missing" ]; then $(call apt_install,$$missing); fi; \
	    /usr/bin/python3 -m venv $(VENV); \
	  fi; \
	fi; \
	if ! $(VPY) -c '$(HAS_PYTHON_H)'; then \
	  echo "venv: Python.h missing for $$($(VPY) -c 'import sys; print(sys.base_prefix)')"; \
	  $(call apt_install, python3-dev); \
	fi
	@echo "venv: installing build tools and vxdp[test] (editable) into $(VENV)"
	@$(VPY) -m pip install -qq --upgrade pip
	@$(VPY) -m pip install -qq --upgrade setuptools wheel 'Cython>=3'
	@VXDP_NO_BUILD_EXT=1 $(VPY) -m pip install -qq --no-build-isolation -e '.[test]'
	@touch $@

# Compiles every _fastpath/*.pyx in place (setup.py). Cython and setuptools also track
# dependencies themselves, so a rebuild after a .pxd change only redoes what is needed.
build: $(BUILD_STAMP) relay

# The minimal C relay bench_e2e measures vxdp against (benchmarks/relay/vxrelay.c; it shares
# the fast path's inline helpers). bench_e2e builds it too when it is missing or stale.
RELAY := build/vxrelay
relay: $(RELAY)

$(RELAY): benchmarks/relay/vxrelay.c _fastpath/includes/vxbits.h | deps
	@mkdir -p $(@D)
	@echo "relay: cc $< -> $@"
	@$${CC:-cc} -O2 -Wall -Wextra -I_fastpath/includes -o $@ $<

$(BUILD_STAMP): $(FASTPATH_DEPS) setup.py $(VENV_STAMP) $(if $(MISSING_SO),FORCE)
	@if [ -z "$(PYX)" ]; then echo "build: no _fastpath/*.pyx yet, nothing to compile"; \
	else echo "build: cythonizing and compiling $(notdir $(PYX))"; \
	  $(VPY) setup.py -q build_ext --inplace -j $(NPROC); fi
	@mkdir -p $(@D) && touch $@

# Exit status 5 (no tests collected) is reported but not an error, so an early tree passes.
test: deps venv build
	@echo "test: pytest $(TESTS) (CI=$${CI:-})"
	@rc=0; $(VPY) -m pytest $(TESTS) -q -p no:cacheprovider $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test: pytest collected no tests"; rc=0; fi; exit $$rc

demo: deps venv build
	$(VENV)/bin/vxdp demo $(ARGS)

bench: bench-fastpath bench-store $(if $(wildcard benchmarks/bench_e2e.py),bench-e2e)

bench-fastpath: deps venv build
	$(VPY) -m benchmarks.bench_fastpath $(ARGS)

bench-e2e: deps venv build
	@$(VPY) -c 'import matplotlib' 2>/dev/null || $(VPY) -m pip install -qq matplotlib py-spy
	$(VPY) -m benchmarks.bench_e2e $(ARGS)

bench-store: deps venv build
	$(VPY) -m benchmarks.bench_store $(ARGS)

# Generated C and HTML are recognised by Cython's header, so hand-written C is never deleted.
clean:
	@echo "clean: build/ dist/ *.egg-info, compiled and generated _fastpath files, __pycache__"
	@rm -rf build dist *.egg-info
	@rm -f _fastpath/*.so _fastpath/includes/*.so
	@for f in _fastpath/*.c _fastpath/*.html; do \
	  [ -e "$$f" ] && head -c 200 "$$f" | grep -q 'Generated by Cython' && rm -f "$$f"; done; true
	@find $(wildcard dataplane _fastpath tests benchmarks) -name __pycache__ -type d -prune \
	  -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	@echo "distclean: $(VENV) .hypothesis .pytest_cache"
	@rm -rf $(VENV) .hypothesis .pytest_cache

FORCE:
