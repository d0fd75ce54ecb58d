package proxywasm

import "strconv"

// Status is a proxy_status_t returned by a host function.
type Status uint32

// Status values as the Proxy-Wasm spec names them.
const (
	StatusOK                  Status = 0
	StatusNotFound            Status = 1
	StatusBadArgument         Status = 2
	StatusSerializationFailed Status = 3
	StatusParseFailure        Status = 4
	StatusInvalidMemoryAccess Status = 6
	StatusEmpty               Status = 7
	StatusCasMismatch         Status = 8
	StatusInternalFailure     Status = 10
	StatusUnimplemented       Status = 12
)

var statusNames = map[Status]string{
	StatusOK:                  "OK",
	StatusNotFound:            "NOT_FOUND",
	StatusBadArgument:         "BAD_ARGUMENT",
	StatusSerializationFailed: "SERIALIZATION_FAILURE",
	StatusParseFailure:        "PARSE_FAILURE",
	StatusInvalidMemoryAccess: "INVALID_MEMORY_ACCESS",
	StatusEmpty:               "EMPTY",
	StatusCasMismatch:         "CAS_MISMATCH",
	StatusInternalFailure:     "INTERNAL_FAILURE",
	StatusUnimplemented:       "UNIMPLEMENTED",
}

// Error makes a non-OK Status usable as an error.
func (s Status) Error() string {
	if name, ok := statusNames[s]; ok {
		return name
	}
	return "status " + strconv.FormatUint(uint64(s), 10)
}

// asError turns OK into nil and any other status into an error.
func asError(s uint32) error {
	if Status(s) == StatusOK {
		return nil
	}
	return Status(s)
}

// Action is what an HTTP callback tells the host to do next.
type Action uint32

// Actions the host understands.
const (
	ActionContinue Action = 0
	ActionPause    Action = 1
)

// LogLevel is a proxy_log_level_t.
type LogLevel uint32

// Log levels.
const (
	LogTrace    LogLevel = 0
	LogDebug    LogLevel = 1
	LogInfo     LogLevel = 2
	LogWarn     LogLevel = 3
	LogError    LogLevel = 4
	LogCritical LogLevel = 5
)

// MapType is a proxy_map_type_t.
type MapType uint32

// Header maps.
const (
	MapRequestHeaders  MapType = 0
	MapRequestTrailers MapType = 1
	MapResponseHeaders MapType = 2
)

// BufferType is a proxy_buffer_type_t.
type BufferType uint32

// Buffers.
const (
	BufferRequestBody         BufferType = 0
	BufferResponseBody        BufferType = 1
	BufferVMConfiguration     BufferType = 6
	BufferPluginConfiguration BufferType = 7
)
