package kernel

import "encoding/binary"

// Htons returns v in network byte order as it sits in a map field the
// Go bindings hold as a native integer (__be16); Ntohs undoes it.
func Htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Ntohs undoes Htons.
func Ntohs(v uint16) uint16 { return Htons(v) }

// Htonl returns v in network byte order as it sits in a map field the Go
// bindings hold as a native integer (__be32); Ntohl undoes it.
func Htonl(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}

// Ntohl undoes Htonl.
func Ntohl(v uint32) uint32 { return Htonl(v) }
