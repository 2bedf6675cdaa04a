package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
)

// Logging values, as the SDK's Logging enums send them.
const (
	logStdout          = "stdout"
	logStderr          = "stderr"
	logStdoutAndStderr = "stdoutAndStderr"
	logNone            = "none"
)

// CommonArgs are the inputs local and remote commands share.
type CommonArgs struct {
	Create                 *string           `pulumi:"create,optional"`
	Update                 *string           `pulumi:"update,optional"`
	Delete                 *string           `pulumi:"delete,optional"`
	Environment            map[string]string `pulumi:"environment,optional"`
	Stdin                  *string           `pulumi:"stdin,optional"`
	Triggers               []any             `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Logging                *string           `pulumi:"logging,optional"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
}

func (a *CommonArgs) Annotate(an infer.Annotator) {
	an.Describe(&a.Create, "The command to run on create.")
	an.Describe(&a.Update, "The command to run on update; the create command re-runs when unset.")
	an.Describe(&a.Delete, "The command to run on delete; PULUMI_COMMAND_STDOUT/STDERR hold the last outputs.")
	an.Describe(&a.Environment, "Additional environment variables for the commands.")
	an.Describe(&a.Stdin, "Standard input for the commands.")
	an.Describe(&a.Triggers, "Any change to these values replaces the resource.")
	an.Describe(&a.Logging, "Which streams are logged: stdout, stderr, stdoutAndStderr (default) or none.")
	an.Describe(&a.AddPreviousOutputInEnv, "Pass the previous stdout/stderr as PULUMI_COMMAND_STDOUT/STDERR (default true).")
}

