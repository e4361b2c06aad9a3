#!/usr/bin/env bash
# Builds etcd and kube-apiserver, for the kube-agent's end-to-end test,
# from the Go module proxy at the versions this module's go.mod names, and
# caches them: under $XDPLANE_CACHE (default ~/.cache/xdplane), in a
# directory keyed on go.mod, go.sum and the Go version, so that a clone,
# a CI run or a branch with the same pins reuses them. Prints the
# directory that holds the two binaries.
#
# The first build takes long (all of kube-apiserver: about 17 minutes on 2
# cores with empty Go caches); later ones print the directory at once.
set -euo pipefail
# The binaries are cached under a key made of this module's go.mod and
# go.sum, so they must be built from exactly those versions: the
# repository's go.work would lift some of them to other modules' versions.
export GOWORK=off
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" <(go version) | sha256sum | cut -c1-16)
cache="${XDPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xdplane}"
dir="$cache/kube/$key"
if [[ -x $dir/etcd && -x $dir/kube-apiserver ]]; then
	echo "$dir"
	exit 0
fi
mkdir -p "$cache/kube"
tmp=$(mktemp -d "$cache/kube/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "hack/kube: building etcd and kube-apiserver into $dir (the first time takes long)" >&2
start=$SECONDS
(
	cd "$here"
	go build -trimpath -o "$tmp/etcd" go.etcd.io/etcd/server/v3
	go build -trimpath -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
) >&2
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "hack/kube: built in $((SECONDS - start)) s" >&2
echo "$dir"
