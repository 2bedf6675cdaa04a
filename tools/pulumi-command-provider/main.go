// pulumi-resource-command: a small re-implementation of the pulumi-command provider
// (github.com/pulumi/pulumi-command) for the resources bulletproof-mail uses, wire-compatible
// with the pulumi-command 1.2.1 Python SDK. Upstream's provider module is not served by the
// Go module proxy this project builds from, so we serve the same tokens and property names:
//
//	command:local:Command, command:local:run, command:remote:Command,
//	command:remote:CopyToRemote, command:remote:CopyFile (deprecated upstream)
//
// Built on github.com/pulumi/pulumi-go-provider's infer package, which derives the schema,
// secret flow and diffing from the Go structs below.
package main

import (
	"context"
	"fmt"
	"os"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
)

// Version is the pulumi-command release this provider stands in for (the Python SDK asks the
// engine for exactly this plugin version).
var Version = "1.2.1"

func provider() (p.Provider, error) {
	return infer.NewProviderBuilder().
		WithDisplayName("Command").
		WithDescription("Run commands locally or over SSH (bulletproof-mail re-implementation of pulumi-command).").
		WithNamespace("pulumi").
		WithResources(
			infer.Resource(&LocalCommand{}),
			infer.Resource(&RemoteCommand{}),
			infer.Resource(&CopyToRemote{}),
			infer.Resource(&CopyFile{}),
		).
		WithFunctions(infer.Function(&Run{})).
		WithModuleMap(map[tokens.ModuleName]tokens.ModuleName{"main": "index"}).
		Build()
}

func main() {
	prov, err := provider()
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %s\n", err)
		os.Exit(1)
	}
	if err := prov.Run(context.Background(), "command", Version); err != nil {
		fmt.Fprintf(os.Stderr, "error: %s\n", err)
		os.Exit(1)
	}
}
