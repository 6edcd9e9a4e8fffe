package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/registration"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
)

// ACME problem types the account code reacts to.
const (
	errAccountDoesNotExist     = "urn:ietf:params:acme:error:accountDoesNotExist"
	errExternalAccountRequired = "urn:ietf:params:acme:error:externalAccountRequired"
)

// accountState is a registered account.
type accountState struct {
	key    crypto.Signer
	reg    *registration.Resource
	status status.Account
}

// user adapts an account to lego's registration.User.
type user struct {
	email string
	key   crypto.Signer
	reg   *registration.Resource
}

func (u *user) GetEmail() string                        { return u.email }
func (u *user) GetRegistration() *registration.Resource { return u.reg }
func (u *user) GetPrivateKey() crypto.PrivateKey        { return u.key }

// EnsureAccount makes sure the account exists at the server: the key comes
// from the account Secret (created with a new ECDSA P-256 key if absent; two
// replicas racing agree on the first one written), the account is looked up
// by key and registered only if the server does not know it, so the call is
// idempotent. The result is also written into the Secret's annotations.
func (i *Issuer) EnsureAccount(ctx context.Context) (status.Account, error) {
	a, err := i.ensureAccount(ctx)
	if err != nil {
		return status.Account{Directory: i.cfg.DirectoryURL, LastError: err.Error()}, err
	}
	return a.status, nil
}

func (i *Issuer) ensureAccount(ctx context.Context) (*accountState, error) {
	i.acctMu.Lock()
	defer i.acctMu.Unlock()
	i.mu.Lock()
	a := i.account
	i.mu.Unlock()
	if a != nil {
		return a, nil
	}
	a, err := i.register(ctx)
	if err != nil {
		i.recordAccount(ctx, func(s *status.Account) {
			s.Directory = i.cfg.DirectoryURL
			s.LastError = err.Error()
		})
		return nil, err
	}
	i.mu.Lock()
	i.account = a
	i.mu.Unlock()
	return a, nil
}

func (i *Issuer) register(ctx context.Context) (*accountState, error) {
	key, prev, err := i.accountKey(ctx)
	if err != nil {
		return nil, err
	}
	u := &user{email: i.cfg.Email, key: key}
	client, err := i.legoClient(ctx, u)
	if err != nil {
		return nil, err
	}
	reg, err := client.Registration.ResolveAccountByKey()
	var pd *acme.ProblemDetails
	switch {
	case err == nil:
		i.log.Info("ACME account found by key", "account", reg.URI)
		if want := contact(i.cfg.Email); !slices.Equal(reg.Body.Contact, want) {
			u.reg = reg
			updated, err := client.Registration.UpdateRegistration(registration.RegisterOptions{TermsOfServiceAgreed: true})
			if err != nil {
				return nil, fmt.Errorf("acme account: update contact of %s: %w", reg.URI, ctxErr(ctx, err))
			}
			reg.Body.Contact = updated.Body.Contact
			i.log.Info("ACME account contact updated", "account", reg.URI, "contact", i.cfg.Email)
		}
	case errors.As(err, &pd) && pd.Type == errAccountDoesNotExist:
		reg, err = i.newAccount(ctx, client.Registration)
		if err != nil {
			return nil, fmt.Errorf("acme account: register at %s: %w", i.cfg.DirectoryURL, ctxErr(ctx, err))
		}
		i.log.Info("ACME account registered", "account", reg.URI, "contact", i.cfg.Email)
	default:
		return nil, fmt.Errorf("acme account: look up at %s: %w", i.cfg.DirectoryURL, ctxErr(ctx, err))
	}
	st := status.Account{Directory: i.cfg.DirectoryURL, URI: reg.URI, Contact: strings.Join(reg.Body.Contact, ","),
		RegisteredAt: i.opts.Now().UTC()}
	if prev.URI == reg.URI && prev.Directory == st.Directory && !prev.RegisteredAt.IsZero() {
		st.RegisteredAt = prev.RegisteredAt
	}
	if err := i.recordAccount(ctx, func(s *status.Account) { *s = st }); err != nil {
		// The account works; only its status is stale.
		i.log.Warn("cannot record the ACME account status", "secret", i.cfg.AccountSecret, "error", err)
	}
	return &accountState{key: key, reg: reg, status: st}, nil
}

