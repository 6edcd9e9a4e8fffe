package kube

import (
	"os"
	"path/filepath"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://a.example:6443"}
- name: b
  cluster: {server: "https://b.example:6443"}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: ctx-a
  context: {cluster: a, user: u, namespace: shop}
- name: ctx-b
  context: {cluster: b, user: u}
current-context: ctx-a
`

func TestConnect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		flags    Flags
		host, ns string
		wantErr  bool
	}{
		{"current context and its namespace", Flags{Kubeconfig: path}, "https://a.example:6443", "shop", false},
		{"--context without a namespace", Flags{Kubeconfig: path, Context: "ctx-b"}, "https://b.example:6443", "default", false},
		{"-n wins", Flags{Kubeconfig: path, Namespace: "other"}, "https://a.example:6443", "other", false},
		{"unknown context", Flags{Kubeconfig: path, Context: "nope"}, "", "", true},
		{"missing file", Flags{Kubeconfig: filepath.Join(t.TempDir(), "none")}, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.flags.Connect()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				return
			}
			if c.Config.Host != tc.host || c.Namespace != tc.ns {
				t.Errorf("host %s ns %s", c.Config.Host, c.Namespace)
			}
		})
	}
}
