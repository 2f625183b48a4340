package kwik

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

func TestConfigDefaults(t *testing.T) {
	in := &tls.Config{NextProtos: []string{"h3"}, MinVersion: tls.VersionTLS12}
	c, err := (&Config{TLSConfig: in}).resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.StreamReceiveWindow != 8<<20 || c.SessionReceiveWindow != 32<<20 || c.MaxIncomingStreams != 1024 ||
		c.MaxControlFrameSize != 64<<10 || c.MaxDataFramePayload != 256<<10 ||
		c.HandshakeTimeout != 10*time.Second || c.IdleTimeout != 30*time.Second || c.KeepAlivePeriod != 10*time.Second ||
		c.TokenLifetime != time.Minute || c.MaxPaths != 8 || c.ReportInterval != 20*time.Millisecond || c.SigningKey != nil || c.VerifyKeys != nil ||
		c.PathStallTimeout != 2*time.Second ||
		c.Logger == nil || c.now == nil {
		t.Fatalf("defaults: %+v", c)
	}
	if c.TLSConfig == in || c.TLSConfig.MinVersion != tls.VersionTLS13 || len(c.TLSConfig.NextProtos) != 1 || c.TLSConfig.NextProtos[0] != ALPN {
		t.Fatalf("TLS config not cloned and forced to TLS 1.3 / %s: %+v", ALPN, c.TLSConfig)
	}
	if in.NextProtos[0] != "h3" || in.MinVersion != tls.VersionTLS12 {
		t.Fatal("caller's TLS config modified")
	}
	q := c.quicConfig(false)
	if q.MaxStreamReceiveWindow < c.StreamReceiveWindow || q.MaxConnectionReceiveWindow < c.SessionReceiveWindow ||
		q.InitialStreamReceiveWindow != q.MaxStreamReceiveWindow || q.MaxIncomingUniStreams < 4096 || q.MaxIncomingStreams != 1 {
		t.Fatalf("quic config %+v", q)
	}
	if c.quicConfig(true).MaxIncomingStreams >= 0 {
		t.Fatal("a client accepts no bidirectional QUIC streams")
	}
	if q := c.quicConfigFor(false, true); q.MaxIncomingStreams != 1 || q.MaxIncomingUniStreams >= 0 {
		t.Fatalf("a secondary accepts the control stream and no data stream: %+v", q)
	}
	keys := []ed25519.PublicKey{make([]byte, ed25519.PublicKeySize)}
	c, err = (&Config{TLSConfig: in, VerifyKeys: keys}).resolve()
	if err != nil || &c.VerifyKeys[0] == &keys[0] {
		t.Fatalf("verify keys not copied: %v", err)
	}
	c, err = (&Config{TLSConfig: in, KeepAlivePeriod: -1}).resolve()
	if err != nil || c.KeepAlivePeriod != 0 {
		t.Fatalf("negative keep-alive: %v, %v", c.KeepAlivePeriod, err)
	}
	c, err = (&Config{TLSConfig: in, PathStallTimeout: -1}).resolve()
	if err != nil || c.PathStallTimeout != 0 {
		t.Fatalf("negative PathStallTimeout (disabled): %v, %v", c.PathStallTimeout, err)
	}
	c, err = (&Config{TLSConfig: in, PathStallTimeout: 10 * time.Millisecond}).resolve()
	if err != nil || c.PathStallTimeout != 10*time.Millisecond {
		t.Fatalf("shortest PathStallTimeout: %v, %v", c.PathStallTimeout, err)
	}
}

func TestConfigErrors(t *testing.T) {
	tc := &tls.Config{}
	tests := []struct {
		name string
		c    *Config
		want string
	}{
		{"nil", nil, "nil Config"},
		{"no TLS", &Config{}, "TLSConfig is required"},
		{"negative streams", &Config{TLSConfig: tc, MaxIncomingStreams: -1}, "MaxIncomingStreams"},
		{"tiny control frames", &Config{TLSConfig: tc, MaxControlFrameSize: 100}, "MaxControlFrameSize"},
		{"tiny data frames", &Config{TLSConfig: tc, MaxDataFramePayload: 100}, "MaxDataFramePayload"},
		{"huge window", &Config{TLSConfig: tc, SessionReceiveWindow: 1 << 50}, "receive windows"},
		{"short signing key", &Config{TLSConfig: tc, SigningKey: make([]byte, 31)}, "SigningKey of 31 bytes"},
		{"too many paths", &Config{TLSConfig: tc, MaxPaths: 33}, "MaxPaths 33"},
		{"negative token lifetime", &Config{TLSConfig: tc, TokenLifetime: -1}, "negative TokenLifetime"},
		{"tiny stall timeout", &Config{TLSConfig: tc, PathStallTimeout: time.Millisecond}, "PathStallTimeout 1ms below 10ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.resolve()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServerTLS(filepath.Join(dir, "missing.pem"), junk); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing certificate: %v", err)
	}
	if _, err := LoadClientTLS(filepath.Join(dir, "missing.pem"), ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA: %v", err)
	}
	if _, err := LoadClientTLS(junk, ""); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("junk CA: %v", err)
	}
}

func TestControlQueueCoalesces(t *testing.T) {
	var q ctrlQueue
	q.wake = make(chan struct{}, 1)
	q.setMaxStreamData(4, 100)
	q.setMaxStreamData(4, 300)
	q.setMaxStreamData(4, 200) // stale: never lowers
	q.setMaxData(1000)
	q.setMaxData(2000)
	q.setMaxStreams(7)
	q.push(&wire.StopSending{StreamID: 4, Code: 1})
	b, n := q.drain(nil)
	want := wire.AppendFrame(nil, &wire.StopSending{StreamID: 4, Code: 1})
	want = wire.AppendFrame(want, &wire.MaxData{Max: 2000})
	want = wire.AppendFrame(want, &wire.MaxStreams{Max: 7})
	want = wire.AppendFrame(want, &wire.MaxStreamData{StreamID: 4, Max: 300})
	if n != 4 || string(b) != string(want) {
		t.Fatalf("drained %d frames %x, want 4 frames %x", n, b, want)
	}
	if b, n := q.drain(nil); n != 0 || len(b) != 0 {
		t.Fatalf("second drain: %d frames", n)
	}
}
