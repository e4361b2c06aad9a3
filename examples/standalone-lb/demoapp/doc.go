// Command demoapp is the HTTP server and client that demo.sh runs in its
// network namespaces, so that the demo needs neither python nor curl.
//
//	demoapp serve --name NAME --listen ADDR
//	demoapp wait --url URL [--url URL ...] [--timeout 10s]
//	demoapp load --url URL [--requests 300] [--concurrency 8] [--expect NAME,NAME...] [--from ADDR] [--dropped]
//
// serve answers every request with NAME and a newline. wait polls each URL
// until it answers. load sends the requests, each on a new connection (so
// each is a new flow for the load balancer), from the address ADDR if
// given, and prints how many each server answered; it fails if a request
// fails or an expected server never answered. With --dropped it expects
// the opposite: that every request times out, as it does when a firewall
// drops its packets, and fails if one is answered or refused.
package main
