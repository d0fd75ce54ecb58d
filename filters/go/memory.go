package proxywasm

import "unsafe"

// Buffers handed to the host by proxy_on_memory_allocate stay in this map
// until the binding takes them back (take), so Go's garbage collector cannot
// free memory the host is still writing into. Go's collector does not move
// heap objects, so the address stays valid while the slice is reachable.
var hostBuffers = map[uint32][]byte{}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	capacity := size
	if capacity == 0 {
		capacity = 1
	}
	buf := make([]byte, size, capacity)
	ptr := uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf[:capacity]))))
	hostBuffers[ptr] = buf
	return ptr
}

// take returns the buffer the host filled at ptr (size bytes) and forgets it.
// A null pointer or size 0 means "no data". The host can only have allocated
// through proxy_on_memory_allocate (the module exports no other allocator),
// so any other pointer is treated as no data.
func take(ptr, size uint32) []byte {
	buf, ok := hostBuffers[ptr]
	delete(hostBuffers, ptr)
	if !ok || size == 0 || uint32(len(buf)) < size {
		return nil
	}
	return buf[:size]
}

// ptrOf returns the linear-memory address of b's first byte (0 when empty).
// Callers keep b alive (runtime.KeepAlive) until the host call returns.
func ptrOf(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

// Result slots the host writes into. They are package variables, so they
// never move (goroutine stacks can move while the host re-enters the module
// through proxy_on_memory_allocate) and they are read right after each call.
var (
	slotPtr  uint32
	slotSize uint32
	slotU32  uint32
	slotU64  uint64
)

func slotPtrAddr() uint32  { return uint32(uintptr(unsafe.Pointer(&slotPtr))) }
func slotSizeAddr() uint32 { return uint32(uintptr(unsafe.Pointer(&slotSize))) }
func slotU32Addr() uint32  { return uint32(uintptr(unsafe.Pointer(&slotU32))) }
func slotU64Addr() uint32  { return uint32(uintptr(unsafe.Pointer(&slotU64))) }

// clearSlots resets the result slots before a host call that returns data.
func clearSlots() {
	slotPtr, slotSize, slotU32 = 0, 0, 0
}

// result finishes a host call that returns data: on OK it takes the buffer
// the result slots point at. Either way, buffers the host allocated during
// the call and did not hand over (a failure after allocating) are released.
func result(status uint32) ([]byte, error) {
	var data []byte
	err := asError(status)
	if err == nil {
		data = take(slotPtr, slotSize)
	}
	clear(hostBuffers)
	return data, err
}