// CommandOutputs are what every command reports.
type CommandOutputs struct {
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

// ---- command:local:Command ----------------------------------------------------------------

type LocalCommand struct{}

type LocalCommandArgs struct {
	CommonArgs
	Dir          *string  `pulumi:"dir,optional"`
	Interpreter  []string `pulumi:"interpreter,optional"`
	AssetPaths   []string `pulumi:"assetPaths,optional"`
	ArchivePaths []string `pulumi:"archivePaths,optional"`
}

type LocalCommandState struct {
	LocalCommandArgs
	CommandOutputs
}

func (c *LocalCommand) Annotate(a infer.Annotator) {
	a.SetToken("local", "Command")
	a.Describe(c, "Runs commands on the machine running Pulumi: create on create, update (or create) on update, delete on delete.")
}

func (a *LocalCommandArgs) Annotate(an infer.Annotator) {
	an.Describe(&a.Dir, "Working directory (default: the program's directory).")
	an.Describe(&a.Interpreter, "Interpreter and arguments the command is appended to (default [\"/bin/sh\", \"-c\"]).")
	an.Describe(&a.AssetPaths, "Not implemented by this provider (accepted and ignored).")
	an.Describe(&a.ArchivePaths, "Not implemented by this provider (accepted and ignored).")
}

func (LocalCommand) Create(ctx context.Context, req infer.CreateRequest[LocalCommandArgs]) (
	infer.CreateResponse[LocalCommandState], error,
) {
	state := LocalCommandState{LocalCommandArgs: req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil {
		return infer.CreateResponse[LocalCommandState]{}, err
	}
	if req.DryRun || req.Inputs.Create == nil {
		return infer.CreateResponse[LocalCommandState]{ID: id, Output: state}, nil
	}
	state.CommandOutputs, err = runLocal(ctx, req.Inputs, *req.Inputs.Create, nil)
	return infer.CreateResponse[LocalCommandState]{ID: id, Output: state}, err
}

func (LocalCommand) Update(ctx context.Context, req infer.UpdateRequest[LocalCommandArgs, LocalCommandState]) (
	infer.UpdateResponse[LocalCommandState], error,
) {
	state := LocalCommandState{LocalCommandArgs: req.Inputs, CommandOutputs: req.State.CommandOutputs}
	cmd := req.Inputs.Update
	if cmd == nil {
		cmd = req.Inputs.Create
	}
	if req.DryRun || cmd == nil {
		return infer.UpdateResponse[LocalCommandState]{Output: state}, nil
	}
	var err error
	state.CommandOutputs, err = runLocal(ctx, req.Inputs, *cmd, &req.State.CommandOutputs)
	return infer.UpdateResponse[LocalCommandState]{Output: state}, err
}

func (LocalCommand) Delete(ctx context.Context, req infer.DeleteRequest[LocalCommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	_, err := runLocal(ctx, req.State.LocalCommandArgs, *req.State.Delete, &req.State.CommandOutputs)
	return infer.DeleteResponse{}, err
}

func (LocalCommand) WireDependencies(f infer.FieldSelector, args *LocalCommandArgs, state *LocalCommandState) {
	wireOutputs(f, &args.CommonArgs, &state.CommandOutputs,
		f.InputField(&args.Dir), f.InputField(&args.Interpreter))
}

// wireOutputs: stdout/stderr depend on what the command sees; connection details (remote)
// only make them unknown, never secret.
func wireOutputs(f infer.FieldSelector, a *CommonArgs, o *CommandOutputs, extra ...infer.InputField) {
	deps := append([]infer.InputField{
		f.InputField(&a.Create), f.InputField(&a.Update), f.InputField(&a.Environment),
		f.InputField(&a.Stdin), f.InputField(&a.Triggers),
	}, extra...)
	f.OutputField(&o.Stdout).DependsOn(deps...)
	f.OutputField(&o.Stderr).DependsOn(deps...)
}

// ---- command:local:run ---------------------------------------------------------------------

type Run struct{}

type RunArgs struct {
	Command                string            `pulumi:"command"`
	Dir                    *string           `pulumi:"dir,optional"`
	Environment            map[string]string `pulumi:"environment,optional"`
	Interpreter            []string          `pulumi:"interpreter,optional"`
	Stdin                  *string           `pulumi:"stdin,optional"`
	Logging                *string           `pulumi:"logging,optional"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
	AssetPaths             []string          `pulumi:"assetPaths,optional"`
	ArchivePaths           []string          `pulumi:"archivePaths,optional"`
}

type RunResult struct {
	RunArgs
	CommandOutputs
}

func (r *Run) Annotate(a infer.Annotator) {
	a.SetToken("local", "run")
	a.Describe(r, "Runs a command locally while the program runs (also during preview).")
}

func (Run) Invoke(ctx context.Context, req infer.FunctionRequest[RunArgs]) (infer.FunctionResponse[RunResult], error) {
	in := req.Input
	out, err := runLocal(ctx, LocalCommandArgs{
		CommonArgs: CommonArgs{Environment: in.Environment, Stdin: in.Stdin, Logging: in.Logging},
		Dir:        in.Dir, Interpreter: in.Interpreter,
	}, in.Command, nil)
	return infer.FunctionResponse[RunResult]{Output: RunResult{RunArgs: in, CommandOutputs: out}}, err
}

// ---- running ---------------------------------------------------------------------------------

func runLocal(ctx context.Context, in LocalCommandArgs, command string, prev *CommandOutputs) (CommandOutputs, error) {
	interp := in.Interpreter
	if len(interp) == 0 {
		interp = []string{"/bin/sh", "-c"}
	}
	cmd := exec.CommandContext(ctx, interp[0], append(append([]string{}, interp[1:]...), command)...)
	if in.Dir != nil {
		cmd.Dir = *in.Dir
	}
	cmd.Env = append(os.Environ(), envList(in.Environment)...)
	cmd.Env = append(cmd.Env, previousOutputEnv(in.AddPreviousOutputInEnv, prev)...)
	if in.Stdin != nil {
		cmd.Stdin = strings.NewReader(*in.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = streams(ctx, in.Logging, &stdout, &stderr)
	err := cmd.Run()
	out := CommandOutputs{Stdout: trimNL(stdout.String()), Stderr: trimNL(stderr.String())}
	if err != nil {
		return out, commandError(err, out)
	}
	return out, nil
}

func envList(env map[string]string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

func previousOutputEnv(add *bool, prev *CommandOutputs) []string {
	if prev == nil || (add != nil && !*add) {
		return nil
	}
	return []string{"PULUMI_COMMAND_STDOUT=" + prev.Stdout, "PULUMI_COMMAND_STDERR=" + prev.Stderr}
}

// The error carries the exit status and stderr (stdout when stderr is empty), never the
// command text or environment, which may hold secrets.
func commandError(err error, out CommandOutputs) error {
	msg := err.Error()
	var local *exec.ExitError
	var remote *ssh.ExitError
	if errors.As(err, &local) {
		msg = fmt.Sprintf("exit status %d", local.ExitCode())
	} else if errors.As(err, &remote) {
		msg = fmt.Sprintf("exit status %d", remote.ExitStatus())
	}
	detail := out.Stderr
	label := "stderr"
	if strings.TrimSpace(detail) == "" {
		detail, label = out.Stdout, "stdout"
	}
	if strings.TrimSpace(detail) == "" {
		return fmt.Errorf("command failed: %s", msg)
	}
	return fmt.Errorf("command failed: %s\n%s:\n%s", msg, label, detail)
}

func trimNL(s string) string { return strings.TrimSuffix(s, "\n") }

// streams returns writers for stdout/stderr that also send each line to the engine's status
// log when the logging setting asks for it.
func streams(ctx context.Context, logging *string, stdout, stderr *bytes.Buffer) (io.Writer, io.Writer) {
	mode := logStdoutAndStderr
	if logging != nil {
		mode = *logging
	}
	var o, e io.Writer = stdout, stderr
	if mode == logStdout || mode == logStdoutAndStderr {
		o = io.MultiWriter(stdout, &lineLogger{log: p.GetLogger(ctx)})
	}
	if mode == logStderr || mode == logStdoutAndStderr {
		e = io.MultiWriter(stderr, &lineLogger{log: p.GetLogger(ctx)})
	}
	return o, e
}

type lineLogger struct {
	log p.Logger
	buf []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.InfoStatus(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}
