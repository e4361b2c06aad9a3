module github.com/xdplane/xdplane/examples/standalone-lb

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	github.com/xdplane/xdplane v0.0.0
	go.yaml.in/yaml/v3 v3.0.6
)

require (
	github.com/google/gopacket v1.1.19 // indirect
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/xdplane/xdplane => ../..
