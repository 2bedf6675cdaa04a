package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pkg/sftp"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi-go-provider/infer/types"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
)

// ---- command:remote:CopyToRemote -----------------------------------------------------------

type CopyToRemote struct{}

type CopyToRemoteArgs struct {
	Connection *Connection           `pulumi:"connection" provider:"secret"`
	Source     *types.AssetOrArchive `pulumi:"source"`
	RemotePath string                `pulumi:"remotePath"`
	Triggers   []any                 `pulumi:"triggers,optional" provider:"replaceOnChanges"`
}

type CopyToRemoteState struct{ CopyToRemoteArgs }

func (c *CopyToRemote) Annotate(a infer.Annotator) {
	a.SetToken("remote", "CopyToRemote")
	a.Describe(c, "Copies a local file or directory (a path-based asset or archive) to a remote host over SFTP. "+
		"Any change replaces it; delete leaves the remote copy in place.")
}

func (a *CopyToRemoteArgs) Annotate(an infer.Annotator) {
	an.Describe(&a.Connection, "The parameters with which to connect to the remote host.")
	an.Describe(&a.Source, "An asset or an archive to upload (file/directory path; text assets are written as files).")
	an.Describe(&a.RemotePath, "The destination path on the remote host; an existing directory receives the source inside it.")
	an.Describe(&a.Triggers, "Any change to these values replaces the resource.")
}

