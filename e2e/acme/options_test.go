package acme_test

import "github.com/podtls/podtls/webhook/controller"

// setACMEOptions turns on the ACME manager with the config file at path.
func setACMEOptions(o *controller.Options, path string) {
	o.ACMEConfig = path
}
