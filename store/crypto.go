package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// sealer encrypts SIP client passwords at rest. They must be reversible
// (digest authentication needs the cleartext to compute HA1), so they are
// encrypted rather than hashed.
//
// A value written now is
//
//	"PH" 0x01 | key id (4 bytes) | nonce (12) | AES-256-GCM ciphertext | tag (16)
//
// The 7-byte header is authenticated with the row's aad. The AES key is
// HKDF-SHA256 of the configured key's bytes; the key id is the first 4
// bytes of another SHA-256 of them, so a row says which key wrote it and
// --encryption-key-previous can read rows of the key before (see
// DB.Reencrypt for moving them to the current one).
//
// Values written before key ids (the legacy format: nonce | ciphertext |
// tag, under SHA-256 of the configured string) are read with the legacy
// candidates: SHA-256 of --encryption-key-legacy, and of the current and
// previous keys' strings (so a deployment whose old secret is already a
// strong key needs no extra setting).
type sealer struct {
	current *sealKey
	byID    map[[keyIDLen]byte]*sealKey // current and previous
	legacy  []cipher.AEAD
}

type sealKey struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

const (
	keyIDLen   = 4
	sealHeader = 3 + keyIDLen // "PH", version 1, key id
	// MinEncryptionKeyBytes is the least a key must carry: 256 bits.
	MinEncryptionKeyBytes = 32
	// encryptionKeyHowTo ends every message about a bad key.
	encryptionKeyHowTo = "make one with: openssl rand -hex 32"
)

var sealMagic = [3]byte{'P', 'H', 1}

// ParseEncryptionKey decodes an encryption key written as hex (64 or more
// hex digits) or base64 (standard or URL alphabet, padded or not) of at
// least 32 bytes. Surrounding white space is ignored. name (the flag or
// variable) is used in the error, which never quotes the key.
func ParseEncryptionKey(name, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, newError(KindInvalid, name, "%s is empty: set it to 32 random bytes in hex or base64 (%s)", name, encryptionKeyHowTo)
	}
	var raw []byte
	if b, err := hex.DecodeString(s); err == nil {
		raw = b
	} else {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.Strict().DecodeString(s); err == nil {
				raw = b
				break
			}
		}
	}
	if raw == nil {
		return nil, newError(KindInvalid, name, "%s is neither hex nor base64; it must be at least %d random bytes written as 64 hex digits or 44 base64 characters (%s)",
			name, MinEncryptionKeyBytes, encryptionKeyHowTo)
	}
	if len(raw) < MinEncryptionKeyBytes {
		return nil, newError(KindInvalid, name, "%s carries %d bits, at least %d are required (%s)",
			name, 8*len(raw), 8*MinEncryptionKeyBytes, encryptionKeyHowTo)
	}
	return raw, nil
}

// KeyID returns the id rows written with the key raw carry, in hex (it is
// what logs and reencrypt print; it reveals nothing usable about the key).
func KeyID(raw []byte) string {
	id := keyID(raw)
	return hex.EncodeToString(id[:])
}

