package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func (s *Store) trustPaths() []string {
	var ps []string
	if s.o.TrustBundle != "" {
		ps = append(ps, s.o.TrustBundle)
	}
	if s.o.CertDir == "" {
		return ps
	}
	return append(ps, filepath.Join(s.o.CertDir, CAFile))
}

// meshDir is the directory the mesh certificate is read from: the cert dir,
// or the credential bundle's.
func (s *Store) meshDir() string {
	if s.o.CredentialBundle != "" {
		return filepath.Dir(s.o.CredentialBundle)
	}
	return s.o.CertDir
}

// meshSource names where the mesh certificate comes from, for messages.
func (s *Store) meshSource() string {
	if s.o.CredentialBundle != "" {
		return s.o.CredentialBundle
	}
	return s.o.CertDir
}

func (s *Store) reloadTrust() {
	changed := false
	for _, p := range s.trustPaths() {
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(s.attempts, "trust:"+p)
			if s.trustFiles[p] != nil {
				s.log.Info("trust bundle file removed", "path", p)
				delete(s.trustFiles, p)
				changed = true
			}
			continue
		case err != nil:
			s.log.Warn("read trust bundle, keeping previous roots", "path", p, "error", err)
			continue
		}
		if !s.contentChanged("trust:"+p, data) {
			continue
		}
		roots, err := ParseCertificates(data)
		if err != nil {
			s.reloads.With("trust", "failure").Inc()
			s.log.Warn("invalid trust bundle, keeping previous roots", "path", p, "error", err)
			continue
		}
		s.trustFiles[p] = roots
		changed = true
	}
	if !changed && s.trust.Load() != nil {
		return
	}
	st := &trustState{pool: x509.NewCertPool()}
	h := sha256.New()
	seen := map[[sha256.Size]byte]bool{}
	for _, p := range s.trustPaths() {
		for _, c := range s.trustFiles[p] {
			// The same root often comes in both files (the agent's ca.crt and
			// the trust bundle): once in the list, as in the pool.
			if k := sha256.Sum256(c.Raw); !seen[k] {
				seen[k] = true
				st.pool.AddCert(c)
				st.certs = append(st.certs, c)
				h.Write(c.Raw)
			}
		}
	}
	copy(st.hash[:], h.Sum(nil))
	if len(st.certs) == 0 {
		st.pool = nil
	}
	if old := s.trust.Load(); old != nil && old.hash == st.hash {
		return
	}
	s.trust.Store(st)
	s.notify()
	if changed {
		s.reloads.With("trust", "success").Inc()
		s.log.Info("trust bundle loaded", "roots", len(st.certs))
	}
}

// contentChanged records the hash of data under key and reports whether it
// differs from the previous attempt, so unchanged files are neither
// re-validated nor re-logged on every poll.
func (s *Store) contentChanged(key string, parts ...[]byte) bool {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	if prev, ok := s.attempts[key]; ok && prev == sum {
		return false
	}
	s.attempts[key] = sum
	return true
}

// readPair reads tls.crt and tls.key. If a kubelet-style "..data" swap
// happens between the two reads, it reads again, so a rotation in progress
// is not mistaken for a mismatched pair.
// readPair reads tls.crt and tls.key. If a kubelet-style "..data" swap
// happens between the reads, it reads again, so a rotation in progress is
// not mistaken for a mismatched pair or a missing file.
func readPair(dir, bundle string) (certPEM, keyPEM []byte, err error) {
	link := filepath.Join(dir, "..data")
	for range 3 {
		before, _ := os.Readlink(link)
		if bundle != "" {
			certPEM, keyPEM, err = readBundle(bundle)
		} else {
			certPEM, keyPEM, err = readFiles(dir)
		}
		if after, _ := os.Readlink(link); after == before {
			break
		}
	}
	return certPEM, keyPEM, err
}

func readFiles(dir string) (certPEM, keyPEM []byte, err error) {
	certPEM, err = os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", filepath.Join(dir, CertFile), err)
	}
	keyPEM, err = os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", filepath.Join(dir, KeyFile), err)
	}
	return certPEM, keyPEM, nil
}

