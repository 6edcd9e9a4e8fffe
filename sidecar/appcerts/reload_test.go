package appcerts

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/podtls/podtls/contract"
)

// fakeProc writes /proc/PID/status files: pid -> "comm ppid".
func fakeProc(t *testing.T, procs map[int]string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, v := range procs {
		comm, ppid, _ := strings.Cut(v, " ")
		p := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		status := "Name:\t" + comm + "\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t" + strconv.Itoa(pid) + "\nPPid:\t" + ppid + "\n"
		if err := os.WriteFile(filepath.Join(p, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSignalerTargets(t *testing.T) {
	// A pod with a shared PID namespace: pause (1), the sidecar (7), nginx's
	// master (12) and its worker (13), a shell in a second container (20).
	proc := fakeProc(t, map[int]string{1: "pause 0", 7: "podtls-sidecar 0", 12: "nginx 0", 13: "nginx 12", 20: "sh 0"})
	tests := []struct {
		process string
		want    []int
		wantErr string
	}{
		{"", []int{12, 20}, ""},
		{"nginx", []int{12}, ""},
		{"java", nil, `no container's main process is named "java"`},
	}
	for _, tt := range tests {
		var got []int
		s := &Signaler{Signal: syscall.SIGHUP, Name: "SIGHUP", Process: tt.process, Proc: proc, Self: 7,
			Kill: func(pid int, sig syscall.Signal) error {
				if sig != syscall.SIGHUP {
					t.Errorf("signal %v", sig)
				}
				got = append(got, pid)
				return nil
			}}
		err := s.Reload(context.Background())
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("process %q: err %v, want %q", tt.process, err, tt.wantErr)
			}
			continue
		}
		slices.Sort(got)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Fatalf("process %q: signalled %v (%v), want %v", tt.process, got, err, tt.want)
		}
	}

	// Without a shared namespace the sidecar sees only itself (as PID 1).
	lonely := &Signaler{Signal: syscall.SIGHUP, Name: "SIGHUP", Proc: fakeProc(t, map[int]string{1: "podtls-sidecar 0"}), Self: 1}
	if err := lonely.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "shareProcessNamespace") {
		t.Fatalf("err %v, want a hint at shareProcessNamespace", err)
	}

	// Another user's process: the error says so.
	denied := &Signaler{Signal: syscall.SIGHUP, Name: "SIGHUP", Proc: proc, Self: 7, Process: "nginx",
		Kill: func(int, syscall.Signal) error { return syscall.EPERM }}
	if err := denied.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "another user") {
		t.Fatalf("err %v", err)
	}
}

func TestSignalerRealProcess(t *testing.T) {
	// Through the real /proc: the test process matches by name, but it has
	// a parent in this namespace, so it is no container's main process.
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skip("no procfs")
	}
	s := &Signaler{Signal: syscall.SIGUSR2, Name: "SIGUSR2", Process: strings.TrimSpace(string(comm)), Proc: "/proc", Self: -1}
	targets, err := s.Targets()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(targets, func(p Process) bool { return p.PID == os.Getpid() }) {
		t.Fatalf("a child process was chosen as a container's main process: %+v", targets)
	}
}

func TestPoster(t *testing.T) {
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, r.Method+" "+r.URL.Path)
		if r.URL.Path == "/broken" {
			http.Error(w, "no", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	p := &Poster{URL: srv.URL + "/-/reload", Client: srv.Client()}
	if err := p.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := (&Poster{URL: srv.URL + "/broken", Client: srv.Client()}).Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err %v", err)
	}
	if !slices.Equal(calls, []string{"POST /-/reload", "POST /broken"}) {
		t.Fatalf("calls %v", calls)
	}
	if NewReloader(contract.Reload{Action: "restart"}) != nil || NewReloader(contract.Reload{Action: "none"}) != nil {
		t.Fatal("restart and none have no sidecar side")
	}
	if r := NewReloader(contract.Reload{Action: "http", Port: 9090, Path: "/x"}).(*Poster); r.URL != "http://localhost:9090/x" {
		t.Fatalf("URL %s", r.URL)
	}
}
