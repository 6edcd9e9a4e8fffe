package check

import (
	"errors"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
)

type admissionWebhook = admissionregistrationv1.MutatingWebhook

func errorsAs(err error, target any) bool { return errors.As(err, target) }
