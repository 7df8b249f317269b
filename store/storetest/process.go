package storetest

import (
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// process is a database server a test started. It dies with the test
// binary: cmd's SysProcAttr carries a Pdeathsig, and since the kernel sends
// it when the *thread* that started the child exits (and Go ends a thread
// when a goroutine locked to it returns), the server is started from a
// goroutine that keeps its thread to itself until the server has exited.
type process struct {
	name    string
	cmd     *exec.Cmd
	log     *syncBuffer   // what the server wrote
	exited  chan struct{} // closed when the server has exited
	release chan struct{} // closed to let the starting thread go
}

// startProcess starts cmd, whose SysProcAttr must carry a Pdeathsig, and
// calls ready every poll until it answers nil; it fails when the server
// exits first or ready has not answered nil within timeout (the server is
// then killed).
func startProcess(name string, cmd *exec.Cmd, timeout, poll time.Duration, ready func() error) (*process, error) {
	p := &process{name: name, cmd: cmd, log: &syncBuffer{}, exited: make(chan struct{}), release: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(p.exited)
		<-p.release
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	deadline := time.After(timeout)
	for {
		err := ready()
		if err == nil {
			return p, nil
		}
		select {
		case <-p.exited:
			close(p.release)
			return nil, fmt.Errorf("%s exited on start: %s", name, p.log.String())
		case <-deadline:
			p.kill()
			close(p.release)
			return nil, fmt.Errorf("%s did not accept connections within %v: %v\n%s", name, timeout, err, p.log.String())
		case <-time.After(poll):
		}
	}
}

// stop sends sig, waits up to wait for the server to exit and kills it
// after that.
func (p *process) stop(sig syscall.Signal, wait time.Duration) {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(wait):
		p.kill()
	}
	close(p.release)
}

func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}
