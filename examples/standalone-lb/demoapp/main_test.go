package main

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// load counts answers by server name, each request on a new connection,
// and fails when an expected server never answers.
func TestLoad(t *testing.T) {
	a := httptest.NewServer(handler("a"))
	defer a.Close()

	var out bytes.Buffer
	if err := load([]string{"--url", a.URL, "--requests", "20", "--expect", "a"}, &out); err != nil {
		t.Fatalf("load: %v", err)
	}
	if !strings.Contains(out.String(), "a          20  ") {
		t.Errorf("report %q does not count 20 answers from a", out.String())
	}

	err := load([]string{"--url", a.URL, "--requests", "5", "--expect", "a,b"}, &out)
	if err == nil || !strings.Contains(err.Error(), "no answer from b") {
		t.Errorf("load expecting a missing server: %v, want \"no answer from b\"", err)
	}
}

func TestLoadCountsFailures(t *testing.T) {
	a := httptest.NewServer(handler("a"))
	url := a.URL
	a.Close()
	var out bytes.Buffer
	err := load([]string{"--url", url, "--requests", "3", "--timeout", "1s"}, &out)
	if err == nil || !strings.Contains(err.Error(), "3 of 3 requests failed") {
		t.Errorf("load against a closed server: %v, want 3 of 3 failed", err)
	}
}

func TestWait(t *testing.T) {
	a := httptest.NewServer(handler("a"))
	defer a.Close()
	if err := wait([]string{"--url", a.URL, "--timeout", "2s"}); err != nil {
		t.Fatalf("wait for a live server: %v", err)
	}
	url := a.URL
	b := httptest.NewServer(handler("b"))
	b.Close()
	start := time.Now()
	err := wait([]string{"--url", url, "--url", b.URL, "--timeout", "300ms"})
	if err == nil || !strings.Contains(err.Error(), b.URL+" did not answer") {
		t.Errorf("wait for a closed server: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("wait took %v with a 300ms timeout", time.Since(start))
	}
}

// --dropped wants every request to time out: an answer or a refusal fails.
func TestLoadDropped(t *testing.T) {
	// A listener that never accepts: the connection completes in the
	// kernel's backlog, and the request waits for an answer that never
	// comes, as behind a firewall that drops.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out bytes.Buffer
	if err := load([]string{"--url", "http://" + ln.Addr().String(), "--requests", "2", "--timeout", "200ms", "--dropped"}, &out); err != nil {
		t.Errorf("load --dropped against a silent server: %v", err)
	}
	if want := "2 of 2 requests had no answer within 200ms"; !strings.Contains(out.String(), want) {
		t.Errorf("report %q does not say %q", &out, want)
	}

	a := httptest.NewServer(handler("a"))
	defer a.Close()
	err = load([]string{"--url", a.URL, "--requests", "2", "--dropped", "--from", "127.0.0.1"}, &out)
	if err == nil || !strings.Contains(err.Error(), "2 of 2 requests were answered, want none") {
		t.Errorf("load --dropped against a live server: %v", err)
	}

	url := a.URL
	a.Close()
	err = load([]string{"--url", url, "--requests", "1", "--dropped"}, &out)
	if err == nil || !strings.Contains(err.Error(), "otherwise than by a timeout") {
		t.Errorf("load --dropped against a closed port: %v", err)
	}
}
