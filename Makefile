# kcloud: GPU machines from clouds that are usually sold out.
# Thin by design: every target calls scripts/kcloud. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
KCLOUD := scripts/kcloud
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP := $(VENV)/.test-installed
# In a __pycache__: `make clean` deletes those (the venv's too), and so makes `make` compile again.
BYTECODE_STAMP := scripts/lib/kcloud/__pycache__/.kcloud-compiled
KCLOUD_SOURCES := $(wildcard scripts/lib/kcloud/*.py scripts/lib/kcloud/*/*.py scripts/lib/kcloud/data/*.yaml)
# User variables (`make defconfig-x KDEVOPS_HOSTS_PREFIX=kn1`, V=1, AV=2, TERRAFORM=...) never
# become recipe text: a value like 'kn1;touch pwned' would be run by the shell. GNU make exports
# command-line variables to every recipe's environment; kcloud reads them there (defconfig:
# KDEVOPS_HOSTS_PREFIX, KNLP, SSH_CONFIG_PORT, SSH_CONFIG_USER; every command: V, TERRAFORM) and
# recipes refer to them only as "$$VAR" (one shell word, never re-parsed). They are also frozen
# to their literal text here, so even AV='$(shell ...)' is not evaluated by make itself.
USER_VARS := KDEVOPS_HOSTS_PREFIX KNLP SSH_CONFIG_PORT SSH_CONFIG_USER V AV TERRAFORM REPLACE WAIT YES \
             CMD DIR SETUP ARTIFACTS JOB_ENV NODES THEN ID FOLLOW NODE TO
$(foreach v,$(USER_VARS),$(if $(filter command line environment,$(origin $(v))),\
  $(eval override $(v) := $$(value $(v)))$(eval export $(v))))
# pip repeats a warning per package for find-links folders that do not exist on this machine.
PIP_QUIET := { grep -v 'is ignored: it is neither a file nor a directory' || true; }
VERBOSE := $(if $(filter 1,$(V)),--debug)

.DEFAULT_GOAL := all
.PHONY: all preflight help deps system-deps test demo bench cloud-config clean-cloud-config menuconfig olddefconfig savedefconfig \
        defconfigs bringup destroy destroy-storage status cost cloud-list-all clean mrproper \
        job-submit job-list job-status job-logs job-fetch job-cancel
# <provider>-ssh-{list,setup,clean} and cloud-config-<provider> are pattern rules, so not listed
# here: make skips pattern rules for phony targets.

all: deps ## Install what bringup needs and create this directory's SSH key (no .config: which defconfig to load)
	@$(KCLOUD) $(VERBOSE) prepare

preflight: deps ## Every check bringup makes, one line each with the fix; changes nothing (kcloud doctor)
	@$(KCLOUD) $(VERBOSE) doctor

help: ## This list
	@echo "kcloud targets:"
	@grep -hE '^[a-zA-Z0-9_% -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | \
		awk -F'\t' '{printf "  %-28s %s\n", $$1, $$2}'
	@echo "  defconfig-<name>             Load defconfigs/<name>; available:"
	@ls defconfigs | sed 's/^/                                 /'
	@echo "Variables: V=1 (log HTTP), AV=1..4 (Ansible verbosity), KDEVOPS_HOSTS_PREFIX=, KNLP=1,"
	@echo "           TERRAFORM=/path/to/terraform-or-tofu"
	@echo "Jobs:      CMD= DIR= SETUP= ARTIFACTS= JOB_ENV= NODES=all|1 THEN=destroy|keep (job-submit);"
	@echo "           ID= FOLLOW=1 NODE= TO= (job-status, job-logs, job-fetch, job-cancel)"

$(RUNTIME_STAMP): requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing runtime dependencies into $(VENV) ..."
	@set -o pipefail; $(VENV)/bin/pip install -q -r requirements.txt 2>&1 | $(PIP_QUIET)
	@touch $@

# Bytecode of kcloud and of the venv plus the parsed copies of the provider data files are
# written at install, so a machine with PYTHONDONTWRITEBYTECODE=1 starts as fast as any; redone
# when a source changes (compileall rewrites only what is stale or missing).
$(BYTECODE_STAMP): $(RUNTIME_STAMP) $(KCLOUD_SOURCES)
	@$(VENV)/bin/python -m compileall -q scripts/lib $(VENV)/lib/python*/site-packages >/dev/null
	@PYTHONPATH=scripts/lib $(VENV)/bin/python -m kcloud.datafile scripts/lib/kcloud/data/*.yaml
	@mkdir -p $(@D) && touch $@
# Sources are never made: without this empty rule make searches its implicit rules for each
# one on every run (~7 ms of every make target).
$(KCLOUD_SOURCES): ;

$(TEST_STAMP): $(RUNTIME_STAMP) requirements-test.txt
	@echo "Installing test dependencies into $(VENV) ..."
	@set -o pipefail; $(VENV)/bin/pip install -q -r requirements-test.txt 2>&1 | $(PIP_QUIET)
	@touch $@

deps: $(RUNTIME_STAMP) $(BYTECODE_STAMP) ## Create .venv from the pinned requirements

system-deps: ## Install Debian packages kcloud runs (openssh-server for the emulator)
	@scripts/install-system-deps

test: $(TEST_STAMP) system-deps ## Run the whole test suite
	@$(VENV)/bin/python -m pytest -q -n 6 --dist worksteal tests   # end-to-end tests mostly wait (boots, SSH): 6 workers on 2 cores

demo: deps system-deps ## The main job end to end on the bundled emulator
	@$(KCLOUD) $(VERBOSE) demo

bench: $(TEST_STAMP) ## Benchmarks: cloud-config latency, defconfig time, launch race
	@$(KCLOUD) $(VERBOSE) bench

cloud-config: deps ## Refresh Kconfig fragments from both providers' live APIs
	@$(KCLOUD) $(VERBOSE) cloud-config

# Per-provider targets are patterns: every provider kcloud has (providers are discovered from
# scripts/lib/kcloud/data/, never listed here). The provider name is target text, so like the
# defconfig name it reaches kcloud through the environment as one argument, and kcloud checks it.
cloud-config-%: export KCLOUD_PROVIDER = $*
cloud-config-%: deps ## Refresh one provider's fragments (cloud-config-<provider>)
	@$(KCLOUD) $(VERBOSE) cloud-config --provider "$$KCLOUD_PROVIDER"

clean-cloud-config: deps ## Remove generated fragments (shipped defaults apply again)
	@$(KCLOUD) clean-cloud-config

menuconfig: deps ## Interactive configuration (kconfiglib)
	@$(KCLOUD) menuconfig

olddefconfig: deps ## Update .config to the current Kconfig, new symbols at defaults
	@$(KCLOUD) olddefconfig

savedefconfig: deps ## Write the minimal defconfig of .config to ./defconfig
	@$(KCLOUD) savedefconfig

# The defconfig name comes from the target name, which is user text too: it reaches kcloud
# through the environment as one argument ("$$KCLOUD_DEFCONFIG", after --), and kcloud checks
# it (letters, digits, '.', '_', '-'; a file in defconfigs/).
defconfig-%: export KCLOUD_DEFCONFIG = $*
defconfig-%: deps ## Load defconfigs/<name> into .config
	@$(KCLOUD) defconfig -- "$$KCLOUD_DEFCONFIG"

bringup: deps ## Provision per .config (with failover); WAIT=30m waits for capacity, REPLACE=1 swaps a running machine
	@case "$$AV" in ""|[0-4]) ;; *) echo "error: AV must be 0..4 (Ansible verbosity)" >&2; exit 2;; esac
	@$(KCLOUD) $(VERBOSE) bringup $(if $(AV),--ansible-verbosity "$$AV") $(if $(REPLACE),--replace) $(if $(WAIT),--wait "$$WAIT")

destroy: deps ## Tear down everything this directory launched (idempotent)
	@$(KCLOUD) $(VERBOSE) destroy

destroy-storage: deps ## Remove the storage destroy keeps (file system, shared volume, kept OS volumes); YES=1 without a terminal
	@$(KCLOUD) $(VERBOSE) destroy-storage $(if $(YES),--yes)

status: deps ## This directory's instances: type, region, status, uptime, cost
	@$(KCLOUD) $(VERBOSE) status

cost: deps ## Cost of every instance this directory launched (scripts/kcloud cost --all: every directory)
	@$(KCLOUD) $(VERBOSE) cost

cloud-list-all: deps ## Everything with kcloud's tags in the accounts, by directory; deleted ones flagged
	@$(KCLOUD) $(VERBOSE) cloud-list-all

# Jobs on the machines (scripts/kcloud job ...). Every value reaches kcloud as one word through
# the environment ("$$CMD"); the lists ARTIFACTS and JOB_ENV are split on spaces by bash's `read
# -a` (no globbing, no evaluation) into one --artifacts/--env each.
job-submit: deps ## Run CMD on the nodes: CMD='python train.py' [DIR=.] [SETUP=..] [ARTIFACTS='out ..'] [JOB_ENV='K=V ..'] [NODES=all|1] [THEN=destroy|keep]
	@read -ra arts <<< "$$ARTIFACTS"; read -ra envs <<< "$$JOB_ENV"; \
	$(KCLOUD) $(VERBOSE) job submit $(if $(DIR),--dir "$$DIR") $(if $(SETUP),--setup "$$SETUP") \
		$(if $(NODES),--nodes "$$NODES") $(if $(THEN),--then "$$THEN") \
		"$${arts[@]/#/--artifacts=}" "$${envs[@]/#/--env=}" -- "$$CMD"

job-list: deps ## This directory's jobs with their status
	@$(KCLOUD) $(VERBOSE) job list

job-status: deps ## A job's status per node, exit codes, runtime, cost so far: [ID=] (default: the latest)
	@$(KCLOUD) $(VERBOSE) job status $(if $(ID),"$$ID")

job-logs: deps ## A job's output: [ID=] [FOLLOW=1] (streams until the job ends) [NODE=name|rank]
	@$(KCLOUD) $(VERBOSE) job logs $(if $(ID),"$$ID") $(if $(filter 1 y yes,$(FOLLOW)),--follow) $(if $(NODE),--node "$$NODE")

job-fetch: deps ## Bring a job's artifacts back (rsync, resumable): [ID=] [TO=dir] (default artifacts/<id>)
	@$(KCLOUD) $(VERBOSE) job fetch $(if $(ID),"$$ID") $(if $(TO),--to "$$TO")

job-cancel: deps ## Stop a job's whole process tree on every node: ID=
	@$(KCLOUD) $(VERBOSE) job cancel "$$ID"

%-ssh-list: export KCLOUD_PROVIDER = $*
%-ssh-list: deps ## List SSH keys in the account (<provider>-ssh-list, e.g. lambdalabs-ssh-list)
	@$(KCLOUD) $(VERBOSE) "$$KCLOUD_PROVIDER" ssh-keys list

%-ssh-setup: export KCLOUD_PROVIDER = $*
%-ssh-setup: deps ## Create and upload this directory's SSH key (<provider>-ssh-setup)
	@$(KCLOUD) $(VERBOSE) ssh-key setup --provider "$$KCLOUD_PROVIDER"

%-ssh-clean: export KCLOUD_PROVIDER = $*
%-ssh-clean: deps ## Remove this directory's SSH key from the account (<provider>-ssh-clean)
	@$(KCLOUD) $(VERBOSE) ssh-key clean --provider "$$KCLOUD_PROVIDER"

clean: ## Remove generated files (keeps .config and terraform state)
	@rm -f kconfigs/*.generated terraform/*/kconfigs/*.generated extra_vars.yaml
	@find . -name __pycache__ -prune -exec rm -rf {} +

# Check first, delete after: `clean` is not a prerequisite (it would run before the check).
mrproper: ## Also remove .config and .venv (refuses while instances are journalled)
	@if [ -s .kcloud/journal.jsonl ] && [ -x $(VENV)/bin/python ]; then $(KCLOUD) destroy --check-clean; fi
	@$(MAKE) --no-print-directory clean
	@rm -rf .config .config.old $(VENV)
