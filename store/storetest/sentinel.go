package storetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master's name at the Sentinels StartSentinelSet
// starts.
const SentinelMaster = "mymaster"

// SentinelSet is the Redis topology jambonz runs behind Sentinel, on
// loopback: a master, one replica and three Sentinels.
type SentinelSet struct {
	Master  *RedisServer
	Replica *RedisServer // started without keyspace notifications, as a promoted replica is unless every node's redis.conf has them
	// Sentinels are host:port of the three Sentinels.
	Sentinels []string
}

// StartSentinelSet starts a master (with keyspace notifications), a replica
// of it (without) and three `redis-server --sentinel` processes monitoring
// it as SentinelMaster (quorum 2, down-after-milliseconds 2000), and waits
// until the Sentinels see the replica in sync. Everything is killed in
// t.Cleanup.
func StartSentinelSet(t testing.TB) *SentinelSet {
	t.Helper()
	s := &SentinelSet{Master: StartRedis(t)}
	_, mport, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = StartRedis(t, WithoutNotifications(), WithArgs("--replicaof", "127.0.0.1", mport))
	for range 3 {
		s.Sentinels = append(s.Sentinels, startSentinel(t, s.Master.Addr))
	}
	sc := s.client(t)
	waitUntil(t, 20*time.Second, "the Sentinels see the replica in sync", func() (bool, string) {
		reps, err := sc.Replicas(context.Background(), SentinelMaster).Result()
		if err != nil || len(reps) == 0 {
			return false, fmt.Sprint(reps, err)
		}
		return reps[0]["flags"] == "slave" && reps[0]["master-link-status"] == "ok", fmt.Sprint(reps)
	})
	return s
}

func (s *SentinelSet) client(t testing.TB) *redis.SentinelClient {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0]})
	t.Cleanup(func() { sc.Close() })
	return sc
}

// Failover forces SENTINEL FAILOVER and waits until the Sentinels name the
// replica as the master. It returns when the command was sent.
func (s *SentinelSet) Failover(t testing.TB) time.Time {
	t.Helper()
	sc := s.client(t)
	ctx := context.Background()
	at := time.Now()
	if err := sc.Failover(ctx, SentinelMaster).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitUntil(t, 30*time.Second, "the replica promoted", func() (bool, string) {
		addr, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		return err == nil && net.JoinHostPort(addr[0], addr[1]) == s.Replica.Addr, fmt.Sprint(addr, err)
	})
	return at
}

// startSentinel runs `redis-server <conf> --sentinel` watching masterAddr
// as SentinelMaster and returns its address.
func startSentinel(t testing.TB, masterAddr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(masterAddr)
	sp, err := freePort()
	if err != nil {
		t.Fatalf("storetest: find a free port: %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
		"sentinel monitor %s %s %s 2\n"+
		"sentinel down-after-milliseconds %[3]s 2000\n"+
		"sentinel failover-timeout %[3]s 10000\n"+
		"sentinel parallel-syncs %[3]s 1\n", sp, dir, SentinelMaster, host, port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(sp)
	waitUntil(t, 10*time.Second, "sentinel "+addr+" up", func() (bool, string) {
		err := ping(addr)
		return err == nil, fmt.Sprint(err)
	})
	return addr
}

// waitUntil polls cond every 50ms; the test fails with cond's last detail
// after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%s)", what, timeout, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
