# kwikfs: `make demo` and `make test` do their own set-up on a fresh Debian
# machine with Go (they install fuse3, rsync, attr, iproute2 and gcc, which
# -race needs, when missing).

GO      ?= go
BIN     := bin
PKGS    := ./...
# Packages needed by tests and the demo. apt-get runs only when one is missing.
DEB_PKGS := fuse3 rsync attr iproute2 gcc
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build install uninstall test unit integration demo demo-faults bench bench-peers bench-small bench-links fuzz vet deps peers-deps clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# make install [PREFIX=/usr/local] [DESTDIR=]: the binaries to BINDIR, the
# systemd units (kwik-primary@.service, kwik-secondary@.service) to
# UNITDIR, which systemd searches under /usr/local too, and the README with
# example configuration files, a .mount and an .automount unit and an fstab
# line to DOCDIR/examples. The units name the binaries by their installed
# path: @BINDIR@ and @DOCDIR@ are written in at install time.
#
# mount(8): `mount -t fuse.kwikfs HOST:PORT DIR -o OPTIONS` (and fstab
# lines of type fuse.kwikfs) run /sbin/mount.fuse.kwikfs if it exists and
# else fuse3's /sbin/mount.fuse (mount.fuse3), which runs `kwikfs HOST:PORT
# DIR -o OPTIONS` through /bin/sh. mount(8) clears PATH, so the shell
# searches its default path, /usr/local/sbin:/usr/local/bin:/usr/sbin:
# /usr/bin:/sbin:/bin: with PREFIX=/usr/local or /usr the kwikfs binary is
# found as it is, and nothing needs installing outside PREFIX (a
# /sbin/mount.fuse.kwikfs would: /sbin is the only directory mount(8)
# looks in). So the helper is kwikfs itself, and fuse3 must be installed.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/kwikfs
INSTALL_BINS  := kwikfs kwik-primary kwik-secondary
INSTALL_UNITS := $(notdir $(wildcard dist/systemd/*))
INSTALL_EXAMPLES := $(notdir $(wildcard dist/examples/*))
SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g'

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR)/docs
	install -m 0755 $(addprefix $(BIN)/,$(INSTALL_BINS)) $(DESTDIR)$(BINDIR)/
	for f in $(INSTALL_UNITS); do $(SUBST) dist/systemd/$$f > $(DESTDIR)$(UNITDIR)/$$f && chmod 0644 $(DESTDIR)$(UNITDIR)/$$f || exit 1; done
	for f in $(INSTALL_EXAMPLES); do $(SUBST) dist/examples/$$f > $(DESTDIR)$(DOCDIR)/examples/$$f && chmod 0644 $(DESTDIR)$(DOCDIR)/examples/$$f || exit 1; done
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 docs/architecture.md docs/operations.md $(DESTDIR)$(DOCDIR)/docs/
	@[ -x /sbin/mount.fuse3 ] || echo "note: mount -t fuse.kwikfs needs /sbin/mount.fuse3: apt-get install fuse3"
	@case "$(BINDIR)" in /usr/local/sbin|/usr/local/bin|/usr/sbin|/usr/bin|/sbin|/bin) ;; \
	*) echo "note: mount -t fuse.kwikfs finds kwikfs only in /usr/local/bin, /usr/bin and the like, not in $(BINDIR): link it there";; esac
	@[ -n "$(DESTDIR)" ] || echo "installed; run systemctl daemon-reload to load the units"

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INSTALL_BINS)) $(addprefix $(DESTDIR)$(UNITDIR)/,$(INSTALL_UNITS))
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(INSTALL_EXAMPLES)) $(DESTDIR)$(DOCDIR)/README.md
	rm -f $(DESTDIR)$(DOCDIR)/docs/architecture.md $(DESTDIR)$(DOCDIR)/docs/operations.md
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)

deps:
	@missing=""; \
	command -v fusermount3 >/dev/null || missing="$$missing fuse3"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v getfattr >/dev/null || missing="$$missing attr"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The peers kwikbench --peers and --small compare kwikfs with (make
# bench-peers, make bench-small), and tar, which --small runs (rsync is in
# deps).
peers-deps:
	@missing=""; \
	command -v sshfs >/dev/null || missing="$$missing sshfs"; \
	command -v tar >/dev/null || missing="$$missing tar"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v rclone >/dev/null || missing="$$missing rclone"; \
	command -v nginx >/dev/null || missing="$$missing nginx"; \
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

# The scripted story of faults (see README): a secondary and then the mount
# daemon killed halfway through a copy of a 256 MiB file, every copy
# checked with sha256; it ends by itself, or at Ctrl-C.
demo-faults: deps build
	$(BIN)/kwikfs demo --faults --dir demo --mountpoint mnt

# Throughput report: ratios measured in the same run (see README).
bench: deps build
	$(GO) run ./integration/kwikbench && $(GO) run ./integration/kwikbench --multipath && $(GO) run ./integration/kwikbench --prefetch && $(GO) run ./integration/kwikbench --readahead-ls
	$(MAKE) --no-print-directory bench-peers

# Multipath over kernel-shaped links (network namespaces, veth, tbf): kwikfs
# against curl and aria2c from nginx; installs iproute2, nginx, curl and
# aria2 when missing.
bench-links: deps build
	$(GO) run ./integration/kwikbench --links $(LINKS_FLAGS)

# kwikfs beside what users would pick instead, on the same data in the same
# run: on loopback sshfs and rclone mount of an nginx export, with CPU
# seconds per GiB per process (integration/kwikbench/peers.go); then the
# small-files table (bench-small); then over kernel-shaped links curl and
# aria2c with two nginx mirrors (links.go). PEERS_FLAGS, SMALL_FLAGS and
# LINKS_FLAGS are passed on, e.g.
# PEERS_FLAGS='--peers-runs 1 --peers-profile prof'.
bench-peers: deps peers-deps build
	$(GO) run ./integration/kwikbench --peers $(PEERS_FLAGS)
	$(GO) run ./integration/kwikbench --small $(SMALL_FLAGS)
	$(GO) run ./integration/kwikbench --links $(LINKS_FLAGS)

# Small files on loopback (integration/kwikbench/small.go): cp -r, rsync -a,
# tar, ls -lR and find of 10,000 files of 4 KiB through kwikfs and sshfs in
# the same run, the copies checked file by file, and kwikfs's cp -r over a
# 10 ms RTT link. SMALL_FLAGS is passed on, e.g.
# SMALL_FLAGS='--small-runs 1 --small-files 2000 --small-dirs 20'.
bench-small: deps peers-deps build
	$(GO) run ./integration/kwikbench --small $(SMALL_FLAGS)

# A short run of every fuzz target (FUZZTIME each), listed as
# package:function; `make test` runs them on their seed corpora
# (testdata/fuzz/FuzzXxx). The run fails if a FuzzXxx function in a
# _test.go file is missing from the list.
FUZZ_TARGETS := \
	./chunkstore:FuzzDecodeInfo \
	./chunkstore:FuzzDecodeMeta \
	./chunkstore:FuzzDecodeStamp \
	./kwik:FuzzVerifyCommand \
	./kwik:FuzzVerifyToken \
	./kwik/internal/reassembly:FuzzBufferPush \
	./kwik/internal/wire:FuzzAddPath \
	./kwik/internal/wire:FuzzControlFrameLen \
	./kwik/internal/wire:FuzzParseCommand \
	./kwik/internal/wire:FuzzParseDataHeader \
	./kwik/internal/wire:FuzzParsePathToken \
	./kwik/internal/wire:FuzzPathStatus \
	./kwik/internal/wire:FuzzRawData \
	./kwik/internal/wire:FuzzReadControlFrame \
	./kwik/internal/wire:FuzzReadStreamHeader \
	./kwik/internal/wire:FuzzReport \
	./prefetch:FuzzDecodeRecord \
	./transfer:FuzzDecodeAttrs \
	./transfer:FuzzDecodeCorruptReport \
	./transfer:FuzzDecodeError \
	./transfer:FuzzDecodePathReports \
	./transfer:FuzzDecodeReply \
	./transfer:FuzzDecodeRequest \
	./transfer:FuzzDecodeSendChunk \
	./transfer:FuzzManifestUnmarshal
FUZZTIME ?= 15s
fuzz:
	@set -e; \
	missing=$$(grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do \
		for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
			t="./$$(dirname "$${f#./}"):$$fn"; \
			case " $(FUZZ_TARGETS) " in *" $$t "*) ;; *) echo "$$t";; esac; \
		done; \
	done); \
	if [ -n "$$missing" ]; then echo "fuzz targets missing from FUZZ_TARGETS in the Makefile:"; echo "$$missing"; exit 1; fi; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; \
		echo "== $$pkg $$fn"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf $(BIN)
