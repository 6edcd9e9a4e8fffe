// Pebble, the ACME test server, pinned as a tool in a module of its own so its
// dependencies stay out of the product's go.mod. hack/acme-deps.sh builds it
// into bin/tools/pebble: go build -o ../../../bin/tools/pebble github.com/letsencrypt/pebble/v2/cmd/pebble
module github.com/podtls/podtls/hack/tools/pebble

go 1.26

require (
	github.com/go-jose/go-jose/v4 v4.1.4 // indirect
	github.com/letsencrypt/challtestsrv v1.4.2 // indirect
	github.com/letsencrypt/pebble/v2 v2.10.1 // indirect
	github.com/miekg/dns v1.1.62 // indirect
	golang.org/x/mod v0.24.0 // indirect
	golang.org/x/net v0.40.0 // indirect
	golang.org/x/sync v0.14.0 // indirect
	golang.org/x/sys v0.33.0 // indirect
	golang.org/x/tools v0.33.0 // indirect
)

tool github.com/letsencrypt/pebble/v2/cmd/pebble
