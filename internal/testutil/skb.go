package testutil

import "encoding/binary"

// SKBContext is the head of struct __sk_buff up to ifindex, the context a
// tc program gets from BPF_PROG_TEST_RUN: the fields a caller may set are
// mark, priority and the two interface indexes; the rest must be zero.
type SKBContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority uint32
	IngressIfindex, Ifindex                                                               uint32
}

// SKBContextBytes is the context of a packet at the interface with index
// ifindex, encoded, for a benchmark to pass without encoding it each run.
func SKBContextBytes(ifindex uint32) []byte {
	b, err := binary.Append(nil, binary.NativeEndian, SKBContext{Ifindex: ifindex})
	if err != nil {
		panic(err)
	}
	return b
}
