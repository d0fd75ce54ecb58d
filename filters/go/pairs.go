package proxywasm

import (
	"encoding/binary"
	"errors"
)

var errBadPairs = errors.New("malformed header map from host")

// encodePairs serializes a header map: a u32 count, then (u32 name length,
// u32 value length) per entry, then each name and value followed by a NUL.
func encodePairs(headers []Header) []byte {
	size := 4
	for _, h := range headers {
		size += 8 + len(h.Name) + 1 + len(h.Value) + 1
	}
	out := make([]byte, size)
	binary.LittleEndian.PutUint32(out, uint32(len(headers)))
	lengths := out[4:]
	data := 4 + 8*len(headers)
	for i, h := range headers {
		binary.LittleEndian.PutUint32(lengths[8*i:], uint32(len(h.Name)))
		binary.LittleEndian.PutUint32(lengths[8*i+4:], uint32(len(h.Value)))
		data += copy(out[data:], h.Name) + 1
		data += copy(out[data:], h.Value) + 1
	}
	return out
}

// decodePairs parses a serialized header map; empty input is an empty map.
func decodePairs(b []byte) ([]Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, errBadPairs
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > (len(b)-4)/8 {
		return nil, errBadPairs
	}
	headers := make([]Header, n)
	data := 4 + 8*n
	for i := 0; i < n; i++ {
		nameLen := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		valueLen := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if nameLen+valueLen+2 > len(b)-data || nameLen < 0 || valueLen < 0 {
			return nil, errBadPairs
		}
		headers[i].Name = string(b[data : data+nameLen])
		data += nameLen + 1
		headers[i].Value = string(b[data : data+valueLen])
		data += valueLen + 1
	}
	return headers, nil
}