// readBundle reads a credential bundle and splits it into chain and key.
func readBundle(path string) (certPEM, keyPEM []byte, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	certPEM, keyPEM, err = SplitCredentialBundle(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return certPEM, keyPEM, nil
}

func (s *Store) reloadMesh() error {
	certPEM, keyPEM, err := readPair(s.meshDir(), s.o.CredentialBundle)
	if err != nil {
		if s.contentChanged("mesh", []byte(err.Error())) && s.mesh.Load() != nil {
			s.reloads.With(MeshName, "failure").Inc()
			s.log.Warn("mesh certificate unreadable, keeping the current one", "error", err)
		}
		return err
	}
	var trustHash []byte
	if t := s.trust.Load(); t != nil {
		trustHash = t.hash[:]
	}
	// The trust hash is part of the key: a certificate that arrived before
	// its bundle is retried once the bundle shows up.
	if !s.contentChanged("mesh", certPEM, keyPEM, trustHash) {
		return nil
	}
	pair, err := ParseKeyPair(certPEM, keyPEM)
	if err == nil {
		err = ValidateMesh(pair, s.TrustPool(), s.o.Now())
	}
	if err != nil {
		err = fmt.Errorf("mesh certificate in %s: %w", s.meshSource(), err)
		s.reloads.With(MeshName, "failure").Inc()
		if s.mesh.Load() != nil {
			s.log.Warn("invalid mesh certificate, keeping the current one", "error", err)
		} else {
			s.log.Info("no valid mesh certificate yet", "error", err)
		}
		return err
	}
	if cur := s.mesh.Load(); cur != nil && cur.cert.Leaf.Equal(pair.Leaf) {
		return nil
	}
	s.mesh.Store(&entry{name: MeshName, dir: s.meshDir(), cert: pair})
	s.notify()
	s.reloads.With(MeshName, "success").Inc()
	s.log.Info("mesh certificate loaded", "serial", pair.Leaf.SerialNumber.Text(16),
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339), "uris", uriStrings(pair.Leaf.URIs), "dns_names", pair.Leaf.DNSNames)
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

func (s *Store) systemRoots() *x509.CertPool {
	if s.o.SystemRoots != nil {
		return s.o.SystemRoots
	}
	p, err := x509.SystemCertPool()
	if err != nil {
		s.log.Warn("system roots unavailable", "error", err)
		return nil
	}
	return p
}

func externalName(dir string) string { return "external/" + filepath.Base(dir) }

func (s *Store) reloadExternal(dir string) {
	name := externalName(dir)
	certPEM, keyPEM, err := readPair(dir, "")
	if err == nil && len(bytes.TrimSpace(certPEM)) == 0 && len(bytes.TrimSpace(keyPEM)) == 0 {
		// The ACME manager creates the Secret with empty tls.crt/tls.key (and
		// its status in annotations) before the first certificate exists.
		err = errors.New("certificate not issued yet (empty tls.crt and tls.key)")
	}
	if err != nil {
		// A Secret volume marked optional stays empty until the ACME
		// manager stores the certificate: not an error worth a warning.
		if s.contentChanged(name, []byte(err.Error())) {
			s.log.Info("external certificate not available", "dir", dir, "error", err)
		}
		return
	}
	if !s.contentChanged(name, certPEM, keyPEM) {
		return
	}
	pair, err := ParseKeyPair(certPEM, keyPEM)
	if err == nil {
		err = ValidateExternal(pair, s.systemRoots, s.o.Now())
	}
	if err != nil {
		s.reloads.With(name, "failure").Inc()
		s.log.Warn("invalid external certificate, keeping the current one", "dir", dir, "error", err)
		return
	}
	s.extEntries[dir] = &entry{name: name, dir: dir, cert: pair}
	s.reloads.With(name, "success").Inc()
	s.log.Info("external certificate loaded", "dir", dir, "serial", pair.Leaf.SerialNumber.Text(16),
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339), "dns_names", pair.Leaf.DNSNames)
	s.rebuildExternalIndex()
}

func (s *Store) rebuildExternalIndex() {
	idx := &externalIndex{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	// Flag order decides between two certificates claiming the same name.
	for _, dir := range s.o.ExternalDirs {
		e := s.extEntries[dir]
		if e == nil {
			continue
		}
		idx.entries = append(idx.entries, e)
		for _, n := range e.cert.Leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			m := idx.exact
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				n, m = rest, idx.wildcard
			}
			if _, taken := m[n]; !taken {
				m[n] = e.cert
			}
		}
	}
	s.externals.Store(idx)
	s.notify()
}

func uriStrings(us []*url.URL) []string {
	out := make([]string, 0, len(us))
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}
