package node

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/gobuild"
)

// crashChildEnv makes TestCrashChild bring up a cluster with a running pod and block: the
// parent test kills it with SIGKILL mid-run.
const crashChildEnv = "PODTLS_E2E_CRASH_CHILD_IMAGE"

// TestCrashChild is the victim half of TestNodeCrashRecovery; it does nothing on its own.
func TestCrashChild(t *testing.T) {
	image := os.Getenv(crashChildEnv)
	if image == "" {
		t.Skip("helper process of TestNodeCrashRecovery")
	}
	ctx := context.Background()
	c, err := cluster.Up(ctx, cluster.Options{Images: []string{image}})
	if err != nil {
		t.Fatal(err)
	}
	deployEcho(ctx, t, c.Client)
	os.Stdout.WriteString("READY " + c.ID + "\n")
	time.Sleep(10 * time.Minute) // until killed
}

// TestNodeCrashRecovery kills a test process with SIGKILL while its cluster runs pods,
// then checks that the next Up cleans everything up and works, and that Down leaves nothing.
func TestNodeCrashRecovery(t *testing.T) {
	cluster.Require(t, "node")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	echoTar := filepath.Join(t.TempDir(), "echo.tar")
	if err := cluster.BuildImage(ctx, root, "./e2e/apps/echo", echoImage, echoTar); err != nil {
		t.Fatal(err)
	}

	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
	child.Env = append(os.Environ(), crashChildEnv+"="+echoTar)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			id = rest
			break
		}
	}
	if id == "" {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatal("child test exited before its cluster was ready")
	}
	_ = child.Process.Kill() // SIGKILL: no deferred Down, no signal handler
	_ = child.Wait()
	// Control-plane processes die with their parent (Pdeathsig); pods, shims, mounts,
	// cgroups and the namespace stay.
	left := cluster.Leftovers(cluster.DefaultBaseDir)
	t.Logf("after SIGKILL of the test process: %d leftovers", len(left))
	if !containsPrefix(left, "netns "+"podtls-e2e-"+id) {
		t.Errorf("expected the killed run's namespace among the leftovers: %v", left)
	}

	t0 := time.Now()
	c, err := cluster.Up(ctx, cluster.Options{Images: []string{echoTar}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	t.Logf("bring-up after the crash (incl. cleaning it) took %s", time.Since(t0).Round(time.Millisecond))
	if _, err := os.Stat("/run/netns/podtls-e2e-" + id); err == nil {
		t.Errorf("namespace of the killed run still exists")
	}
	deployEcho(ctx, t, c.Client)
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	if left := cluster.Leftovers(cluster.DefaultBaseDir); len(left) > 0 {
		t.Errorf("left behind after Down: %s", strings.Join(left, "; "))
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
