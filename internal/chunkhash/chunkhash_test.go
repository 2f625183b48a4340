package chunkhash

import (
	"encoding/hex"
	"flag"
	"io"
	"testing"
)

func TestSumKnownAnswers(t *testing.T) {
	tests := []struct {
		alg  Alg
		in   string
		want string
	}{
		// FIPS 180-4 examples.
		{SHA256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{SHA256, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		// The BLAKE3 reference implementation's b3sum.
		{BLAKE3, "", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{BLAKE3, "abc", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
	}
	for _, tt := range tests {
		t.Run(tt.alg.String()+"/"+tt.in, func(t *testing.T) {
			got := Sum(tt.alg, []byte(tt.in))
			if hex.EncodeToString(got[:]) != tt.want {
				t.Fatalf("Sum(%v, %q) = %x, want %s", tt.alg, tt.in, got, tt.want)
			}
		})
	}
}

func TestSumPanicsOnUnknownAlg(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Sum with alg 2 did not panic")
		}
	}()
	Sum(2, nil)
}

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		alg  Alg
		ok   bool
	}{
		{"sha256", SHA256, true},
		{"blake3", BLAKE3, true},
		{"SHA256", 0, false},
		{"sha-256", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.name)
			if (err == nil) != tt.ok || got != tt.alg {
				t.Fatalf("Parse(%q) = %v, %v; want %v, ok %v", tt.name, got, err, tt.alg, tt.ok)
			}
			if tt.ok && (got.String() != tt.name || !got.Valid()) {
				t.Fatalf("%v: String %q, Valid %v", got, got.String(), got.Valid())
			}
		})
	}
	if a := Alg(7); a.Valid() || a.String() != "alg(7)" {
		t.Fatalf("Alg(7): Valid %v, String %q", a.Valid(), a.String())
	}
	if _, err := Alg(7).MarshalText(); err == nil {
		t.Fatal("MarshalText of an unknown alg succeeded")
	}
}

func TestFlagTextVar(t *testing.T) {
	fl := flag.NewFlagSet("t", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var a Alg
	fl.TextVar(&a, "hash", BLAKE3, "")
	if a != BLAKE3 {
		t.Fatalf("default %v, want blake3", a)
	}
	if err := fl.Parse([]string{"--hash", "sha256"}); err != nil || a != SHA256 {
		t.Fatalf("--hash sha256: %v, %v", a, err)
	}
	if err := fl.Parse([]string{"--hash", "md5"}); err == nil {
		t.Fatal("--hash md5 accepted")
	}
}
