package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demoapp serve|wait|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "wait":
		err = wait(os.Args[2:])
	case "load":
		err = load(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q: want serve, wait or load", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demoapp %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

// handler answers with the server's name.
func handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, name+"\n")
	})
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	name := fs.String("name", "", "the name to answer with (required)")
	listen := fs.String("listen", ":8080", "the address to listen on")
	fs.Parse(args)
	if *name == "" {
		return errors.New("--name is required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(*name), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// client makes a new connection for every request, from the address
// from when it is valid.
func client(timeout time.Duration, from netip.Addr) *http.Client {
	d := &net.Dialer{}
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil, DialContext: d.DialContext},
	}
}

// get fetches url and returns the body without its newline.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	var list urls
	fs.Var(&list, "url", "a URL to wait for; repeat for several")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait in all")
	fs.Parse(args)
	c := client(time.Second, netip.Addr{})
	deadline := time.Now().Add(*timeout)
	for _, u := range list {
		for {
			_, err := get(c, u)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not answer within %s: %w", u, *timeout, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func load(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "the URL to request (required)")
	requests := fs.Int("requests", 300, "how many requests to send")
	concurrency := fs.Int("concurrency", 8, "how many requests at once")
	expect := fs.String("expect", "", "comma-separated names that must each answer at least once")
	timeout := fs.Duration("timeout", 3*time.Second, "the time limit of one request")
	fromText := fs.String("from", "", "the source address (default: the one routing picks)")
	dropped := fs.Bool("dropped", false, "expect every request to time out")
	fs.Parse(args)
	if *url == "" {
		return errors.New("--url is required")
	}
	var from netip.Addr
	if *fromText != "" {
		a, err := netip.ParseAddr(*fromText)
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		from = a
	}
	counts, failures := send(client(*timeout, from), *url, *requests, *concurrency)
	if *dropped {
		return expectDropped(out, counts, failures, *requests, *timeout)
	}
	report(out, counts, failures, *requests)

	var missing []string
	for _, name := range strings.Split(*expect, ",") {
		if name != "" && counts[name] == 0 {
			missing = append(missing, name)
		}
	}
	switch {
	case len(failures) > 0:
		return fmt.Errorf("%d of %d requests failed; the first: %w", len(failures), *requests, failures[0])
	case len(missing) > 0:
		return fmt.Errorf("no answer from %s", strings.Join(missing, ", "))
	}
	return nil
}

// send makes n requests, at most conc at a time, and counts the answers by
// body.
func send(c *http.Client, url string, n, conc int) (map[string]int, []error) {
	var (
		mu       sync.Mutex
		counts   = map[string]int{}
		failures []error
		wg       sync.WaitGroup
		jobs     = make(chan struct{})
	)
	for range max(conc, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				name, err := get(c, url)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					counts[name]++
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return counts, failures
}

// expectDropped reports requests that were all meant to time out, and
// fails unless they did.
func expectDropped(out io.Writer, counts map[string]int, failures []error, total int, timeout time.Duration) error {
	timedOut := 0
	var other error
	for _, err := range failures {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			timedOut++
		} else if other == nil {
			other = err
		}
	}
	fmt.Fprintf(out, "  %d of %d requests had no answer within %s\n", timedOut, total, timeout)
	answered := total - len(failures)
	switch {
	case answered > 0:
		report(out, counts, nil, total)
		return fmt.Errorf("%d of %d requests were answered, want none", answered, total)
	case other != nil:
		return fmt.Errorf("a request failed otherwise than by a timeout (refused rather than dropped?): %w", other)
	}
	return nil
}

func report(out io.Writer, counts map[string]int, failures []error, total int) {
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		bar := strings.Repeat("#", counts[name]*40/max(total, 1))
		fmt.Fprintf(out, "  %-8s %4d  %s\n", name, counts[name], bar)
	}
	if len(failures) > 0 {
		fmt.Fprintf(out, "  %-8s %4d\n", "failed", len(failures))
	}
}
