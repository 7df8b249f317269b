package store

import (
	"encoding/json"
	"testing"
	"unsafe"
)

// recordCorpus are values as SBCs, webhooks and broken writers leave them.
var recordCorpus = []string{
	`{}`,
	` { } `,
	`{"contact":"sip:a@10.0.0.1:5060;transport=udp","sbcAddress":"203.0.113.1:5060","privateSbcAddress":"10.0.0.1:5060","protocol":"udp","proxy":"sip:198.51.100.7:5060","callHook":"https://h/c","callStatusHook":"https://h/s","allow_direct_app_calling":1,"allow_direct_queue_calling":false,"allow_direct_user_calling":false,"expiryTime":1764201234567}`,
	"{\n \"contact\" : \"sip:x\" ,\t\"protocol\":null,\r\"expiryTime\":1.7e12}",
	`{"contact":"sip:a","contact":null}`,
	`{"contact":null,"contact":"sip:b"}`,
	`{"callHook":"a","callHook":null}`,
	`{"callHook":{"url":"https://h","method":"POST"}}`,
	`{"callHook":[1,2]}`,
	`{"callHook":12.5,"callStatusHook":true}`,
	`{"allow_direct_app_calling":"1","allow_direct_queue_calling":"","allow_direct_user_calling":null}`,
	`{"allow_direct_app_calling":0.0,"allow_direct_queue_calling":-0,"allow_direct_user_calling":2e-3}`,
	`{"allow_direct_app_calling":true,"allow_direct_user_calling":1e400}`,
	`{"expiryTime":"1764201234567"}`,
	`{"expiryTime":true}`,
	`{"expiryTime":null}`,
	`{"expiryTime":-1}`,
	`{"expiryTime":1e30}`,
	`{"expiryTime":01}`,
	`{"expiryTime":1.}`,
	`{"expiryTime":.5}`,
	`{"expiryTime":1e}`,
	`{"Contact":"sip:upper"}`,
	`{"CONTACT":"sip:upper"}`,
	`{"contaCt":"x","unknown":"y","nested":{"a":1}}`,
	`{"unknown":"y","other":3,"flag":true,"n":null}`,
	`{"contact":"sip:\u00e9"}`,
	`{"contact":"sip:é","proxy":"sip:\"q\""}`,
	`{"contact":"tab	inside"}`,
	"{\"contact\":\"bad \xff utf8\"}",
	"{\"k\xe2\x84\xaaey\":1}",
	`{"protocol":5}`,
	`{"protocol":true}`,
	`{"contact":"a",}`,
	`{"contact":"a" "proxy":"b"}`,
	`{"contact":"a"} x`,
	`{"contact":"a"`,
	`{"contact"}`,
	`{"contact":nul}`,
	`{"contact":tru}`,
	`{,}`,
	`[1]`,
	`{"a":1}{}`,
}

// TestParseRecordFastAgreesWithEncodingJSON checks that wherever the fast
// decoder takes a value, encoding/json takes it too and gives the same
// record.
func TestParseRecordFastAgreesWithEncodingJSON(t *testing.T) {
	fast := 0
	for _, v := range recordCorpus {
		if checkFastRecord(t, []byte(v)) {
			fast++
		}
	}
	if fast < 10 {
		t.Errorf("the fast decoder took only %d of the %d values; it should take the common ones", fast, len(recordCorpus))
	}
}

func checkFastRecord(t *testing.T, v []byte) bool {
	t.Helper()
	var got recordJSON
	if !parseRecordFast(v, &got) {
		return false
	}
	var want recordJSON
	if err := json.Unmarshal(v, &want); err != nil {
		t.Errorf("fast decoder took %q, encoding/json refuses it: %v", v, err)
		return true
	}
	if got != want {
		t.Errorf("%q:\n fast %+v\n want %+v", v, got, want)
	}
	return true
}

func FuzzParseRecordFast(f *testing.F) {
	for _, v := range recordCorpus {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, v []byte) { checkFastRecord(t, v) })
}

func BenchmarkParseRecord(b *testing.B) {
	v := []byte(recordCorpus[2])
	for b.Loop() {
		if _, err := parseRecord("user:alice@example.com", v); err != nil {
			b.Fatal(err)
		}
	}
}

// TestInternBytes: a value seen before is found by its bytes without an
// allocation, and gives the same copy as intern.
func TestInternBytes(t *testing.T) {
	for _, v := range []string{"wss", "192.0.2.10:8443", "http://hooks.invalid/call", ""} {
		got := internBytes([]byte(v))
		if got != v {
			t.Fatalf("internBytes(%q) = %q, want %q", v, got, v)
		}
		if v == "" {
			continue
		}
		if want := intern(v); unsafe.StringData(got) != unsafe.StringData(want) {
			t.Errorf("internBytes(%q) and intern(%q) gave different copies", v, v)
		}
		b := []byte(v)
		if n := testing.AllocsPerRun(100, func() { _ = internBytes(b) }); n != 0 {
			t.Errorf("internBytes(%q) of a known value: %v allocations, want 0", v, n)
		}
	}
}
