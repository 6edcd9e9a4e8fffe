package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/contract"
)

// Keys of the CA Secret. The layout follows kubernetes.io/tls plus ca.crt, so
// a user can bring an intermediate signed by a corporate root with
//
//	kubectl -n podtls-system create secret generic podtls-ca \
//	  --from-file=tls.crt --from-file=tls.key --from-file=ca.crt
const (
	// KeyCert holds the intermediate certificate, then any certificates
	// between it and a root.
	KeyCert = "tls.crt"
	// KeyKey holds the intermediate's private key.
	KeyKey = "tls.key"
	// KeyRoots holds the root(s) the intermediate chains to.
	KeyRoots = "ca.crt"
	// KeyExtraRoots optionally holds more roots to publish in the trust
	// bundle, e.g. the next root of a rotation, side by side with ca.crt.
	KeyExtraRoots = "ca-bundle.crt"
	// KeyRootKey holds the root key when podtls generated the root itself.
	KeyRootKey = "root.key"
)

// DefaultSecretName is the name of the Secret holding the CA.
const DefaultSecretName = "podtls-ca"

// RenewIntermediateBefore is how long before its expiry a generated
// intermediate is replaced at start-up.
const RenewIntermediateBefore = 30 * 24 * time.Hour

// SecretOptions say where the CA lives.
type SecretOptions struct {
	// Namespace of the Secret: the controller's namespace.
	Namespace string
	// Name of the Secret; DefaultSecretName if empty.
	Name string
	// Now returns the current time; time.Now if nil.
	Now func() time.Time
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
}

// LoadOrCreate returns the CA stored in the Secret, creating it (a new root
// and intermediate) if it does not exist. Several replicas may call it at the
// same time: creation is create-if-absent, and a replica that loses the race
// reads and uses the winner's CA, so all end up with one CA. A generated
// intermediate close to expiry is renewed with the stored root key (optimistic
// concurrency on the Secret's resourceVersion). A user-provided Secret is
// validated and used as is.
func LoadOrCreate(ctx context.Context, kube kubernetes.Interface, opts SecretOptions) (*Material, error) {
	if opts.Namespace == "" {
		return nil, errors.New("ca secret: namespace is empty")
	}
	if opts.Name == "" {
		opts.Name = DefaultSecretName
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	secrets := kube.CoreV1().Secrets(opts.Namespace)
	ref := opts.Namespace + "/" + opts.Name

	for attempt := 0; attempt < 5; attempt++ {
		sec, err := secrets.Get(ctx, opts.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			m, err := Generate(opts.Now(), Backdate)
			if err != nil {
				return nil, err
			}
			data, err := secretData(m)
			if err != nil {
				return nil, err
			}
			_, err = secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Name:        opts.Name,
					Namespace:   opts.Namespace,
					Labels:      map[string]string{"app.kubernetes.io/name": "podtls", "app.kubernetes.io/component": "ca"},
					Annotations: map[string]string{contract.CAGenerated: "true"},
				},
				Type: corev1.SecretTypeOpaque,
				Data: data,
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				log.Info("ca secret created concurrently by another replica; using it", "secret", ref)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("create ca secret %s: %w", ref, err)
			}
			log.Info("generated a new root and intermediate", "secret", ref,
				"root_not_after", m.Roots[0].NotAfter, "intermediate_not_after", m.Intermediate.NotAfter)
			return m, nil
		case err != nil:
			return nil, fmt.Errorf("get ca secret %s: %w", ref, err)
		}

		m, err := MaterialFromSecret(sec)
		if err != nil {
			return nil, fmt.Errorf("ca secret %s: %w", ref, err)
		}
		now := opts.Now()
		if m.RootKey != nil && m.Intermediate.NotAfter.Sub(now) < RenewIntermediateBefore {
			if err := m.RenewIntermediate(now, Backdate); err != nil {
				return nil, fmt.Errorf("ca secret %s: %w", ref, err)
			}
			data, err := secretData(m)
			if err != nil {
				return nil, err
			}
			upd := sec.DeepCopy()
			for k, v := range data {
				if upd.Data == nil {
					upd.Data = map[string][]byte{}
				}
				upd.Data[k] = v
			}
			if _, err := secrets.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
				if apierrors.IsConflict(err) {
					log.Info("ca secret changed concurrently while renewing the intermediate; re-reading", "secret", ref)
					continue
				}
				return nil, fmt.Errorf("update ca secret %s with renewed intermediate: %w", ref, err)
			}
			log.Info("renewed the intermediate", "secret", ref, "intermediate_not_after", m.Intermediate.NotAfter)
		}
		if err := m.Validate(now); err != nil {
			return nil, fmt.Errorf("ca secret %s: %w", ref, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("ca secret %s: still changing after 5 attempts", ref)
}

// MaterialFromSecret parses a CA Secret. It does not validate the chain; call
// Validate for that.
func MaterialFromSecret(sec *corev1.Secret) (*Material, error) {
	if len(sec.Data[KeyCert]) == 0 || len(sec.Data[KeyKey]) == 0 || len(sec.Data[KeyRoots]) == 0 {
		return nil, fmt.Errorf("need keys %s, %s and %s", KeyCert, KeyKey, KeyRoots)
	}
	certs, err := parseCerts(KeyCert, sec.Data[KeyCert])
	if err != nil {
		return nil, err
	}
	key, err := parseSigner(KeyKey, sec.Data[KeyKey])
	if err != nil {
		return nil, err
	}
	roots, err := parseCerts(KeyRoots, sec.Data[KeyRoots])
	if err != nil {
		return nil, err
	}
	extra, err := parseCerts(KeyExtraRoots, sec.Data[KeyExtraRoots])
	if err != nil {
		return nil, err
	}
	m := &Material{Intermediate: certs[0], Key: key, Chain: certs[1:], Roots: roots, ExtraRoots: extra}
	if len(sec.Data[KeyRootKey]) > 0 {
		if m.RootKey, err = parseSigner(KeyRootKey, sec.Data[KeyRootKey]); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// secretData renders the material into Secret data. The root key is written
// only if present (generated CA).
func secretData(m *Material) (map[string][]byte, error) {
	keyPEM, err := marshalKeyPEM(m.Key)
	if err != nil {
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	data := map[string][]byte{
		KeyCert:  m.ChainPEM(),
		KeyKey:   keyPEM,
		KeyRoots: rootsPEM(m.Roots),
	}
	if m.RootKey != nil {
		if data[KeyRootKey], err = marshalKeyPEM(m.RootKey); err != nil {
			return nil, fmt.Errorf("root key: %w", err)
		}
	}
	return data, nil
}
