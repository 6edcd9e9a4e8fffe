package rollout

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/contract"
)

// ownerOf resolves the restartable workload of pod: a ReplicaSet's
// Deployment, a StatefulSet or a DaemonSet. Zero for anything else.
func ownerOf(ctx context.Context, api client.Reader, pod *corev1.Pod) (Workload, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return Workload{}, nil
	}
	switch ref.Kind {
	case KindStatefulSet, KindDaemonSet:
		return Workload{Kind: ref.Kind, Namespace: pod.Namespace, Name: ref.Name}, nil
	case "ReplicaSet":
		rs := &appsv1.ReplicaSet{}
		if err := api.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name}, rs); err != nil {
			return Workload{}, fmt.Errorf("replicaset %s/%s of pod %s: %w", pod.Namespace, ref.Name, pod.Name, err)
		}
		if d := metav1.GetControllerOf(rs); d != nil && d.Kind == KindDeployment {
			return Workload{Kind: KindDeployment, Namespace: pod.Namespace, Name: d.Name}, nil
		}
	}
	return Workload{}, nil
}

func object(w Workload) (client.Object, error) {
	switch w.Kind {
	case KindDeployment:
		return &appsv1.Deployment{}, nil
	case KindStatefulSet:
		return &appsv1.StatefulSet{}, nil
	case KindDaemonSet:
		return &appsv1.DaemonSet{}, nil
	}
	return nil, fmt.Errorf("kind %q cannot be restarted", w.Kind)
}

// restart sets podtls.io/restarted-for=serial in w's pod template (a merge
// patch of that one annotation): the workload controller rolls its pods.
func restart(ctx context.Context, c client.Client, w Workload, serial string) error {
	obj, err := object(w)
	if err != nil {
		return err
	}
	obj.SetNamespace(w.Namespace)
	obj.SetName(w.Name)
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{contract.RestartedFor: serial}}}}})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("restart %s: %w", w, err)
	}
	return nil
}

// rolledOut reports whether w runs only pods of its current template, and
// whether it can ever get there by itself (StatefulSets with OnDelete
// cannot).
func rolledOut(ctx context.Context, api client.Reader, w Workload) (done bool, err error) {
	obj, err := object(w)
	if err != nil {
		return false, err
	}
	if err := api.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: w.Name}, obj); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		want := int32(1)
		if o.Spec.Replicas != nil {
			want = *o.Spec.Replicas
		}
		s := o.Status
		return s.ObservedGeneration >= o.Generation && s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want, nil
	case *appsv1.StatefulSet:
		want := int32(1)
		if o.Spec.Replicas != nil {
			want = *o.Spec.Replicas
		}
		s := o.Status
		return s.ObservedGeneration >= o.Generation && s.UpdateRevision == s.CurrentRevision && s.UpdatedReplicas == want && s.ReadyReplicas == want, nil
	case *appsv1.DaemonSet:
		s := o.Status
		return s.ObservedGeneration >= o.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled, nil
	}
	return false, nil
}
