package issuerconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Defaults of the fields Default fills in.
const (
	DefaultKeyType              = KeyECDSAP256
	DefaultAccountSecret        = "podtls-acme-account"
	DefaultEABKey               = "hmac"
	DefaultPropagationTimeout   = 2 * time.Minute
	DefaultPollingInterval      = 2 * time.Second
	DefaultLifetimeFraction     = 2.0 / 3.0
	DefaultMinBackoff           = time.Minute
	DefaultMaxBackoff           = 6 * time.Hour
	DefaultMaxOrdersPerNameHour = 3
	DefaultSecretGracePeriod    = 24 * time.Hour
	DefaultRecordTTL            = 300
	DefaultRecordOwner          = "podtls"
	DefaultRecordGrace          = 10 * time.Minute
)

// Key types of certificate keys.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyRSA2048   = "rsa-2048"
	KeyRSA4096   = "rsa-4096"
)

// KeyTypes lists the accepted values of Config.KeyType.
var KeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA4096}

// Upper bounds that catch unit mistakes ("30000s" meant as ms) early.
const (
	maxPropagationTimeout = time.Hour
	maxBackoffLimit       = 7 * 24 * time.Hour
	maxOrdersPerNameHour  = 100
	maxTTL                = 86400
)

// Catalog is what validation needs to know of the DNS providers compiled into
// the binary that will use the configuration: acme/providers.Catalog in the
// controller. The package does not import the providers itself, so that a
// binary that only reads configurations (the podtls CLI) links no lego.
type Catalog interface {
	Names() []string
	Known(name string) bool
	CheckConfig(name string, config map[string]string) error
}

// Parse decodes a YAML or JSON configuration, fills in the defaults and
// validates the result against the providers of cat (nil: any provider name,
// its settings unchecked). Unknown fields are errors (a typo must not
// silently fall back to a default such as the staging directory).
func Parse(data []byte, cat Catalog) (Config, error) {
	if multipleDocuments(data) {
		return Config{}, errors.New("acme config: more than one YAML document")
	}
	js, err := yaml.YAMLToJSONStrict(data) // duplicate keys are errors
	if err != nil {
		return Config{}, fmt.Errorf("acme config: not YAML or JSON: %w", err)
	}
	var c Config
	if t := bytes.TrimSpace(js); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		if t[0] != '{' {
			return Config{}, errors.New("acme config: the document must be a mapping of fields")
		}
		// Case-sensitive, and every unknown or duplicate field is reported:
		// a typo must not silently fall back to a default.
		strict, err := kjson.UnmarshalStrict(js, &c)
		if err != nil {
			return Config{}, fmt.Errorf("acme config: %w", describeDecodeError(err))
		}
		if len(strict) > 0 {
			msgs := make([]string, len(strict))
			for i, e := range strict {
				msgs[i] = e.Error()
			}
			return Config{}, fmt.Errorf("acme config: %s (field names are case-sensitive; see docs/acme.md)", strings.Join(msgs, "; "))
		}
	}
	c = c.WithDefaults()
	if err := c.Validate(cat); err != nil {
		return Config{}, err
	}
	return c, nil
}

// multipleDocuments reports a "---" separator between two documents with
// content (sigs.k8s.io/yaml silently reads only the first).
func multipleDocuments(data []byte) bool {
	content, boundary := false, false
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimRight(line, " \t\r")
		switch {
		case t == "---" || strings.HasPrefix(t, "--- ") || t == "...":
			boundary = content
		case strings.TrimSpace(t) == "" || strings.HasPrefix(strings.TrimSpace(t), "#"):
		default:
			if boundary {
				return true
			}
			content = true
		}
	}
	return false
}

// describeDecodeError names the field of a type mismatch in the file's terms.
func describeDecodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %s: expected %s, got %s", te.Field, te.Type, te.Value)
	}
	return err
}

// Load reads and parses the configuration file at path (see Parse).
func Load(path string, cat Catalog) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("acme config: %w", err)
	}
	c, err := Parse(data, cat)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Hash is a digest of the configuration's content after defaults, so that
// the manager can tell a real change from a rewrite of the same settings.
func (c Config) Hash() string {
	// json.Marshal sorts map keys, so equal configurations give equal bytes.
	b, err := json.Marshal(c.WithDefaults())
	if err != nil {
		// Only a Duration could fail, and it cannot; keep the hash distinct anyway.
		b = []byte(err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON reads a Go duration string such as "90s" or "1h30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"90s\" or \"2m\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}
