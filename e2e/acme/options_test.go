package acme_test

import "github.com/podtls/podtls/controller/options"

// setACMEOptions turns on the ACME manager with the config file at path.
func setACMEOptions(o *options.Options, path string) {
	o.ACMEConfig = path
}
