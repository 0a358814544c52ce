# `sam build`: every function in template.yaml has `BuildMethod: makefile`, so SAM runs
# `make build-<LogicalId>` once per function with ARTIFACTS_DIR set. Building each function
# on its own meant one cargo-lambda run (and its own link) per function; here the first
# target builds every bootstrap in ONE cargo invocation and leaves a stamp in SAM's build
# folder (which `sam build` empties at its start), and every target copies its bootstrap.
# A second `sam build` runs cargo again, which recompiles only what changed. The cargo
# profile is `lambda` (Cargo.toml): release code without cross-crate LTO, so a link only
# links instead of re-optimising every dependency for each of the bootstraps.
#
# Knobs (environment or `make VAR=...`):
#   LAMBDA_ARCH       arm64 (default, as template.yaml's Architectures) or x86_64
#   LAMBDA_PROFILE    cargo profile (default: lambda); `release` adds fat LTO: the smallest
#                     bootstraps (arm64 5.5-6.6 MB) for ~40 s more per bootstrap on every build
#   LAMBDA_RUSTFLAGS  extra rustc flags for the bootstraps (default: none), added to RUSTFLAGS
#                     for this cargo run only (not build scripts or proc macros). Measured option:
#                     `-C relocation-model=static` builds non-PIE executables, which need no
#                     load-time relocations (.rela.dyn, 24 bytes per pointer in read-only data:
#                     1.3 MB of a 12 MB bootstrap, 2.0 MB for channels-router; all 19 are 11-14 %
#                     smaller, docs/bench/bootstrap-sizes.txt). Not the default: the executable's
#                     own code would load at a fixed address, giving up ASLR for it (a hardening
#                     we keep for ASVS level 2).
#   CARGO_LAMBDA_BIN  cargo-lambda program (default: cargo-lambda on PATH; infra/local/lib.sh's
#                     ensure_cargo_lambda installs the pinned one and sets it)
#   CARGO_TARGET_DIR  cargo's target folder (default: the local scripts' cache,
#                     ~/.cache/devconnect/target). Never ./target: SAM copies the checkout
#                     into a scratch folder for every function, target folder included.

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
TEMPLATE := $(ROOT)/template.yaml

LAMBDA_ARCH ?= arm64
LAMBDA_PROFILE ?= lambda
LAMBDA_RUSTFLAGS ?=
TRIPLE_arm64 := aarch64-unknown-linux-gnu
TRIPLE_x86_64 := x86_64-unknown-linux-gnu
TRIPLE := $(TRIPLE_$(LAMBDA_ARCH))
CARGO_LAMBDA_BIN ?= cargo-lambda
CARGO_TARGET_DIR ?= $(or $(DEVCONNECT_CACHE),$(HOME)/.cache/devconnect)/target
export CARGO_TARGET_DIR
# cargo-lambda puts every binary in <lambda dir>/<binary>/bootstrap: one folder per
# architecture, so an arm64 and an x86_64 build never hand out each other's files.
LAMBDA_DIR := $(CARGO_TARGET_DIR)/lambda-$(LAMBDA_ARCH)

# Every function's `BuildProperties: Binary` (the local gateway reads the same key).
BINARIES := $(shell awk '$$1 == "Binary:" { print $$2 }' '$(TEMPLATE)')
# $(call binary_of,LogicalId): the Binary in that resource's block of template.yaml.
binary_of = $(shell awk -v id='  $(1):' '$$0 == id { f = 1; next } f && /^  [^ ]/ { exit } \
  f && $$1 == "Binary:" { print $$2; exit }' '$(TEMPLATE)')

STAMP = $(dir $(ARTIFACTS_DIR)).bootstraps-$(LAMBDA_ARCH)-$(LAMBDA_PROFILE)

# One cargo run for all bootstraps. With `sam build --parallel` two targets may both start
# it: cargo's lock on the target folder serialises them and the second compiles nothing.
$(STAMP):
	$(if $(ARTIFACTS_DIR),,$(error ARTIFACTS_DIR is not set: run `sam build`, not make))
	$(if $(TRIPLE),,$(error LAMBDA_ARCH must be arm64 or x86_64, not '$(LAMBDA_ARCH)'))
	cd '$(ROOT)' && RUSTFLAGS='$(strip $(RUSTFLAGS) $(LAMBDA_RUSTFLAGS))' \
	  '$(CARGO_LAMBDA_BIN)' lambda build --profile $(LAMBDA_PROFILE) --target $(TRIPLE) \
	  --lambda-dir '$(LAMBDA_DIR)' $(addprefix --bin ,$(BINARIES))
	touch '$@'

build-%: $(STAMP)
	$(if $(call binary_of,$*),,$(error template.yaml has no BuildProperties Binary for $*))
	cp '$(LAMBDA_DIR)/$(call binary_of,$*)/bootstrap' '$(ARTIFACTS_DIR)/bootstrap'
