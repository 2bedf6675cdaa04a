//go:build tools

// Pins the Pulumi CLI; build.sh builds github.com/pulumi/pulumi/pkg/v3/cmd/pulumi from it.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
