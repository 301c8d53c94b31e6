# keepfs — build, test, demo and benchmark entry points.
#
#   make deps    install what a fresh Debian machine lacks (apt, as root or via sudo) + go mod download
#   make build   bin/keepfs
#   make test    gofmt check, go vet, staticcheck, go test -race (what .ci/run calls)
#   make weed    bin/tools/weed, the SeaweedFS the s3 tests run against (built once per version)
#   make run     build and mount a demo repository at ./mnt in the foreground (integration/demo.sh)
#   make bench   benchmark vs restic, gocryptfs, rclone on the ~1 GiB workload (integration/bench/bench.sh)
#   make man     regenerate docs/man from the command definitions (checked in; a test diffs them)
#   make install binary, mount helper, systemd unit, man pages, completions under PREFIX (DESTDIR honoured)
#                (make bench BENCH=s3: keepfs vs restic on a local SeaweedFS; needs make weed)
#   make fmt     gofmt -w
#   make clean   remove bin/, demo/, mnt/

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Go lives in /usr/local/go on our machines; tools installed by `go install` in GOPATH/bin.
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin

GO        ?= go
BIN       := bin/keepfs
# Where `make install` puts things; DESTDIR is prepended to every path (packaging).
PREFIX    ?= /usr/local
DESTDIR   ?=
# Version and revision go into the binary (`keepfs version`); go builds here with -buildvcs=false.
VERSION   := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION  := $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -X main.version=$(VERSION) -X main.revision=$(REVISION)
PB        ?= /tmp/keepfs-bench
# Sections of integration/bench/bench.sh that `make bench` runs (see `bench.sh help`).
BENCH     ?= all

# staticcheck: v0.8.2 builds with and understands go1.26 (checked with `go list -m -versions`).
# It is installed into bin/tools once; if it cannot be fetched, `make test` says so and skips it.
STATICCHECK_VERSION := v0.8.2
STATICCHECK         := bin/tools/staticcheck
# The benchmarks' restic baseline (see bench-deps).
RESTIC_VERSION      := v0.17.3

# SeaweedFS, the S3 store the s3 backend's tests run against. `go install module@version`
# refuses it (its go.mod has replace directives), so `make weed` downloads the module with
# `go mod download` outside our module (it stays out of our go.mod) and builds ./weed from the
# module cache. A cold build takes about 13 minutes and 2.6 GB of memory on 2 cores (15 s with
# a warm build cache); the stamp file keys it on the version, so it runs once per version.
SEAWEEDFS_VERSION := v0.0.0-20261109003541-7506e5f91cd6
WEED              := bin/tools/weed
WEED_STAMP        := bin/tools/.weed-$(SEAWEEDFS_VERSION)

# Every Go file we own: not .git, not build output or demo state, not testdata fixtures.
GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './bin/*' \
	-not -path './demo/*' -not -path './mnt/*' -not -path '*/testdata/*' -not -path '*/vendor/*')

# "command-or-absolute-path:debian-package" pairs that must be present.
# gcc + libc6-dev: `go test -race` needs cgo. sftp-server: the sftp backend's tests run it.
# promtool (prometheus): TestMetrics validates the mount's /metrics with `promtool check metrics`.
DEPS := fusermount3:fuse3 \
	/usr/sbin/sshd:openssh-server \
	/usr/lib/openssh/sftp-server:openssh-sftp-server \
	ssh-keygen:openssh-client \
	git:git rsync:rsync sqlite3:sqlite3 python3:python3 \
	gcc:gcc /usr/include/stdio.h:libc6-dev \
	promtool:prometheus
# Baselines and measuring tools for `make bench`.
BENCH_DEPS := restic:restic gocryptfs:gocryptfs rclone:rclone fio:fio /usr/bin/time:time

