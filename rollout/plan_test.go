package rollout

import (
	"reflect"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	stored := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	before, after := stored.Add(-time.Hour), stored.Add(time.Minute)
	web := Workload{KindDeployment, "shop", "web"}
	db := Workload{KindStatefulSet, "shop", "db"}
	cert := Certificate{Serial: "2a", Stored: stored}
	tests := []struct {
		name string
		cert Certificate
		pods []Pod
		want []Workload
	}{
		{"nothing issued yet", Certificate{}, []Pod{{Name: "a", Created: before, Owner: web}}, nil},
		{"pods older than the certificate", cert, []Pod{{Name: "a", Created: before, Owner: web}, {Name: "b", Created: before, Owner: web}}, []Workload{web}},
		{"one old pod is enough (a rollout in progress)", cert, []Pod{{Name: "a", Created: after, Owner: web}, {Name: "b", Created: before, Owner: web}}, []Workload{web}},
		{"pods newer than the certificate: nothing changed for them", cert, []Pod{{Name: "a", Created: after, Owner: web}}, nil},
		{"created in the second it was stored: not older", cert, []Pod{{Name: "a", Created: stored, Owner: web}}, nil},
		{"already restarted for this serial", cert, []Pod{{Name: "a", Created: before, Owner: web, RestartedFor: "2a"}}, nil},
		{"restarted for the previous serial", cert, []Pod{{Name: "a", Created: before, Owner: web, RestartedFor: "19"}}, []Workload{web}},
		{"no owner to roll", cert, []Pod{{Name: "bare", Created: before}}, nil},
		{"each workload once, sorted", cert, []Pod{{Name: "w", Created: before, Owner: web}, {Name: "d", Created: before, Owner: db}, {Name: "w2", Created: before, Owner: web}},
			[]Workload{web, db}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Plan(tt.cert, tt.pods); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Plan = %v, want %v", got, tt.want)
			}
		})
	}
}
