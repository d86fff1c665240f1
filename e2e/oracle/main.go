// Command oracle answers admission questions the way kube-apiserver does, by
// running kube-apiserver's own ValidatingAdmissionPolicy admission plugin
// (k8s.io/apiserver/pkg/admission/plugin/policy/validating) and its CEL
// environment at the release pinned in e2e/go.mod. It is the reference the
// differential tests compare safety-gate with (issue 11).
//
// Input on stdin: one JSON value, or any number of JSON values one after
// another (JSON lines), or one JSON array of values. Each value is either
//
//	an admission case: {"policies":[VAP...], "bindings":[VAPB...], "params":[obj...],
//	                    "namespaces":[Namespace...], "request": AdmissionReview.request}
//	a CEL case:        {"expression": "...", "bindings": {"object": ..., ...},
//	                    "envType": "StoredExpressions" | "NewExpressions"}
//	an RBAC question:  {"authorize": {"user", "groups", "verb", "path" | "resourceRequest": true,
//	                    "apiGroup", "resource", "subresource", "namespace", "name"}, "rbac": [...]}
//	a mutating case:   {"mutatingPolicies":[MAP...], "mutatingBindings":[MAPB...],
//	                    "namespaces":[Namespace...], "request": AdmissionReview.request}
//	                   (kube-apiserver's MutatingAdmissionPolicy plugin; see mutating.go)
//	an environment question: {"environment": "NewExpressions" | "StoredExpressions",
//	                    "compatibilityVersion": "1.N"} (environment.go)
//
// An admission case may carry "rbac": [Role, ClusterRole, RoleBinding,
// ClusterRoleBinding...]; its policies' `authorizer` is then Kubernetes' RBAC
// authorizer over them (rbac.go), otherwise it answers "no opinion".
//
// Output on stdout: one JSON line per input value, in order (see admission.go
// and celeval.go for the fields). A case that cannot be run carries "error".
//
//	oracle            read cases from stdin
//	oracle -version   print the Kubernetes release and CEL compatibility version
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/klog/v2"
)

func main() {
	showVersion := flag.Bool("version", false, "print the Kubernetes release and the CEL compatibility version, then exit")
	klog.InitFlags(nil)
	flag.Parse()
	// The plugin logs through klog; keep stdout for answers only.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)

	if *showVersion {
		fmt.Printf("{\"kubernetes\":%q,\"celCompatibilityVersion\":%q}\n", kubernetesRelease, environment.DefaultCompatibilityVersion().String())
		return
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	o := newOracle()
	defer o.close()
	if err := run(o, os.Stdin, out); err != nil {
		fmt.Fprintf(os.Stderr, "oracle: %v\n", err)
		out.Flush()
		os.Exit(2)
	}
}

// kubernetesRelease is the release whose code this binary runs (e2e/go.mod).
const kubernetesRelease = "v1.37.2"

// run answers every case read from in, one JSON line each, flushing after
// each answer so a caller can stream cases through one process.
func run(o *oracle, in io.Reader, out *bufio.Writer) error {
	dec := json.NewDecoder(bufio.NewReaderSize(in, 1<<20))
	dec.UseNumber()
	answer := func(raw json.RawMessage) error {
		res := o.handle(raw)
		b, err := json.Marshal(res)
		if err != nil {
			b, _ = json.Marshal(map[string]string{"error": "cannot encode the answer: " + err.Error()})
		}
		if _, err := out.Write(append(b, '\n')); err != nil {
			return err
		}
		return out.Flush()
	}
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) > 0 && trimmed[0] == '[' {
			var items []json.RawMessage
			if err := json.Unmarshal(trimmed, &items); err != nil {
				return fmt.Errorf("reading input array: %w", err)
			}
			for _, item := range items {
				if err := answer(item); err != nil {
					return err
				}
			}
			continue
		}
		if err := answer(raw); err != nil {
			return err
		}
	}
}

// handle answers one case of either kind.
func (o *oracle) handle(raw json.RawMessage) any {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return map[string]string{"error": "a case must be a JSON object: " + err.Error()}
	}
	if _, ok := probe["expression"]; ok {
		return evalCEL(raw)
	}
	if _, ok := probe["authorize"]; ok {
		return authorize(raw)
	}
	if _, ok := probe["environment"]; ok {
		return describeEnvironment(raw)
	}
	if _, ok := probe["mutatingPolicies"]; ok {
		return o.mutate(raw)
	}
	return o.admit(raw)
}
