package kwik

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

func testKeys(t testing.TB, fill byte) *clusterKeys {
	t.Helper()
	k, err := newClusterKeys(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifyToken(t *testing.T) {
	k, other := testKeys(t, 1), testKeys(t, 2)
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
		{"altered address", flip(good, len(good)-wire.MACLen-1), "10.0.0.1:4433", now, ErrTokenInvalid},
		{"altered MAC", flip(good, len(good)-1), "10.0.0.1:4433", now, ErrTokenInvalid},
		{"truncated", good[:len(good)-1], "10.0.0.1:4433", now, ErrTokenInvalid},
		{"empty", nil, "10.0.0.1:4433", now, ErrTokenInvalid},
		{"command key does not sign tokens", func() []byte {
			tok := wire.PathToken{SessionID: 42, PathID: 3, Expiry: unixMilli(now.Add(time.Minute)), Addr: "10.0.0.1:4433"}
			b := tok.AppendSigned(nil)
			tok.MAC = sum(k.command, b)
			return append(b, tok.MAC[:]...)
		}(), "10.0.0.1:4433", now, ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := k.verifyToken(tt.token, tt.addr, tt.now)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && (tok.SessionID != 42 || tok.PathID != 3 || tok.Addr != "10.0.0.1:4433") {
				t.Fatalf("token %+v", tok)
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
		{"token key", func() []byte {
			b := c.AppendSigned(nil)
			m := sum(k.token, b)
			return append(b, m[:]...)
		}(), false},
		{"grant length changed", func() []byte { b := bytes.Clone(good); b[8+5] = 8; return b }(), false},
		{"payload changed", func() []byte { b := bytes.Clone(good); b[len(b)-wire.MACLen-1] ^= 1; return b }(), false},
		{"trailing byte", append(bytes.Clone(good), 0), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.verifyCommand(tt.b)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errCommandMAC) {
				t.Fatalf("err %v does not match errCommandMAC", err)
			}
			if tt.ok && !reflect.DeepEqual(got, c) {
				t.Fatalf("command %+v, want %+v", got, c)
			}
		})
	}
}

func TestClusterKeyTooShort(t *testing.T) {
	if _, err := newClusterKeys(make([]byte, 31)); err == nil {
		t.Fatal("31-byte key accepted")
	}
	srvTLS, _ := testTLS(t)
	if _, err := ListenSecondary("127.0.0.1:0", &Config{TLSConfig: srvTLS}); !errors.Is(err, ErrNoClusterKey) {
		t.Fatalf("ListenSecondary without a key: %v", err)
	}
	if _, err := Listen("127.0.0.1:0", &Config{TLSConfig: srvTLS, ClusterKey: make([]byte, 16)}); err == nil {
		t.Fatal("Listen with a 16-byte key accepted")
	}
}

// FuzzVerifyToken checks that the token verifier never panics and accepts
// only the genuine token: any other bytes, including re-encodings of the
// same fields, fail the MAC.
func FuzzVerifyToken(f *testing.F) {
	k := testKeys(f, 1)
	now := time.UnixMilli(1_700_000_000_000)
	good := k.issueToken(42, 3, "10.0.0.1:4433", now.Add(time.Minute))
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := k.verifyToken(in, "10.0.0.1:4433", now)
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
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := k.verifyCommand(in)
		if err == nil && !bytes.Equal(in, good) {
			t.Fatalf("forged command accepted: %x (%+v)", in, c)
		}
		if err != nil && !errors.Is(err, errCommandMAC) {
			t.Fatalf("error %v does not match errCommandMAC", err)
		}
	})
}