# $(call apt_ensure,PAIRS): install the packages whose command or file is missing.
# apt-get update runs once, and only when something is missing. Root runs apt directly,
# others go through sudo if there is one; otherwise fail saying what to install.
define apt_ensure
missing=""; \
for pair in $(1); do \
	c=$${pair%%:*}; pkg=$${pair#*:}; \
	case "$$c" in /*) [ -e "$$c" ] ;; *) command -v "$$c" >/dev/null 2>&1 ;; esac \
		|| missing="$$missing $$pkg"; \
done; \
if [ -n "$$missing" ]; then \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "deps: missing Debian packages:$$missing; run 'make deps' as root or 'apt-get install$$missing'" >&2; exit 1; fi; \
	echo "deps: installing$$missing"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

.PHONY: deps bench-deps build test lint staticcheck weed run bench fmt clean go-check man install

go-check:
	@command -v $(GO) >/dev/null 2>&1 || { echo "deps: Go 1.26 is required (https://go.dev/dl, unpack to /usr/local/go)" >&2; exit 1; }

deps: go-check
	@$(call apt_ensure,$(DEPS))
	@$(GO) mod download

bench-deps: go-check
	@$(call apt_ensure,$(DEPS) $(BENCH_DEPS))
	@$(GO) mod download
	@# Debian's restic (0.14) has no `rewrite`, which the erase baseline needs: a current
	@# restic from the Go module proxy goes into bin/tools, first in PATH for the bench.
	@if ! bin/tools/restic version 2>/dev/null | grep -qF 'restic $(patsubst v%,%,$(RESTIC_VERSION))'; then \
		echo "== installing restic $(RESTIC_VERSION) into bin/tools"; \
		GOBIN=$(CURDIR)/bin/tools $(GO) install github.com/restic/restic/cmd/restic@$(RESTIC_VERSION); \
	fi

build: go-check
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/keepfs

# The man pages are generated from the command definitions and checked in;
# TestManPagesCurrent fails when they are stale.
man: go-check
	@rm -f docs/man/*.1
	$(GO) run ./cmd/keepfs man --dir docs/man

# mount.fuse.keepfs lets mount(8) and fstab mount a profile (type fuse.keepfs).
# A system mount helper must live in /sbin (mount(8) looks there), whatever PREFIX is:
# set SBINDIR=$(PREFIX)/sbin to keep it under PREFIX.
SBINDIR ?= /sbin
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SBINDIR) $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/lib/systemd/user \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/keepfs
	ln -sf $(PREFIX)/bin/keepfs $(DESTDIR)$(SBINDIR)/mount.fuse.keepfs
	install -m 0644 docs/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	sed 's|/usr/local/bin/keepfs|$(PREFIX)/bin/keepfs|g' contrib/systemd/keepfs@.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/keepfs@.service
	sed 's|/usr/local/bin/keepfs|$(PREFIX)/bin/keepfs|g' contrib/systemd/keepfs@.service > $(DESTDIR)$(PREFIX)/lib/systemd/user/keepfs@.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/keepfs@.service $(DESTDIR)$(PREFIX)/lib/systemd/user/keepfs@.service
	$(BIN) completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/keepfs
	$(BIN) completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_keepfs
	$(BIN) completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/keepfs.fish

# Lint: gofmt, go vet, staticcheck. Fails fast, before the tests.
lint: deps
	@echo "== gofmt -l"
	@bad=$$(gofmt -l $(GOFILES) </dev/null); if [ -n "$$bad" ]; then echo "gofmt: these files need 'make fmt':"; echo "$$bad"; exit 1; fi
	@echo "== go vet ./..."
	@$(GO) vet ./...
	@$(MAKE) --no-print-directory staticcheck

staticcheck:
	@if [ ! -x $(STATICCHECK) ] || ! $(STATICCHECK) -version 2>/dev/null | grep -qF '($(patsubst v%,%,$(STATICCHECK_VERSION)))'; then \
		echo "== installing staticcheck $(STATICCHECK_VERSION)"; \
		GOBIN=$(CURDIR)/bin/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) >/dev/null 2>&1 \
			|| echo "note: staticcheck $(STATICCHECK_VERSION) could not be fetched (offline?); skipping it"; \
	fi
	@if [ -x $(STATICCHECK) ]; then echo "== staticcheck ./..."; $(STATICCHECK) ./...; fi

weed: $(WEED_STAMP)

$(WEED_STAMP):
	@echo "== building SeaweedFS weed $(SEAWEEDFS_VERSION) into $(WEED) (once per version; cold: ~13 min, 2.6 GB)"
	@mkdir -p bin/tools
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	dir=$$(cd "$$tmp" && GOFLAGS=-mod=mod $(GO) mod download -json github.com/seaweedfs/seaweedfs@$(SEAWEEDFS_VERSION) \
		| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$$/\1/p'); \
	if [ -z "$$dir" ] || [ ! -d "$$dir/weed" ]; then \
		echo "weed: could not download github.com/seaweedfs/seaweedfs@$(SEAWEEDFS_VERSION) (offline? GOPROXY?)" >&2; exit 1; fi; \
	start=$$(date +%s); \
	(cd "$$dir/weed" && CGO_ENABLED=0 GOFLAGS=-mod=mod $(GO) build -ldflags '-s -w' -o "$(CURDIR)/$(WEED).tmp" .); \
	mv -f "$(WEED).tmp" "$(WEED)"; \
	rm -f bin/tools/.weed-*; touch "$@"; \
	echo "== built $(WEED) in $$(( $$(date +%s) - start ))s"

# KEEPFS_REQUIRE_SSHD=1: sftp tests fail instead of skipping when sshd cannot start.
# KEEPFS_REQUIRE_S3=1: s3 tests fail instead of skipping when SeaweedFS is missing or broken.
# KEEPFS_REQUIRE_FUSE is passed through from the caller (.ci/run sets it).
# The last lines of output are go test's own summary: CI reads them.
test: export KEEPFS_REQUIRE_SSHD ?= 1
test: export KEEPFS_REQUIRE_S3 ?= 1
test: lint weed
	@echo "== go test -race ./...  (KEEPFS_REQUIRE_SSHD=$$KEEPFS_REQUIRE_SSHD KEEPFS_REQUIRE_S3=$$KEEPFS_REQUIRE_S3 KEEPFS_REQUIRE_FUSE=$${KEEPFS_REQUIRE_FUSE:-})"
	$(GO) test -race -count=1 -timeout 25m ./...

run: deps build
	KEEPFS=$(CURDIR)/$(BIN) bash integration/demo.sh

bench: bench-deps build $(if $(filter s3,$(BENCH)),weed)
	PATH=$(CURDIR)/bin/tools:$$PATH PB=$(PB) KEEPFS=$(CURDIR)/$(BIN) bash integration/bench/bench.sh $(BENCH)

fmt:
	@gofmt -l -w $(GOFILES) </dev/null

clean:
	rm -rf bin demo mnt
