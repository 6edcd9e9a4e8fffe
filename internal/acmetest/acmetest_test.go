package acmetest

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestEnvironment(t *testing.T) {
	start := time.Now()
	e := StartT(t, Options{})
	t.Logf("BIND + Pebble ready in %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("directory", func(t *testing.T) {
		b, err := e.get(ctx, e.DirectoryURL)
		if err != nil {
			t.Fatal(err)
		}
		var dir map[string]any
		if err := json.Unmarshal(b, &dir); err != nil {
			t.Fatalf("directory: %v: %s", err, b)
		}
		for _, k := range []string{"newNonce", "newAccount", "newOrder", "renewalInfo"} {
			if _, ok := dir[k]; !ok {
				t.Errorf("directory lacks %s: %s", k, b)
			}
		}
		meta, _ := dir["meta"].(map[string]any)
		if profiles, _ := meta["profiles"].(map[string]any); profiles["default"] == nil {
			t.Errorf("directory offers no profile \"default\": %s", b)
		}
	})

	t.Run("roots", func(t *testing.T) {
		roots, inter, err := e.Chain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		root := parseOne(t, roots)
		in := parseOne(t, inter)
		if !root.IsCA || !in.IsCA {
			t.Fatalf("root CA=%v intermediate CA=%v", root.IsCA, in.IsCA)
		}
		if err := in.CheckSignatureFrom(root); err != nil {
			t.Fatalf("intermediate not signed by root: %v", err)
		}
	})

	t.Run("zone", func(t *testing.T) {
		ns, err := e.Lookup(ctx, e.Zone, "NS")
		if err != nil {
			t.Fatal(err)
		}
		if want := "ns1." + e.Zone; !slices.Equal(ns, []string{want}) {
			t.Fatalf("NS = %v, want [%s]", ns, want)
		}
	})

	t.Run("add record", func(t *testing.T) {
		if err := e.AddRecord(ctx, "customer.demo."+strings.TrimSuffix(e.Zone, "."), "A", "10.250.0.2"); err != nil {
			t.Fatal(err)
		}
		got, err := e.Lookup(ctx, "customer.demo."+e.Zone, "A")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []string{"10.250.0.2"}) {
			t.Fatalf("A = %v", got)
		}
		if err := e.AddRecord(ctx, "elsewhere.example.org", "A", "10.0.0.1"); err == nil {
			t.Fatal("a record outside the zone was accepted")
		}
	})

	t.Run("tsig", func(t *testing.T) {
		name := "_acme-challenge.tsig." + e.Zone
		// The ACME key (what lego uses) may write TXT records.
		good := filepath.Join(t.TempDir(), "good.key")
		writeKey(t, good, e.TSIGKeyName, e.TSIGAlgorithm, e.TSIGSecret)
		if err := e.update(ctx, good, "update add "+name+" 60 IN TXT \"token\""); err != nil {
			t.Fatalf("update with the right key: %v", err)
		}
		if txt, err := e.Lookup(ctx, name, "TXT"); err != nil || !slices.Equal(txt, []string{"token"}) {
			t.Fatalf("TXT = %v, %v", txt, err)
		}
		// ... but nothing else.
		if err := e.update(ctx, good, "update add a.tsig."+e.Zone+" 60 IN A 10.0.0.9"); err == nil || !strings.Contains(err.Error(), "REFUSED") {
			t.Fatalf("A record with the ACME key: err = %v, want REFUSED", err)
		}
		other, err := newSecret()
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(t.TempDir(), "bad.key")
		writeKey(t, bad, e.TSIGKeyName, e.TSIGAlgorithm, other)
		err = e.update(ctx, bad, "update add _acme-challenge.bad."+e.Zone+" 60 IN TXT \"x\"")
		if err == nil {
			t.Fatal("update with a wrong TSIG secret was accepted")
		}
		t.Logf("wrong secret: %v", err)
		if _, err := e.Lookup(ctx, "_acme-challenge.bad."+e.Zone, "TXT"); err == nil {
			t.Fatal("record of the refused update exists")
		}
	})

	t.Run("restart dns", func(t *testing.T) {
		e.StopDNS()
		short, c := context.WithTimeout(ctx, time.Second)
		_, err := e.Lookup(short, e.Zone, "NS")
		c()
		if err == nil {
			t.Fatal("lookup answered while BIND is stopped")
		}
		begin := time.Now()
		if err := e.StartDNS(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("BIND restart: %s", time.Since(begin).Round(time.Millisecond))
		// Records of AddRecord survive; challenge records do not.
		if got, err := e.Lookup(ctx, "customer.demo."+e.Zone, "A"); err != nil || !slices.Equal(got, []string{"10.250.0.2"}) {
			t.Fatalf("after restart A = %v, %v", got, err)
		}
		if err := e.StartDNS(ctx); err == nil {
			t.Fatal("second StartDNS succeeded")
		}
	})

	t.Run("restart acme", func(t *testing.T) {
		before, err := e.Roots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e.StopACME()
		if _, err := e.get(ctx, e.DirectoryURL); err == nil {
			t.Fatal("directory answered while Pebble is stopped")
		}
		begin := time.Now()
		if err := e.StartACME(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("Pebble restart: %s", time.Since(begin).Round(time.Millisecond))
		after, err := e.Roots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(before) == string(after) {
			t.Fatal("Pebble kept its root across a restart; the package doc says it does not")
		}
	})

	t.Run("rfc2136 config", func(t *testing.T) {
		cfg, creds := e.RFC2136Config()
		if cfg["RFC2136_NAMESERVER"] != e.DNSAddr || cfg["RFC2136_TSIG_ALGORITHM"] != "hmac-sha256" {
			t.Errorf("config = %v", cfg)
		}
		if creds["RFC2136_TSIG_KEY"] != e.TSIGKeyName || creds["RFC2136_TSIG_SECRET"] != e.TSIGSecret {
			t.Errorf("credentials do not match the environment")
		}
		for k := range creds {
			if _, ok := cfg[k]; ok {
				t.Errorf("%s is both config and credential", k)
			}
		}
	})
}

func TestSetRenewalInfoRejectsUnknownCertificate(t *testing.T) {
	e := StartT(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Pebble only knows certificates it issued: the HTTPS CA is not one of them.
	err := e.SetRenewalInfo(ctx, e.ACMECABundle(), time.Now(), time.Now().Add(time.Hour))
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v, want 404 for a certificate Pebble did not issue", err)
	}
	if err := e.SetRenewalInfo(ctx, []byte("junk"), time.Now(), time.Now()); err == nil {
		t.Fatal("junk accepted")
	}
}

func TestStopKillsServers(t *testing.T) {
	e := StartT(t, Options{})
	pids := []int{e.dns.cmd.Process.Pid, e.acme.cmd.Process.Pid}
	e.Close()
	for _, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", itoa(pid))); err == nil {
			// A zombie would still be reaped by Wait; a live process is a leak.
			b, _ := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat"))
			if !strings.Contains(string(b), ") Z ") {
				t.Errorf("process %d still running after Close: %s", pid, b)
			}
		}
	}
}

