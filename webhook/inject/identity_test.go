package inject

import (
	"strings"
	"testing"

	"github.com/podtls/podtls/contract"
)

func TestIdentitySource(t *testing.T) {
	for _, tc := range []struct {
		annotated, clusterDefault string
		served                    bool
		want, wantErr             string
	}{
		{"", "", false, "", ""},
		{"", contract.IdentityAgent, true, "", ""},
		{"", contract.IdentityPodCertificate, true, contract.IdentityPodCertificate, ""},
		{contract.IdentityAgent, contract.IdentityPodCertificate, true, "", ""},
		{contract.IdentityPodCertificate, "", true, contract.IdentityPodCertificate, ""},
		{contract.IdentityPodCertificate, "", false, "", "does not serve PodCertificateRequests"},
	} {
		got, err := identitySource(tc.annotated, Config{IdentitySource: tc.clusterDefault, PodCertificates: tc.served})
		if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("identitySource(%q, default %q, served %v) = %q, %v; want %q, %q", tc.annotated, tc.clusterDefault, tc.served, got, err, tc.want, tc.wantErr)
		}
	}
}
