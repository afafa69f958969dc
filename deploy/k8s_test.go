package deploy_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// manifest is one decoded Kubernetes object with where it came from.
type manifest struct {
	file string
	kind string
	obj  any
	meta *metav1.ObjectMeta
}

// newObject returns the typed object for apiVersion/kind; an unknown pair is an error so a
// manifest never slips through undecoded.
func newObject(apiVersion, kind string) (any, *metav1.ObjectMeta, error) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		o := &corev1.Namespace{}
		return o, &o.ObjectMeta, nil
	case "v1/Secret":
		o := &corev1.Secret{}
		return o, &o.ObjectMeta, nil
	case "v1/ConfigMap":
		o := &corev1.ConfigMap{}
		return o, &o.ObjectMeta, nil
	case "v1/Service":
		o := &corev1.Service{}
		return o, &o.ObjectMeta, nil
	case "v1/ServiceAccount":
		o := &corev1.ServiceAccount{}
		return o, &o.ObjectMeta, nil
	case "apps/v1/Deployment":
		o := &appsv1.Deployment{}
		return o, &o.ObjectMeta, nil
	case "apps/v1/StatefulSet":
		o := &appsv1.StatefulSet{}
		return o, &o.ObjectMeta, nil
	case "policy/v1/PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		return o, &o.ObjectMeta, nil
	}
	return nil, nil, fmt.Errorf("no API type registered for %s %s (add it to newObject)", apiVersion, kind)
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadManifests decodes every document of every YAML file under dir strictly into its type.
func loadManifests(t *testing.T, dir string) []manifest {
	t.Helper()
	var out []manifest
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range docSep.Split(string(data), -1) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Errorf("%s doc %d: %v", path, i, err)
				continue
			}
			if head.APIVersion == "" && head.Kind == "" {
				if strings.TrimSpace(stripComments(doc)) != "" {
					t.Errorf("%s doc %d: no apiVersion/kind", path, i)
				}
				continue
			}
			obj, meta, err := newObject(head.APIVersion, head.Kind)
			if err != nil {
				t.Errorf("%s doc %d: %v", path, i, err)
				continue
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Errorf("%s doc %d (%s): %v", path, i, head.Kind, err)
				continue
			}
			if meta.Name == "" {
				t.Errorf("%s doc %d (%s): no metadata.name", path, i, head.Kind)
			}
			if head.Kind != "Namespace" && meta.Namespace == "" {
				t.Errorf("%s %s/%s: set metadata.namespace", path, head.Kind, meta.Name)
			}
			out = append(out, manifest{file: path, kind: head.Kind, obj: obj, meta: meta})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// index finds objects by kind/namespace/name.
type index map[string]manifest

func (ix index) get(kind, ns, name string) (manifest, bool) {
	m, ok := ix[kind+"/"+ns+"/"+name]
	return m, ok
}

// layout is what one `kubectl apply -f base -f <layout>` creates.
func layout(t *testing.T, dirs ...string) ([]manifest, index) {
	var all []manifest
	for _, d := range dirs {
		all = append(all, loadManifests(t, filepath.Join("k8s", d))...)
	}
	ix := index{}
	for _, m := range all {
		key := m.kind + "/" + m.meta.Namespace + "/" + m.meta.Name
		if prev, dup := ix[key]; dup {
			t.Errorf("%s defined twice (%s, %s)", key, prev.file, m.file)
		}
		ix[key] = m
	}
	return all, ix
}

type workload struct {
	m        manifest
	selector *metav1.LabelSelector
	tmpl     corev1.PodTemplateSpec
}

func workloads(all []manifest) []workload {
	var out []workload
	for _, m := range all {
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{m, o.Spec.Selector, o.Spec.Template})
		case *appsv1.StatefulSet:
			out = append(out, workload{m, o.Spec.Selector, o.Spec.Template})
		}
	}
	return out
}

