package main

// The MutatingAdmissionPolicy mode: kube-apiserver's own mutating policy plugin
// (k8s.io/apiserver/pkg/admission/plugin/policy/mutating), run through the
// admission chain's reinvocation handler, with a type converter built from
// Kubernetes' generated OpenAPI models (what kube-apiserver serves on
// /openapi/v3 for its built-in types) for ApplyConfiguration.
//
// Input: {"mutatingPolicies":[MAP...], "mutatingBindings":[MAPB...],
//         "namespaces":[Namespace...], "request": AdmissionReview.request}
// Output: {"allowed","code","reason","message","object","rejected","error"}:
// "object" is the request's object after every mutation (absent when denied).

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/initializer"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/util/compatibility"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/openapi"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kubernetes/pkg/apis/admissionregistration"
	"k8s.io/kubernetes/pkg/apis/admissionregistration/validation"
	generatedopenapi "k8s.io/kubernetes/pkg/generated/openapi"
)

type mutatingCase struct {
	Policies   []json.RawMessage `json:"mutatingPolicies"`
	Bindings   []json.RawMessage `json:"mutatingBindings"`
	Namespaces []json.RawMessage `json:"namespaces"`
	Request    json.RawMessage   `json:"request"`
}

type mutatingAnswer struct {
	Allowed  bool            `json:"allowed"`
	Code     int32           `json:"code"`
	Reason   string          `json:"reason"`
	Message  string          `json:"message"`
	Object   json.RawMessage `json:"object,omitempty"`
	Error    string          `json:"error,omitempty"`
	Rejected []rejection     `json:"rejected,omitempty"`
}

