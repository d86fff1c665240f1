package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

// celCase evaluates one expression in Kubernetes' CEL environment.
type celCase struct {
	Expression string `json:"expression"`
	// Bindings: variable name -> JSON value (integers are int, other numbers
	// double, as kube-apiserver decodes objects). Every name is declared dyn.
	Bindings map[string]json.RawMessage `json:"bindings"`
	// EnvType: "StoredExpressions" (default; what admission evaluates with)
	// or "NewExpressions" (what kube-apiserver accepts in a new policy).
	EnvType string `json:"envType"`
	// CompatibilityVersion: "1.N" builds the environment as a kube-apiserver
	// whose CEL compatibility version is 1.N (a release 1.(N+1) server checks new
	// expressions at 1.N); empty means this release's default.
	CompatibilityVersion string `json:"compatibilityVersion"`
}

// celAnswer: Value/Type on success; Error with Stage "compile" or "eval".
type celAnswer struct {
	Value any    `json:"value,omitempty"`
	Type  string `json:"type,omitempty"`
	Error string `json:"error,omitempty"`
	Stage string `json:"stage,omitempty"`
	Cost  *int64 `json:"cost,omitempty"`
}

var (
	baseEnvOnce sync.Once
	baseEnv     *environment.EnvSet
)

func kubeBaseEnv() *environment.EnvSet {
	baseEnvOnce.Do(func() {
		baseEnv = environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	})
	return baseEnv
}

func evalCEL(raw json.RawMessage) celAnswer {
	var in celCase
	if err := json.Unmarshal(raw, &in); err != nil {
		return celAnswer{Error: "cannot decode the case: " + err.Error(), Stage: "input"}
	}
	envType := environment.StoredExpressions
	switch in.EnvType {
	case "", string(environment.StoredExpressions):
	case string(environment.NewExpressions):
		envType = environment.NewExpressions
	default:
		return celAnswer{Error: fmt.Sprintf("envType %q is not StoredExpressions or NewExpressions", in.EnvType), Stage: "input"}
	}
	base := kubeBaseEnv()
	if in.CompatibilityVersion != "" {
		v, err := version.ParseMajorMinor(in.CompatibilityVersion)
		if err != nil {
			return celAnswer{Error: "compatibilityVersion: " + err.Error(), Stage: "input"}
		}
		base = environment.MustBaseEnvSet(v)
	}
	names := make([]string, 0, len(in.Bindings))
	for n := range in.Bindings {
		names = append(names, n)
	}
	sort.Strings(names)
	activation := map[string]any{}
	var decls []cel.EnvOption
	for _, n := range names {
		var v any
		if err := utiljson.Unmarshal(in.Bindings[n], &v); err != nil {
			return celAnswer{Error: fmt.Sprintf("binding %s: %v", n, err), Stage: "input"}
		}
		activation[n] = v
		decls = append(decls, cel.Variable(n, cel.DynType))
	}
	// Declared the way the admission plugin declares object/oldObject/params
	// (plugin/cel/compile.go): an extension of the base env, with strict cost.
	envSet, err := base.Extend(environment.VersionedOptions{
		IntroducedVersion: version.MajorMinor(1, 0),
		EnvOptions:        decls,
	}, environment.StrictCostOpt)
	if err != nil {
		return celAnswer{Error: "environment: " + err.Error(), Stage: "input"}
	}
	env, err := envSet.Env(envType)
	if err != nil {
		return celAnswer{Error: "environment: " + err.Error(), Stage: "input"}
	}
	ast, issues := env.Compile(in.Expression)
	if issues != nil && issues.Err() != nil {
		return celAnswer{Error: "compilation failed: " + issues.String(), Stage: "compile"}
	}
	prog, err := env.Program(ast, cel.InterruptCheckFrequency(celconfig.CheckFrequency))
	if err != nil {
		return celAnswer{Error: "program instantiation failed: " + err.Error(), Stage: "compile"}
	}
	val, details, err := prog.ContextEval(context.Background(), activation)
	var cost *int64
	if details != nil && details.ActualCost() != nil {
		c := int64(*details.ActualCost())
		cost = &c
	}
	if err != nil {
		return celAnswer{Error: err.Error(), Stage: "eval", Cost: cost}
	}
	return celAnswer{Value: celToJSON(val), Type: typeName(val), Cost: cost}
}

func typeName(v ref.Val) string {
	if v == nil {
		return ""
	}
	if o, ok := v.(*types.Optional); ok {
		if o.HasValue() {
			return "optional(" + typeName(o.GetValue()) + ")"
		}
		return "optional"
	}
	return v.Type().TypeName()
}

// celToJSON renders a CEL value as JSON: ints and uints as JSON integers,
// doubles as numbers ("NaN", "Infinity", "-Infinity" as strings), bytes as
// base64, maps with their keys as strings, optionals as {"optional": v} or
// {"optional": null}, timestamps/durations/types as their string form.
func celToJSON(v ref.Val) any {
	switch t := v.(type) {
	case types.Null:
		return nil
	case types.Bool:
		return bool(t)
	case types.Int:
		return int64(t)
	case types.Uint:
		return uint64(t)
	case types.Double:
		f := float64(t)
		switch {
		case math.IsNaN(f):
			return "NaN"
		case math.IsInf(f, 1):
			return "Infinity"
		case math.IsInf(f, -1):
			return "-Infinity"
		}
		return f
	case types.String:
		return string(t)
	case types.Bytes:
		return base64.StdEncoding.EncodeToString([]byte(t))
	case *types.Optional:
		if t.HasValue() {
			return map[string]any{"optional": celToJSON(t.GetValue())}
		}
		return map[string]any{"optional": nil}
	}
	if l, ok := v.(traits.Lister); ok {
		out := []any{}
		it := l.Iterator()
		for it.HasNext() == types.True {
			out = append(out, celToJSON(it.Next()))
		}
		return out
	}
	if m, ok := v.(traits.Mapper); ok {
		out := map[string]any{}
		it := m.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			key := fmt.Sprint(k.Value())
			out[key] = celToJSON(m.Get(k))
		}
		return out
	}
	if s, ok := v.ConvertToType(types.StringType).(types.String); ok {
		return string(s)
	}
	return fmt.Sprint(v.Value())
}
