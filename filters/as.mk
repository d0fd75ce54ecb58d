# AssemblyScript filters, built with the npm packages pinned in each filter's package-lock.json.
# Included by filters/Makefile; `make -C filters as` builds only these.

AS_FILTERS := greeting
NPM ?= npm

LANGUAGES += as

.PHONY: as $(addprefix as-,$(AS_FILTERS))

as: $(addprefix as-,$(AS_FILTERS))

# Always rebuilt (CI checks the committed .wasm against a fresh build); `npm ci` runs only when the
# lock file is newer than the installed tree.
$(addprefix as-,$(AS_FILTERS)): as-%: %/node_modules/.twistgate-installed
	cd $* && ./node_modules/.bin/asc assembly/index.ts -b ../$*.wasm \
		--use abort=abort_proc_exit --optimize --runtime full
	@echo "built $*.wasm"

%/node_modules/.twistgate-installed: %/package.json %/package-lock.json
	cd $* && $(NPM) ci --no-audit --no-fund --ignore-scripts
	touch $@
