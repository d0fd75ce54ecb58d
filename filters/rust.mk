# Rust filters, built without crates by Debian's rustc for wasm32-unknown-unknown.
# Included by filters/Makefile; `make -C filters rust` builds only these.
#
# Toolchain: Debian bookworm's rustc 1.63.0+dfsg1-2 with libstd-rust-dev-wasm32 1.63.0+dfsg1-2
# (installed with apt when /usr/bin/rustc is missing or another version). The same compiler and the
# same sources give the same bytes: one codegen unit, LTO, symbols stripped, paths relative to filters/.
# Each filter is filters/<name>/lib.rs and shares the ABI binding filters/rust/proxy_abi.rs.

RUST_FILTERS := hostcalls greeting-rust rate-limiting
RUSTC := /usr/bin/rustc
RUST_VERSION := 1.63.0
RUST_DEBIAN_VERSION := 1.63.0+dfsg1-2
RUST_FLAGS := --edition 2021 --target wasm32-unknown-unknown --crate-type cdylib \
	-C opt-level=s -C lto -C codegen-units=1 -C panic=abort -C strip=symbols -C debuginfo=0 \
	--remap-path-prefix=$(CURDIR)=.

LANGUAGES += rust

.PHONY: rust rust-toolchain $(addprefix rust-,$(RUST_FILTERS))

rust: $(addprefix rust-,$(RUST_FILTERS))

rust-toolchain:
	@if ! $(RUSTC) --version 2>/dev/null | grep -qx 'rustc $(RUST_VERSION)' \
	    || ! test -d /usr/lib/rustlib/wasm32-unknown-unknown; then \
	  echo "installing rustc $(RUST_DEBIAN_VERSION) and libstd-rust-dev-wasm32 with apt"; \
	  apt-get update && apt-get install -y rustc=$(RUST_DEBIAN_VERSION) \
	    libstd-rust-dev-wasm32=$(RUST_DEBIAN_VERSION) || exit 1; \
	fi
	@$(RUSTC) --version | grep -qx 'rustc $(RUST_VERSION)' \
	  || { echo "rust.mk: need $(RUSTC) $(RUST_VERSION), found: `$(RUSTC) --version`" >&2; exit 1; }

# Always rebuilt: CI compares the committed .wasm with a fresh build.
$(addprefix rust-,$(RUST_FILTERS)): rust-%: rust-toolchain
	$(RUSTC) $(RUST_FLAGS) --crate-name $(subst -,_,$*) $*/lib.rs -o $*.wasm
	@echo "built $*.wasm"
