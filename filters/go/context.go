package proxywasm

import "strconv"

// RootContext is one configured filter (a plugin): it reads the
// configuration, owns the tick timer and creates one HTTPContext per request.
type RootContext interface {
	// OnVMStart runs once when the VM starts; false fails the VM.
	OnVMStart(vmConfigSize int) bool
	// OnConfigure receives the plugin configuration size; false rejects it.
	OnConfigure(pluginConfigSize int) bool
	// OnTick runs every tick period set with SetTickPeriod.
	OnTick()
	// NewHTTPContext returns the context for one request, or nil to let
	// every request pass untouched.
	NewHTTPContext(contextID uint32) HTTPContext
}

// HTTPContext handles one request/response exchange.
type HTTPContext interface {
	OnRequestHeaders(numHeaders int, endOfStream bool) Action
	OnRequestBody(bodySize int, endOfStream bool) Action
	OnResponseHeaders(numHeaders int, endOfStream bool) Action
	OnResponseBody(bodySize int, endOfStream bool) Action
	// OnLog runs once the exchange is complete.
	OnLog()
	// OnDelete runs last; the context is forgotten afterwards.
	OnDelete()
}

// DefaultRootContext can be embedded to get no-op root callbacks.
type DefaultRootContext struct{}

func (DefaultRootContext) OnVMStart(int) bool                { return true }
func (DefaultRootContext) OnConfigure(int) bool              { return true }
func (DefaultRootContext) OnTick()                           {}
func (DefaultRootContext) NewHTTPContext(uint32) HTTPContext { return nil }

// DefaultHTTPContext can be embedded to get pass-through HTTP callbacks.
type DefaultHTTPContext struct{}

func (DefaultHTTPContext) OnRequestHeaders(int, bool) Action  { return ActionContinue }
func (DefaultHTTPContext) OnRequestBody(int, bool) Action     { return ActionContinue }
func (DefaultHTTPContext) OnResponseHeaders(int, bool) Action { return ActionContinue }
func (DefaultHTTPContext) OnResponseBody(int, bool) Action    { return ActionContinue }
func (DefaultHTTPContext) OnLog()                             {}
func (DefaultHTTPContext) OnDelete()                          {}

var (
	newRootContext func(contextID uint32) RootContext
	rootContexts   = map[uint32]RootContext{}
	httpContexts   = map[uint32]HTTPContext{}
)

// SetRootContextFactory registers how to create a root context; call it from
// an init function of the filter's main package.
func SetRootContextFactory(factory func(contextID uint32) RootContext) {
	newRootContext = factory
}

func boolToU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

//go:wasmexport proxy_abi_version_0_2_1
func proxyAbiVersion021() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	if parentID == 0 {
		if newRootContext == nil {
			Log(LogCritical, "proxywasm: no root context factory registered")
			return
		}
		rootContexts[contextID] = newRootContext(contextID)
		return
	}
	root, ok := rootContexts[parentID]
	if !ok {
		Log(LogError, "proxywasm: context "+strconv.FormatUint(uint64(contextID), 10)+
			" created under unknown root "+strconv.FormatUint(uint64(parentID), 10))
		return
	}
	if http := root.NewHTTPContext(contextID); http != nil {
		httpContexts[contextID] = http
	}
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, vmConfigSize uint32) uint32 {
	root, ok := rootContexts[rootID]
	if !ok {
		return 0
	}
	return boolToU32(root.OnVMStart(int(vmConfigSize)))
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	root, ok := rootContexts[rootID]
	if !ok {
		return 0
	}
	return boolToU32(root.OnConfigure(int(pluginConfigSize)))
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	if root, ok := rootContexts[rootID]; ok {
		root.OnTick()
	}
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	if http, ok := httpContexts[contextID]; ok {
		return uint32(http.OnRequestHeaders(int(numHeaders), endOfStream != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, bodySize, endOfStream uint32) uint32 {
	if http, ok := httpContexts[contextID]; ok {
		return uint32(http.OnRequestBody(int(bodySize), endOfStream != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	if http, ok := httpContexts[contextID]; ok {
		return uint32(http.OnResponseHeaders(int(numHeaders), endOfStream != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, bodySize, endOfStream uint32) uint32 {
	if http, ok := httpContexts[contextID]; ok {
		return uint32(http.OnResponseBody(int(bodySize), endOfStream != 0))
	}
	return uint32(ActionContinue)
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 {
	return 1
}

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) {
	if http, ok := httpContexts[contextID]; ok {
		http.OnLog()
	}
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	if http, ok := httpContexts[contextID]; ok {
		delete(httpContexts, contextID)
		http.OnDelete()
		return
	}
	delete(rootContexts, contextID)
}
