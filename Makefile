# kwikfs: `make demo` and `make test` do their own set-up on a fresh Debian
# machine with Go (they install fuse3 and rsync when missing).

GO      ?= go
BIN     := bin
PKGS    := ./...
# Packages needed by tests and the demo. apt-get runs only when one is missing.
DEB_PKGS := fuse3 rsync attr
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test unit integration demo bench fuzz vet deps clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	@missing=""; \
	command -v fusermount3 >/dev/null || missing="$$missing fuse3"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v getfattr >/dev/null || missing="$$missing attr"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet $(PKGS)

# Every test, -race included, integration (real binaries, real mounts) too.
test: deps vet
	$(GO) test -race -count=1 -timeout 18m $(PKGS)

unit: vet
	$(GO) test -race -timeout 10m $$($(GO) list ./... | grep -v /integration)

integration: deps
	$(GO) test -race -timeout 15m -v ./integration/

demo: deps build
	$(BIN)/kwikfs demo --dir demo --mountpoint mnt

# Throughput report: ratios measured in the same run (see README).
bench: deps build
	$(GO) run ./integration/kwikbench && $(GO) run ./integration/kwikbench --multipath

# A short run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 15s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for fn in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$fn"; \
			$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf $(BIN)
