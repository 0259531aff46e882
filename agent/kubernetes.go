package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/k8s"
)

// kubernetes.go owns Kubernetes mode's configuration: the client config
// and the agent's ConfigMap.

// RESTConfig returns the client config of Kubernetes mode: the kubeconfig
// file, or the pod's service account (InCluster).
func (c Config) RESTConfig() (*rest.Config, error) {
	switch {
	case c.Kubeconfig != "":
		rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", c.Kubeconfig, err)
		}
		return rc, nil
	case c.InCluster:
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
		return rc, nil
	}
	return nil, fmt.Errorf("not in Kubernetes mode: set kubeconfig or inCluster")
}

// ApplyConfigMap returns base with the ConfigMap's keys applied: each key
// is a Config field (its JSON/YAML name), each value that field's YAML.
// Unknown keys and values of the wrong type are errors naming the key;
// source names the ConfigMap in them. Defaults and validation are the
// caller's (New, or checkConfigMap).
func ApplyConfigMap(base Config, source string, data map[string]string) (Config, error) {
	doc := map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		var v any
		if err := yaml.Unmarshal([]byte(data[k]), &v); err != nil {
			return base, fmt.Errorf("configmap %s: key %s: %w", source, k, err)
		}
		doc[k] = v
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return base, fmt.Errorf("configmap %s: %w", source, err)
	}
	out := base
	// Slices and pointers in base must not be shared with out's decode.
	out.Metrics = slices.Clone(base.Metrics)
	out.PrefilterDeny = slices.Clone(base.PrefilterDeny)
	out.PrefilterInterfaces = slices.Clone(base.PrefilterInterfaces)
	out.IdentityExcludedLabels = slices.Clone(base.IdentityExcludedLabels)
	if err := yaml.UnmarshalStrict(js, &out); err != nil {
		return base, fmt.Errorf("configmap %s: %s", source, strings.TrimPrefix(err.Error(), "error unmarshaling JSON: while decoding JSON: "))
	}
	return out, nil
}

// ReadConfigMap reads the agent's ConfigMap once ("namespace/name"); a
// missing one is not an error (found is false).
func ReadConfigMap(ctx context.Context, rc *rest.Config, ref string) (data map[string]string, found bool, err error) {
	ns, name, _ := strings.Cut(ref, "/")
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, false, fmt.Errorf("create kubernetes client: %w", err)
	}
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read configmap %s: %w", ref, err)
	}
	return cm.Data, true, nil
}

// checkConfigMap validates a changed ConfigMap against the running config:
// a bad one is reported (naming the key or field) and the running config
// stays; a good one that differs is reported as pending a restart.
func (a *Agent) checkConfigMap(ref string, src *k8s.Source) {
	data, found := src.ConfigMap()
	var msg string
	if found {
		next, err := ApplyConfigMap(a.cfg, ref, data)
		if err == nil {
			next = next.WithDefaults()
			if verr := next.Validate(); verr != nil {
				err = fmt.Errorf("configmap %s: %w", ref, verr)
			}
		}
		switch {
		case err != nil:
			msg = strings.ReplaceAll(err.Error(), "\n", "; ") + "; the running configuration stays"
			a.log.Warn("bad agent configmap: the running configuration stays", "configmap", ref, "err", err)
		case !reflect.DeepEqual(next, a.cfg):
			msg = "configmap " + ref + " changed: restart the agent to apply it"
			a.log.Info("agent configmap changed: it applies when the agent restarts", "configmap", ref)
		}
	}
	a.mu.Lock()
	a.state.configError = msg
	a.mu.Unlock()
}
