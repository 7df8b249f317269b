package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// throwawayTLS writes a CA and a server certificate for 127.0.0.1 signed by
// it into dir, and returns the files' paths.
func throwawayTLS(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "presencehub test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRedisTLSWithCAFileAndACLUser: rediss:// verified with --redis-ca-file,
// as an ACL user; the watch works over it, and a wrong CA or password is
// refused by Check with a clear error.
func TestRedisTLSWithCAFileAndACLUser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, certFile, keyFile := throwawayTLS(t, dir)
	tlsPort := freeTCPPort(t)
	srv := storetest.StartRedis(t, storetest.WithArgs(
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile,
		"--tls-auth-clients", "no",
		"--user", "presence", "on", ">s3cret", "~*", "&*", "+@all",
	))
	tlsURL := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0"

	w := watch(t, srv, store.RedisOptions{URL: tlsURL, Username: "presence", Password: "s3cret", CAFile: caFile})
	w.waitResyncs(t, 1)
	rec := store.SBCRecord{Contact: "sip:alice@10.0.0.5", Protocol: "tls", Proxy: "sip:1.2.3.4:5061"}
	if _, err := store.RegisterAsSBC(context.Background(), srv.Client(t), "alice", "tls.example.com", rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "registration seen over TLS", "alice@tls.example.com")

	otherCA, _, _ := throwawayTLS(t, t.TempDir())
	for _, tt := range []struct {
		name string
		opts store.RedisOptions
		want string
	}{
		{"CA that did not sign the server", store.RedisOptions{URL: tlsURL, Username: "presence", Password: "s3cret", CAFile: otherCA}, "certificate"},
		{"wrong password", store.RedisOptions{URL: tlsURL, Username: "presence", Password: "nope", CAFile: caFile}, "WRONGPASS"},
	} {
		src, err := store.NewRedisSource(tt.opts)
		if err != nil {
			t.Fatalf("%s: NewRedisSource: %v", tt.name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = src.Check(ctx)
		cancel()
		src.Close()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Check = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestRedisTopologyOptionsAreChecked(t *testing.T) {
	caFile, _, _ := throwawayTLS(t, t.TempDir())
	for _, tt := range []struct {
		name string
		opts store.RedisOptions
	}{
		{"CA file without rediss://", store.RedisOptions{URL: "redis://127.0.0.1:6379/0", CAFile: caFile}},
		{"missing CA file", store.RedisOptions{URL: "rediss://127.0.0.1:6379/0", CAFile: "/nonexistent/ca.pem"}},
		{"CA file without a certificate", store.RedisOptions{URL: "rediss://127.0.0.1:6379/0", CAFile: os.Args[0]}},
		{"sentinels without a master name", store.RedisOptions{URL: "redis://127.0.0.1:6379/0", Sentinels: []string{"127.0.0.1:26379"}}},
	} {
		if _, err := store.NewRedisSource(tt.opts); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: NewRedisSource error = %v, want ErrInvalid", tt.name, err)
		}
	}
}
