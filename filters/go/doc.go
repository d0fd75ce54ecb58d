// Package proxywasm is twistgate's own small Proxy-Wasm ABI binding for Go
// (GOOS=wasip1 GOARCH=wasm, Go 1.24 or later, no third-party modules).
//
// A filter registers a root-context factory in an init function and is built
// as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm .
//
// The module exports proxy_abi_version_0_2_1, proxy_on_memory_allocate and the
// HTTP callbacks; it imports only the env.proxy_* host functions it uses.
// Callbacks run synchronously on the host's call: they must not block on
// channels, sleep or start goroutines that outlive the call.
package proxywasm
