package cmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func testEnv(t *testing.T, vars map[string]string) (*Env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{
		Stdin:  strings.NewReader(""),
		Stdout: &out,
		Stderr: &errb,
		Getenv: func(k string) string { return vars[k] },
	}
	return env, &out, &errb
}

func TestVersion(t *testing.T) {
	t.Parallel()
	env, out, _ := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"version"}); code != ExitOK {
		t.Fatalf("exit code %d", code)
	}
	if !strings.HasPrefix(out.String(), "kvs ") {
		t.Fatalf("version output %q", out.String())
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		args []string
		want int
	}{
		{"ok", context.Background(), []string{"version"}, ExitOK},
		{"unknown command", context.Background(), []string{"no-such-command"}, ExitUsage},
		{"unknown flag", context.Background(), []string{"version", "--no-such-flag"}, ExitUsage},
		{"bad log level", context.Background(), []string{"--log-level", "loud", "version"}, ExitUsage},
		{"extra args", context.Background(), []string{"version", "x"}, ExitUsage},
		{"interrupted", cancelled, []string{"test-block"}, ExitInterrupted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, errb := testEnv(t, nil)
			root := NewRoot(env)
			root.AddCommand(&cobra.Command{Use: "test-block", RunE: func(c *cobra.Command, _ []string) error {
				<-c.Context().Done()
				return c.Context().Err()
			}})
			root.SetArgs(tc.args)
			c, err := root.ExecuteContextC(tc.ctx)
			if got := exitCode(env, c, tc.ctx, err); got != tc.want {
				t.Fatalf("exit code %d, want %d (stderr %q)", got, tc.want, errb.String())
			}
		})
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "kvs"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kvs", "config.yaml")
	if err := os.WriteFile(cfg, []byte("endpoint: http://from-file:1\nregion: eu-west-1\nlog-level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantEP     string
		wantRegion string
	}{
		// No region: the client takes the AWS configuration's (AWS_REGION, the profile), else us-east-1.
		{"defaults", map[string]string{"XDG_CONFIG_HOME": t.TempDir()}, nil, "http://127.0.0.1:4567", ""},
		{"file", map[string]string{"XDG_CONFIG_HOME": dir}, nil, "http://from-file:1", "eu-west-1"},
		{"env beats file", map[string]string{"XDG_CONFIG_HOME": dir, "KVS_ENDPOINT": "http://from-env:2"}, nil, "http://from-env:2", "eu-west-1"},
		{"flag beats env", map[string]string{"XDG_CONFIG_HOME": dir, "KVS_ENDPOINT": "http://from-env:2"}, []string{"--endpoint", "http://from-flag:3"}, "http://from-flag:3", "eu-west-1"},
		{"explicit config", map[string]string{"XDG_CONFIG_HOME": t.TempDir()}, []string{"--config", cfg}, "http://from-file:1", "eu-west-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v) // viper's AutomaticEnv/BindEnv read the process environment
			}
			env, _, errb := testEnv(t, tc.env)
			root := NewRoot(env)
			var ep, region string
			root.AddCommand(&cobra.Command{Use: "show", RunE: func(*cobra.Command, []string) error {
				ep, region = env.Config.GetString("endpoint"), env.Config.GetString("region")
				return nil
			}})
			root.SetArgs(append(tc.args, "show"))
			if err := root.ExecuteContext(t.Context()); err != nil {
				t.Fatalf("%v (stderr %q)", err, errb.String())
			}
			if ep != tc.wantEP || region != tc.wantRegion {
				t.Fatalf("endpoint %q region %q, want %q %q", ep, region, tc.wantEP, tc.wantRegion)
			}
		})
	}
	t.Run("missing explicit config is a usage error", func(t *testing.T) {
		env, _, _ := testEnv(t, nil)
		if code := Run(t.Context(), env, []string{"--config", filepath.Join(dir, "nope.yaml"), "version"}); code != ExitUsage {
			t.Fatalf("exit code %d, want %d", code, ExitUsage)
		}
	})
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		env, out, _ := testEnv(t, nil)
		if code := Run(t.Context(), env, []string{"completion", shell}); code != ExitOK {
			t.Fatalf("%s: exit code %d", shell, code)
		}
		if !strings.Contains(out.String(), "kvs") || out.Len() < 1000 {
			t.Fatalf("%s: completion script looks wrong (%d bytes)", shell, out.Len())
		}
	}
}

func TestRootHelpListsExitCodes(t *testing.T) {
	t.Parallel()
	env, out, _ := testEnv(t, nil)
	if code := Run(t.Context(), env, []string{"--help"}); code != ExitOK {
		t.Fatalf("exit code %d", code)
	}
	for _, want := range []string{"Exit codes", "130", "usage error"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("root help lacks %q", want)
		}
	}
}

// A config file whose name has no extension viper knows (~/.kvsrc, /etc/kvs/agent.conf) is read
// as YAML, the format of config.yaml, and one that does not exist is said to be missing; viper
// alone refused both as `Unsupported Config Type ""`.
func TestConfigFileWithoutExtension(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"kvsrc", "agent.conf", "CONFIG.YAML"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte("endpoint: http://from-file:1\nregion: eu-west-1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			env, _, errb := testEnv(t, nil)
			root := NewRoot(env)
			var ep, region string
			root.AddCommand(&cobra.Command{Use: "show", RunE: func(*cobra.Command, []string) error {
				ep, region = env.Config.GetString("endpoint"), env.Config.GetString("region")
				return nil
			}})
			root.SetArgs([]string{"--config", path, "show"})
			if err := root.ExecuteContext(t.Context()); err != nil {
				t.Fatalf("%v (stderr %q)", err, errb.String())
			}
			if ep != "http://from-file:1" || region != "eu-west-1" {
				t.Fatalf("endpoint %q region %q, want the file's", ep, region)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		env, _, errb := testEnv(t, nil)
		path := filepath.Join(dir, "nosuch")
		if code := Run(t.Context(), env, []string{"--config", path, "version"}); code != ExitUsage {
			t.Fatalf("exit code %d, want %d", code, ExitUsage)
		}
		if want := "kvs: config file " + path + " does not exist\n"; !strings.HasPrefix(errb.String(), want) {
			t.Fatalf("stderr %q, want it to start with %q", errb.String(), want)
		}
	})
}

// A config file key that no command reads (a misspelt region or endpoint) is warned of, naming
// the key and the keys there are; it was ignored without a word, and the default used. The
// agent refuses such a key instead (TestAgentConfigErrors).
func TestConfigUnknownKeyWarned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ name, file, warn string }{
		{"misspelt", "endpoint: http://from-file:1\nregoin: eu-west-1\n", `key=regoin`},
		{"known", "endpoint: http://from-file:1\nregion: eu-west-1\nlog-level: info\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			env, _, errb := testEnv(t, nil)
			root := NewRoot(env)
			root.AddCommand(&cobra.Command{Use: "show", RunE: func(*cobra.Command, []string) error { return nil }})
			root.SetArgs([]string{"--config", path, "show"})
			if err := root.ExecuteContext(t.Context()); err != nil {
				t.Fatalf("%v (stderr %q)", err, errb.String())
			}
			got := errb.String()
			switch {
			case tc.warn == "" && got != "":
				t.Errorf("stderr %q, want nothing", got)
			case tc.warn != "" && (!strings.Contains(got, "unknown key") || !strings.Contains(got, tc.warn) || !strings.Contains(got, path)):
				t.Errorf("stderr %q, want a warning of the unknown key %s in %s", got, tc.warn, path)
			}
		})
	}
}
