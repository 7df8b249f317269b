// Package hub keeps the live presence snapshot of SIP registrations and fans
// every change out to subscribers.
//
// Concurrency contract: one owner goroutine (started by Run) is the only
// writer of registrations, sequence numbers and history. It applies updates
// from a Source, runs the hub's own expiry clock, assigns per-realm sequence
// numbers and pushes encoded changes into the subscribers' bounded queues.
// The one exception is the realm's known SIP clients (SetClients, fed by the
// PostgreSQL watcher): they are replaced by their caller under the realm's
// lock, emit no change, and only give the flags of users who are not
// registered, which the owner and the readers read under the same lock. Readers (REST, dashboard) take a per-realm read
// lock and never wait for the owner's work on other realms. Subscribe takes the
// realm's write lock, so the snapshot it returns and the first change it queues
// are adjacent: nothing falls between them and nothing is delivered twice.
// Pushing into a subscriber never blocks: a full queue is conflated (latest
// state per user) and, if that is not enough, marked for a fresh snapshot.
//
// Lock order: Hub.mu (the realm map) before a realm's mu before a
// subscription's mu. No code holds two realms' locks at once, and the owner
// never waits for a reader: it takes only locks that are held briefly.
// Run ends by closing every subscription; Subscribe after that returns a
// closed one.
//
// Presence is partitioned by SIP realm (lower-cased). The mapping from account
// to realm lives outside the hub; one realm is one account.
//
// hub imports only the standard library.
package hub
