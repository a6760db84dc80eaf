package testutil

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// AWSCLI runs commands of the real AWS CLI (Debian's awscli, /usr/bin/aws) against a kvs
// endpoint, with the given keys, no configuration files and one attempt per call.
//
// Each start of the CLI costs about half a second of CPU in Python imports, which made the AWS CLI
// the largest single CPU cost of the test suite. So when /usr/bin/aws is a Python script (as
// Debian's is: `import awscli.clidriver; sys.exit(awscli.clidriver.main())`), the commands run in
// the test binary's few interpreters of that script's Python (cliHost), each through a fresh
// awscli.clidriver.create_clidriver().main(args) — the code /usr/bin/aws runs, argument parsing,
// signing, error handling and output formatting included — with its own environment, its
// standard output and error caught at the file descriptors, and its exit code returned; the
// commands share the CLI's read-only data loader (its JSON service models), which cut a command
// from 64 to 17 ms of CPU (20 `kinesisvideo list-streams` in one python3, timed with
// time.process_time, 2026-12-06; not a benchmark kept in the repository). Any other aws (the v2
// installer's binary) runs as one process per command.
type AWSCLI struct {
	t        testing.TB
	bin      string
	python   string // the interpreter of bin's "#!" line, when bin is a Python script
	Endpoint string
	// AccessKey and SecretKey sign the commands (default AKIDLOCAL and secret); Env adds to
	// the environment of each command (e.g. AWS_CA_BUNDLE).
	AccessKey, SecretKey string
	Env                  []string
	home                 string
}

// cliHost is a Python interpreter running AWS CLI commands, one at a time. The test binary has
// cliHostCount of them for all its tests, as each command carries its whole environment (an
// interpreter per test cost half a second of CPU each in imports; one for all made the tests of
// a package queue behind each other's commands).
type cliHost struct {
	proc *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errb *bytes.Buffer
}

const cliHostCount = 2

// cliHosts hands out the interpreters: each started at its first command.
var cliHosts = sync.OnceValue(func() chan *cliHost {
	ch := make(chan *cliHost, cliHostCount)
	for range cliHostCount {
		ch <- &cliHost{}
	}
	return ch
})

// NewAWSCLI returns an AWS CLI for endpoint, or skips t (fails it under KVS_REQUIRE_TOOLS=1) when
// /usr/bin/aws is missing. The interpreters, if any, are the test binary's (cliHost).
func NewAWSCLI(t testing.TB, endpoint string) *AWSCLI {
	t.Helper()
	c := &AWSCLI{t: t, bin: NeedTool(t, "/usr/bin/aws"), Endpoint: endpoint, AccessKey: "AKIDLOCAL", SecretKey: "secret",
		home: t.TempDir()}
	if head, err := os.ReadFile(c.bin); err == nil && bytes.HasPrefix(head, []byte("#!")) {
		line, _, _ := bytes.Cut(head[2:], []byte("\n"))
		if f := strings.Fields(string(line)); len(f) == 1 && strings.Contains(f[0], "python") {
			c.python = f[0]
		}
	}
	return c
}

// For returns a copy of c that reports to t (a subtest of c's test, say).
func (c *AWSCLI) For(t testing.TB) *AWSCLI {
	cc := *c
	cc.t = t
	return &cc
}

// Run runs `aws --endpoint-url E --region us-east-1 --output json args...` (no --endpoint-url
// when Endpoint is "": the endpoint then comes from Env, AWS_ENDPOINT_URL say) and returns its
// standard output, standard error and exit code (0, or 254 for a service error, 252 for a usage
// error, 255 for others).
func (c *AWSCLI) Run(args ...string) (stdout []byte, stderr string, code int) {
	c.t.Helper()
	full := append([]string{"--region", "us-east-1", "--output", "json"}, args...)
	if c.Endpoint != "" {
		full = append([]string{"--endpoint-url", c.Endpoint}, full...)
	}
	env := append([]string{"PATH=/usr/bin:/bin", "HOME=" + c.home, "AWS_ACCESS_KEY_ID=" + c.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + c.SecretKey, "AWS_PAGER=", "AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_MAX_ATTEMPTS=1"}, c.Env...)
	if c.python == "" {
		return c.runProcess(full, env)
	}
	h := <-cliHosts()
	defer func() { cliHosts() <- h }()
	if h.proc == nil {
		c.start(h)
	}
	req, _ := json.Marshal(struct {
		Args []string `json:"args"`
		Env  []string `json:"env"`
	}{full, env})
	var res struct {
		Code           int
		Stdout, Stderr []byte // base64 in the JSON
	}
	_, err := h.in.Write(append(req, '\n'))
	if err == nil {
		var line []byte
		if line, err = h.out.ReadBytes('\n'); err == nil {
			err = json.Unmarshal(line, &res)
		}
	}
	if err != nil {
		h.in.Close()
		h.proc.Wait() // its standard error is all copied
		h.proc = nil
		c.t.Fatalf("aws %v: the CLI's Python host (%s): %v\n%s", args, c.python, err, h.errb)
	}
	return res.Stdout, string(res.Stderr), res.Code
}

