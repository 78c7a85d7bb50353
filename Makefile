# pg-platform: every target bootstraps first, so each works on a fresh machine.
#   make up                  the local stack (STACK=dev|prod for the others)
#   make test                unit and integration tests against real servers
#   make drill               restore the stack's backups to a point in time and count rows
#   make status              health of the stack's nodes, pool, backups and schema (exit 0/1/2)
STACK ?= local
SHELL := /bin/bash
ROOT := $(CURDIR)

export PATH := $(ROOT)/.tools/bin:$(ROOT)/.venv/bin:$(PATH)
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION := true
export PULUMI_HOME := $(ROOT)/.state/pulumi-home
export PULUMI_BACKEND_URL := file://$(ROOT)/.state/backend
export PULUMI_CONFIG_PASSPHRASE_FILE := $(ROOT)/.state/passphrase
# gRPC's fork handlers print "Other threads are currently calling into gRPC"
# each time a provider starts a server process; pg-platform never uses gRPC
# across a fork, so they are off.
export GRPC_ENABLE_FORK_SUPPORT := false

PY := $(ROOT)/.venv/bin/python
# Where scripts/bootstrap builds TimescaleDB from when no apt repository has it.
PGP_TIMESCALEDB_SOURCE ?= $(wildcard $(ROOT)/../shared/vendor/timescaledb-2.28.3.tar.gz)
export PGP_TIMESCALEDB_SOURCE

.PHONY: bootstrap stack up preview preview-clean refresh destroy test test-unit test-fast lint bench drill status test-hosts

bootstrap:
	@scripts/bootstrap

# A stack this checkout has not made yet gets its own secrets salt: any salt
# in the stack file then came from another machine and would not match.
stack: bootstrap
	@mkdir -p .state/backend
	@pulumi stack select $(STACK) >/dev/null 2>&1 || { \
	  sed -i -e '/^encryptionsalt:/d' -e '/^secretsprovider:/d' -e '/^encryptedkey:/d' \
	    Pulumi.$(STACK).yaml 2>/dev/null; pulumi stack init $(STACK); }

# --refresh: each provider's read() first finds a stopped process and drift (hand-edited
# files, ALTER SYSTEM, a missing slot), so this one command also brings those back.
# A stack with no resources yet skips the preview, which could only list creates
# (infra/ops/first_up.py says why); any other stack previews first.
up: stack
	pulumi up --refresh --stack $(STACK) --yes --suppress-outputs \
	  $$($(PY) -m infra.ops.first_up --stack $(STACK))

preview: stack
	pulumi preview --stack $(STACK) --diff

# A preview that fails when anything would change: a second `up` must be a no-op.
preview-clean: stack
	pulumi preview --stack $(STACK) --expect-no-changes

# Dynamic providers' drift (infra/hostctl/drift.py) is listed after the refresh.
refresh: stack
	pulumi refresh --stack $(STACK) --yes
	$(PY) -m infra drift --stack $(STACK) || [ $$? -eq 1 ]

destroy: stack
	pulumi destroy --stack $(STACK) --yes

# Three loops for developers: unit tests only (seconds), everything but the
# tests that run the Pulumi engine, and the whole suite (what CI runs).
test-unit: bootstrap
	$(PY) -m pytest tests/unit -q

test-fast: bootstrap
	$(PY) -m pytest -m "not engine"

test: bootstrap
	$(PY) -m pytest

# The host tier (docs/testing.md "Host tier"): the prod program's rendered bootstrap run
# for real on debootstrapped Debian hosts in namespaces (a primary and a replica, then a
# 3-host Patroni cluster whose leader host dies); root only, about 7 minutes with the
# root file system cached under .tools/hosts, 10 on a fresh machine.
test-hosts: bootstrap
	@scripts/bootstrap-hosts
	$(PY) -m pytest tests/hosts -p no:cacheprovider -o log_cli=true --log-cli-level=INFO \
	  --log-cli-format='%(asctime)s %(message)s' --log-cli-date-format='%H:%M:%S'

lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m mypy

drill: bootstrap
	$(PY) -m infra backup drill --stack $(STACK)

# With ha.manager patroni, also the leader, each member's state, timeline and lag.
status: bootstrap
	@rc=0; $(PY) -m infra health --stack $(STACK) || rc=$$?; \
	  $(PY) -m infra cluster status --if-managed --stack $(STACK) || rc=$$?; exit $$rc

bench: bootstrap
	$(PY) -m bench
