package store

import "testing"

// TestPrincipalVisibility pins every CanSee… rule in one table: who may see
// which account, service provider and API key.
func TestPrincipalVisibility(t *testing.T) {
	admin := Principal{Scope: ScopeAdmin}
	sp1 := Principal{Scope: ScopeServiceProvider, ServiceProviderSID: "sp1"}
	acct1 := Principal{Scope: ScopeAccount, ServiceProviderSID: "sp1", AccountSID: "a1"}
	spNone := Principal{Scope: ScopeServiceProvider} // malformed: no provider
	acctNone := Principal{Scope: ScopeAccount}       // malformed: no account
	unknown := Principal{Scope: "root", ServiceProviderSID: "sp1", AccountSID: "a1"}

	a1 := Account{SID: "a1", ServiceProviderSID: "sp1"}
	a2 := Account{SID: "a2", ServiceProviderSID: "sp1"}
	b1 := Account{SID: "b1", ServiceProviderSID: "sp2"}
	keyAdmin := APIKey{Scope: ScopeAdmin}
	keySP1 := APIKey{Scope: ScopeServiceProvider, ServiceProviderSID: "sp1"}
	keyA1 := APIKey{Scope: ScopeAccount, ServiceProviderSID: "sp1", AccountSID: "a1"}
	keyA2 := APIKey{Scope: ScopeAccount, ServiceProviderSID: "sp1", AccountSID: "a2"}
	keyB1 := APIKey{Scope: ScopeAccount, ServiceProviderSID: "sp2", AccountSID: "b1"}

	tests := []struct {
		name string
		p    Principal
		// what p sees of: accounts a1 a2 b1; providers sp1 sp2;
		// keys admin sp1 a1 a2 b1
		accounts  [3]bool
		providers [2]bool
		keys      [5]bool
	}{
		{"admin", admin, [3]bool{true, true, true}, [2]bool{true, true}, [5]bool{true, true, true, true, true}},
		{"service provider", sp1, [3]bool{true, true, false}, [2]bool{true, false}, [5]bool{false, true, true, true, false}},
		{"account", acct1, [3]bool{true, false, false}, [2]bool{true, false}, [5]bool{false, false, true, false, false}},
		{"service provider without sid", spNone, [3]bool{}, [2]bool{}, [5]bool{}},
		{"account without sid", acctNone, [3]bool{}, [2]bool{}, [5]bool{}},
		{"unknown scope", unknown, [3]bool{}, [2]bool{true, false}, [5]bool{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, a := range []Account{a1, a2, b1} {
				if got := tt.p.CanSeeAccount(a); got != tt.accounts[i] {
					t.Errorf("CanSeeAccount(%s) = %v, want %v", a.SID, got, tt.accounts[i])
				}
			}
			for i, sid := range []string{"sp1", "sp2"} {
				if got := tt.p.CanSeeServiceProvider(sid); got != tt.providers[i] {
					t.Errorf("CanSeeServiceProvider(%s) = %v, want %v", sid, got, tt.providers[i])
				}
			}
			for i, k := range []APIKey{keyAdmin, keySP1, keyA1, keyA2, keyB1} {
				if got := tt.p.CanSeeAPIKey(k); got != tt.keys[i] {
					t.Errorf("CanSeeAPIKey(%+v) = %v, want %v", k, got, tt.keys[i])
				}
			}
		})
	}
}
