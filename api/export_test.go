package api

import "github.com/presencehub/presencehub/store"

// SetStreamCheckedHook sets what runs once a stream upgrade's credential
// has been checked (nil: nothing); tests setting it must not be parallel.
func SetStreamCheckedHook(f func(store.Principal)) { testHookStreamChecked = f }
