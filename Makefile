# bulletproof-mail: two commands on a fresh machine: `make up` (deploy the local default) and
# `make test` (all test tiers). Everything else installs itself on first use.
SHELL := /bin/bash
STACK ?= local

CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/bulletproof-mail
PULUMI_VERSION := v3.274.1
TOOLS_BIN := $(CACHE)/pulumi-$(PULUMI_VERSION)/bin
VENV := .venv
PY := $(VENV)/bin/python

export PATH := $(TOOLS_BIN):$(CURDIR)/$(VENV)/bin:$(PATH)
# State in the project (gitignored), plugins in a per-machine home: no `pulumi login`, no
# writes to a shared home, and a missing plugin is an error instead of a download.
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state
export PULUMI_HOME ?= $(CACHE)/pulumi-home
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION := true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK := true
# The local stack's documented default passphrase (its secrets never leave this machine);
# every other stack must bring its own.
ifeq ($(STACK),local)
export PULUMI_CONFIG_PASSPHRASE ?= bulletproof-local
endif

PULUMI := pulumi --non-interactive
PULUMI_STACK := $(PULUMI) --stack $(STACK)
# The file backend writes the state, its backups and history 0644; they hold the encrypted
# secrets and every output. The directory is 0700 and each run leaves its files 0600 (ends a
# recipe line, keeping pulumi's exit code). Not a umask 077: the program's own files (container
# roots, the data volume, BIND's state) must keep their modes.
STATE_DIR := .pulumi-state
PRIVATE_STATE = rc=$$?; chmod -R go= $(STATE_DIR) 2>/dev/null; exit $$rc

.PHONY: check tools venv host-packages prereqs passphrase stack up preview down refresh verify outputs backup backups restore purge-backups test test-unit test-integration test-e2e bench

tools:
	@tools/build-pulumi.sh >/dev/null
	@tools/build-actionlint.sh >/dev/null

host-packages:
	@tools/host-packages.sh

$(VENV)/.locked: requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	@touch $@

venv: $(VENV)/.locked

prereqs: tools host-packages venv

passphrase:
	@if [ -z "$${PULUMI_CONFIG_PASSPHRASE:-}$${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then \
	  echo "error: stack '$(STACK)' needs a secrets passphrase: set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) before running make." >&2; exit 2; fi

stack: prereqs passphrase
	@mkdir -p $(STATE_DIR) && chmod -R go= $(STATE_DIR)  # files of earlier runs too
	@$(PULUMI) stack select $(STACK) 2>/dev/null || $(PULUMI) stack init $(STACK) --secrets-provider passphrase >/dev/null; $(PRIVATE_STATE)

# Refresh first: containers and servers from an earlier session are gone in the next one,
# and `up` must bring them back.
up: stack
	@$(PY) -m ops.plan --stack $(STACK) --confirm "$(CONFIRM)"
	$(PULUMI_STACK) up --yes --refresh --skip-preview; $(PRIVATE_STATE)

# PREVIEW_FLAGS: extra flags, e.g. CI adds `--policy-pack policies`.
preview: stack
	$(PULUMI_STACK) preview --diff $(PREVIEW_FLAGS); $(PRIVATE_STATE)

refresh: stack
	$(PULUMI_STACK) refresh --yes; $(PRIVATE_STATE)

down: stack
	$(PULUMI_STACK) destroy --yes --refresh; $(PRIVATE_STATE)
	@$(PY) -m localcloud stop-all --stack $(STACK)

verify: stack
	@$(PY) -m ops.verify --stack $(STACK)

# Every morning's checks from the outside (ports, relay, FCrDNS, MX/SPF/DKIM/DMARC) plus the
# host's own `bulletproof-agent status`; exits 1 only on fail-level results.
check: stack
	@$(PY) -m ops.check --stack $(STACK)

# Backups off the host (restic): run one now, list them, restore (MAILBOX=addr for one mailbox,
# into a folder of its own; SNAPSHOT=id, default the newest).
backup: stack
	@$(PY) -m ops.backup run --stack $(STACK)

backups: stack
	@$(PY) -m ops.backup snapshots --stack $(STACK)

restore: stack
	@$(PY) -m ops.backup restore --stack $(STACK) $(if $(MAILBOX),--mailbox $(MAILBOX)) $(if $(SNAPSHOT),--snapshot $(SNAPSHOT))

# The local stack's backups outlive `make down`; this removes them, for good.
purge-backups:
	@$(PY) -m localcloud purge-backups --stack $(STACK)

outputs: stack
	@$(PY) -m ops.outputs --stack $(STACK)

# Cheap tiers first; the e2e tier deploys throwaway stacks with their own state.
test: prereqs
	$(PY) -m pytest tests/unit tests/integration tests/e2e

test-unit: venv
	$(PY) -m pytest -m unit

bench: prereqs
	@for b in bench/[a-z]*.py; do $(PY) -m bench.$$(basename $$b .py); done
