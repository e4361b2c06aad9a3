package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/xdplane/xdplane/datapath"
)

const usage = `xdplane-lb: a standalone L4 load balancer on xdplane's eBPF datapath.

Usage:
  xdplane-lb run --config FILE --interface IF [--interface IF ...] [--hook tc|xdp] [--bpffs DIR]
  xdplane-lb status [--bpffs DIR] [--config FILE]
  xdplane-lb cleanup [--bpffs DIR] [--force]

run      attach to the interfaces, install the configured services and stay
         in the foreground: SIGHUP reloads the configuration, SIGINT and
         SIGTERM exit and leave the load balancer running in the kernel.
status   print the services, backends, prefilter, counters and attachments
         pinned in the bpffs directory, whether or not run is running.
cleanup  detach from every interface and remove the pinned state. Refused
         while run runs on the same --bpffs: stop run first, or pass --force
         (run then notices and exits with an error).

Run each command in the network namespace of the interfaces. --bpffs
defaults to ` + datapath.DefaultDir + `.
Use "xdplane-lb COMMAND -h" for a command's flags.
`

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = cmdRun(rest, log, stderr)
	case "status":
		err = cmdStatus(rest, stdout, stderr)
	case "cleanup":
		err = cmdCleanup(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "xdplane-lb: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "xdplane-lb %s: %v\n", args[0], err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "xdplane-lb %s: %v\n", args[0], err)
	return exitError
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// newFlags makes a flag set for a command that reports, rather than
// prints and exits on, a parse error.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("xdplane-lb "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// listFlag collects a flag given several times; a comma also separates
// values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			return errors.New("empty value")
		}
		*l = append(*l, v)
	}
	return nil
}
