# rbdfail -- `make test` and `make demo` set up everything they need on a fresh Debian machine
# (as root, or with sudo): the OS packages (Ceph's daemons and Python bindings), a virtualenv
# that sees those bindings, and the project with its test extras.
SHELL := /bin/bash
VENV ?= .venv
SYSTEM_PYTHON := /usr/bin/python3
STAMP := $(VENV)/.installed
# Ceph's Python bindings are not on PyPI: they come from python3-rados/python3-rbd, built for
# Debian's /usr/bin/python3, and the venv sees them through --system-site-packages.
APT_PACKAGES := ceph-mon ceph-osd ceph-mgr rbd-mirror ceph-common python3-rados python3-rbd \
                python3-venv

.PHONY: help deps venv test unit fuzz chaos disasters demo lint format bench clean

help:
	@echo "make test    install what is missing, then run every test (unit + real two-site lab)"
	@echo "make demo    install what is missing, start the lab and walk through rbdfail"
	@echo "make unit    only the tests that need no Ceph (without python3-rados too:"
	@echo "             pip install -e .[test]; pytest -m 'not lab')"
	@echo "make lint    ruff and mypy"
	@echo "make fuzz    the long hostile-input sweep (FUZZ_EXAMPLES=20000 documents per sweep)"
	@echo "make chaos   the whole chaos sweep on the lab (CHAOS_SEED=N replays a run; ONLY=kill|lost|..."
	@echo "             picks cases by name, as pytest -k)"
	@echo "make disasters  forced failover in every disaster shape of the lab (make test runs one)"
	@echo "make bench   rbdfail against the alternatives on the lab (N=200 REPS=3 ONLY="forced status"; ONLY=rules needs no lab)"
	@echo "             ONLY=two-pools: N volumes over two pools (two backends) against one"
	@echo "make clean   stop the demo lab and remove the virtualenv"

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing OS packages:" $$missing; \
	  sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | deps
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,lint]'
	$(VENV)/bin/python -c 'import rados, rbd' || { echo "the venv cannot see python3-rados/python3-rbd" >&2; exit 1; }
	touch $@

venv: deps $(STAMP)

test: venv
	$(VENV)/bin/pytest -v --durations=15

unit: venv
	$(VENV)/bin/pytest -v -m 'not lab'

# The property-based sweeps of tests/test_fuzz.py with many more documents than `make test`
# tries (150 per sweep), new ones each run; each sweep prints its figures.
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	RBDFAIL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) RBDFAIL_FUZZ_RANDOM=1 \
	  $(VENV)/bin/pytest -s -q -p no:cacheprovider -o timeout=0 tests/test_fuzz.py

# The chaos sweep of tests/test_chaos_lab.py: every case `make test` does not run (marker
# `chaos`); each case prints its seed. A new seed each run unless CHAOS_SEED is given.
# Drawn once (`:=`): a recursive `?=` would draw a new seed at each use, and the seed printed
# would not be the one the cases ran with.
ifeq ($(origin CHAOS_SEED), undefined)
CHAOS_SEED := $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
endif
chaos: venv
	@echo "chaos seed $(CHAOS_SEED): CHAOS_SEED=$(CHAOS_SEED) make chaos replays this run"
	@# Two sessions, so that the shared lab of the kill and succession cases is down before the lost cases
	@# start a lab each: one lab at a time on the machine. Exit 5 is "no case selected".
	RBDFAIL_CHAOS_SEED=$(CHAOS_SEED) $(VENV)/bin/pytest -v -s -p no:cacheprovider -m chaos \
	  -k "(test_chaos__killed_at or test_chaos__switches) $(if $(ONLY),and ($(ONLY)))" \
	  tests/test_chaos_lab.py; \
	killed=$$?; \
	RBDFAIL_CHAOS_SEED=$(CHAOS_SEED) $(VENV)/bin/pytest -v -s -p no:cacheprovider -m chaos \
	  -k "test_chaos__source_lost $(if $(ONLY),and ($(ONLY)))" tests/test_chaos_lab.py; \
	lost=$$?; ok() { [ $$1 -eq 0 ] || [ $$1 -eq 5 ]; }; \
	ok $$killed && ok $$lost && [ "$$killed$$lost" != 55 ]

# Forced failover in every disaster shape the lab plays, at every connect timeout (about 8
# minutes here); `make test` runs the storage-dead shape only.
disasters: venv
	$(VENV)/bin/pytest -v -s -p no:cacheprovider -m 'lab and not chaos' tests/test_disasters_lab.py
	$(VENV)/bin/pytest -v -s -p no:cacheprovider -m disasters tests/test_failback_lab.py \
	  tests/test_daemon_out_lab.py

demo: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint: venv
	$(VENV)/bin/ruff check rbdfail tests bench
	$(VENV)/bin/ruff format --check rbdfail tests bench
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format rbdfail tests bench
	$(VENV)/bin/ruff check --fix rbdfail tests bench

clean:
	-[ -x $(VENV)/bin/rbdfail ] && $(VENV)/bin/rbdfail lab down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# N volumes per scenario (N=1000 works too); REPS repetitions where an operation repeats.
N ?= 200
REPS ?= 3
bench: venv
	$(VENV)/bin/python bench/bench.py --n $(N) --reps $(REPS) $(if $(ONLY),--only $(ONLY)) $(if $(NO_SERIAL),--no-serial)
