# sluice: the front door. `make run` tries it on one machine, `make test`
# runs every test (installing what the tests need first).

# The Go toolchain that builds, tests and ships sluice: a patched release
# the machine's own go fetches from the module proxy once (a machine's Go
# ignores go.mod's toolchain line when GOTOOLCHAIN=local). go.mod's
# toolchain line is the one place that names it; exported, so every recipe
# and script below uses it (docs/architecture.md, "Toolchain and
# vulnerability check").
export GOTOOLCHAIN := $(shell sed -n 's/^toolchain //p' go.mod)

GO      ?= go
BIN     := bin
GOBIN   := $(shell $(GO) env GOPATH)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/sluice-mail/sluice/internal/wiring.Version=$(VERSION)
export PATH := $(PATH):$(GOBIN):/usr/sbin

.PHONY: all build test test-deps quick fuzz lint vulncheck proto run bench compat cluster cluster-stop clean deb deb-test

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Installs the third-party software the tests run against (swaks, Postfix's
# smtp-sink/smtp-source, versitygw, nats-server), then runs every test
# with the race detector.
test: test-deps
	$(GO) test -race -count=1 -timeout 40m ./...

test-deps:
	deploy/local/test-deps.sh

# Without the race detector: quicker to build.
quick: test-deps
	$(GO) test -count=1 -timeout 40m ./...

# Each fuzz target for a while (FUZZTIME=30s by default).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./internal/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	staticcheck ./...

# govulncheck (pinned, reinstalled when another version is installed)
# against an offline copy of the Go vulnerability database: the OSV files of
# a pinned golang.org/x/vulndb module, indexed into the v1 layout by that
# module's own cmd/indexdb. Built once per version beside the module cache,
# never in the checkout. Fails on any vulnerability the code reaches,
# standard library included.
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION      := v0.0.0-20261105234957-e22db6528018
GOMODCACHE          := $(shell $(GO) env GOMODCACHE)
VULNDB_SRC          := $(GOMODCACHE)/golang.org/x/vulndb@$(VULNDB_VERSION)
VULNDB_DIR          := $(abspath $(GOMODCACHE)/..)/sluice-vulndb/$(VULNDB_VERSION)
vulncheck:
	@[ "$$($(GO) version -m $(GOBIN)/govulncheck 2>/dev/null | awk '$$1 == "mod" { print $$3; exit }')" = $(GOVULNCHECK_VERSION) ] || \
	  $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
	@[ -f $(VULNDB_DIR)/index/db.json ] || { \
	  echo "building the vulnerability database $(VULNDB_VERSION) in $(VULNDB_DIR)"; \
	  $(GO) mod download golang.org/x/vulndb@$(VULNDB_VERSION) && \
	  mkdir -p $(dir $(VULNDB_DIR)) && tmp=$$(mktemp -d $(VULNDB_DIR).XXXXXX) && chmod 755 $$tmp || exit 1; \
	  $(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns $(VULNDB_SRC)/data/osv -out $$tmp || { rm -rf $$tmp; exit 1; }; \
	  mv -T $$tmp $(VULNDB_DIR) 2>/dev/null || rm -rf $$tmp; }
	$(GOBIN)/govulncheck -db file://$(VULNDB_DIR) ./...

# Regenerates proto/sluice/v1/*.pb.go with Debian's protoc and a pinned
# protoc-gen-go (installed when missing).
proto:
	@command -v protoc >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler >/dev/null; } || \
	  { echo "make proto needs protoc: apt-get install protobuf-compiler" >&2; exit 1; }
	@command -v protoc-gen-go >/dev/null || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	protoc -I proto -I /usr/include --go_out=proto --go_opt=paths=source_relative proto/sluice/v1/sluice.proto

# The edge on its embedded default with the example configuration, in
# front of a demo sink that prints what it receives.
run: build
	deploy/local/demo.sh

# What sluice costs per message (internal/bench: straight to a sink, through
# the edge with and without a filter, through proxsmtpd when installed; one
# session, then 8), then every other package's benchmarks, then a summary of
# the per-message figures (median over BENCHCOUNT runs, spread, ratios).
# See docs/benchmarks.md.
BENCHTIME  ?= 400x
BENCHCOUNT ?= 3
bench:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/benchsummary ./internal/bench/cmd/benchsummary
	{ $(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) -timeout 30m ./internal/bench/... && \
	  $(GO) test -run='^$$' -bench=. -benchmem $$($(GO) list ./... | grep -v -e /internal/bench -e /internal/interop); } 2>&1 | $(BIN)/benchsummary

# proxsmtpd compatibility: the shared differential oracle against the edge.
compat: build
	deploy/local/compat.sh $(CURDIR)/$(BIN)/edge

cluster: build
	deploy/local/cluster.sh start

cluster-stop:
	deploy/local/cluster.sh stop

# The Debian package (build/sluice_VERSION_ARCH.deb), offline: the three
# binaries as sluice-edge, sluice-worker and sluice-replay, man pages from
# docs/man/*.md and docs/configuration.md (go-md2man, Debian's package),
# the systemd units and maintainer scripts of deploy/package, by nfpm.
NFPM_VERSION := v2.48.0
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//; s/-/+/g'); \
	[ -n "$$v" ] || v=0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null).$$(git rev-parse --short=12 HEAD 2>/dev/null); echo $$v)
deb:
	@command -v go-md2man >/dev/null || { echo "make deb needs go-md2man: apt-get install go-md2man" >&2; exit 1; }
	@command -v nfpm >/dev/null || $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	rm -rf build/pkg && mkdir -p build/pkg/man
	for c in edge worker replay; do \
	  $(GO) build -trimpath -ldflags "-s -w -X github.com/sluice-mail/sluice/internal/wiring.Version=$(DEB_VERSION)" -o build/pkg/sluice-$$c ./cmd/$$c || exit 1; \
	done
	for m in sluice-edge.8 sluice-worker.8 sluice-replay.8; do go-md2man -in docs/man/$$m.md | gzip -9n > build/pkg/man/$$m.gz; done
	(printf '%% SLUICE.CONF 5 "%s" "sluice" "File Formats Manual"\n\n' "$(DEB_VERSION)"; cat docs/configuration.md) | go-md2man | gzip -9n > build/pkg/man/sluice.conf.5.gz
	SLUICE_DEB_VERSION=$(DEB_VERSION) SLUICE_DEB_ARCH=$$($(GO) env GOARCH) nfpm pkg --packager deb --config deploy/package/nfpm.yaml --target build/

# Installs the package on this machine (root), runs an instance as its
# unit says, sends mail through it, removes the package: CI only.
deb-test: deb
	deploy/local/deb-test.sh build/sluice_$(DEB_VERSION)_$$($(GO) env GOARCH).deb

clean:
	rm -rf $(BIN) build
