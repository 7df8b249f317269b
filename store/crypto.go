package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// sealer encrypts SIP client passwords at rest. They must be reversible
// (digest authentication needs the cleartext to compute HA1), so they are
// encrypted rather than hashed.
//
// The format is AES-256-GCM with a random 96-bit nonce per value, prepended
// to the ciphertext (cipher.NewGCMWithRandomNonce): nonce || ciphertext || tag.
// The key is SHA-256 of the configured secret, so any non-empty string works
// as PRESENCEHUB_ENCRYPTION_KEY; a short secret is still a weak one.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(secret string) (*sealer, error) {
	if secret == "" {
		return nil, fmt.Errorf("PRESENCEHUB_ENCRYPTION_KEY is empty; set it to a long random secret: %w", ErrInvalid)
	}
	key := sha256.Sum256([]byte(secret))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts plaintext. aad binds the ciphertext to its row (the client's
// sid), so a value copied into another row does not decrypt.
func (s *sealer) seal(plaintext, aad string) []byte {
	return s.aead.Seal(nil, nil, []byte(plaintext), []byte(aad))
}

// open decrypts a value produced by seal with the same aad.
func (s *sealer) open(ciphertext []byte, aad string) (string, error) {
	p, err := s.aead.Open(nil, nil, ciphertext, []byte(aad))
	if err != nil {
		// Wrong PRESENCEHUB_ENCRYPTION_KEY or a tampered row: say so, but
		// never include the ciphertext.
		return "", errors.New("cannot decrypt password: wrong encryption key or corrupted value")
	}
	return string(p), nil
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
