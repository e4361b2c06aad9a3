package lb_test

import (
	"errors"
	"fmt"
	"log"
	"net/netip"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

// The whole flow of an agent: open the datapath, attach, install services.
// (Not run by go test: it needs root and an interface named eth0.)
func ExampleManager_Sync() {
	dp, err := datapath.Open(datapath.Options{}) // pins under /sys/fs/bpf/xdplane
	if err != nil {
		log.Fatal(err)
	}
	defer dp.Close() // the datapath keeps running

	if err := dp.Attach("eth0", datapath.AttachOptions{Hook: datapath.HookTC}); err != nil {
		log.Fatal(err)
	}
	services, err := lb.NewManager(dp) // holds the datapath until Close
	if err != nil {
		log.Fatal(err)
	}
	defer services.Close()
	res, err := services.Sync([]lb.Service{{
		Frontend: lb.Frontend{Address: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: lb.TCP},
		Backends: []lb.Backend{
			{Address: netip.MustParseAddrPort("10.0.1.2:8080")},
			{Address: netip.MustParseAddrPort("10.0.2.2:8080"), Weight: 2},
		},
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("added:", res.Added)
}

// Validation errors name the field and the value.
func ExampleValidationError() {
	s := lb.Service{
		Frontend: lb.Frontend{Address: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: lb.TCP},
		Backends: []lb.Backend{{Address: netip.MustParseAddrPort("10.0.1.2:0")}},
	}
	err := s.Validate()
	var ve *lb.ValidationError
	fmt.Println(errors.Is(err, lb.ErrInvalid), errors.As(err, &ve) && ve.Field == "backends[0].address")
	fmt.Println(err)
	// Output:
	// true true
	// service 10.96.0.10:80/tcp: backends[0].address 10.0.1.2:0: port 0 is not allowed
}
