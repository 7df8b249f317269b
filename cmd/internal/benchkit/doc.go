// Package benchkit holds the parts of presencehub's benchmark suite
// (cmd/presencehub-bench) that know nothing of presencehub: the result
// table and its number formats, medians and percentiles, CPU and memory of
// processes from /proc, a minimal websocket reader, the wrk driver and a
// Prometheus text sample reader.
package benchkit
