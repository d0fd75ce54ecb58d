package proxywasm

// Host functions (module "env"). Pointers and sizes are wasm32 i32 values.

//go:wasmimport env proxy_log
func proxyLog(level, msg, msgLen uint32) uint32

//go:wasmimport env proxy_get_current_time_nanoseconds
func proxyGetCurrentTimeNanoseconds(retTime uint32) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriodMilliseconds(period uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(bufferType, start, maxSize, retData, retSize uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(mapType, retData, retSize uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType, key, keyLen, retData, retSize uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType, key, keyLen, value, valueLen uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(mapType, key, keyLen, value, valueLen uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(mapType, key, keyLen uint32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path, pathLen, retData, retSize uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status, details, detailsLen, body, bodyLen, headers, headersLen uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key, keyLen, retValue, retSize, retCas uint32) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key, keyLen, value, valueLen, cas uint32) uint32
