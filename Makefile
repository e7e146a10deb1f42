# pkm-convert: the two set-up commands of the README are `make demo` and `make test`.
SWIFT ?= swift
DEMO_DIR ?= .build-demo
FIXTURE ?= fixtures/models/bert_residual
PREFIX ?= /usr/local

.PHONY: deps build demo test release install bench-formats bench-forward bench-graft clean-demo

deps:
	scripts/install-deps.sh

build: deps
	$(SWIFT) build

# Main job on a bundled example: inspect, convert, import and verify a PyTorch-made PKM fixture.
demo: build
	scripts/demo.sh "$(FIXTURE)" "$(DEMO_DIR)"

# The suite (debug), then the binary users run: a release build fuzzed with FUZZ_SMOKE seeded inputs
# per format, plus every regression input (scripts/fuzz-release.sh).
FUZZ_SMOKE ?= 200
test: deps
	$(SWIFT) test
	scripts/fuzz-release.sh $(FUZZ_SMOKE)

release: deps
	$(SWIFT) build -c release

# Release build of pkm-convert into $(PREFIX)/bin, with bash, zsh and fish completions under $(PREFIX)/share.
install: deps
	scripts/install.sh "$(PREFIX)" "$(SWIFT)"

clean-demo:
	rm -rf "$(DEMO_DIR)"
