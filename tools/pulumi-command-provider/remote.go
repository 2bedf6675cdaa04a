package main

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
)

// ---- command:remote:Command ----------------------------------------------------------------

type RemoteCommand struct{}

type RemoteCommandArgs struct {
	CommonArgs
	Connection *Connection `pulumi:"connection" provider:"secret"`
}

type RemoteCommandState struct {
	RemoteCommandArgs
	CommandOutputs
}

func (c *RemoteCommand) Annotate(a infer.Annotator) {
	a.SetToken("remote", "Command")
	a.Describe(c, "Runs commands on a remote host over SSH: create on create, update (or create) on update, delete on delete.")
}

func (a *RemoteCommandArgs) Annotate(an infer.Annotator) {
	an.Describe(&a.Connection, "The parameters with which to connect to the remote host.")
}

func (RemoteCommand) Create(ctx context.Context, req infer.CreateRequest[RemoteCommandArgs]) (
	infer.CreateResponse[RemoteCommandState], error,
) {
	state := RemoteCommandState{RemoteCommandArgs: req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil {
		return infer.CreateResponse[RemoteCommandState]{}, err
	}
	if req.DryRun || req.Inputs.Create == nil {
		return infer.CreateResponse[RemoteCommandState]{ID: id, Output: state}, nil
	}
	state.CommandOutputs, err = runRemote(ctx, req.Inputs, *req.Inputs.Create, nil)
	return infer.CreateResponse[RemoteCommandState]{ID: id, Output: state}, err
}

func (RemoteCommand) Update(ctx context.Context, req infer.UpdateRequest[RemoteCommandArgs, RemoteCommandState]) (
	infer.UpdateResponse[RemoteCommandState], error,
) {
	state := RemoteCommandState{RemoteCommandArgs: req.Inputs, CommandOutputs: req.State.CommandOutputs}
	cmd := req.Inputs.Update
	if cmd == nil {
		cmd = req.Inputs.Create
	}
	if req.DryRun || cmd == nil {
		return infer.UpdateResponse[RemoteCommandState]{Output: state}, nil
	}
	var err error
	state.CommandOutputs, err = runRemote(ctx, req.Inputs, *cmd, &req.State.CommandOutputs)
	return infer.UpdateResponse[RemoteCommandState]{Output: state}, err
}

func (RemoteCommand) Delete(ctx context.Context, req infer.DeleteRequest[RemoteCommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	_, err := runRemote(ctx, req.State.RemoteCommandArgs, *req.State.Delete, &req.State.CommandOutputs)
	return infer.DeleteResponse{}, err
}

func (RemoteCommand) WireDependencies(f infer.FieldSelector, args *RemoteCommandArgs, state *RemoteCommandState) {
	// A new connection (e.g. a recreated host) makes the outputs unknown but not secret.
	wireOutputs(f, &args.CommonArgs, &state.CommandOutputs, f.InputField(&args.Connection).Computed())
	f.OutputField(&state.Connection).AlwaysSecret()
	f.OutputField(&state.Connection).DependsOn(f.InputField(&args.Connection))
}

func runRemote(ctx context.Context, in RemoteCommandArgs, command string, prev *CommandOutputs) (CommandOutputs, error) {
	if in.Connection == nil {
		return CommandOutputs{}, fmt.Errorf("connection is required")
	}
	client, err := in.Connection.dial(ctx)
	if err != nil {
		return CommandOutputs{}, err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return CommandOutputs{}, fmt.Errorf("opening an SSH session: %w", err)
	}
	defer session.Close()

	env := map[string]string{}
	for k, v := range in.Environment {
		env[k] = v
	}
	for _, kv := range previousOutputEnv(in.AddPreviousOutputInEnv, prev) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	// sshd only accepts variables its AcceptEnv allows; the rest are exported by the shell.
	var exports []string
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := session.Setenv(k, env[k]); err != nil {
			exports = append(exports, "export "+k+"="+shellQuote(env[k]))
		}
	}
	if len(exports) > 0 {
		command = strings.Join(exports, "; ") + "; " + command
	}
	if in.Stdin != nil {
		session.Stdin = strings.NewReader(*in.Stdin)
	}
	var stdout, stderr bytes.Buffer
	session.Stdout, session.Stderr = streams(ctx, in.Logging, &stdout, &stderr)

	done := make(chan error, 1)
	go func() { done <- session.Run(command) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = session.Signal(ssh.SIGTERM)
		client.Close()
		err = ctx.Err()
	}
	out := CommandOutputs{Stdout: trimNL(stdout.String()), Stderr: trimNL(stderr.String())}
	if err != nil {
		return out, commandError(err, out)
	}
	return out, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
