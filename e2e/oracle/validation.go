package main

import (
	"encoding/json"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kubernetes/pkg/apis/admissionregistration"
	admissionregistrationinstall "k8s.io/kubernetes/pkg/apis/admissionregistration/install"
	"k8s.io/kubernetes/pkg/apis/admissionregistration/validation"
	sigsjson "sigs.k8s.io/json"
)

// apiScheme holds kube-apiserver's admissionregistration types (internal and
// versioned) with their defaulting and conversion functions.
var apiScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	admissionregistrationinstall.Install(s)
	return s
}()

// decodeStrict decodes as kube-apiserver does under fieldValidation=Strict
// (kubectl's default): unknown and duplicate fields are errors.
func decodeStrict(raw json.RawMessage, into any, kind string) error {
	strictErrs, err := sigsjson.UnmarshalStrict(raw, into, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("%s in version \"v1\" cannot be handled as a %s: %v", kind, kind, err)
	}
	if len(strictErrs) > 0 {
		return fmt.Errorf("%s in version \"v1\" cannot be handled as a %s: %v", kind, kind, runtime.NewStrictDecodingError(strictErrs))
	}
	return nil
}

// admitPolicy does what kube-apiserver does on CREATE of a
// ValidatingAdmissionPolicy: decode, default, convert to the internal type and
// validate. It returns the defaulted v1 object the informers would serve, or
// the rejection with kube-apiserver's message.
func admitPolicy(raw json.RawMessage, index int) (*admissionregistrationv1.ValidatingAdmissionPolicy, *rejection, error) {
	var p admissionregistrationv1.ValidatingAdmissionPolicy
	reject := func(msg string) (*admissionregistrationv1.ValidatingAdmissionPolicy, *rejection, error) {
		return nil, &rejection{Kind: "ValidatingAdmissionPolicy", Name: p.Name, Index: index, Message: msg}, nil
	}
	if err := decodeStrict(raw, &p, "ValidatingAdmissionPolicy"); err != nil {
		return reject(err.Error())
	}
	if p.APIVersion != "admissionregistration.k8s.io/v1" || p.Kind != "ValidatingAdmissionPolicy" {
		return nil, nil, fmt.Errorf("policies[%d] is %s, not admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy", index, docKind(raw))
	}
	apiScheme.Default(&p)
	var internal admissionregistration.ValidatingAdmissionPolicy
	if err := apiScheme.Convert(&p, &internal, nil); err != nil {
		return nil, nil, fmt.Errorf("policies[%d]: converting: %v", index, err)
	}
	if errs := validation.ValidateValidatingAdmissionPolicy(&internal); len(errs) > 0 {
		return reject(apierrors.NewInvalid(policyKind, p.Name, errs).Error())
	}
	p.ResourceVersion = "1"
	return &p, nil, nil
}

// admitBinding is admitPolicy for a ValidatingAdmissionPolicyBinding.
func admitBinding(raw json.RawMessage, index int) (*admissionregistrationv1.ValidatingAdmissionPolicyBinding, *rejection, error) {
	var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
	reject := func(msg string) (*admissionregistrationv1.ValidatingAdmissionPolicyBinding, *rejection, error) {
		return nil, &rejection{Kind: "ValidatingAdmissionPolicyBinding", Name: b.Name, Index: index, Message: msg}, nil
	}
	if err := decodeStrict(raw, &b, "ValidatingAdmissionPolicyBinding"); err != nil {
		return reject(err.Error())
	}
	if b.APIVersion != "admissionregistration.k8s.io/v1" || b.Kind != "ValidatingAdmissionPolicyBinding" {
		return nil, nil, fmt.Errorf("bindings[%d] is %s, not admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding", index, docKind(raw))
	}
	apiScheme.Default(&b)
	var internal admissionregistration.ValidatingAdmissionPolicyBinding
	if err := apiScheme.Convert(&b, &internal, nil); err != nil {
		return nil, nil, fmt.Errorf("bindings[%d]: converting: %v", index, err)
	}
	if errs := validation.ValidateValidatingAdmissionPolicyBinding(&internal); len(errs) > 0 {
		return reject(apierrors.NewInvalid(bindingKind, b.Name, errs).Error())
	}
	b.ResourceVersion = "1"
	return &b, nil, nil
}
