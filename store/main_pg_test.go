package store

import (
	"testing"

	"github.com/presencehub/presencehub/store/storetest"
)

// TestMain provides a PostgreSQL server to every test of the package (the
// Redis tests start their own servers per test).
func TestMain(m *testing.M) {
	storetest.Main(m)
}
