// The developer tools that `make vet` runs, pinned with their hashes in a
// module of their own so that the library's go.mod, which importers see,
// does not carry them. The Makefile builds them into bin/ with GOWORK=off;
// inside the workspace, `go tool staticcheck` works too. To move one:
// GOWORK=off go get -tool honnef.co/go/tools/cmd/staticcheck@VERSION
module github.com/xdplane/xdplane/hack/tools

go 1.26.0

tool honnef.co/go/tools/cmd/staticcheck

require (
	github.com/BurntSushi/toml v1.4.1-0.20240526193622-a339e1f7089c // indirect
	golang.org/x/exp/typeparams v0.0.0-20231108232855-2478ac86f678 // indirect
	golang.org/x/mod v0.41.0 // indirect
	golang.org/x/sync v0.23.0 // indirect
	golang.org/x/tools v0.51.0 // indirect
	honnef.co/go/tools v0.8.2 // indirect
)
