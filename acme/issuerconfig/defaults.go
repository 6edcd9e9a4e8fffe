package issuerconfig

// Default returns the configuration every zero field of a file falls back to.
// It has no DNS provider: a usable configuration names one.
func Default() Config {
	return Config{}.WithDefaults()
}

// WithDefaults returns c with every zero field set to its default. Maps and
// slices are shared with c.
func (c Config) WithDefaults() Config {
	if c.DirectoryURL == "" {
		c.DirectoryURL = LetsEncryptStaging
	}
	if c.KeyType == "" {
		c.KeyType = DefaultKeyType
	}
	if c.AccountSecret == "" {
		c.AccountSecret = DefaultAccountSecret
	}
	if c.ExternalAccountBinding != nil && c.ExternalAccountBinding.HMACKeySecretRef.Key == "" {
		eab := *c.ExternalAccountBinding
		eab.HMACKeySecretRef.Key = DefaultEABKey
		c.ExternalAccountBinding = &eab
	}
	if c.DNS.AuthoritativeNSCheck == nil {
		c.DNS.AuthoritativeNSCheck = ptr(true)
	}
	if c.DNS.PropagationTimeout.Duration == 0 {
		c.DNS.PropagationTimeout.Duration = DefaultPropagationTimeout
	}
	if c.DNS.PollingInterval.Duration == 0 {
		c.DNS.PollingInterval.Duration = DefaultPollingInterval
	}
	if c.Renewal.ARI == nil {
		c.Renewal.ARI = ptr(true)
	}
	if c.Renewal.LifetimeFraction == 0 {
		c.Renewal.LifetimeFraction = DefaultLifetimeFraction
	}
	if c.Renewal.MinBackoff.Duration == 0 {
		c.Renewal.MinBackoff.Duration = DefaultMinBackoff
	}
	if c.Renewal.MaxBackoff.Duration == 0 {
		c.Renewal.MaxBackoff.Duration = DefaultMaxBackoff
	}
	if c.Renewal.MaxOrdersPerNamePerHour == 0 {
		c.Renewal.MaxOrdersPerNamePerHour = DefaultMaxOrdersPerNameHour
	}
	if c.Records.TTL == 0 {
		c.Records.TTL = DefaultRecordTTL
	}
	if c.Records.OwnerID == "" {
		c.Records.OwnerID = DefaultRecordOwner
	}
	if c.Records.GracePeriod.Duration == 0 {
		c.Records.GracePeriod.Duration = DefaultRecordGrace
	}
	if c.SecretGracePeriod.Duration == 0 {
		c.SecretGracePeriod.Duration = DefaultSecretGracePeriod
	}
	return c
}

func ptr[T any](v T) *T { return &v }
