//go:build tools

// Package tools pins the Kubernetes commands the end-to-end tests build:
// kube-apiserver, kube-controller-manager and kubectl at one release.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