func writeKey(t *testing.T, path, name, alg, secret string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(keyClause(name, alg, secret)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func parseOne(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("no PEM in %q", b)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestCommandHook runs every server and nsupdate through Options.Command (as
// the demo does with `ip netns exec`), here through env(1), which execs the
// program in the same process like ip netns exec.
func TestCommandHook(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	e := StartT(t, Options{Command: func(ctx context.Context, name string, args ...string) *exec.Cmd {
		mu.Lock()
		ran = append(ran, filepath.Base(name))
		mu.Unlock()
		return exec.CommandContext(ctx, "env", append([]string{name}, args...)...)
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.AddRecord(ctx, "hook."+e.Zone, "A", "10.0.0.7"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(ran)
	mu.Unlock()
	if !slices.Equal(got, []string{"named", "pebble", "nsupdate"}) {
		t.Fatalf("commands through the hook: %v", got)
	}
	pid := e.dns.cmd.Process.Pid
	e.StopDNS()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("named (pid %d) survived StopDNS behind the hook", pid)
	}
}

// TestChallengeDelayProxy: with ChallengeDelay the ACME endpoint is the
// proxy, and Pebble's URLs (built from the Host header) point back at it.
func TestChallengeDelayProxy(t *testing.T) {
	e := StartT(t, Options{ChallengeDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.pebblePort == e.opts.ACMEPort {
		t.Fatal("Pebble listens on the public ACME port despite the proxy")
	}
	b, err := e.get(ctx, e.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	var dir map[string]any
	if err := json.Unmarshal(b, &dir); err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(e.DirectoryURL, "/dir")
	if u, _ := dir["newOrder"].(string); !strings.HasPrefix(u, base+"/") {
		t.Fatalf("newOrder %q does not point at the proxy %s", u, base)
	}
	e.StopACME()
	if _, err := e.get(ctx, e.DirectoryURL); err == nil {
		t.Fatal("proxy still answers with Pebble stopped")
	}
	if err := e.StartACME(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.get(ctx, e.DirectoryURL); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, Options{ChallengeDelay: time.Second, Command: exec.CommandContext}); err == nil {
		t.Fatal("ChallengeDelay with a Command hook was accepted")
	}
}

// TestNamedCopiedUnderAppArmor: with AppArmor on, named runs as a copy in
// Dir (the Debian profile would not let /usr/sbin/named read Dir).
func TestNamedCopiedUnderAppArmor(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "enabled")
	if err := os.WriteFile(flag, []byte("Y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := apparmorEnabled
	apparmorEnabled = flag
	t.Cleanup(func() { apparmorEnabled = old })
	e := StartT(t, Options{})
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(e.dns.cmd.Process.Pid), "exe"))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.path("dns/named"); exe != want {
		t.Fatalf("named runs from %s, want the copy %s", exe, want)
	}
}

func TestEABRequired(t *testing.T) {
	e := StartT(t, Options{EAB: map[string]string{"kid-1": "c2VjcmV0LWhtYWMta2V5LWZvci1wZWJibGU="}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := e.get(ctx, e.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	var dir struct {
		Meta struct {
			ExternalAccountRequired bool `json:"externalAccountRequired"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(b, &dir); err != nil {
		t.Fatalf("directory: %v: %s", err, b)
	}
	if !dir.Meta.ExternalAccountRequired {
		t.Errorf("directory does not require EAB: %s", b)
	}
	cfg, err := os.ReadFile(filepath.Join(e.Dir, "acme", "pebble-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Pebble refuses padded keys at start; the option drops the padding.
	if !strings.Contains(string(cfg), `"kid-1": "c2VjcmV0LWhtYWMta2V5LWZvci1wZWJibGU"`) {
		t.Errorf("pebble config lacks the unpadded MAC key:\n%s", cfg)
	}
}

func TestEABKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   map[string]string
		want map[string]string
		err  string
	}{
		{name: "none"},
		{name: "unpadded", in: map[string]string{"k": "YWJj"}, want: map[string]string{"k": "YWJj"}},
		{name: "padding dropped", in: map[string]string{"k": "YWI="}, want: map[string]string{"k": "YWI"}},
		{name: "url alphabet", in: map[string]string{"k": "-_8"}, want: map[string]string{"k": "-_8"}},
		{name: "standard alphabet", in: map[string]string{"k": "+/8"}, err: `key ID "k" is not`},
		{name: "empty key", in: map[string]string{"k": ""}, err: `key ID "k" is not`},
		{name: "empty key ID", in: map[string]string{"": "YWJj"}, err: "empty key ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := eabKeys(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("eabKeys = %v, %v; want error %q", got, err, tc.err)
				}
				if k := tc.in["k"]; k != "" && strings.Contains(err.Error(), k) {
					t.Errorf("error names the key: %v", err)
				}
				return
			}
			if err != nil || !maps.Equal(got, tc.want) {
				t.Errorf("eabKeys = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
