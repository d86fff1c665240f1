package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/initializer"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/util/compatibility"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/component-base/featuregate"
)

// world is one running ValidatingAdmissionPolicy plugin over a fixed set of
// policies, bindings, params and namespaces, served by fake clients and
// informers exactly as kube-apiserver's informers would serve them.
type world struct {
	plugin   admission.ValidationInterface
	stop     context.CancelFunc
	rejected []rejection
}

// noAuthorizer answers every `authorizer` check of a policy with "no
// opinion": the authorizer of a case without RBAC objects (see rbac.go).
type noAuthorizer struct{}

func (noAuthorizer) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	return authorizer.DecisionNoOpinion, "the oracle has no authorizer", nil
}

func (a noAuthorizer) ConditionsAwareAuthorize(ctx context.Context, attrs authorizer.Attributes) authorizer.ConditionsAwareDecision {
	return authorizer.ConditionsAwareDecisionFromParts(a.Authorize(ctx, attrs))
}

func (noAuthorizer) EvaluateConditions(context.Context, authorizer.ConditionsAwareDecision, authorizer.ConditionsData) (authorizer.Decision, string, error) {
	return authorizer.DecisionDeny, "", authorizer.ErrorConditionEvaluationNotSupported
}

// namespacedBuiltins are param kinds commonly used that are namespaced; other
// param kinds are namespaced when one of the case's param objects of that kind
// has a namespace.
var namespacedBuiltins = map[schema.GroupKind]bool{
	{Group: "", Kind: "ConfigMap"}: true,
	{Group: "", Kind: "Secret"}:    true,
}

func newWorld(policyDocs, bindingDocs, paramDocs, namespaceDocs, rbacDocs []json.RawMessage) (*world, error) {
	var authz authorizer.Authorizer = noAuthorizer{}
	if len(rbacDocs) > 0 {
		a, err := rbacAuthorizer(rbacDocs)
		if err != nil {
			return nil, err
		}
		authz = a
	}
	var (
		native   []runtime.Object
		rejected []rejection
	)
	for i, raw := range policyDocs {
		p, rej, err := admitPolicy(raw, i)
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
		b, rej, err := admitBinding(raw, i)
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
		// kube-apiserver labels every namespace with its name (namespace
		// strategy); a namespace read back from a cluster always has it.
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[corev1.LabelMetadataName] = ns.Name
		native = append(native, &ns)
	}

	// Params: every paramKind a policy names is an installed resource.
	restMapper := meta.NewDefaultRESTMapper(nil)
	paramObjects := []*unstructured.Unstructured{}
	namespacedKinds := map[schema.GroupVersionKind]bool{}
	for i, raw := range paramDocs {
		var m map[string]interface{}
		if err := utiljson.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("params[%d]: %v", i, err)
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("params[%d]: apiVersion, kind and metadata.name are required", i)
		}
		if u.GetNamespace() != "" {
			namespacedKinds[u.GroupVersionKind()] = true
		}
		paramObjects = append(paramObjects, u)
	}
	paramKinds := map[schema.GroupVersionKind]bool{}
	for _, o := range native {
		if p, ok := o.(*admissionregistrationv1.ValidatingAdmissionPolicy); ok && p.Spec.ParamKind != nil {
			gv, err := schema.ParseGroupVersion(p.Spec.ParamKind.APIVersion)
			if err == nil {
				paramKinds[gv.WithKind(p.Spec.ParamKind.Kind)] = true
			}
		}
	}
	for _, u := range paramObjects {
		paramKinds[u.GroupVersionKind()] = true
	}
	listKinds := map[schema.GroupVersionResource]string{}
	resources := map[schema.GroupVersionKind]schema.GroupVersionResource{}
	for gvk := range paramKinds {
		plural, singular := meta.UnsafeGuessKindToResource(gvk)
		scope := meta.RESTScopeRoot
		if namespacedKinds[gvk] || namespacedBuiltins[gvk.GroupKind()] {
			scope = meta.RESTScopeNamespace
		}
		restMapper.AddSpecific(gvk, plural, singular, scope)
		listKinds[plural] = gvk.Kind + "List"
		resources[gvk] = plural
	}

	dynamicScheme := runtime.NewScheme()
	dynamicClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(dynamicScheme, listKinds)
	for _, u := range paramObjects {
		gvr := resources[u.GroupVersionKind()]
		if err := dynamicClient.Tracker().Create(gvr, u, u.GetNamespace()); err != nil {
			return nil, fmt.Errorf("param %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		// Built-in kinds (ConfigMap, ...) are served by the typed informers.
		if clientgoscheme.Scheme.Recognizes(u.GroupVersionKind()) {
			typed, err := clientgoscheme.Scheme.New(u.GroupVersionKind())
			if err != nil {
				return nil, err
			}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed); err != nil {
				return nil, fmt.Errorf("param %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			}
			native = append(native, typed)
		}
	}

	client := fake.NewClientset(native...)
	factory := informers.NewSharedInformerFactory(client, 0)
	plugin, err := validating.NewPlugin(nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Start and sync the informers the plugin will ask for before it asks:
	// its policy source then compiles at once instead of polling every 100 ms.
	synced := []func() bool{
		factory.Admissionregistration().V1().ValidatingAdmissionPolicies().Informer().HasSynced,
		factory.Admissionregistration().V1().ValidatingAdmissionPolicyBindings().Informer().HasSynced,
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
	initializer.New(client, dynamicClient, factory, authz, featuregate.NewFeatureGate(),
		compatibility.DefaultBuildEffectiveVersion(), ctx.Done(), restMapper).Initialize(plugin)
	if err := plugin.ValidateInitialization(); err != nil {
		cancel()
		return nil, fmt.Errorf("initialising the plugin: %v", err)
	}
	factory.Start(ctx.Done())
	// The policy source compiles in its own goroutine; give it a moment so
	// WaitForReady (which re-checks every 100 ms) usually succeeds at once.
	time.Sleep(5 * time.Millisecond)
	if !plugin.WaitForReady() {
		cancel()
		return nil, fmt.Errorf("the plugin did not become ready")
	}
	return &world{plugin: admission.WithAudit(plugin).(admission.ValidationInterface), stop: cancel, rejected: rejected}, nil
}

// qualifiedKinds are how kube-apiserver names these kinds in errors.
var (
	policyKind  = schema.GroupKind{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}
	bindingKind = schema.GroupKind{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}
)

func docKind(raw json.RawMessage) string {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	_ = json.Unmarshal(raw, &tm)
	return strings.TrimSpace(tm.APIVersion + " " + tm.Kind)
}
