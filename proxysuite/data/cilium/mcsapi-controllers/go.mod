// Stand-in for sigs.k8s.io/mcs-api/controllers, which the Go module proxy does not serve at any version
// ("not available"). Cilium v1.20.2 imports it for one constant only (operator/pkg/gateway-api/helpers,
// pkg/clustermesh/mcsapi: DerivedServiceAnnotation), used by the MCS-API and clustermesh controllers that the
// kind provider's values leave off.
module sigs.k8s.io/mcs-api/controllers

go 1.24
