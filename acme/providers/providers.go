// Package providers builds lego DNS-01 providers from a Kubernetes Secret
// (credentials) and the issuer configuration (non-secret settings), both keyed
// by lego's environment variable names, without touching the process
// environment.
//
// The set is curated: each provider is compiled in with a typed lego config.
// Importing all ~195 lego providers would make podtls-controller about 50 MB
// bigger and its build four times slower; docs/acme.md says how to add one.
package providers

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/challenge"
)

// Common holds the settings shared by every provider. Zero values keep the
// provider's own default.
type Common struct {
	// TTL of the TXT record in seconds.
	TTL int
	// PropagationTimeout bounds the wait for the record to be visible.
	PropagationTimeout time.Duration
	// PollingInterval between propagation checks.
	PollingInterval time.Duration
}

// Key describes one setting of a provider.
type Key struct {
	// Name is lego's environment variable name.
	Name string
	// Secret keys must come from the credentials Secret, never from the
	// (ConfigMap-backed) configuration.
	Secret bool
	// Required keys must be set (alternatives are checked by the provider).
	Required bool
	// Aliases are other lego names accepted for the same setting.
	Aliases []string
	// Doc is a one-line description for docs and errors.
	Doc string
}

// provider is one compiled-in provider.
type provider struct {
	doc   string
	keys  []Key
	build func(v *values, c Common) (challenge.Provider, error)
}

// registry maps lego provider names to their constructors; filled by the
// provider files' init functions.
var registry = map[string]*provider{}

func register(name string, p *provider) { registry[name] = p }

// Catalog is the compiled-in providers, as acme/issuerconfig validates
// configurations against them (issuerconfig.Parse(data, providers.Catalog)).
var Catalog catalog

type catalog struct{}

func (catalog) Names() []string        { return Names() }
func (catalog) Known(name string) bool { return Known(name) }
func (catalog) CheckConfig(name string, config map[string]string) error {
	return CheckConfig(name, config)
}

// Names returns the compiled-in provider names, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Known reports whether name is compiled in.
func Known(name string) bool { _, ok := registry[name]; return ok }

// Keys returns the settings of a provider (nil for an unknown one).
func Keys(name string) []Key {
	p := registry[name]
	if p == nil {
		return nil
	}
	return slices.Clone(p.keys)
}

// Doc returns a one-line description of a provider.
func Doc(name string) string {
	if p := registry[name]; p != nil {
		return p.doc
	}
	return ""
}

// CheckConfig validates the non-secret settings of a provider without
// building it: every key must be known, and secrets are refused there.
func CheckConfig(name string, config map[string]string) error {
	p := registry[name]
	if p == nil {
		return fmt.Errorf("unknown DNS provider %q; compiled in: %s", name, strings.Join(Names(), ", "))
	}
	_, err := p.collect(name, nil, config)
	return err
}

// New builds the provider name from credentials (the Secret's data) and
// config. Errors name keys, never values.
func New(name string, credentials map[string][]byte, config map[string]string, common Common) (challenge.Provider, error) {
	p, v, err := resolve(name, credentials, config)
	if err != nil {
		return nil, err
	}
	prov, err := p.build(v, common)
	if err == nil {
		err = v.err()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return prov, nil
}

// Resolve returns the provider's settings from credentials and config by
// canonical key name (aliases resolved, unknown keys and secrets in config
// refused, required keys checked): what the DNS-records zones of the same
// provider read. Errors name keys, never values.
func Resolve(name string, credentials map[string][]byte, config map[string]string) (map[string]string, error) {
	_, v, err := resolve(name, credentials, config)
	if err != nil {
		return nil, err
	}
	return v.m, nil
}

func resolve(name string, credentials map[string][]byte, config map[string]string) (*provider, *values, error) {
	p := registry[name]
	if p == nil {
		return nil, nil, fmt.Errorf("unknown DNS provider %q; compiled in: %s", name, strings.Join(Names(), ", "))
	}
	v, err := p.collect(name, credentials, config)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range p.keys {
		if k.Required && v.get(k.Name) == "" {
			return nil, nil, fmt.Errorf("%s: %s is required (%s)", name, k.Name, v.where(k))
		}
	}
	return p, v, nil
}

// collect merges credentials and config into canonical key names.
func (p *provider) collect(name string, credentials map[string][]byte, config map[string]string) (*values, error) {
	byName := map[string]Key{}
	for _, k := range p.keys {
		byName[k.Name] = k
		for _, a := range k.Aliases {
			byName[a] = k
		}
	}
	v := &values{m: map[string]string{}, from: map[string]string{}}
	var errs []error
	add := func(key, val, from string) {
		k, ok := byName[key]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown key %s in the %s; allowed: %s", name, key, from, strings.Join(p.allowed(), ", ")))
			return
		}
		if k.Secret && from == fromConfig {
			errs = append(errs, fmt.Errorf("%s: %s is a secret: put it in the credentials Secret, not in dns.config", name, key))
			return
		}
		if prev, dup := v.from[k.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: %s is set twice (in the %s and the %s)", name, k.Name, prev, from))
			return
		}
		if val == "" {
			return
		}
		v.m[k.Name] = val
		v.from[k.Name] = from
	}
	for _, key := range sortedKeys(credentials) {
		add(key, strings.TrimSpace(string(credentials[key])), fromSecret)
	}
	for _, key := range sortedKeys(config) {
		add(key, strings.TrimSpace(config[key]), fromConfig)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return v, nil
}

func (p *provider) allowed() []string {
	var names []string
	for _, k := range p.keys {
		names = append(names, k.Name)
		names = append(names, k.Aliases...)
	}
	slices.Sort(names)
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

const (
	fromSecret = "credentials Secret"
	fromConfig = "dns.config"
)

// values are the settings of one provider by canonical key; parse errors
// are collected so a constructor reads straight through.
type values struct {
	m    map[string]string
	from map[string]string
	errs []error
}

func (v *values) get(key string) string { return v.m[key] }

func (v *values) where(k Key) string {
	if k.Secret {
		return "a key of the credentials Secret"
	}
	return "in dns.config or the credentials Secret"
}

func (v *values) boolean(key string) bool {
	s := v.m[key]
	if s == "" {
		return false
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		v.errs = append(v.errs, fmt.Errorf("%s: not a boolean", key))
	}
	return b
}

// seconds reads a duration written as whole seconds (lego's convention) or
// as a Go duration string.
func (v *values) seconds(key string, def time.Duration) time.Duration {
	s := v.m[key]
	if s == "" {
		return def
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		v.errs = append(v.errs, fmt.Errorf("%s: not a duration (seconds or e.g. \"30s\")", key))
		return def
	}
	return d
}

func (v *values) list(key string) []string {
	var out []string
	for _, s := range strings.Split(v.m[key], ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (v *values) err() error { return errors.Join(v.errs...) }

// apply sets the common settings on a provider's fields where given.
func (c Common) apply(ttl *int, timeout, interval *time.Duration) {
	if c.TTL > 0 && ttl != nil {
		*ttl = c.TTL
	}
	if c.PropagationTimeout > 0 {
		*timeout = c.PropagationTimeout
	}
	if c.PollingInterval > 0 {
		*interval = c.PollingInterval
	}
}
