package rotate

import (
	"fmt"
	"io"
	"strings"

	"github.com/podtls/podtls/contract"
)

// WriteText writes the report for a terminal, with the step that comes next.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	root := func(r Root) string {
		return fmt.Sprintf("%s (sha256 %s, until %s)", r.Subject, r.SHA256, r.NotAfter.Format("2006-01-02"))
	}
	fmt.Fprintf(&b, "Phase:          %s\n", rep.Phase)
	for _, r := range rep.Signing {
		fmt.Fprintf(&b, "Signing root:   %s\n", root(r))
	}
	fmt.Fprintf(&b, "Intermediate:   %s (key id %s)\n", rep.Intermediate, rep.IntermediateKeyID)
	if rep.Next != nil {
		fmt.Fprintf(&b, "Next root:      %s\n", root(*rep.Next))
	}
	for _, r := range rep.Retiring {
		fmt.Fprintf(&b, "Retiring root:  %s\n", root(r))
	}
	where := "ConfigMaps " + contract.TrustBundleConfigMap
	if rep.ClusterTrustBundles {
		where += " and ClusterTrustBundles"
	}
	if len(rep.Lagging) == 0 {
		fmt.Fprintf(&b, "Trust bundles:  every one holds every published root (%s)\n", where)
	} else {
		fmt.Fprintf(&b, "Trust bundles:  missing a published root: %s\n", strings.Join(rep.Lagging, ", "))
	}
	if len(rep.Workloads) > 0 || rep.OnOldChain != nil || rep.Unknown != nil {
		fmt.Fprintf(&b, "Workloads:      %d on the signing chain, %d on an old chain, %d unknown\n",
			rep.Workloads["current"], rep.Workloads["old"], rep.Workloads["unknown"])
		if len(rep.OnOldChain) > 0 {
			fmt.Fprintf(&b, "  old chain:    %s\n", strings.Join(rep.OnOldChain, ", "))
		}
		if len(rep.Unknown) > 0 {
			fmt.Fprintf(&b, "  unknown:      %s\n", strings.Join(rep.Unknown, ", "))
		}
	}
	fmt.Fprintf(&b, "Next step:      %s\n", rep.nextStep())
	_, err := io.WriteString(w, b.String())
	return err
}

func (rep *Report) nextStep() string {
	switch {
	case rep.Phase == "idle":
		return "podtls ca rotate publish (a new root beside the current one)"
	case rep.Phase == "published" && len(rep.Lagging) > 0:
		return "wait for the trust bundles (the controller republishes within a minute), then podtls ca rotate switch"
	case rep.Phase == "published":
		return "podtls ca rotate switch (new leaves from an intermediate of the new root)"
	case rep.Workloads["old"]+rep.Workloads["unknown"] > 0:
		return "wait until no workload is on the old chain (renewal at 60-70% of a leaf's lifetime), then podtls ca rotate retire"
	default:
		return "podtls ca rotate retire (the old root leaves the trust bundles)"
	}
}