var (
	mutatingPolicyKind  = schema.GroupKind{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"}
	mutatingBindingKind = schema.GroupKind{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"}
)

// admitMutatingPolicy does what kube-apiserver does on CREATE of a
// MutatingAdmissionPolicy: decode strictly, default, convert, validate.
func admitMutatingPolicy(raw json.RawMessage, index int) (*admissionregistrationv1.MutatingAdmissionPolicy, *rejection, error) {
	var p admissionregistrationv1.MutatingAdmissionPolicy
	reject := func(msg string) (*admissionregistrationv1.MutatingAdmissionPolicy, *rejection, error) {
		return nil, &rejection{Kind: "MutatingAdmissionPolicy", Name: p.Name, Index: index, Message: msg}, nil
	}
	if err := decodeStrict(raw, &p, "MutatingAdmissionPolicy"); err != nil {
		return reject(err.Error())
	}
	if p.APIVersion != "admissionregistration.k8s.io/v1" || p.Kind != "MutatingAdmissionPolicy" {
		return nil, nil, fmt.Errorf("mutatingPolicies[%d] is %s, not admissionregistration.k8s.io/v1 MutatingAdmissionPolicy", index, docKind(raw))
	}
	apiScheme.Default(&p)
	var internal admissionregistration.MutatingAdmissionPolicy
	if err := apiScheme.Convert(&p, &internal, nil); err != nil {
		return nil, nil, fmt.Errorf("mutatingPolicies[%d]: converting: %v", index, err)
	}
	if errs := validation.ValidateMutatingAdmissionPolicy(&internal); len(errs) > 0 {
		return reject(apierrors.NewInvalid(mutatingPolicyKind, p.Name, errs).Error())
	}
	p.ResourceVersion = "1"
	return &p, nil, nil
}

// admitMutatingBinding is admitMutatingPolicy for a MutatingAdmissionPolicyBinding.
func admitMutatingBinding(raw json.RawMessage, index int) (*admissionregistrationv1.MutatingAdmissionPolicyBinding, *rejection, error) {
	var b admissionregistrationv1.MutatingAdmissionPolicyBinding
	reject := func(msg string) (*admissionregistrationv1.MutatingAdmissionPolicyBinding, *rejection, error) {
		return nil, &rejection{Kind: "MutatingAdmissionPolicyBinding", Name: b.Name, Index: index, Message: msg}, nil
	}
	if err := decodeStrict(raw, &b, "MutatingAdmissionPolicyBinding"); err != nil {
		return reject(err.Error())
	}
	if b.APIVersion != "admissionregistration.k8s.io/v1" || b.Kind != "MutatingAdmissionPolicyBinding" {
		return nil, nil, fmt.Errorf("mutatingBindings[%d] is %s, not admissionregistration.k8s.io/v1 MutatingAdmissionPolicyBinding", index, docKind(raw))
	}
	apiScheme.Default(&b)
	var internal admissionregistration.MutatingAdmissionPolicyBinding
	if err := apiScheme.Convert(&b, &internal, nil); err != nil {
		return nil, nil, fmt.Errorf("mutatingBindings[%d]: converting: %v", index, err)
	}
	if errs := validation.ValidateMutatingAdmissionPolicyBinding(&internal); len(errs) > 0 {
		return reject(apierrors.NewInvalid(mutatingBindingKind, b.Name, errs).Error())
	}
	b.ResourceVersion = "1"
	return &b, nil, nil
}

// builtinModels is the OpenAPI v3 document of every built-in type, as
// kube-apiserver names and annotates its models (x-kubernetes-group-version-kind,
// list types and keys), in the one JSON form the plugin's type converter
// manager reads: {"components":{"schemas":{...}}}.
var builtinModels = sync.OnceValues(func() ([]byte, error) {
	namer := openapinamer.NewDefinitionNamer(clientgoscheme.Scheme)
	config := &common.Config{
		Info:              &spec.Info{InfoProps: spec.InfoProps{Title: "oracle", Version: kubernetesRelease}},
		GetDefinitions:    generatedopenapi.GetOpenAPIDefinitions,
		GetDefinitionName: namer.GetDefinitionName,
	}
	// The models of every kind client-go knows (the built-in API), with
	// everything they refer to.
	defs := generatedopenapi.GetOpenAPIDefinitions(func(string) spec.Ref { return spec.Ref{} })
	seen := map[string]bool{}
	var names []string
	for gvk := range clientgoscheme.Scheme.AllKnownTypes() {
		name, err := clientgoscheme.Scheme.ToOpenAPIDefinitionName(gvk)
		if err != nil {
			continue
		}
		if _, ok := defs[name]; ok && !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	sort.Strings(names)
	swagger, err := builder.BuildOpenAPIDefinitionsForResources(config, names...)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"openapi": "3.0.0", "components": map[string]any{"schemas": swagger.Definitions}})
})

// modelsClient serves builtinModels for every built-in group/version, as
// kube-apiserver's /openapi/v3 does.
type modelsClient struct {
	models []byte
	asked  chan struct{}
	once   sync.Once
}

type modelsGroupVersion struct {
	models []byte
	url    string
}

func (g modelsGroupVersion) Schema(string) ([]byte, error) { return g.models, nil }
func (g modelsGroupVersion) ServerRelativeURL() string     { return g.url }

func (c *modelsClient) Paths() (map[string]openapi.GroupVersion, error) {
	paths := map[string]openapi.GroupVersion{}
	for _, gv := range clientgoscheme.Scheme.PrioritizedVersionsAllGroups() {
		path := "apis/" + gv.Group + "/" + gv.Version
		if gv.Group == "" {
			path = "api/" + gv.Version
		}
		paths[path] = modelsGroupVersion{models: c.models, url: "/openapi/v3/" + path + "?hash=oracle"}
	}
	c.once.Do(func() { close(c.asked) })
	return paths, nil
}

type modelsDiscovery struct {
	*fakediscovery.FakeDiscovery
	client *modelsClient
}

func (d modelsDiscovery) OpenAPIV3() openapi.Client { return d.client }

// clientsetWithModels is the fake clientset with /openapi/v3.
type clientsetWithModels struct {
	*fake.Clientset
	discovery modelsDiscovery
}

func (c *clientsetWithModels) Discovery() discovery.DiscoveryInterfaces { return c.discovery }

// noConfig: the plugin runs without an admission configuration file.
type noConfig struct{}

func (noConfig) ConfigFor(string) (io.Reader, error) { return nil, nil }

type mutatingWorld struct {
	plugin   admission.MutationInterface
	stop     context.CancelFunc
	rejected []rejection
}

func newMutatingWorld(policyDocs, bindingDocs, namespaceDocs []json.RawMessage) (*mutatingWorld, error) {
	var native []runtime.Object
	var rejected []rejection
	for i, raw := range policyDocs {
		p, rej, err := admitMutatingPolicy(raw, i)
		if err != nil {
			return nil, err
		}
		if rej != nil {
			rejected = append(rejected, *rej)
			continue
		}
		native = append(native, p)
	}
	for i, raw := range bindingDocs {
		b, rej, err := admitMutatingBinding(raw, i)
		if err != nil {
			return nil, err
		}
		if rej != nil {
			rejected = append(rejected, *rej)
			continue
		}
		native = append(native, b)
	}
	for i, raw := range namespaceDocs {
		var ns corev1.Namespace
		if err := json.Unmarshal(raw, &ns); err != nil {
			return nil, fmt.Errorf("namespaces[%d]: %v", i, err)
		}
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[corev1.LabelMetadataName] = ns.Name
		native = append(native, &ns)
	}
	models, err := builtinModels()
	if err != nil {
		return nil, fmt.Errorf("building the OpenAPI models: %v", err)
	}
	base := fake.NewClientset(native...)
	modelClient := &modelsClient{models: models, asked: make(chan struct{})}
	client := &clientsetWithModels{
		Clientset: base,
		discovery: modelsDiscovery{FakeDiscovery: &fakediscovery.FakeDiscovery{Fake: &base.Fake}, client: modelClient},
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	ctx, cancel := context.WithCancel(context.Background())
	synced := []func() bool{
		factory.Admissionregistration().V1().MutatingAdmissionPolicies().Informer().HasSynced,
		factory.Admissionregistration().V1().MutatingAdmissionPolicyBindings().Informer().HasSynced,
		factory.Core().V1().Namespaces().Informer().HasSynced,
	}
	factory.Start(ctx.Done())
	deadline := time.Now().Add(20 * time.Second)
	for _, hasSynced := range synced {
		for !hasSynced() {
			if time.Now().After(deadline) {
				cancel()
				return nil, fmt.Errorf("informers did not sync")
			}
			time.Sleep(time.Millisecond)
		}
	}
	// The plugin inside kube-apiserver's admission chain, with the chain's
	// reinvocation handler: the same construction kube-apiserver uses.
	plugins := admission.NewPlugins()
	mutating.Register(plugins)
	dynamicClient := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	chain, err := plugins.NewFromPlugins([]string{mutating.PluginName}, noConfig{},
		initializer.New(client, dynamicClient, factory, noAuthorizer{}, utilfeature.DefaultFeatureGate,
			compatibility.DefaultBuildEffectiveVersion(), ctx.Done(), meta.NewDefaultRESTMapper(nil)), nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("initialising the plugin: %v", err)
	}
	factory.Start(ctx.Done())
	// The type converter manager reads /openapi/v3 in its own goroutine; the
	// plugin itself waits for its policies on the first request.
	select {
	case <-modelClient.asked:
		time.Sleep(20 * time.Millisecond)
	case <-time.After(20 * time.Second):
		cancel()
		return nil, fmt.Errorf("the plugin never read /openapi/v3")
	}
	return &mutatingWorld{plugin: chain.(admission.MutationInterface), stop: cancel, rejected: rejected}, nil
}

func (o *oracle) mutate(raw json.RawMessage) mutatingAnswer {
	fail := func(format string, args ...any) mutatingAnswer {
		return mutatingAnswer{Error: fmt.Sprintf(format, args...)}
	}
	var in mutatingCase
	if err := json.Unmarshal(raw, &in); err != nil {
		return fail("cannot decode the case: %v", err)
	}
	var req admissionv1.AdmissionRequest
	if err := json.Unmarshal(in.Request, &req); err != nil {
		return fail("cannot decode request: %v", err)
	}
	attrs, err := attributesFor(&req)
	if err != nil {
		return fail("%v", err)
	}
	namespaces := in.Namespaces
	if ns := req.Namespace; ns != "" && !hasNamespace(namespaces, ns) {
		namespaces = append(append([]json.RawMessage{}, namespaces...),
			json.RawMessage(fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, ns)))
	}
	w, err := o.mutatingWorldFor(&in, namespaces)
	if err != nil {
		return fail("%v", err)
	}
	objectInterfaces := &admission.RuntimeObjectInterfaces{
		ObjectCreater:            clientgoscheme.Scheme,
		ObjectTyper:              clientgoscheme.Scheme,
		ObjectDefaulter:          clientgoscheme.Scheme,
		ObjectConvertor:          clientgoscheme.Scheme,
		EquivalentResourceMapper: equivalentResources(&req, nil),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	answer := mutatingAnswer{Allowed: true, Code: 200, Rejected: w.rejected}
	if err := w.plugin.Admit(ctx, attrs, objectInterfaces); err != nil {
		status := responsewriters.ErrorToAPIStatus(err)
		answer.Allowed = false
		answer.Code = status.Code
		answer.Reason = string(status.Reason)
		answer.Message = status.Message
		return answer
	}
	if obj := attrs.GetObject(); obj != nil {
		b, err := json.Marshal(obj)
		if err != nil {
			return fail("cannot encode the object: %v", err)
		}
		answer.Object = b
	}
	return answer
}

// mutatingWorldFor returns a running plugin for these documents, reusing the
// one built for identical documents by an earlier case (each request has its
// own reinvocation context, so a world keeps no state between cases).
func (o *oracle) mutatingWorldFor(in *mutatingCase, namespaces []json.RawMessage) (*mutatingWorld, error) {
	key := sha256.New()
	for _, part := range [][]json.RawMessage{in.Policies, {json.RawMessage("--")}, in.Bindings, {json.RawMessage("--")}, namespaces} {
		for _, doc := range part {
			key.Write(doc)
			key.Write([]byte{0})
		}
	}
	var k [32]byte
	copy(k[:], key.Sum(nil))
	if w, ok := o.mutatingWorlds[k]; ok {
		return w, nil
	}
	w, err := newMutatingWorld(in.Policies, in.Bindings, namespaces)
	if err != nil {
		return nil, err
	}
	if len(o.mutatingOrder) >= maxWorlds {
		old := o.mutatingOrder[0]
		o.mutatingOrder = o.mutatingOrder[1:]
		if ow, ok := o.mutatingWorlds[old]; ok {
			ow.stop()
			delete(o.mutatingWorlds, old)
		}
	}
	o.mutatingWorlds[k] = w
	o.mutatingOrder = append(o.mutatingOrder, k)
	return w, nil
}