func matches(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// portOf resolves a probe or service port (number or container port name) in a container.
func portOf(p intstr.IntOrString, ports []corev1.ContainerPort) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, true
	}
	for _, cp := range ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func checkLayout(t *testing.T, dirs ...string) []manifest {
	all, ix := layout(t, dirs...)
	if t.Failed() {
		t.FailNow()
	}
	for _, w := range workloads(all) {
		name := w.m.kind + "/" + w.m.meta.Name
		ns := w.m.meta.Namespace
		if _, ok := ix.get("Namespace", "", ns); !ok && ns != "default" {
			t.Errorf("%s: namespace %s is not created by this layout", name, ns)
		}
		if w.selector == nil || !matches(w.selector.MatchLabels, w.tmpl.Labels) {
			t.Errorf("%s: selector does not match the pod template labels", name)
		}
		vols := map[string]bool{}
		for _, v := range w.tmpl.Spec.Volumes {
			vols[v.Name] = true
			if v.ConfigMap != nil {
				if _, ok := ix.get("ConfigMap", ns, v.ConfigMap.Name); !ok {
					t.Errorf("%s: volume %s: ConfigMap %s is not in the layout", name, v.Name, v.ConfigMap.Name)
				}
			}
		}
		if sts, ok := w.m.obj.(*appsv1.StatefulSet); ok {
			for _, pvc := range sts.Spec.VolumeClaimTemplates {
				vols[pvc.Name] = true
			}
		}
		for _, c := range w.tmpl.Spec.Containers {
			cn := name + " container " + c.Name
			req := c.Resources.Requests
			if req.Cpu().IsZero() || req.Memory().IsZero() {
				t.Errorf("%s: set resources.requests cpu and memory", cn)
			}
			for _, vm := range c.VolumeMounts {
				if !vols[vm.Name] {
					t.Errorf("%s: mounts unknown volume %s", cn, vm.Name)
				}
			}
			for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if pr != nil && pr.HTTPGet != nil {
					if _, ok := portOf(pr.HTTPGet.Port, c.Ports); !ok {
						t.Errorf("%s: probe port %s is not a container port", cn, pr.HTTPGet.Port.String())
					}
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					s, ok := ix.get("Secret", ns, ref.Name)
					if !ok {
						t.Errorf("%s: env %s: Secret %s is not in the layout", cn, e.Name, ref.Name)
						continue
					}
					sec := s.obj.(*corev1.Secret)
					if _, ok := sec.StringData[ref.Key]; !ok {
						if _, ok := sec.Data[ref.Key]; !ok {
							t.Errorf("%s: env %s: Secret %s has no key %s", cn, e.Name, ref.Name, ref.Key)
						}
					}
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					if _, ok := ix.get("ConfigMap", ns, ef.ConfigMapRef.Name); !ok {
						t.Errorf("%s: envFrom ConfigMap %s is not in the layout", cn, ef.ConfigMapRef.Name)
					}
				}
			}
		}
	}
	// Services select pods of the layout, on ports those pods declare.
	for _, m := range all {
		svc, ok := m.obj.(*corev1.Service)
		if !ok {
			continue
		}
		var pods []corev1.PodTemplateSpec
		for _, w := range workloads(all) {
			if w.m.meta.Namespace == m.meta.Namespace && matches(svc.Spec.Selector, w.tmpl.Labels) {
				pods = append(pods, w.tmpl)
			}
		}
		if len(pods) == 0 {
			t.Errorf("Service %s selects no workload of the layout", m.meta.Name)
			continue
		}
		for _, sp := range svc.Spec.Ports {
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			found := false
			for _, pod := range pods {
				for _, c := range pod.Spec.Containers {
					if n, ok := portOf(tp, c.Ports); ok && (tp.Type == intstr.String || containerHasPort(c, n)) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("Service %s port %s: target %s is not a container port", m.meta.Name, sp.Name, tp.String())
			}
		}
	}
	return all
}

func containerHasPort(c corev1.Container, n int32) bool {
	for _, p := range c.Ports {
		if p.ContainerPort == n {
			return true
		}
	}
	return false
}

