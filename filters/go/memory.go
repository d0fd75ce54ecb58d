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
// A null pointer or size 0 means "no data".
func take(ptr, size uint32) []byte {
	if ptr == 0 || size == 0 {
		if ptr != 0 {
			delete(hostBuffers, ptr)
		}
		return nil
	}
	buf, ok := hostBuffers[ptr]
	if ok {
		delete(hostBuffers, ptr)
		if uint32(len(buf)) >= size {
			return buf[:size]
		}
	}
	// Memory the binding did not allocate (a host using another allocator):
	// copy it out of linear memory.
	out := make([]byte, size)
	copy(out, unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), size))
	return out
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

// takeSlots reads the (pointer, size) result slots and takes the buffer.
func takeSlots() []byte {
	ptr, size := slotPtr, slotSize
	slotPtr, slotSize = 0, 0
	return take(ptr, size)
}
