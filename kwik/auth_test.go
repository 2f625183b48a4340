package kwik

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// testKeys returns a primary's keys from a seed of fill bytes.
func testKeys(t testing.TB, fill byte) *clusterKeys {
	t.Helper()
	k, err := newSigningKeys(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{fill}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verifyOnly returns a secondary's keys: the public halves of ks.
func verifyOnly(t testing.TB, ks ...*clusterKeys) *clusterKeys {
	t.Helper()
	var pubs []ed25519.PublicKey
	for _, k := range ks {
		pubs = append(pubs, k.sign.Public().(ed25519.PublicKey))
	}
	v, err := newVerifyKeys(pubs)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyToken(t *testing.T) {
	k, other := testKeys(t, 1), testKeys(t, 2)
	sec := verifyOnly(t, k) // what a secondary holds
	now := time.UnixMilli(1_700_000_000_000)
	good := k.issueToken(42, 3, "10.0.0.1:4433", now.Add(time.Minute))
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		return c
	}
	tests := []struct {
		name  string
		token []byte
		addr  string
		now   time.Time
		want  error
	}{
		{"valid", good, "10.0.0.1:4433", now, nil},
		{"valid at expiry", good, "10.0.0.1:4433", now.Add(time.Minute), nil},
		{"expired", good, "10.0.0.1:4433", now.Add(time.Minute + time.Millisecond), ErrTokenExpired},
		{"other secondary", good, "10.0.0.2:4433", now, ErrTokenWrongSecondary},
		{"other key", other.issueToken(42, 3, "10.0.0.1:4433", now.Add(time.Minute)), "10.0.0.1:4433", now, ErrTokenInvalid},
		{"altered session", flip(good, 0), "10.0.0.1:4433", now, ErrTokenInvalid},
		{"altered address", flip(good, len(good)-wire.SigLen-1), "10.0.0.1:4433", now, ErrTokenInvalid},
		{"altered signature", flip(good, len(good)-1), "10.0.0.1:4433", now, ErrTokenInvalid},
		{"truncated", good[:len(good)-1], "10.0.0.1:4433", now, ErrTokenInvalid},
		{"empty", nil, "10.0.0.1:4433", now, ErrTokenInvalid},
		{"a command's signature does not sign tokens", func() []byte {
			tok := wire.PathToken{SessionID: 42, PathID: 3, Expiry: unixMilli(now.Add(time.Minute)), Addr: "10.0.0.1:4433"}
			b := tok.AppendSigned(nil)
			return append(b, k.signature(commandContext, b)...)
		}(), "10.0.0.1:4433", now, ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range []*clusterKeys{k, sec} {
				tok, err := v.verifyToken(tt.token, tt.addr, tt.now)
				if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
				if err == nil && (tok.SessionID != 42 || tok.PathID != 3 || tok.Addr != "10.0.0.1:4433") {
					t.Fatalf("token %+v", tok)
				}
			}
		})
	}
}

func TestVerifyCommand(t *testing.T) {
	k, other := testKeys(t, 1), testKeys(t, 2)
	c := &wire.Command{SessionID: 1, PathID: 2, Seq: 3, Expiry: 4, Grant: wire.Grant{StreamID: 5, Offset: 6, Length: 7}, Payload: []byte("chunk")}
	good := k.signCommand(c)
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"valid", good, true},
		{"other key", other.signCommand(&wire.Command{SessionID: 1, PathID: 2, Seq: 3, Expiry: 4, Grant: c.Grant, Payload: c.Payload}), false},
		{"a token's signature does not sign commands", func() []byte {
			b := c.AppendSigned(nil)
			return append(b, k.signature(tokenContext, b)...)
		}(), false},
		{"grant length changed", func() []byte { b := bytes.Clone(good); b[8+5] = 8; return b }(), false},
		{"payload changed", func() []byte { b := bytes.Clone(good); b[len(b)-wire.SigLen-1] ^= 1; return b }(), false},
		{"trailing byte", append(bytes.Clone(good), 0), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := verifyOnly(t, k).verifyCommand(tt.b)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errCommandSignature) {
				t.Fatalf("err %v does not match errCommandSignature", err)
			}
			if tt.ok && !reflect.DeepEqual(got, c) {
				t.Fatalf("command %+v, want %+v", got, c)
			}
		})
	}
}

