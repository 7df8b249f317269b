package storetest

// EncryptionKey and OtherEncryptionKey are fixed PRESENCEHUB_ENCRYPTION_KEY
// values for tests: 256 bits in hex, as the store requires (they are
// SHA-256 of "presencehub test key 1" and "... 2"; never use them outside
// tests).
const (
	EncryptionKey      = "625372dcd0dcd7dca3a339a4b5c4eccee4cefff751ead2fdb3f81a9d716a94ba"
	OtherEncryptionKey = "813215c9f775e73b797ed4e0241fef8256223cb272ff5c39a7a4f00f545a4dac"
)