func (CopyToRemote) Create(ctx context.Context, req infer.CreateRequest[CopyToRemoteArgs]) (
	infer.CreateResponse[CopyToRemoteState], error,
) {
	state := CopyToRemoteState{req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil || req.DryRun {
		return infer.CreateResponse[CopyToRemoteState]{ID: id, Output: state}, err
	}
	in := req.Inputs
	if in.Connection == nil || in.Source == nil {
		return infer.CreateResponse[CopyToRemoteState]{}, errors.New("connection and source are required")
	}
	src, err := sourceOf(*in.Source)
	if err != nil {
		return infer.CreateResponse[CopyToRemoteState]{}, err
	}
	err = copyToRemote(ctx, in.Connection, src, in.RemotePath)
	return infer.CreateResponse[CopyToRemoteState]{ID: id, Output: state}, err
}

func (CopyToRemote) WireDependencies(f infer.FieldSelector, args *CopyToRemoteArgs, state *CopyToRemoteState) {
	f.OutputField(&state.Connection).AlwaysSecret()
	f.OutputField(&state.Connection).DependsOn(f.InputField(&args.Connection))
	f.OutputField(&state.Source).DependsOn(f.InputField(&args.Source))
	f.OutputField(&state.RemotePath).DependsOn(f.InputField(&args.RemotePath))
	f.OutputField(&state.Triggers).DependsOn(f.InputField(&args.Triggers))
}

// ---- command:remote:CopyFile (deprecated upstream) -----------------------------------------

type CopyFile struct{}

type CopyFileArgs struct {
	Connection *Connection `pulumi:"connection" provider:"secret"`
	LocalPath  string      `pulumi:"localPath"`
	RemotePath string      `pulumi:"remotePath"`
	Triggers   []any       `pulumi:"triggers,optional" provider:"replaceOnChanges"`
}

type CopyFileState struct{ CopyFileArgs }

func (c *CopyFile) Annotate(a infer.Annotator) {
	a.SetToken("remote", "CopyFile")
	a.Describe(c, "Copy a local file to a remote host (deprecated upstream: use CopyToRemote).")
	a.Deprecate(c, "This resource is deprecated and will be removed in a future release. Please use the `CopyToRemote` resource instead.")
}

func (CopyFile) Create(ctx context.Context, req infer.CreateRequest[CopyFileArgs]) (
	infer.CreateResponse[CopyFileState], error,
) {
	state := CopyFileState{req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil || req.DryRun {
		return infer.CreateResponse[CopyFileState]{ID: id, Output: state}, err
	}
	if req.Inputs.Connection == nil {
		return infer.CreateResponse[CopyFileState]{}, errors.New("connection is required")
	}
	err = copyToRemote(ctx, req.Inputs.Connection, source{path: req.Inputs.LocalPath}, req.Inputs.RemotePath)
	return infer.CreateResponse[CopyFileState]{ID: id, Output: state}, err
}

func (CopyFile) WireDependencies(f infer.FieldSelector, args *CopyFileArgs, state *CopyFileState) {
	f.OutputField(&state.Connection).AlwaysSecret()
	f.OutputField(&state.Connection).DependsOn(f.InputField(&args.Connection))
	f.OutputField(&state.LocalPath).DependsOn(f.InputField(&args.LocalPath))
	f.OutputField(&state.RemotePath).DependsOn(f.InputField(&args.RemotePath))
	f.OutputField(&state.Triggers).DependsOn(f.InputField(&args.Triggers))
}

// ---- copying ---------------------------------------------------------------------------------

// source is what gets copied: a local path (file or directory), in-memory content, or a
// directory-like set of named entries (an AssetArchive).
type source struct {
	path    string
	content []byte
	entries map[string]source
}

func sourceOf(s types.AssetOrArchive) (source, error) {
	switch {
	case s.Asset != nil && s.Asset.IsPath():
		return source{path: s.Asset.Path}, nil
	case s.Asset != nil && s.Asset.IsText():
		return source{content: []byte(s.Asset.Text)}, nil
	case s.Asset != nil:
		b, err := s.Asset.Bytes()
		if err != nil {
			return source{}, fmt.Errorf("reading source asset: %w", err)
		}
		return source{content: b}, nil
	case s.Archive != nil && s.Archive.IsPath():
		return source{path: s.Archive.Path}, nil
	case s.Archive != nil && s.Archive.IsAssets():
		entries := map[string]source{}
		for name, v := range s.Archive.Assets {
			var sub types.AssetOrArchive
			switch v := v.(type) {
			case *resource.Asset:
				sub.Asset = v
			case *resource.Archive:
				sub.Archive = v
			default:
				return source{}, fmt.Errorf("archive entry %q: unsupported type %T", name, v)
			}
			e, err := sourceOf(sub)
			if err != nil {
				return source{}, err
			}
			entries[name] = e
		}
		return source{entries: entries}, nil
	case s.Archive != nil:
		return source{}, errors.New("source: remote archives (URIs) are not supported; use a FileArchive or FileAsset")
	}
	return source{}, errors.New("source: neither an asset nor an archive")
}

func copyToRemote(ctx context.Context, conn *Connection, src source, remotePath string) error {
	client, err := conn.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	fs, err := openRemoteFS(client)
	if err != nil {
		return err
	}
	defer fs.Close()

	dest := remotePath
	if isDir, exists, err := fs.stat(remotePath); err != nil {
		return err
	} else if exists && isDir {
		if src.path == "" {
			return fmt.Errorf("remotePath %s is a directory and the source has no file name", remotePath)
		}
		dest = path.Join(remotePath, filepath.Base(filepath.Clean(src.path)))
	}
	return copyInto(fs, src, dest)
}

func copyInto(fs remoteFS, src source, dest string) error {
	switch {
	case src.entries != nil:
		if err := ensureDir(fs, dest); err != nil {
			return err
		}
		names := make([]string, 0, len(src.entries))
		for n := range src.entries {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if err := copyInto(fs, src.entries[n], path.Join(dest, filepath.ToSlash(n))); err != nil {
				return err
			}
		}
		return nil
	case src.path == "":
		return fs.writeFile(dest, bytes.NewReader(src.content), 0o644)
	}
	info, err := os.Stat(src.path)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if !info.IsDir() {
		f, err := os.Open(src.path)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		defer f.Close()
		return fs.writeFile(dest, f, info.Mode().Perm())
	}
	if err := ensureDir(fs, dest); err != nil {
		return err
	}
	entries, err := os.ReadDir(src.path)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for _, e := range entries {
		if err := copyInto(fs, source{path: filepath.Join(src.path, e.Name())}, path.Join(dest, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func ensureDir(fs remoteFS, dir string) error {
	isDir, exists, err := fs.stat(dir)
	switch {
	case err != nil:
		return err
	case exists && !isDir:
		return fmt.Errorf("cannot copy a directory to %s: it is an existing file", dir)
	case exists:
		return nil
	}
	return fs.mkdir(dir)
}

// remoteFS is SFTP when the server offers the subsystem, else plain shell commands.
type remoteFS interface {
	stat(p string) (isDir, exists bool, err error)
	mkdir(p string) error
	writeFile(p string, r io.Reader, mode os.FileMode) error
	Close() error
}

func openRemoteFS(client *ssh.Client) (remoteFS, error) {
	if c, err := sftp.NewClient(client); err == nil {
		return sftpFS{c}, nil
	}
	return shellFS{client}, nil
}

type sftpFS struct{ c *sftp.Client }

func (s sftpFS) stat(p string) (bool, bool, error) {
	info, err := s.c.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("sftp stat %s: %w", p, err)
	}
	return info.IsDir(), true, nil
}

func (s sftpFS) mkdir(p string) error {
	if err := s.c.Mkdir(p); err != nil {
		return fmt.Errorf("sftp mkdir %s: %w", p, err)
	}
	return nil
}

func (s sftpFS) writeFile(p string, r io.Reader, mode os.FileMode) error {
	f, err := s.c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("sftp create %s: %w", p, err)
	}
	if _, err := f.ReadFrom(r); err != nil {
		f.Close()
		return fmt.Errorf("sftp write %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sftp write %s: %w", p, err)
	}
	if err := s.c.Chmod(p, mode); err != nil {
		return fmt.Errorf("sftp chmod %s: %w", p, err)
	}
	return nil
}

func (s sftpFS) Close() error { return s.c.Close() }

type shellFS struct{ client *ssh.Client }

func (s shellFS) run(cmd string, stdin io.Reader) (string, error) {
	session, err := s.client.NewSession()
	if err != nil {
		return "", err
	}
	defer session.Close()
	var out, errb bytes.Buffer
	session.Stdin, session.Stdout, session.Stderr = stdin, &out, &errb
	if err := session.Run(cmd); err != nil {
		return "", fmt.Errorf("%s: %w: %s", cmd, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (s shellFS) stat(p string) (bool, bool, error) {
	out, err := s.run("if [ -d "+shellQuote(p)+" ]; then echo d; elif [ -e "+shellQuote(p)+" ]; then echo f; fi", nil)
	out = strings.TrimSpace(out)
	return out == "d", out != "", err
}

func (s shellFS) mkdir(p string) error {
	_, err := s.run("mkdir "+shellQuote(p), nil)
	return err
}

func (s shellFS) writeFile(p string, r io.Reader, mode os.FileMode) error {
	_, err := s.run(fmt.Sprintf("cat > %s && chmod %o %s", shellQuote(p), mode, shellQuote(p)), r)
	return err
}

func (s shellFS) Close() error { return nil }
