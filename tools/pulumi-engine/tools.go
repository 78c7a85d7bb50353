//go:build tools

// Package tools pins the Pulumi engine's main packages so that `go mod tidy`
// keeps them in this wrapper module.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
	_ "github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3"
)
