package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// backendBody is the ~100-byte answer of the shared backend (99 characters and a newline).
var backendBody = strings.Repeat("podtls-bench ", 7) + strings.Repeat("x", 8)

// nginxCommon is shared by the backend and the proxy instance: one worker,
// foreground master (so its PID is ours to stop), no access log, and keep-alive
// connections that are never closed for having served "too many" requests,
// which would otherwise turn into extra handshakes mid-measurement.
const nginxCommon = `worker_processes 1;
daemon off;
master_process on;
pid {{.Dir}}/{{.Name}}.pid;
error_log stderr warn;
{{if .Root}}user root;{{end}}
events { worker_connections 8192; }
`

var backendConf = template.Must(template.New("backend").Parse(nginxCommon + `
http {
  access_log off;
  client_body_temp_path {{.Dir}}/{{.Name}}-body;
  proxy_temp_path {{.Dir}}/{{.Name}}-proxy;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  default_type text/plain;
  server {
    listen 127.0.0.1:{{.BackendPort}};
    location / { return 200 "{{.Body}}\n"; }
  }
  # h2c (prior knowledge), for the tcp-mode sidecar that splices h2 through.
  server {
    {{if .HTTP2On}}listen 127.0.0.1:{{.BackendH2CPort}};
    http2 on;{{else}}listen 127.0.0.1:{{.BackendH2CPort}} http2;{{end}}
    location / { return 200 "{{.Body}}\n"; }
  }
}
`))

var proxyConf = template.Must(template.New("proxy").Parse(nginxCommon + `
http {
  access_log off;
  client_body_temp_path {{.Dir}}/{{.Name}}-body;
  proxy_temp_path {{.Dir}}/{{.Name}}-proxy;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream backend {
    server 127.0.0.1:{{.BackendPort}};
    keepalive 64;
    keepalive_requests 100000000;
  }
  ssl_protocols TLSv1.3;
  ssl_ecdh_curve X25519:prime256v1;
  server {
    listen 127.0.0.1:{{.TLSPort}} ssl;
    ssl_certificate {{.EdgeCert}};
    ssl_certificate_key {{.EdgeKey}};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  # h2 from the client, HTTP/1.1 over the same keep-alive pool to the backend.
  server {
    {{if .HTTP2On}}listen 127.0.0.1:{{.H2Port}} ssl;
    http2 on;{{else}}listen 127.0.0.1:{{.H2Port}} ssl http2;{{end}}
    ssl_certificate {{.EdgeCert}};
    ssl_certificate_key {{.EdgeKey}};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:{{.MTLSPort}} ssl;
    ssl_certificate {{.ServerCert}};
    ssl_certificate_key {{.ServerKey}};
    ssl_verify_client on;
    ssl_client_certificate {{.RootCA}};
    ssl_verify_depth 3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`))

// nginxParams fills both templates.
type nginxParams struct {
	Dir, Name                      string
	Root                           bool // running as root: keep the worker root so it can read the temp dir
	Body                           string
	BackendPort, TLSPort, MTLSPort int
	BackendH2CPort, H2Port         int
	HTTP2On                        bool // nginx >= 1.25.1: `http2 on;` instead of `listen ... http2`
	EdgeCert, EdgeKey              string
	ServerCert, ServerKey, RootCA  string
}

// http2On reports whether the nginx that printed version (`nginx -v`:
// "nginx version: nginx/1.22.1") takes the `http2 on;` directive, which
// replaced the http2 parameter of `listen` in 1.25.1. Unknown: false, the old
// form, which newer versions still accept with a warning.
func http2On(version string) bool {
	_, v, ok := strings.Cut(version, "nginx/")
	if !ok {
		return false
	}
	v, _, _ = strings.Cut(strings.TrimSpace(v), " ")
	var n [3]int
	for i, part := range strings.SplitN(v, ".", 3) {
		x, err := strconv.Atoi(part)
		if err != nil {
			return false
		}
		n[i] = x
	}
	switch {
	case n[0] != 1:
		return n[0] > 1
	case n[1] != 25:
		return n[1] > 25
	}
	return n[2] >= 1
}

// writeNginxConf renders tmpl into DIR/NAME.conf and returns its path.
func writeNginxConf(tmpl *template.Template, p nginxParams) (string, error) {
	path := filepath.Join(p.Dir, p.Name+".conf")
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("nginx config: %w", err)
	}
	if err := tmpl.Execute(f, p); err != nil {
		f.Close()
		return "", fmt.Errorf("render %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// nginxArgs runs nginx in the foreground with its prefix in dir and errors on stderr.
func nginxArgs(bin, dir, conf string) []string {
	return []string{bin, "-p", dir + "/", "-e", "stderr", "-c", conf}
}