// OK runs the CLI, requires exit code 0 and decodes its JSON output into v (if not nil).
func (c *AWSCLI) OK(v any, args ...string) {
	c.t.Helper()
	out, stderr, code := c.Run(args...)
	if code != 0 {
		c.t.Fatalf("aws %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			c.t.Fatalf("aws %s: output %q: %v", strings.Join(args, " "), out, err)
		}
	}
}

// Fails runs the CLI and requires exit code 254 (a service error) with errorName on stderr.
func (c *AWSCLI) Fails(errorName string, args ...string) {
	c.t.Helper()
	_, stderr, code := c.Run(args...)
	if code != 254 || !strings.Contains(stderr, errorName) {
		c.t.Errorf("aws %s: exit %d, stderr %q; want 254 and %s", strings.Join(args, " "), code, stderr, errorName)
	}
}

func (c *AWSCLI) runProcess(args, env []string) ([]byte, string, int) {
	c.t.Helper()
	cmd := exec.CommandContext(c.t.Context(), c.bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		c.t.Fatalf("aws %v: %v", args, err)
	}
	return out.Bytes(), errb.String(), cmd.ProcessState.ExitCode()
}

// awsCLIHost is the Python that runs the CLI's commands: one JSON request per line on stdin
// ({"args": [...], "env": ["K=V", ...]}), one JSON answer per line on the descriptor that was
// standard output ({"Code": n, "Stdout": base64, "Stderr": base64}).
const awsCLIHost = `
import base64, json, os, sys, tempfile, traceback
import awscli.clidriver
import botocore.loaders, botocore.session  # the CLI's own copy (awscli.botocore)
# The commands share one data loader (it reads the CLI's JSON models, the same for every command
# here: AWS_DATA_PATH is fixed): a fresh one listed every service's model directory and parsed
# the endpoint data again at each command: 47 of its 64 ms of CPU.
loaders = {}
def shared_loader(search_path=None, create=botocore.loaders.create_loader):
    if search_path not in loaders:
        loaders[search_path] = create(search_path)
    return loaders[search_path]
botocore.session.create_loader = shared_loader
answers = os.fdopen(os.dup(1), "w")
data_path = os.environ["AWS_DATA_PATH"]  # set by the awscli package as it is imported
for line in sys.stdin:
    req = json.loads(line)
    os.environ.clear()
    os.environ.update(dict(kv.split("=", 1) for kv in req["env"]), AWS_DATA_PATH=data_path)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    saved = os.dup(1), os.dup(2)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    try:
        code = awscli.clidriver.create_clidriver().main(req["args"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 255
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    out.seek(0)
    err.seek(0)
    answers.write(json.dumps({"Code": code or 0, "Stdout": base64.b64encode(out.read()).decode(),
                              "Stderr": base64.b64encode(err.read()).decode()}) + "\n")
    answers.flush()
`

func (c *AWSCLI) start(h *cliHost) {
	c.t.Helper()
	cmd := exec.Command(c.python, "-c", awsCLIHost)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()} // each command sets its test's
	h.errb = &bytes.Buffer{}
	cmd.Stderr = h.errb
	in, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("aws: starting %s for the CLI: %v", c.python, err)
	}
	h.proc, h.in, h.out = cmd, in, bufio.NewReader(out)
}
