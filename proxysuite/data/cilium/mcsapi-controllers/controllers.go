// Package controllers declares the one identifier Cilium v1.20.2 uses from sigs.k8s.io/mcs-api/controllers.
package controllers

// DerivedServiceAnnotation names, on a ServiceImport, the Service derived from it. The value is the one Cilium
// documents for this annotation (Documentation/network/clustermesh/mcsapi.rst, line 208, in the pinned module).
const DerivedServiceAnnotation = "multicluster.kubernetes.io/derived-service"