// The control plane: probes on /health and /ready on PORT 8080, ADMIN_TOKEN from a Secret,
// REDIS_URL to the layout's Redis, non-root.
func checkControlPlane(t *testing.T, all []manifest) {
	t.Helper()
	var dep *appsv1.Deployment
	var env map[string]string
	for _, m := range all {
		if d, ok := m.obj.(*appsv1.Deployment); ok && d.Name == "api-gateway" {
			dep = d
		}
		if c, ok := m.obj.(*corev1.ConfigMap); ok && c.Name == "api-gateway-env" {
			env = c.Data
		}
	}
	if dep == nil {
		t.Fatal("no api-gateway Deployment")
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Error("api-gateway: run at least two replicas")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
			t.Errorf("api-gateway %s probe: want GET %s", what, path)
			return
		}
		if n, _ := portOf(p.HTTPGet.Port, c.Ports); n != 8080 {
			t.Errorf("api-gateway %s probe on port %d, want PORT 8080", what, n)
		}
	}
	// ?serving=true: a refused newest revision (every replica refuses the same stored one)
	// must not take the management API out of the Service it is fixed through.
	probe("readiness", c.ReadinessProbe, "/ready?serving=true")
	probe("liveness", c.LivenessProbe, "/health")
	if env["PORT"] != "8080" {
		t.Errorf("PORT=%q, want 8080 (the probes use it)", env["PORT"])
	}
	if !strings.HasPrefix(env["REDIS_URL"], "redis://redis.") {
		t.Errorf("REDIS_URL=%q: want the layout's redis Service", env["REDIS_URL"])
	}
	tokenFromSecret := false
	for _, e := range c.Env {
		if e.Name == "ADMIN_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			tokenFromSecret = true
		}
	}
	if !tokenFromSecret {
		t.Error("ADMIN_TOKEN must come from a Secret")
	}
	psc := dep.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("api-gateway: runAsNonRoot")
	}
}

// Each Envoy bootstrap ConfigMap is a valid Envoy Bootstrap of the expected node group whose
// ADS endpoint is a Service of the layout on the gRPC port.
func checkBootstraps(t *testing.T, all []manifest, group string) {
	t.Helper()
	_, ix := layout(t, "base")
	n := 0
	for _, m := range all {
		cm, ok := m.obj.(*corev1.ConfigMap)
		if !ok || cm.Data["envoy.yaml"] == "" {
			continue
		}
		n++
		b := parseBootstrap(t, m.file, []byte(cm.Data["envoy.yaml"]))
		if b.GetNode().GetCluster() != group {
			t.Errorf("%s: node.cluster %q, want %q", m.file, b.GetNode().GetCluster(), group)
		}
		for _, h := range xdsHosts(t, b) {
			host, port, _ := strings.Cut(h, ":")
			parts := strings.Split(host, ".")
			if len(parts) < 2 {
				t.Errorf("%s: ADS host %s: use <service>.<namespace>.svc", m.file, host)
				continue
			}
			sm, ok := ix.get("Service", parts[1], parts[0])
			if !ok {
				t.Errorf("%s: ADS host %s is not a Service of deploy/k8s/base", m.file, host)
				continue
			}
			found := false
			for _, p := range sm.obj.(*corev1.Service).Spec.Ports {
				if fmt.Sprint(p.Port) == port {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: ADS port %s is not a port of Service %s", m.file, port, sm.meta.Name)
			}
		}
	}
	if n == 0 {
		t.Errorf("no Envoy bootstrap ConfigMap in the %s layout", group)
	}
}

func TestK8sEdgeLayout(t *testing.T) {
	all := checkLayout(t, "base", "edge")
	checkControlPlane(t, all)
	checkBootstraps(t, all, "edge")
}

func TestK8sSidecarLayout(t *testing.T) {
	all := checkLayout(t, "base", "sidecar")
	checkControlPlane(t, all)
	checkBootstraps(t, all, "sidecar")
	// Every pod of the sidecar layout outside the control plane carries an Envoy.
	for _, w := range workloads(all) {
		if w.m.meta.Namespace == "api-gateway" {
			continue
		}
		hasEnvoy := false
		for _, c := range w.tmpl.Spec.Containers {
			if strings.HasPrefix(c.Image, "envoyproxy/envoy") {
				hasEnvoy = true
			}
		}
		if !hasEnvoy || len(w.tmpl.Spec.Containers) < 2 {
			t.Errorf("%s: an application pod of the sidecar layout needs an Envoy sidecar", w.m.meta.Name)
		}
	}
}

// A typo in a manifest must fail: the strict decoder rejects an unknown field.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: y}\nspec:\n  replicas: 1\n  templete: {}\n"
	obj, _, _ := newObject("apps/v1", "Deployment")
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err == nil {
		t.Fatal("a misspelt field decoded without error")
	}
}
