package reconciler

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"

	"github.com/podtls/podtls/acme/issuerconfig"
)

func TestConfigWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	builds, changes := 0, 0
	var buildErr error
	ca := newTestCA(t)
	w := &configWatcher{path: path, parse: parseTestConfig, log: logr.Discard(),
		build: func(context.Context, issuerconfig.Config) (Issuer, error) {
			builds++
			if buildErr != nil {
				return nil, buildErr
			}
			return ca, nil
		},
		changed: func() { changes++ }}
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	step := func(name string, wantBuilds int, wantIssuer, wantErr bool, wantOK float64) {
		t.Helper()
		w.poll(t.Context())
		st := w.current()
		if !st.Loaded || builds != wantBuilds || (st.Issuer != nil) != wantIssuer || (st.Err != nil) != wantErr || gauge(t, configOK) != wantOK {
			t.Fatalf("%s: builds %d issuer %v err %v ok %v", name, builds, st.Issuer != nil, st.Err, gauge(t, configOK))
		}
	}
	step("missing file", 0, false, true, 0)
	write(`{"grace": "1h"}`)
	step("good file", 1, true, false, 1)
	step("same file", 1, true, false, 1)
	write(`{ "grace" : "1h" }`)
	step("reformatted, same settings", 1, true, false, 1)
	c := changes
	write(`{"broken": true}`)
	step("broken file keeps the issuer", 1, true, true, 0)
	step("broken again: logged once", 1, true, true, 0)
	if changes != c+1 {
		t.Errorf("%d change notifications for one broken file", changes-c)
	}
	write(`{"grace": "1h"}`)
	step("back to the settings in use", 1, true, false, 1)
	gen := w.current().gen
	write(`{"grace": "2h"}`)
	step("new settings", 2, true, false, 1)
	if w.current().gen != gen+1 || w.current().Config.SecretGracePeriod.Hours() != 2 {
		t.Errorf("new issuer not in use: %+v", w.current())
	}
	buildErr = errors.New("directory unreachable")
	write(`{"grace": "3h"}`)
	step("issuer fails", 3, true, true, 0)
	step("retried every poll", 4, true, true, 0)
	buildErr = nil
	step("recovered", 5, true, false, 1)
}
