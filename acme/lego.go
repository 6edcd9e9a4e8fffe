package acme

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-acme/lego/v4/challenge/dns01"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/miekg/dns"

	"github.com/podtls/podtls/acme/issuerconfig"
)

// Process-wide lego state. lego keeps the recursive name servers of its
// propagation check in a package variable (dns01.AddRecursiveNameservers
// writes it when a challenge is set up), and its logger is global too. The
// controller runs one issuer at a time; a new issuer (after a configuration
// change) takes the settings over. An order still running on the old issuer
// sees the new name servers from its next check on.
var (
	globalMu        sync.Mutex
	appliedServers  []string // what applyGlobalDNSSettings last set
	systemResolvers = loadSystemResolvers()
	legoSlog        atomic.Pointer[slog.Logger]
	legoLogOnce     sync.Once
)

// applyGlobalDNSSettings points lego's propagation check at the configured
// recursive name servers, or back at the system's.
func applyGlobalDNSSettings(d issuerconfig.DNS) {
	globalMu.Lock()
	defer globalMu.Unlock()
	servers := d.RecursiveNameservers
	if len(servers) == 0 {
		servers = systemResolvers
	}
	if len(servers) == 0 || slices.Equal(servers, appliedServers) {
		return // lego's built-in public resolvers, or nothing changes: no write
	}
	appliedServers = slices.Clone(servers)
	// The option only sets the package variable; the nil Challenge is unused.
	_ = dns01.AddRecursiveNameservers(servers)(nil)
	dns01.ClearFqdnCache() // zones found through other servers may differ
}

func loadSystemResolvers() []string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return nil
	}
	return dns01.ParseNameservers(cc.Servers)
}

// setLegoLogger sends lego's log lines to l: progress at debug level,
// warnings at warn. lego logs domains and URLs, never keys.
func setLegoLogger(l *slog.Logger) {
	legoSlog.Store(l)
	legoLogOnce.Do(func() { legolog.Logger = slogAdapter{} })
}

type slogAdapter struct{}

func (slogAdapter) emit(msg string) {
	l := legoSlog.Load()
	if l == nil {
		return
	}
	msg = strings.TrimSpace(msg)
	level := slog.LevelDebug
	if rest, ok := strings.CutPrefix(msg, "[WARN] "); ok {
		level, msg = slog.LevelWarn, rest
	} else {
		msg = strings.TrimPrefix(msg, "[INFO] ")
	}
	l.Log(context.Background(), level, msg, "component", "lego")
}

func (a slogAdapter) Print(args ...any)                 { a.emit(fmt.Sprint(args...)) }
func (a slogAdapter) Println(args ...any)               { a.emit(fmt.Sprintln(args...)) }
func (a slogAdapter) Printf(format string, args ...any) { a.emit(fmt.Sprintf(format, args...)) }

// lego's library code never calls Fatal (only its CLI does); never exit the
// controller because of a library log line.
func (a slogAdapter) Fatal(args ...any)   { a.emit("[WARN] " + fmt.Sprint(args...)) }
func (a slogAdapter) Fatalln(args ...any) { a.emit("[WARN] " + fmt.Sprintln(args...)) }
func (a slogAdapter) Fatalf(format string, args ...any) {
	a.emit("[WARN] " + fmt.Sprintf(format, args...))
}
