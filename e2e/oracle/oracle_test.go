package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const policy = `{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicy",
 "metadata":{"name":"replicas"},
 "spec":{"matchConstraints":{"resourceRules":[{"apiGroups":["apps"],"apiVersions":["v1"],"operations":["CREATE"],"resources":["deployments"]}]},
  "validations":[{"expression":"object.spec.replicas <= 5","messageExpression":"'too many: ' + string(object.spec.replicas)"}],
  "auditAnnotations":[{"key":"replicas","valueExpression":"string(object.spec.replicas)"}]}}`

func binding(actions string) string {
	return `{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicyBinding",
 "metadata":{"name":"replicas-binding"},"spec":{"policyName":"replicas","validationActions":` + actions + `}}`
}

const request = `{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"},
 "resource":{"group":"apps","version":"v1","resource":"deployments"},"name":"web","namespace":"default",
 "operation":"CREATE","userInfo":{"username":"alice"},
 "object":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},"spec":{"replicas":7}}}`

func runCases(t *testing.T, input string) []map[string]any {
	t.Helper()
	o := newOracle()
	defer o.close()
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	if err := run(o, strings.NewReader(input), w); err != nil {
		t.Fatal(err)
	}
	var answers []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		answers = append(answers, m)
	}
	return answers
}

func TestAdmissionDenyWarnAudit(t *testing.T) {
	deny := `{"policies":[` + policy + `],"bindings":[` + binding(`["Deny"]`) + `],"request":` + request + `}`
	warn := `{"policies":[` + policy + `],"bindings":[` + binding(`["Warn","Audit"]`) + `],"request":` + request + `}`
	got := runCases(t, "["+deny+","+warn+"]")
	if len(got) != 2 {
		t.Fatalf("want 2 answers, got %d", len(got))
	}
	wantMsg := `deployments.apps "web" is forbidden: ValidatingAdmissionPolicy 'replicas' with binding 'replicas-binding' denied request: too many: 7`
	if got[0]["allowed"] != false || got[0]["message"] != wantMsg || got[0]["code"] != float64(422) {
		t.Errorf("deny: %v", got[0])
	}
	if ann := got[0]["auditAnnotations"].(map[string]any); ann["replicas/replicas"] != "7" {
		t.Errorf("deny annotations: %v", ann)
	}
	warnings := got[1]["warnings"].([]any)
	if got[1]["allowed"] != true || len(warnings) != 1 || !strings.HasSuffix(warnings[0].(string), ": too many: 7") {
		t.Errorf("warn: %v", got[1])
	}
	if ann := got[1]["auditAnnotations"].(map[string]any); ann["validation.policy.admission.k8s.io/validation_failure"] == nil {
		t.Errorf("audit annotations: %v", ann)
	}
}

func TestRejectedPolicy(t *testing.T) {
	bad := strings.Replace(policy, `"object.spec.replicas <= 5"`, `"object.spec.replicas <="`, 1)
	got := runCases(t, `{"policies":[`+bad+`],"bindings":[`+binding(`["Deny"]`)+`],"request":`+request+`}`)
	rejected, _ := got[0]["rejected"].([]any)
	if got[0]["allowed"] != true || len(rejected) != 1 {
		t.Fatalf("%v", got[0])
	}
	if msg := rejected[0].(map[string]any)["message"].(string); !strings.Contains(msg, "spec.validations[0].expression: Invalid value") {
		t.Errorf("message: %s", msg)
	}
}

func TestCEL(t *testing.T) {
	got := runCases(t, `{"expression":"size('Größe')","bindings":{}}
{"expression":"object.a == 1.0","bindings":{"object":{"a":1}}}
{"expression":"nope(","bindings":{}}`)
	if got[0]["value"] != float64(5) || got[0]["type"] != "int" {
		t.Errorf("size: %v", got[0])
	}
	if got[1]["value"] != true {
		t.Errorf("cross-type: %v", got[1])
	}
	if got[2]["stage"] != "compile" {
		t.Errorf("syntax error: %v", got[2])
	}
}

func TestMutating(t *testing.T) {
	mutating := func(reinvocation, mutations string) string {
		return `{"mutatingPolicies":[{"apiVersion":"admissionregistration.k8s.io/v1","kind":"MutatingAdmissionPolicy",
 "metadata":{"name":"m"},"spec":{"reinvocationPolicy":"` + reinvocation + `",
  "matchConstraints":{"resourceRules":[{"apiGroups":["apps"],"apiVersions":["v1"],"operations":["CREATE"],"resources":["deployments"]}]},
  "mutations":` + mutations + `}}],
 "mutatingBindings":[{"apiVersion":"admissionregistration.k8s.io/v1","kind":"MutatingAdmissionPolicyBinding","metadata":{"name":"m"},"spec":{"policyName":"m"}}],
 "request":` + request + `}`
	}
	apply := `[{"patchType":"JSONPatch","jsonPatch":{"expression":"[JSONPatch{op: 'replace', path: '/spec/replicas', value: 2}]"}},
  {"patchType":"ApplyConfiguration","applyConfiguration":{"expression":"Object{metadata: Object.metadata{labels: {'a/b': 'c'}}}"}}]`
	invalid := `[{"patchType":"JSONPatch","jsonPatch":{"expression":"[JSONPatch{op: 'remove', path: '/spec/absent'}]"}}]`
	got := runCases(t, mutating("Never", apply)+mutating("Never", invalid)+mutating("Sometimes", apply))
	object, _ := got[0]["object"].(map[string]any)
	if got[0]["allowed"] != true || object == nil {
		t.Fatalf("apply: %v", got[0])
	}
	if spec := object["spec"].(map[string]any); spec["replicas"] != float64(2) {
		t.Errorf("replicas: %v", object)
	}
	if labels := object["metadata"].(map[string]any)["labels"].(map[string]any); labels["a/b"] != "c" {
		t.Errorf("labels: %v", object)
	}
	if got[1]["allowed"] != false || got[1]["code"] != float64(403) || !strings.HasPrefix(got[1]["message"].(string), "policy 'm' with binding 'm' denied request: JSON Patch: ") {
		t.Errorf("invalid patch: %v", got[1])
	}
	if rejected, _ := got[2]["rejected"].([]any); len(rejected) != 1 || !strings.Contains(rejected[0].(map[string]any)["message"].(string), `spec.reinvocationPolicy: Unsupported value: "Sometimes"`) {
		t.Errorf("rejected: %v", got[2])
	}
}
