package main

import (
	"encoding/json"
	"sort"

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apiserver/pkg/cel/environment"
)

// environmentCase asks which functions and macros Kubernetes' CEL base
// environment declares: {"environment": "NewExpressions"|"StoredExpressions",
// "compatibilityVersion": "1.N"} (empty version: this release's default).
type environmentCase struct {
	Environment          string `json:"environment"`
	CompatibilityVersion string `json:"compatibilityVersion"`
}

// declaredFunction says how a function can be called: as a member
// (`x.f()`), as a global (`f(x)`), or both.
type declaredFunction struct {
	Member bool `json:"member"`
	Global bool `json:"global"`
}

type environmentAnswer struct {
	CompatibilityVersion string                      `json:"compatibilityVersion,omitempty"`
	Functions            map[string]declaredFunction `json:"functions,omitempty"`
	Macros               []string                    `json:"macros,omitempty"`
	Error                string                      `json:"error,omitempty"`
}

// describeEnvironment lists the base environment's declarations as the
// admission plugin extends it (no variables: those are per policy).
func describeEnvironment(raw json.RawMessage) environmentAnswer {
	var in environmentCase
	if err := json.Unmarshal(raw, &in); err != nil {
		return environmentAnswer{Error: "cannot decode the case: " + err.Error()}
	}
	envType := environment.NewExpressions
	switch in.Environment {
	case string(environment.NewExpressions):
	case string(environment.StoredExpressions):
		envType = environment.StoredExpressions
	default:
		return environmentAnswer{Error: "environment must be NewExpressions or StoredExpressions"}
	}
	v := environment.DefaultCompatibilityVersion()
	if in.CompatibilityVersion != "" {
		parsed, err := version.ParseMajorMinor(in.CompatibilityVersion)
		if err != nil {
			return environmentAnswer{Error: "compatibilityVersion: " + err.Error()}
		}
		v = parsed
	}
	env, err := environment.MustBaseEnvSet(v).Env(envType)
	if err != nil {
		return environmentAnswer{Error: "environment: " + err.Error()}
	}
	out := environmentAnswer{
		CompatibilityVersion: v.String(),
		Functions:            map[string]declaredFunction{},
	}
	for name, decl := range env.Functions() {
		var d declaredFunction
		for _, o := range decl.OverloadDecls() {
			if o.IsMemberFunction() {
				d.Member = true
			} else {
				d.Global = true
			}
		}
		out.Functions[name] = d
	}
	for _, m := range env.Macros() {
		out.Macros = append(out.Macros, m.Function()+"/"+macroArity(m.ArgCount(), m.IsReceiverStyle()))
	}
	sort.Strings(out.Macros)
	return out
}

func macroArity(args int, receiver bool) string {
	s := "global"
	if receiver {
		s = "member"
	}
	if args == 0 {
		return s + ":vararg"
	}
	return s + ":" + string(rune('0'+args))
}
