// Package packets builds Ethernet frames for golden-packet tests with
// gopacket, and checks IPv4, IPv6, TCP and UDP checksums with its own
// arithmetic, independent of gopacket's serializer.
//
// IPv4 and IPv6 describe a frame (IPv6 with extension headers) and Build
// serializes it with lengths and checksums computed; Parse finds the
// headers of a frame a program returned, and VerifyChecksums checks every
// checksum in it, so that a test can assert exact output bytes and valid
// checksums separately. Nothing here touches the kernel.
package packets
