package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apiserver/pkg/admission"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
)

// benchCase is the input of BenchmarkValidatingPolicy: the documents of an
// admission case (policies, bindings, namespaces) and AdmissionReview bodies
// as a webhook receives them.
type benchCase struct {
	admissionCase
	// Review is the AdmissionReview whose decoding and evaluation is timed.
	Review json.RawMessage `json:"review"`
	// DeniedReview, when present, must be denied: proof that the policies
	// are loaded and match the request's kind before anything is timed.
	DeniedReview json.RawMessage `json:"deniedReview"`
}

// BenchmarkValidatingPolicy times kube-apiserver's ValidatingAdmissionPolicy
// plugin on one request: decode the AdmissionReview body (the request fields
// into admission/v1 types, object and oldObject into unstructured, as
// kube-apiserver's JSON decoding builds them), then Validate with an audit
// context. The plugin and its compiled policies are built once, before the
// timing. Besides ns/op it reports cpu-ns/op: the process's user+system CPU
// time over the loop per operation, which includes the garbage collector's
// work on other threads.
//
//	ORACLE_BENCH_CASE=case.json go test -run '^$' -bench ValidatingPolicy ./oracle
//
// benches/vs-apiserver.sh writes the case (the shipped policies rendered by
// `safety-gate manifests --native`, a Deployment UPDATE) and runs this next to
// the gate's engine.
func BenchmarkValidatingPolicy(b *testing.B) {
	benchmarkCase(b, false)
}

// BenchmarkValidatingPolicyEvaluateOnly is BenchmarkValidatingPolicy with the
// body decoded once, before the timing: the plugin's Validate alone, for how
// much of the whole is decoding. (The gate decodes lazily, as policies read,
// so it has no such split.)
func BenchmarkValidatingPolicyEvaluateOnly(b *testing.B) {
	benchmarkCase(b, true)
}

func benchmarkCase(b *testing.B, evaluateOnly bool) {
	// The plugin and the fake informers log through klog; keep the output to results.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	path := os.Getenv("ORACLE_BENCH_CASE")
	if path == "" {
		b.Skip("set ORACLE_BENCH_CASE to a case file (benches/vs-apiserver.sh writes one)")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var in benchCase
	if err := json.Unmarshal(raw, &in); err != nil {
		b.Fatalf("%s: %v", path, err)
	}
	first, err := decodeReview(in.Review)
	if err != nil {
		b.Fatal(err)
	}
	namespaces := in.Namespaces
	if ns := first.Namespace; ns != "" && !hasNamespace(namespaces, ns) {
		namespaces = append(append([]json.RawMessage{}, namespaces...),
			json.RawMessage(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"`+ns+`"}}`))
	}
	w, err := newWorld(in.Policies, in.Bindings, in.Params, namespaces, in.RBAC)
	if err != nil {
		b.Fatal(err)
	}
	defer w.stop()
	if len(w.rejected) > 0 {
		b.Fatalf("kube-apiserver would reject documents of the case: %+v", w.rejected)
	}
	// kube-apiserver holds one resource registry; build it once.
	objectInterfaces := &admission.RuntimeObjectInterfaces{
		ObjectCreater:            clientgoscheme.Scheme,
		ObjectTyper:              clientgoscheme.Scheme,
		ObjectDefaulter:          clientgoscheme.Scheme,
		ObjectConvertor:          clientgoscheme.Scheme,
		EquivalentResourceMapper: equivalentResources(first, nil),
	}
	if err := admitReview(w, objectInterfaces, in.Review); err != nil {
		b.Logf("the timed review is denied: %v", err)
	}
	if len(in.DeniedReview) > 0 {
		if err := admitReview(w, objectInterfaces, in.DeniedReview); err == nil {
			b.Fatal("deniedReview was allowed: the policies are not in force")
		}
	}

	b.ReportAllocs()
	if evaluateOnly {
		attrs, err := attributesFor(first)
		if err != nil {
			b.Fatal(err)
		}
		cpu0 := processCPU()
		for b.Loop() {
			_ = validate(w, objectInterfaces, attrs)
		}
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		return
	}
	cpu0 := processCPU()
	for b.Loop() {
		_ = admitReview(w, objectInterfaces, in.Review)
	}
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// decodeReview decodes an AdmissionReview body into its request.
func decodeReview(body []byte) (*admissionv1.AdmissionRequest, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, err
	}
	if review.Request == nil {
		return nil, os.ErrInvalid
	}
	return review.Request, nil
}

// admitReview decodes body and runs the plugin on it: nil when allowed.
func admitReview(w *world, objectInterfaces admission.ObjectInterfaces, body []byte) error {
	req, err := decodeReview(body)
	if err != nil {
		return err
	}
	attrs, err := attributesFor(req)
	if err != nil {
		return err
	}
	return validate(w, objectInterfaces, attrs)
}

// validate runs the plugin on attrs with an audit context, as admit does.
func validate(w *world, objectInterfaces admission.ObjectInterfaces, attrs admission.Attributes) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = audit.WithAuditContext(ctx)
	if err := audit.AuditContextFrom(ctx).Init(audit.RequestAuditConfig{Level: auditinternal.LevelMetadata}, nil); err != nil {
		return err
	}
	return w.plugin.Validate(ctx, attrs, objectInterfaces)
}

// processCPU is the user+system CPU time of this process so far, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
