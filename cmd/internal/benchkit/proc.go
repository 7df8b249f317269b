package benchkit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo).
const ClockTicks = 100

// ProcCPU reads utime+stime of pid from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return ParseProcStat(b)
}

// ParseProcStat returns utime+stime (fields 14 and 15) of a /proc/<pid>/stat
// line. The command name (field 2) may hold spaces and brackets, so fields
// are counted after its last ')'.
func ParseProcStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, f[11]; stime f[12].
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / ClockTicks, nil
}

// ProcRSS reads VmRSS of pid from /proc/<pid>/status, in bytes.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return ParseVmRSS(b)
}

// ParseVmRSS returns the VmRSS of a /proc/<pid>/status, in bytes.
func ParseVmRSS(b []byte) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n << 10, err
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// MachineBusy is the CPU time all processes of the machine have used, from
// the first line of /proc/stat (everything but idle and iowait).
func MachineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already counted in user
			break
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / ClockTicks
}

// RaiseFileLimit lifts the soft limit of open files to the hard limit: the
// stream and idle benchmarks hold one socket per subscriber. (Go raises it
// by itself at start since 1.19, and so does the server; this makes sure.)
func RaiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// NeedFiles fails early when n sockets (plus some slack) would not fit
// under the limit of open files, which the server shares.
func NeedFiles(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	if want := uint64(n) + 256; lim.Cur < want {
		return fmt.Errorf("%d connections need %d open files, the limit is %d: raise it (ulimit -n %d, or the hard limit in /etc/security/limits.conf)", n, want, lim.Cur, want)
	}
	return nil
}
