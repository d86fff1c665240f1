package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apiserver/pkg/admission"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// admissionCase is one admission question.
type admissionCase struct {
	Policies   []json.RawMessage `json:"policies"`
	Bindings   []json.RawMessage `json:"bindings"`
	Params     []json.RawMessage `json:"params"`
	Namespaces []json.RawMessage `json:"namespaces"`
	// RBAC: Roles, ClusterRoles and their bindings; with any, policies'
	// `authorizer` is Kubernetes' RBAC authorizer over them (rbac.go).
	RBAC []json.RawMessage `json:"rbac"`
	// EquivalentResources lists groups of resources that are the same
	// storage served under several group/versions (kube-apiserver knows this
	// from its registry; the oracle only from here). Used by matchPolicy:
	// Equivalent. Each item: [{"group","version","resource","kind"}, ...].
	EquivalentResources [][]resourceKind `json:"equivalentResources"`
	Request             json.RawMessage  `json:"request"`
}

type resourceKind struct {
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
	Kind     string `json:"kind"`
}

// admissionAnswer is what kube-apiserver answers the client.
type admissionAnswer struct {
	Allowed          bool              `json:"allowed"`
	Code             int32             `json:"code"`
	Reason           string            `json:"reason"`
	Message          string            `json:"message"`
	Warnings         []string          `json:"warnings"`
	AuditAnnotations map[string]string `json:"auditAnnotations"`
	// Error: the case itself is invalid (kube-apiserver would not have
	// stored a policy or binding, or the request cannot be built).
	Error string `json:"error,omitempty"`
	// Rejected: kube-apiserver's own validation rejects these documents,
	// with the message it returns (one per rejected document).
	Rejected []rejection `json:"rejected,omitempty"`
}

type rejection struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Index   int    `json:"index"`
	Message string `json:"message"`
}

type oracle struct {
	worlds map[[32]byte]*world
	order  [][32]byte
	// The MutatingAdmissionPolicy worlds (mutating.go), the same way.
	mutatingWorlds map[[32]byte]*mutatingWorld
	mutatingOrder  [][32]byte
}

const maxWorlds = 16

func newOracle() *oracle {
	return &oracle{worlds: map[[32]byte]*world{}, mutatingWorlds: map[[32]byte]*mutatingWorld{}}
}

func (o *oracle) close() {
	for _, w := range o.worlds {
		w.stop()
	}
	for _, w := range o.mutatingWorlds {
		w.stop()
	}
}

// worldFor returns a running plugin for these documents, reusing the one
// built for identical documents by an earlier case.
func (o *oracle) worldFor(in *admissionCase, namespaces []json.RawMessage) (*world, []rejection, error) {
	key := sha256.New()
	for _, part := range [][]json.RawMessage{in.Policies, {json.RawMessage("--")}, in.Bindings, {json.RawMessage("--")}, in.Params, {json.RawMessage("--")}, namespaces, {json.RawMessage("--")}, in.RBAC} {
		for _, doc := range part {
			key.Write(doc)
			key.Write([]byte{0})
		}
	}
	var k [32]byte
	copy(k[:], key.Sum(nil))
	if w, ok := o.worlds[k]; ok {
		return w, w.rejected, nil
	}
	w, err := newWorld(in.Policies, in.Bindings, in.Params, namespaces, in.RBAC)
	if err != nil {
		return nil, nil, err
	}
	if len(o.order) >= maxWorlds {
		old := o.order[0]
		o.order = o.order[1:]
		if ow, ok := o.worlds[old]; ok {
			ow.stop()
			delete(o.worlds, old)
		}
	}
	o.worlds[k] = w
	o.order = append(o.order, k)
	return w, w.rejected, nil
}

func (o *oracle) admit(raw json.RawMessage) admissionAnswer {
	fail := func(format string, args ...any) admissionAnswer {
		return admissionAnswer{Error: fmt.Sprintf(format, args...)}
	}
	var in admissionCase
	if err := json.Unmarshal(raw, &in); err != nil {
		return fail("cannot decode the case: %v", err)
	}
	if len(in.Request) == 0 || string(in.Request) == "null" {
		return fail("the case has no request")
	}
	var req admissionv1.AdmissionRequest
	if err := json.Unmarshal(in.Request, &req); err != nil {
		return fail("cannot decode request: %v", err)
	}
	attrs, err := attributesFor(&req)
	if err != nil {
		return fail("%v", err)
	}

	// A namespaced request's namespace exists in a real cluster; when the
	// case does not describe it, it exists with only the label kube-apiserver
	// gives every namespace (added in newWorld).
	namespaces := in.Namespaces
	if ns := req.Namespace; ns != "" && !hasNamespace(namespaces, ns) {
		namespaces = append(append([]json.RawMessage{}, namespaces...),
			json.RawMessage(fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, ns)))
	}
	w, rejected, err := o.worldFor(&in, namespaces)
	if err != nil {
		return fail("%v", err)
	}

	objectInterfaces := &admission.RuntimeObjectInterfaces{
		ObjectCreater:            clientgoscheme.Scheme,
		ObjectTyper:              clientgoscheme.Scheme,
		ObjectDefaulter:          clientgoscheme.Scheme,
		ObjectConvertor:          clientgoscheme.Scheme,
		EquivalentResourceMapper: equivalentResources(&req, in.EquivalentResources),
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = audit.WithAuditContext(ctx)
	ac := audit.AuditContextFrom(ctx)
	if err := ac.Init(audit.RequestAuditConfig{Level: auditinternal.LevelMetadata}, nil); err != nil {
		return fail("audit context: %v", err)
	}

	// Warnings go through kube-apiserver's own warning recorder (which
	// de-duplicates and truncates) and come back as HTTP Warning headers.
	var admitErr error
	handler := filters.WithWarningRecorder(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		admitErr = w.plugin.Validate(r.Context(), attrs, objectInterfaces)
		rw.WriteHeader(http.StatusOK)
	}))
	rec := httptest.NewRecorder()
	httpReq := httptest.NewRequest(http.MethodPost, "/", nil).WithContext(ctx)
	handler.ServeHTTP(rec, httpReq)

	answer := admissionAnswer{Allowed: true, Code: http.StatusOK, Warnings: []string{}, AuditAnnotations: map[string]string{}, Rejected: rejected}
	if admitErr != nil {
		status := responsewriters.ErrorToAPIStatus(admitErr)
		answer.Allowed = false
		answer.Code = status.Code
		answer.Reason = string(status.Reason)
		answer.Message = status.Message
	}
	parsed, _ := utilnet.ParseWarningHeaders(rec.Result().Header.Values("Warning"))
	for _, w := range parsed {
		answer.Warnings = append(answer.Warnings, w.Text)
	}
	for k, v := range ac.GetEventAnnotations() {
		answer.AuditAnnotations[k] = v
	}
	return answer
}

