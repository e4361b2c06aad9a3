package kernel

import "encoding/binary"

// Htons returns v in network byte order as it sits in a little-endian
// map field (__be16), and Ntohs the other way.
func Htons(v uint16) uint16 { return v>>8 | v<<8 }

// Ntohs undoes Htons.
func Ntohs(v uint16) uint16 { return Htons(v) }

// Htonl returns v in network byte order as it sits in a little-endian map
// field (__be32); Ntohl undoes it.
func Htonl(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}

// Ntohl undoes Htonl.
func Ntohl(v uint32) uint32 { return Htonl(v) }
