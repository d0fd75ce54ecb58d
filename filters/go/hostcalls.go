package proxywasm

import (
	"runtime"
	"strings"
)

// Log writes msg to the host's log at level.
func Log(level LogLevel, msg string) {
	b := []byte(msg)
	proxyLog(uint32(level), ptrOf(b), uint32(len(b)))
	runtime.KeepAlive(b)
}

// CurrentTimeNanoseconds is the host's clock in nanoseconds since the epoch.
func CurrentTimeNanoseconds() (int64, error) {
	if err := asError(proxyGetCurrentTimeNanoseconds(slotU64Addr())); err != nil {
		return 0, err
	}
	return int64(slotU64), nil
}

// SetTickPeriod asks for proxy_on_tick every periodMs milliseconds (0 stops).
// Call it from a root context.
func SetTickPeriod(periodMs uint32) error {
	return asError(proxySetTickPeriodMilliseconds(periodMs))
}

func getBuffer(t BufferType, start, maxSize uint32) ([]byte, error) {
	clearSlots()
	return result(proxyGetBufferBytes(uint32(t), start, maxSize, slotPtrAddr(), slotSizeAddr()))
}

// PluginConfiguration reads the plugin configuration (size bytes, as passed
// to OnConfigure). A missing configuration reads as empty.
func PluginConfiguration(size int) ([]byte, error) {
	if size <= 0 {
		return nil, nil
	}
	data, err := getBuffer(BufferPluginConfiguration, 0, uint32(size))
	if err == StatusNotFound {
		return nil, nil
	}
	return data, err
}

// Property reads a host property; path segments are joined as the ABI asks.
func Property(path ...string) ([]byte, error) {
	b := []byte(strings.Join(path, "\x00"))
	clearSlots()
	status := proxyGetProperty(ptrOf(b), uint32(len(b)), slotPtrAddr(), slotSizeAddr())
	runtime.KeepAlive(b)
	return result(status)
}

// Header is one header-map entry.
type Header struct {
	Name  string
	Value string
}

// HeaderMap returns every entry of a header map, in order.
func HeaderMap(m MapType) ([]Header, error) {
	clearSlots()
	data, err := result(proxyGetHeaderMapPairs(uint32(m), slotPtrAddr(), slotSizeAddr()))
	if err != nil {
		return nil, err
	}
	return decodePairs(data)
}

// HeaderValue returns a header's value; StatusNotFound when absent.
func HeaderValue(m MapType, name string) (string, error) {
	k := []byte(name)
	clearSlots()
	status := proxyGetHeaderMapValue(uint32(m), ptrOf(k), uint32(len(k)), slotPtrAddr(), slotSizeAddr())
	runtime.KeepAlive(k)
	value, err := result(status)
	return string(value), err
}

// AddHeader appends a header to a map (a repeated name adds another entry).
func AddHeader(m MapType, name, value string) error {
	k, v := []byte(name), []byte(value)
	status := proxyAddHeaderMapValue(uint32(m), ptrOf(k), uint32(len(k)), ptrOf(v), uint32(len(v)))
	runtime.KeepAlive(k)
	runtime.KeepAlive(v)
	return asError(status)
}

// ReplaceHeader sets a header, replacing every entry with that name.
func ReplaceHeader(m MapType, name, value string) error {
	k, v := []byte(name), []byte(value)
	status := proxyReplaceHeaderMapValue(uint32(m), ptrOf(k), uint32(len(k)), ptrOf(v), uint32(len(v)))
	runtime.KeepAlive(k)
	runtime.KeepAlive(v)
	return asError(status)
}

// RemoveHeader removes every entry with that name.
func RemoveHeader(m MapType, name string) error {
	k := []byte(name)
	status := proxyRemoveHeaderMapValue(uint32(m), ptrOf(k), uint32(len(k)))
	runtime.KeepAlive(k)
	return asError(status)
}

// SendLocalResponse answers the request from the filter; the upstream is not
// called. details is the response-code detail the host may log.
func SendLocalResponse(status uint32, details string, headers []Header, body []byte) error {
	d := []byte(details)
	h := encodePairs(headers)
	result := proxySendLocalResponse(status, ptrOf(d), uint32(len(d)), ptrOf(body), uint32(len(body)),
		ptrOf(h), uint32(len(h)), -1)
	runtime.KeepAlive(d)
	runtime.KeepAlive(h)
	runtime.KeepAlive(body)
	return asError(result)
}

// SharedData reads a shared key. The CAS value is what SetSharedData needs
// to update it; StatusNotFound when the key is absent.
func SharedData(key string) (value []byte, cas uint32, err error) {
	k := []byte(key)
	clearSlots()
	status := proxyGetSharedData(ptrOf(k), uint32(len(k)), slotPtrAddr(), slotSizeAddr(), slotU32Addr())
	runtime.KeepAlive(k)
	cas = slotU32
	value, err = result(status)
	if err != nil {
		return nil, 0, err
	}
	return value, cas, nil
}

// SetSharedData writes a shared key when cas matches (0 for a key read as
// absent); StatusCasMismatch when another writer got there first.
func SetSharedData(key string, value []byte, cas uint32) error {
	k := []byte(key)
	v := value
	if v == nil {
		v = []byte{}
	}
	status := proxySetSharedData(ptrOf(k), uint32(len(k)), ptrOfNonNull(v), uint32(len(v)), cas)
	runtime.KeepAlive(k)
	runtime.KeepAlive(v)
	return asError(status)
}

// DeleteSharedData removes a shared key (a null value pointer) when cas matches.
func DeleteSharedData(key string, cas uint32) error {
	k := []byte(key)
	status := proxySetSharedData(ptrOf(k), uint32(len(k)), 0, 0, cas)
	runtime.KeepAlive(k)
	return asError(status)
}

// emptyValue gives an empty value a non-null address, so the host stores ""
// instead of deleting the key.
var emptyValue = make([]byte, 1)

func ptrOfNonNull(b []byte) uint32 {
	if len(b) == 0 {
		return ptrOf(emptyValue)
	}
	return ptrOf(b)
}