func hasNamespace(namespaces []json.RawMessage, name string) bool {
	for _, raw := range namespaces {
		var ns struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if json.Unmarshal(raw, &ns) == nil && ns.Metadata.Name == name {
			return true
		}
	}
	return false
}

// attributesFor builds the admission.Attributes kube-apiserver would hand to
// its admission chain for this request. kind/resource are what the client
// asked for (requestKind/requestResource when present).
func attributesFor(req *admissionv1.AdmissionRequest) (admission.Attributes, error) {
	kind := schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	resource := schema.GroupVersionResource{Group: req.Resource.Group, Version: req.Resource.Version, Resource: req.Resource.Resource}
	subResource := req.SubResource
	if req.RequestKind != nil {
		kind = schema.GroupVersionKind{Group: req.RequestKind.Group, Version: req.RequestKind.Version, Kind: req.RequestKind.Kind}
	}
	if req.RequestResource != nil {
		resource = schema.GroupVersionResource{Group: req.RequestResource.Group, Version: req.RequestResource.Version, Resource: req.RequestResource.Resource}
	}
	if req.RequestSubResource != "" {
		subResource = req.RequestSubResource
	}
	if kind.Kind == "" || resource.Resource == "" {
		return nil, fmt.Errorf("request.kind and request.resource are required")
	}
	var op admission.Operation
	switch req.Operation {
	case admissionv1.Create:
		op = admission.Create
	case admissionv1.Update:
		op = admission.Update
	case admissionv1.Delete:
		op = admission.Delete
	case admissionv1.Connect:
		op = admission.Connect
	default:
		return nil, fmt.Errorf("request.operation %q is not CREATE, UPDATE, DELETE or CONNECT", req.Operation)
	}
	object, err := unstructuredOrNil(req.Object.Raw, "request.object")
	if err != nil {
		return nil, err
	}
	oldObject, err := unstructuredOrNil(req.OldObject.Raw, "request.oldObject")
	if err != nil {
		return nil, err
	}
	options, err := unstructuredOrNil(req.Options.Raw, "request.options")
	if err != nil {
		return nil, err
	}
	dryRun := req.DryRun != nil && *req.DryRun
	return admission.NewAttributesRecord(object, oldObject, kind, req.Namespace, req.Name, resource, subResource, op, options, dryRun, userFor(req.UserInfo)), nil
}

func userFor(u authenticationv1.UserInfo) user.Info {
	extra := map[string][]string{}
	for k, v := range u.Extra {
		extra[k] = []string(v)
	}
	if len(extra) == 0 {
		extra = nil
	}
	return &user.DefaultInfo{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra}
}

// unstructuredOrNil decodes a JSON object the way kube-apiserver's JSON
// decoding does for unstructured content (integers as int64, other numbers
// as float64). Absent or null is a nil object (not a typed nil).
func unstructuredOrNil(raw []byte, what string) (runtime.Object, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, nil
	}
	var m map[string]interface{}
	if err := utiljson.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// equivalentResources is the resource registry matchPolicy: Equivalent
// consults: the request's own resource, plus the groups the case lists.
func equivalentResources(req *admissionv1.AdmissionRequest, groups [][]resourceKind) runtime.EquivalentResourceMapper {
	identity := map[schema.GroupResource]string{}
	for i, g := range groups {
		for _, rk := range g {
			identity[schema.GroupResource{Group: rk.Group, Resource: rk.Resource}] = fmt.Sprintf("equivalent-%d", i)
		}
	}
	registry := runtime.NewEquivalentResourceRegistryWithIdentity(func(gr schema.GroupResource) string {
		if id, ok := identity[gr]; ok {
			return id
		}
		return gr.String()
	})
	for _, g := range groups {
		for _, rk := range g {
			registry.RegisterKindFor(schema.GroupVersionResource{Group: rk.Group, Version: rk.Version, Resource: rk.Resource}, "", schema.GroupVersionKind{Group: rk.Group, Version: rk.Version, Kind: rk.Kind})
		}
	}
	kind, resource := req.Kind, req.Resource
	if req.RequestKind != nil {
		kind = *req.RequestKind
	}
	if req.RequestResource != nil {
		resource = *req.RequestResource
	}
	sub := req.SubResource
	if req.RequestSubResource != "" {
		sub = req.RequestSubResource
	}
	registry.RegisterKindFor(schema.GroupVersionResource{Group: resource.Group, Version: resource.Version, Resource: resource.Resource}, sub,
		schema.GroupVersionKind{Group: kind.Group, Version: kind.Version, Kind: kind.Kind})
	return registry
}
