package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/pulumi/pulumi-go-provider/infer"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// ConnectionBase holds the fields Connection and ProxyConnection share (command:remote:Connection
// and command:remote:ProxyConnection in the SDK).
type ConnectionBase struct {
	Host               string   `pulumi:"host"`
	Port               *float64 `pulumi:"port,optional"`
	User               *string  `pulumi:"user,optional"`
	Password           *string  `pulumi:"password,optional" provider:"secret"`
	PrivateKey         *string  `pulumi:"privateKey,optional" provider:"secret"`
	PrivateKeyPassword *string  `pulumi:"privateKeyPassword,optional" provider:"secret"`
	AgentSocketPath    *string  `pulumi:"agentSocketPath,optional"`
	DialErrorLimit     *int     `pulumi:"dialErrorLimit,optional"`
	PerDialTimeout     *int     `pulumi:"perDialTimeout,optional"`
	HostKey            *string  `pulumi:"hostKey,optional"`
}

type Connection struct {
	ConnectionBase
	Proxy *ProxyConnection `pulumi:"proxy,optional"`
}

type ProxyConnection struct {
	ConnectionBase
}

func (c *ConnectionBase) Annotate(a infer.Annotator) {
	a.Describe(&c.Host, "The address of the resource to connect to.")
	a.Describe(&c.Port, "The port to connect to (default 22).")
	a.Describe(&c.User, "The user that we should use for the connection (default root).")
	a.Describe(&c.Password, "The password we should use for the connection.")
	a.Describe(&c.PrivateKey, "The contents of an SSH key to use for the connection. This takes preference over the password if provided.")
	a.Describe(&c.PrivateKeyPassword, "The password to use in case the private key is encrypted.")
	a.Describe(&c.AgentSocketPath, "SSH Agent socket path. Default to environment variable SSH_AUTH_SOCK if present.")
	a.Describe(&c.DialErrorLimit, "Max allowed errors on trying to dial the remote host. -1 set count to unlimited. Default value is 10.")
	a.Describe(&c.PerDialTimeout, "Max number of seconds for each dial attempt. 0 implies no maximum. Default value is 15 seconds.")
	a.Describe(&c.HostKey, "The expected host key (authorized_keys format). If not provided, the host key is not checked.")
}

func (c *Connection) Annotate(a infer.Annotator) {
	a.SetToken("remote", "Connection")
	a.Describe(c, "Instructions for how to connect to a remote endpoint.")
	a.Describe(&c.Proxy, "The connection settings for the bastion/proxy host.")
}

func (c *ProxyConnection) Annotate(a infer.Annotator) {
	a.SetToken("remote", "ProxyConnection")
	a.Describe(c, "Instructions for how to connect to a remote endpoint via a bastion host.")
}

func (c *ConnectionBase) address() string {
	port := 22
	if c.Port != nil {
		port = int(*c.Port)
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

func (c *ConnectionBase) clientConfig() (*ssh.ClientConfig, error) {
	user := "root"
	if c.User != nil {
		user = *c.User
	}
	var auth []ssh.AuthMethod
	if c.PrivateKey != nil {
		var signer ssh.Signer
		var err error
		if c.PrivateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*c.PrivateKey), []byte(*c.PrivateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*c.PrivateKey))
		}
		if err != nil {
			// The parser's message never quotes the key, but keep ours fixed anyway.
			return nil, errors.New("connection.privateKey could not be parsed as an SSH private key")
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if c.Password != nil {
		pw := *c.Password
		auth = append(auth, ssh.Password(pw), ssh.KeyboardInteractive(
			func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if c.AgentSocketPath != nil {
		sock = *c.AgentSocketPath
	}
	if sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	// Like upstream: without hostKey the server's key is accepted as presented.
	hostKeyCallback := ssh.InsecureIgnoreHostKey() //nolint:gosec
	if c.HostKey != nil && *c.HostKey != "" {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.HostKey))
		if err != nil {
			return nil, fmt.Errorf("connection.hostKey: %w", err)
		}
		hostKeyCallback = ssh.FixedHostKey(key)
	}
	timeout := 15 * time.Second
	if c.PerDialTimeout != nil {
		timeout = time.Duration(*c.PerDialTimeout) * time.Second
	}
	return &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: hostKeyCallback, Timeout: timeout}, nil
}

// withRetries calls dial until it succeeds or dialErrorLimit attempts failed (-1: no limit).
func (c *ConnectionBase) withRetries(ctx context.Context, dial func() (*ssh.Client, error)) (*ssh.Client, error) {
	limit := 10
	if c.DialErrorLimit != nil {
		limit = *c.DialErrorLimit
	}
	var lastErr error
	for attempt := 1; limit < 0 || attempt <= max(limit, 1); attempt++ {
		client, err := dial()
		if err == nil {
			return client, nil
		}
		lastErr = err
		wait := min(time.Duration(attempt)*time.Second, 5*time.Second)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	return nil, fmt.Errorf("dialing %s: %w", c.address(), lastErr)
}

func (c *Connection) dial(ctx context.Context) (*ssh.Client, error) {
	cfg, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	if c.Proxy == nil {
		return c.withRetries(ctx, func() (*ssh.Client, error) {
			return ssh.Dial("tcp", c.address(), cfg)
		})
	}
	pcfg, err := c.Proxy.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	proxy, err := c.Proxy.withRetries(ctx, func() (*ssh.Client, error) {
		return ssh.Dial("tcp", c.Proxy.address(), pcfg)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	client, err := c.withRetries(ctx, func() (*ssh.Client, error) {
		conn, err := proxy.Dial("tcp", c.address())
		if err != nil {
			return nil, err
		}
		cc, chans, reqs, err := ssh.NewClientConn(conn, c.address(), cfg)
		if err != nil {
			conn.Close()
			return nil, err
		}
		return ssh.NewClient(cc, chans, reqs), nil
	})
	if err != nil {
		proxy.Close()
		return nil, err
	}
	go func() { _ = client.Wait(); proxy.Close() }()
	return client, nil
}
