// Package kernel is the one door between xdplane's packages and the
// datapath's kernel objects. Package datapath loads the programs and pins
// the maps; the packages that program the maps (lb, policy, bandwidth,
// prefilter) reach them through Of, and write them through the helpers
// here: Txn (writes with undo), PutAll and DeleteAll (batches, with a
// fallback where the kernel has none), Scan (recovery), and the named
// locks every writer takes.
//
// Nothing here is exported from the module: the map layouts are xdplane's
// own, and change between versions.
package kernel
