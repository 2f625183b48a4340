package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// nginxSpec says how to run an nginx that exports a tree over HTTP: in the
// foreground (daemon off), with a configuration of its own under dir, so
// nothing of the system's nginx configuration is read or changed.
type nginxSpec struct {
	dir    string // prefix: nginx.conf, the pid file and the temp paths; made (0700) if missing
	listen string // host:port to listen on, as clients dial it
	root   string // the exported tree
	ns     string // network namespace to run in (ip netns exec); "" for the bench's own
	// oneProcess runs nginx as a single process (master_process off,
	// worker_processes 1): its PID is all of its CPU. Otherwise a master
	// starts a worker per core, as user root so that the workers can read
	// the tree under the bench's 0700 work directory.
	oneProcess bool
}

// command writes the configuration to dir/nginx.conf and returns the
// command that runs nginx with it, not started: Stderr is the bench's
// (nginx logs errors there) and the process is killed if the bench dies.
// With ns set the command is `ip netns exec`, which execs nginx in place,
// so the command's PID is nginx's.
func (s nginxSpec) command() (*exec.Cmd, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	processes := "user root;\nworker_processes auto;"
	connections := 256
	if s.oneProcess {
		processes = "master_process off;\nworker_processes 1;"
		connections = 64
	}
	conf := fmt.Sprintf(`daemon off;
%[1]s
pid %[2]s/nginx.pid;
error_log stderr error;
events { worker_connections %[3]d; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  server {
    listen %[4]s;
    root %[5]s;
    autoindex on;
  }
}
`, processes, s.dir, connections, s.listen, s.root)
	confPath := filepath.Join(s.dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	args := []string{"nginx", "-e", "stderr", "-p", s.dir, "-c", confPath}
	if s.ns != "" {
		args = append([]string{"ip", "netns", "exec", s.ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// nginx is a running nginx the bench started.
type nginx struct {
	cmd  *exec.Cmd
	addr string // as clients dial it
}

// startNginx starts nginx as s says and waits (up to 10 s) until it
// accepts connections. The caller stops it.
func startNginx(s nginxSpec) (*nginx, error) {
	cmd, err := s.command()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &nginx{cmd: cmd, addr: s.listen}
	if err := waitTCP(s.listen); err != nil {
		n.stop()
		return nil, fmt.Errorf("nginx not listening on %s after 10s: %w", s.listen, err)
	}
	return n, nil
}

// stop ends nginx (SIGTERM, SIGKILL after 10 s) and waits for it.
func (n *nginx) stop() { stopProcess(n.cmd, syscall.SIGTERM) }
