package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store"
)

// clusterFlags are serve's flags of cluster mode (README "Cluster").
type clusterFlags struct {
	on         *bool
	redisURL   *string
	name       *string
	retention  *time.Duration
	maxEntries *int
	leaseTTL   *time.Duration
	backfill   *int
}

func addClusterFlags(fs *cli.FlagSet) clusterFlags {
	return clusterFlags{
		on:         fs.EnvBool("cluster", "PRESENCEHUB_CLUSTER", false, "run as one replica of several: a shared change log in Redis, one sequencer elected by a lease, every replica serving from the log"),
		redisURL:   fs.EnvString("cluster-redis-url", "PRESENCEHUB_CLUSTER_REDIS_URL", "", "Redis holding the cluster's lease, log and tickets (default: the registrations' Redis, with its Sentinel, TLS and ACL settings)"),
		name:       fs.EnvString("cluster-name", "PRESENCEHUB_CLUSTER_NAME", "cluster", "name of the cluster's keys (presencehub:{NAME}:…), to keep clusters sharing one Redis apart"),
		retention:  fs.EnvDuration("cluster-log-retention", "PRESENCEHUB_CLUSTER_LOG_RETENTION", 24*time.Hour, "log entries older than this are trimmed; a client may resume from within it"),
		maxEntries: fs.EnvInt("cluster-log-max-entries", "PRESENCEHUB_CLUSTER_LOG_MAX_ENTRIES", 1_000_000, "most entries the log keeps (trimmed approximately)"),
		leaseTTL:   fs.EnvDuration("cluster-lease-ttl", "PRESENCEHUB_CLUSTER_LEASE_TTL", 2*time.Second, "the sequencer lease's lifetime without renewal (renewed every third of it; another replica takes over within about 1.25 times it)"),
		backfill:   fs.EnvInt("cluster-backfill", "PRESENCEHUB_CLUSTER_BACKFILL", 100_000, "log entries before its snapshot a starting replica reads to serve resumes"),
	}
}

func (f clusterFlags) check() error {
	if !*f.on {
		return nil
	}
	switch {
	case *f.retention < time.Minute:
		return fmt.Errorf("--cluster-log-retention %v: want at least 1m", *f.retention)
	case *f.maxEntries < 1000 || *f.maxEntries > 1_000_000_000:
		return fmt.Errorf("--cluster-log-max-entries %d: want 1000 to 1000000000", *f.maxEntries)
	case *f.leaseTTL < 300*time.Millisecond || *f.leaseTTL > time.Minute:
		return fmt.Errorf("--cluster-lease-ttl %v: want 300ms to 1m", *f.leaseTTL)
	case *f.backfill < 0 || *f.backfill > 10_000_000:
		return fmt.Errorf("--cluster-backfill %d: want 0 to 10000000", *f.backfill)
	case *f.name == "":
		return errors.New("--cluster-name must not be empty")
	}
	return nil
}

// open returns the cluster's coordination on the cluster Redis; regs are
// the registrations' Redis options, its default; secret seals the
// credentials of stream tickets.
func (f clusterFlags) open(regs store.RedisOptions, secret string) (*store.Cluster, error) {
	ro := regs
	if *f.redisURL != "" {
		ro = store.RedisOptions{URL: *f.redisURL, CAFile: regs.CAFile}
	}
	backfill := *f.backfill
	if backfill == 0 {
		backfill = 1 // Backfill 0 means the default; one entry is as good as none
	}
	return store.OpenCluster(store.ClusterOptions{
		Redis: ro, Name: *f.name, Retention: *f.retention, MaxEntries: int64(*f.maxEntries),
		LeaseTTL: *f.leaseTTL, Backfill: backfill, Secret: secret, Logger: regs.Logger,
	})
}

// clusterReadiness is what cluster mode adds to /readyz: the replica must
// hold a snapshot of the log and read it; the sequencer also needs its
// watch of the registrations.
func clusterReadiness(c *store.Cluster, src store.RedisHealth) []string {
	if !c.Metrics.Synced.Load() {
		return []string{"cluster log not loaded or unreachable"}
	}
	if c.Metrics.Holder.Load() && !src.Connected {
		return []string{src.Problem}
	}
	return nil
}

// clusterCollectors expose the cluster's metrics: this replica's role and
// counters, and the log's length and this replica's lag, read from Redis at
// each scrape (one transaction of three O(1) commands).
func clusterCollectors(c *store.Cluster) []prometheus.Collector {
	cm := &c.Metrics
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	status := func() (store.LogStatus, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.Status(ctx)
		return st, err == nil
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presencehub_cluster_lease_holder", Help: "1 while this replica holds the sequencer lease."}, func() float64 {
			if cm.Holder.Load() {
				return 1
			}
			return 0
		}),
		counter("presencehub_cluster_failovers_total", "Times this replica took the sequencer lease.", &cm.Terms),
		counter("presencehub_cluster_appends_total", "Changes this replica appended to the cluster log as sequencer.", &cm.Appends),
		counter("presencehub_cluster_rebuilds_total", "Snapshots of the cluster log loaded into the hub (the first included).", &cm.Rebuilds),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presencehub_cluster_log_entries", Help: "Entries in the cluster log now (-1 when Redis does not answer)."}, func() float64 {
			if st, ok := status(); ok {
				return float64(st.Length)
			}
			return -1
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presencehub_cluster_lag_entries", Help: "Log entries this replica has not applied yet (-1 when Redis does not answer)."}, func() float64 {
			st, ok := status()
			if !ok {
				return -1
			}
			if pos := cm.Position.Load(); st.Appended > pos {
				return float64(st.Appended - pos)
			}
			return 0
		}),
	}
}
