//go:build tools

// Package tools makes `go mod tidy` keep the requirements of the helm binary.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
