package main

import (
	"context"
	"encoding/json"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac"
)

// rbacAuthorizer is Kubernetes' own RBAC authorizer (the one kube-apiserver
// runs with --authorization-mode=RBAC) over the Roles, ClusterRoles,
// RoleBindings and ClusterRoleBindings of a case: the `authorizer` of the
// policies then answers as it would in a cluster holding exactly those.
func rbacAuthorizer(docs []json.RawMessage) (*rbac.RBACAuthorizer, error) {
	namespaced := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	roles, roleBindings := namespaced(), namespaced()
	clusterRoles, clusterRoleBindings := namespaced(), namespaced()
	for i, raw := range docs {
		var tm metav1.TypeMeta
		if err := json.Unmarshal(raw, &tm); err != nil {
			return nil, fmt.Errorf("rbac[%d]: %v", i, err)
		}
		var (
			obj   interface{}
			store cache.Indexer
		)
		switch tm.Kind {
		case "Role":
			obj, store = &rbacv1.Role{}, roles
		case "ClusterRole":
			obj, store = &rbacv1.ClusterRole{}, clusterRoles
		case "RoleBinding":
			obj, store = &rbacv1.RoleBinding{}, roleBindings
		case "ClusterRoleBinding":
			obj, store = &rbacv1.ClusterRoleBinding{}, clusterRoleBindings
		default:
			return nil, fmt.Errorf("rbac[%d]: kind %q is not Role, ClusterRole, RoleBinding or ClusterRoleBinding", i, tm.Kind)
		}
		if err := json.Unmarshal(raw, obj); err != nil {
			return nil, fmt.Errorf("rbac[%d]: %v", i, err)
		}
		if err := store.Add(obj); err != nil {
			return nil, fmt.Errorf("rbac[%d]: %v", i, err)
		}
	}
	return rbac.New(
		&rbac.RoleGetter{Lister: rbaclisters.NewRoleLister(roles)},
		&rbac.RoleBindingLister{Lister: rbaclisters.NewRoleBindingLister(roleBindings)},
		&rbac.ClusterRoleGetter{Lister: rbaclisters.NewClusterRoleLister(clusterRoles)},
		&rbac.ClusterRoleBindingLister{Lister: rbaclisters.NewClusterRoleBindingLister(clusterRoleBindings)},
	), nil
}

// authorizeCase asks the RBAC authorizer of `rbac` one question, with the
// attributes kube-apiserver's CEL authz library builds (API version "*" for
// resource checks): what a SubjectAccessReview to a cluster holding exactly
// those RBAC objects would answer.
type authorizeCase struct {
	Authorize struct {
		User            string              `json:"user"`
		UID             string              `json:"uid"`
		Groups          []string            `json:"groups"`
		Extra           map[string][]string `json:"extra"`
		Verb            string              `json:"verb"`
		Path            string              `json:"path"`
		ResourceRequest bool                `json:"resourceRequest"`
		APIGroup        string              `json:"apiGroup"`
		Resource        string              `json:"resource"`
		Subresource     string              `json:"subresource"`
		Namespace       string              `json:"namespace"`
		Name            string              `json:"name"`
	} `json:"authorize"`
	RBAC []json.RawMessage `json:"rbac"`
}

type authorizeAnswer struct {
	Decision        string `json:"decision,omitempty"`
	Reason          string `json:"reason"`
	EvaluationError string `json:"evaluationError,omitempty"`
	Error           string `json:"error,omitempty"`
}

func authorize(raw json.RawMessage) authorizeAnswer {
	var in authorizeCase
	if err := json.Unmarshal(raw, &in); err != nil {
		return authorizeAnswer{Error: "cannot decode the case: " + err.Error()}
	}
	authz, err := rbacAuthorizer(in.RBAC)
	if err != nil {
		return authorizeAnswer{Error: err.Error()}
	}
	a := in.Authorize
	attrs := &authorizer.AttributesRecord{
		User:            &user.DefaultInfo{Name: a.User, UID: a.UID, Groups: a.Groups, Extra: a.Extra},
		Verb:            a.Verb,
		Path:            a.Path,
		ResourceRequest: a.ResourceRequest,
		APIGroup:        a.APIGroup,
		Resource:        a.Resource,
		Subresource:     a.Subresource,
		Namespace:       a.Namespace,
		Name:            a.Name,
	}
	if a.ResourceRequest {
		attrs.APIVersion = "*"
	}
	decision, reason, err := authz.Authorize(context.Background(), attrs)
	answer := authorizeAnswer{Reason: reason}
	switch decision {
	case authorizer.DecisionAllow:
		answer.Decision = "Allow"
	case authorizer.DecisionDeny:
		answer.Decision = "Deny"
	default:
		answer.Decision = "NoOpinion"
	}
	if err != nil {
		answer.EvaluationError = err.Error()
	}
	return answer
}