func (i *Issuer) newAccount(ctx context.Context, r *registration.Registrar) (*registration.Resource, error) {
	eab := i.cfg.ExternalAccountBinding
	if eab == nil {
		reg, err := r.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
		var pd *acme.ProblemDetails
		if errors.As(err, &pd) && pd.Type == errExternalAccountRequired {
			return nil, fmt.Errorf("the server requires External Account Binding, configure externalAccountBinding (keyID and hmacKeySecretRef) with the key the CA issued: %w", err)
		}
		return reg, err
	}
	ref := eab.HMACKeySecretRef
	sec, err := i.opts.Kube.CoreV1().Secrets(i.opts.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("external account binding Secret %s/%s: %w", i.opts.Namespace, ref.Name, err)
	}
	hmac := strings.TrimSpace(string(sec.Data[ref.Key]))
	if hmac == "" {
		return nil, fmt.Errorf("external account binding Secret %s/%s has no key %q", i.opts.Namespace, ref.Name, ref.Key)
	}
	reg, err := r.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
		TermsOfServiceAgreed: true, Kid: eab.KeyID, HmacEncoded: hmac})
	if err != nil {
		// Name where the key comes from, never the key: lego's and the
		// server's messages do not contain it either.
		var pd *acme.ProblemDetails
		if errors.As(err, &pd) {
			return nil, fmt.Errorf("external account binding with key ID %q and the HMAC key of Secret %s/%s key %q refused (check both against what the CA issued): %w",
				eab.KeyID, i.opts.Namespace, ref.Name, ref.Key, err)
		}
		return nil, fmt.Errorf("external account binding with key ID %q and the HMAC key of Secret %s/%s key %q (base64url as the CA issued it): %w",
			eab.KeyID, i.opts.Namespace, ref.Name, ref.Key, err)
	}
	return reg, nil
}

// accountKey reads the account key from its Secret, creating the Secret with
// a new key when it does not exist. On a race with another replica the key
// written first wins: the loser's create or update fails and it re-reads.
func (i *Issuer) accountKey(ctx context.Context) (crypto.Signer, status.Account, error) {
	secrets := i.opts.Kube.CoreV1().Secrets(i.opts.Namespace)
	name := i.cfg.AccountSecret
	for attempt := 0; attempt < 3; attempt++ {
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			keyPEM, err := newAccountKeyPEM()
			if err != nil {
				return nil, status.Account{}, err
			}
			sec = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: i.opts.Namespace, Labels: map[string]string{
					contract.ManagedByLabel: contract.ManagedByValue, contract.ComponentLabel: status.ComponentACMEAccount}},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{status.AccountKeyFile: keyPEM},
			}
			if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
				continue // another replica was first: use its key
			} else if err != nil {
				return nil, status.Account{}, fmt.Errorf("acme account: create Secret %s/%s: %w", i.opts.Namespace, name, err)
			}
			i.log.Info("ACME account key created", "secret", name)
			key, err := parseKey(keyPEM)
			return key, status.Account{}, err
		}
		if err != nil {
			return nil, status.Account{}, fmt.Errorf("acme account: read Secret %s/%s: %w", i.opts.Namespace, name, err)
		}
		prev, _ := status.DecodeAccount(sec.Annotations) // a malformed time only loses RegisteredAt
		if len(sec.Data[status.AccountKeyFile]) == 0 {
			// An empty Secret (e.g. pre-created by an installer): fill it in,
			// conditional on its resourceVersion.
			keyPEM, err := newAccountKeyPEM()
			if err != nil {
				return nil, status.Account{}, err
			}
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			sec.Data[status.AccountKeyFile] = keyPEM
			if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); apierrors.IsConflict(err) {
				continue
			} else if err != nil {
				return nil, status.Account{}, fmt.Errorf("acme account: write key into Secret %s/%s: %w", i.opts.Namespace, name, err)
			}
		}
		key, err := parseKey(sec.Data[status.AccountKeyFile])
		if err != nil {
			// Never overwrite a key we cannot read: it may be the only copy.
			return nil, status.Account{}, fmt.Errorf("acme account: Secret %s/%s key %s: %w", i.opts.Namespace, name, status.AccountKeyFile, err)
		}
		return key, prev, nil
	}
	return nil, status.Account{}, fmt.Errorf("acme account: Secret %s/%s keeps changing; giving up for now", i.opts.Namespace, name)
}

// recordAccount updates the account status annotations of the Secret.
func (i *Issuer) recordAccount(ctx context.Context, update func(*status.Account)) error {
	secrets := i.opts.Kube.CoreV1().Secrets(i.opts.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, err := secrets.Get(ctx, i.cfg.AccountSecret, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, _ := status.DecodeAccount(sec.Annotations)
		update(&st)
		sec.Annotations = st.Encode(sec.Annotations)
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		return err
	})
}

// contact is the account's contact list for an e-mail address.
func contact(email string) []string {
	if email == "" {
		return nil
	}
	return []string{"mailto:" + email}
}

func newAccountKeyPEM() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("acme account: generate key: %w", err)
	}
	return marshalKey(k)
}
