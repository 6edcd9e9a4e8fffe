package rotate

import (
	"strings"
	"testing"
)

func TestNextStep(t *testing.T) {
	for _, tc := range []struct {
		rep  Report
		want string
	}{
		{Report{Phase: "idle"}, "publish"},
		{Report{Phase: "published", Lagging: []string{"demo"}}, "wait for the trust bundles"},
		{Report{Phase: "published"}, "ca rotate switch"},
		{Report{Phase: "switched", Workloads: map[string]int{"old": 2}}, "wait until no workload is on the old chain"},
		{Report{Phase: "switched", Workloads: map[string]int{"current": 5}}, "ca rotate retire"},
	} {
		var b strings.Builder
		if err := tc.rep.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "Next step:      ") || !strings.Contains(tc.rep.nextStep(), tc.want) {
			t.Errorf("phase %s: next step %q, want %q", tc.rep.Phase, tc.rep.nextStep(), tc.want)
		}
	}
}
