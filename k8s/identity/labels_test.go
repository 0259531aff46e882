package identity

import (
	"regexp"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

func TestPodLabels(t *testing.T) {
	pod := map[string]string{"app": "web", "pod-template-hash": "7d9f", "controller-revision-hash": "abc", "tier": "front"}
	ns := map[string]string{"team": "a", "kubernetes.io/metadata.name": "prod"}
	for _, tc := range []struct {
		name   string
		filter LabelFilter
		want   []string
	}{
		{"default filter", LabelFilter{}, []string{
			"k8s:app=web", "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
			"k8s:io.cilium.k8s.namespace.labels.team=a", "k8s:io.kubernetes.pod.namespace=prod", "k8s:tier=front"}},
		{"keep all", LabelFilter{Exclude: []string{}}, []string{
			"k8s:app=web", "k8s:controller-revision-hash=abc",
			"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
			"k8s:io.cilium.k8s.namespace.labels.team=a", "k8s:io.kubernetes.pod.namespace=prod",
			"k8s:pod-template-hash=7d9f", "k8s:tier=front"}},
		{"prefix", LabelFilter{Exclude: []string{"t*", "pod-template-hash", "controller-revision-hash"}}, []string{
			"k8s:app=web", "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
			"k8s:io.cilium.k8s.namespace.labels.team=a", "k8s:io.kubernetes.pod.namespace=prod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PodLabels("prod", pod, ns, tc.filter).Strings()
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("PodLabels:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	if kept := (LabelFilter{}).Keep(map[string]string{"pod-template-hash": "x"}); kept != nil {
		t.Errorf("Keep of only excluded labels = %v, want nil", kept)
	}
	if kept := (LabelFilter{}).Keep(pod); len(kept) != 2 || kept["app"] != "web" || kept["tier"] != "front" {
		t.Errorf("Keep = %v, want app and tier", kept)
	}
	// A rollout (new pod-template-hash) keeps the identity.
	a := PodLabels("prod", pod, ns, LabelFilter{})
	pod2 := map[string]string{"app": "web", "pod-template-hash": "0000", "tier": "front"}
	if b := PodLabels("prod", pod2, ns, LabelFilter{}); ObjectName(a) != ObjectName(b) {
		t.Fatalf("rollout changed the object name: %s vs %s", ObjectName(a), ObjectName(b))
	}
}

func TestLabelFilterValidate(t *testing.T) {
	for _, tc := range []struct {
		ex   []string
		want string
	}{
		{[]string{"a", "b*"}, ""},
		{[]string{"*"}, "exclude[0]: empty key"},
		{[]string{"ok", "a*b"}, `exclude[1] "a*b": '*' is allowed only at the end`},
	} {
		err := LabelFilter{Exclude: tc.ex}.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%q) = %v, want %q", tc.ex, err, tc.want)
		}
	}
}

func TestObjectNameAndSpec(t *testing.T) {
	ls := policy.NewLabels(policy.SourceK8s, map[string]string{"app": "web", "reserved:host": "", "io.kubernetes.pod.namespace": "x"})
	name := ObjectName(ls)
	if !regexp.MustCompile(`^ls-[0-9a-f]{32}$`).MatchString(name) {
		t.Fatalf("ObjectName = %q, want ls- and 32 hex digits", name)
	}
	// The name depends on the label set only, not on map order.
	again := policy.NewLabels(policy.SourceK8s, map[string]string{"io.kubernetes.pod.namespace": "x", "reserved:host": "", "app": "web"})
	if ObjectName(again) != name {
		t.Fatal("ObjectName depends on insertion order")
	}
	other := policy.NewLabels(policy.SourceK8s, map[string]string{"app": "web2", "reserved:host": "", "io.kubernetes.pod.namespace": "x"})
	if ObjectName(other) == name {
		t.Fatal("different label sets share a name")
	}
	spec := SpecLabels(ls)
	if spec["reserved:host"] != "" || spec["k8s:app"] != "web" || len(spec) != 3 {
		t.Fatalf("SpecLabels = %v", spec)
	}
	back, err := LabelsFromSpec(spec)
	if err != nil || back.Key() != ls.Key() {
		t.Fatalf("LabelsFromSpec round trip: %v, %v (want %s)", back, err, ls)
	}
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{map[string]string{"app": "x"}, `label "app": want "source:key"`},
		{map[string]string{"k8s:a": "1", "reserved:a": "2"}, `appears with two sources`},
	} {
		if _, err := LabelsFromSpec(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LabelsFromSpec(%v) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}