func keyID(raw []byte) [keyIDLen]byte {
	h := sha256.Sum256(append([]byte("presencehub encryption key id v1\x00"), raw...))
	return [keyIDLen]byte(h[:keyIDLen])
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func newSealKey(raw []byte) (*sealKey, error) {
	key, err := hkdf.Key(sha256.New, raw, nil, "presencehub client passwords v1", 32)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return &sealKey{id: keyID(raw), aead: aead}, nil
}

// legacyAEAD is the cipher of the legacy format: AES-256-GCM under SHA-256
// of the configured string, exactly as it was given.
func legacyAEAD(secret string) cipher.AEAD {
	key := sha256.Sum256([]byte(secret))
	aead, err := newGCM(key[:])
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	return aead
}

func newSealer(k Keys) (*sealer, error) {
	raw, err := ParseEncryptionKey("PRESENCEHUB_ENCRYPTION_KEY", k.Current)
	if err != nil {
		return nil, err
	}
	cur, err := newSealKey(raw)
	if err != nil {
		return nil, err
	}
	s := &sealer{current: cur, byID: map[[keyIDLen]byte]*sealKey{cur.id: cur}}
	if k.Previous != "" {
		raw, err := ParseEncryptionKey("PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS", k.Previous)
		if err != nil {
			return nil, err
		}
		prev, err := newSealKey(raw)
		if err != nil {
			return nil, err
		}
		if prev.id == cur.id {
			return nil, newError(KindInvalid, "PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS", "PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS is the current key (id %x): leave it empty or set it to the key used before", cur.id)
		}
		s.byID[prev.id] = prev
	}
	for _, secret := range []string{k.Legacy, k.Current, k.Previous} {
		if secret != "" {
			s.legacy = append(s.legacy, legacyAEAD(secret))
		}
	}
	return s, nil
}

// seal encrypts plaintext with the current key. aad binds the ciphertext
// to its row (the client's sid), so a value copied into another row does
// not decrypt.
func (s *sealer) seal(plaintext, aad string) []byte {
	hdr := make([]byte, sealHeader, sealHeader+12+len(plaintext)+16)
	copy(hdr, sealMagic[:])
	copy(hdr[3:], s.current.id[:])
	return s.current.aead.Seal(hdr, nil, []byte(plaintext), append(hdr[:sealHeader:sealHeader], aad...))
}

// errDecrypt is open's error: never with the ciphertext.
var errDecrypt = errors.New("cannot decrypt password: wrong encryption key or corrupted value")

// open decrypts a value produced by seal (with the current or the previous
// key) or in the legacy format, with the same aad. current reports whether
// it was written with the current key (so reencrypt can leave it alone).
func (s *sealer) open(ciphertext []byte, aad string) (plaintext string, current bool, err error) {
	if len(ciphertext) >= sealHeader && [3]byte(ciphertext[:3]) == sealMagic {
		if k := s.byID[[keyIDLen]byte(ciphertext[3:sealHeader])]; k != nil {
			hdr := ciphertext[:sealHeader:sealHeader]
			if p, err := k.aead.Open(nil, nil, ciphertext[sealHeader:], append(hdr, aad...)); err == nil {
				return string(p), k == s.current, nil
			}
		}
		// A legacy value whose random nonce happens to start like a
		// header is still tried as one below.
	}
	for _, aead := range s.legacy {
		if p, err := aead.Open(nil, nil, ciphertext, []byte(aad)); err == nil {
			return string(p), false, nil
		}
	}
	return "", false, errDecrypt
}

// newToken returns prefix followed by 32 random bytes in unpadded base64url
// (256 bits: far beyond guessing, and safe in headers and URLs).
func newToken(prefix string) string {
	var b [32]byte
	rand.Read(b[:]) // never returns an error (crypto/rand, Go 1.24+)
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// tokenHash is what the database stores instead of a token. A plain SHA-256
// is enough: tokens carry 256 random bits, so there is nothing to brute-force
// and no need for a slow password hash on the hot path.
func tokenHash(token string) [32]byte {
	return sha256.Sum256([]byte(token))
}

// newSID returns a random (version 4) UUID in canonical lower-case form.
func newSID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 36)
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&0x0f])
	}
	return string(b)
}

// maskPassword obscures a password the way jambonz's obscureKey(pw, 1) does:
// the first character, then "X" for every other character. Passwords of zero
// or one character are returned as they are.
func maskPassword(pw string) string {
	r := []rune(pw)
	if len(r) <= 1 {
		return pw
	}
	b := make([]byte, 0, len(string(r[0]))+len(r)-1)
	b = append(b, string(r[0])...)
	for range len(r) - 1 {
		b = append(b, 'X')
	}
	return string(b)
}

// storedKeyID names the key a stored value says it was written with: its
// key id in hex, or "legacy" for the format without one.
func storedKeyID(v []byte) string {
	if len(v) >= sealHeader && [3]byte(v[:3]) == sealMagic {
		return hex.EncodeToString(v[3:sealHeader])
	}
	return "legacy"
}

// EncryptionKeyID returns the id of the key passwords are written with now
// (KeyID), for logs.
func (db *DB) EncryptionKeyID() string {
	return hex.EncodeToString(db.sealer.current.id[:])
}