// TestVerifyKeysDuringRotation: a secondary that holds the old and the new
// public key accepts what either private key signed, and nothing else.
func TestVerifyKeysDuringRotation(t *testing.T) {
	old, nu, other := testKeys(t, 1), testKeys(t, 2), testKeys(t, 3)
	sec := verifyOnly(t, old, nu)
	now := time.UnixMilli(1_700_000_000_000)
	for _, c := range []struct {
		name string
		k    *clusterKeys
		want error
	}{{"old key", old, nil}, {"new key", nu, nil}, {"another key", other, ErrTokenInvalid}} {
		_, err := sec.verifyToken(c.k.issueToken(1, 2, "h:1", now.Add(time.Minute)), "h:1", now)
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("token signed with the %s: %v, want %v", c.name, err, c.want)
		}
		cmd := c.k.signCommand(&wire.Command{SessionID: 1, PathID: 2, Seq: 1, Grant: wire.Grant{Length: 1}})
		if _, err := sec.verifyCommand(cmd); (err == nil) != (c.want == nil) {
			t.Errorf("command signed with the %s: %v", c.name, err)
		}
	}
}

func TestKeyChecks(t *testing.T) {
	if _, err := newSigningKeys(make([]byte, 32)); err == nil {
		t.Fatal("a 32-byte signing key accepted")
	}
	if _, err := newVerifyKeys([]ed25519.PublicKey{make([]byte, 31)}); err == nil {
		t.Fatal("a 31-byte verify key accepted")
	}
	srvTLS, _ := testTLS(t)
	if _, err := ListenSecondary("127.0.0.1:0", &Config{TLSConfig: srvTLS}); !errors.Is(err, ErrNoSigningKey) {
		t.Fatalf("ListenSecondary without a key: %v", err)
	}
	if _, err := Listen("127.0.0.1:0", &Config{TLSConfig: srvTLS, SigningKey: make([]byte, 16)}); err == nil {
		t.Fatal("Listen with a 16-byte key accepted")
	}
}

// FuzzVerifyToken checks that the token verifier never panics and accepts
// only the genuine token: any other bytes, including re-encodings of the
// same fields, fail the signature.
func FuzzVerifyToken(f *testing.F) {
	k := testKeys(f, 1)
	now := time.UnixMilli(1_700_000_000_000)
	good := k.issueToken(42, 3, "10.0.0.1:4433", now.Add(time.Minute))
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := verifyOnly(t, k).verifyToken(in, "10.0.0.1:4433", now)
		if err == nil && !bytes.Equal(in, good) {
			t.Fatalf("forged token accepted: %x (%+v)", in, tok)
		}
		if err != nil && refusalReason(err) == nil {
			t.Fatalf("error %v matches no refusal reason", err)
		}
	})
}

// FuzzVerifyCommand checks that the command verifier never panics and
// accepts only the genuine command.
func FuzzVerifyCommand(f *testing.F) {
	k := testKeys(f, 1)
	good := k.signCommand(&wire.Command{SessionID: 9, PathID: 1, Seq: 7, Expiry: 1 << 41, Grant: wire.Grant{StreamID: 4, Offset: 1 << 20, Length: 1 << 18}, Payload: []byte("chunk 12")})
	f.Add(good)
	f.Add(good[:40])
	sec := verifyOnly(f, k)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := sec.verifyCommand(in)
		if err == nil && !bytes.Equal(in, good) {
			t.Fatalf("forged command accepted: %x (%+v)", in, c)
		}
		if err != nil && !errors.Is(err, errCommandSignature) {
			t.Fatalf("error %v does not match errCommandSignature", err)
		}
	})
}
