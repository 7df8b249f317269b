package api

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestScanNames: the fast path agrees with encoding/json wherever it
// answers, and declines everything it does not handle exactly.
func TestScanNames(t *testing.T) {
	tests := []struct {
		body   string
		wantOK bool
	}{
		{`["alice","bob"]`, true},
		{` [ "alice" , "bob" ] `, true},
		{"[\n\t\"a\"\r\n]", true},
		{`[]`, true},
		{`[ ]`, true},
		{`["ünïcode","日本"]`, true},
		{`[""]`, true},
		{`["a\"b"]`, false},
		{`["a\u0041"]`, false},
		{`["a",]`, false},
		{`[,"a"]`, false},
		{`["a" "b"]`, false},
		{`["a"]x`, false},
		{`["a"`, false},
		{`[1]`, false},
		{`{"a":1}`, false},
		{"[\"a\x01\"]", false},
		{"[\"\xff\"]", false},
		{`null`, false},
	}
	for _, tt := range tests {
		got, ok := scanNames([]byte(tt.body))
		if ok != tt.wantOK {
			t.Errorf("scanNames(%q) ok = %v, want %v", tt.body, ok, tt.wantOK)
			continue
		}
		if !ok {
			continue
		}
		var want []string
		if err := json.Unmarshal([]byte(tt.body), &want); err != nil {
			t.Errorf("scanNames accepted %q, which encoding/json rejects: %v", tt.body, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("scanNames(%q) = %q, encoding/json gives %q", tt.body, got, want)
		}
	}
}
