package check

import admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

type admissionWebhook = admissionregistrationv1.MutatingWebhook
