package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())
	big, _ := testChunk(400, 200<<10) // beyond the value threshold: in the value log
	huge, _ := testChunk(401, 5<<20)  // a manifest of a 160 GiB file
	for _, tc := range []struct {
		name, key string
		value     []byte
	}{
		{"small", "manifest/a/b", []byte("v1")},
		{"empty value", "resume/x", []byte{}},
		{"empty key", "", []byte("root")},
		{"large value", "dir/big", big},
		{"huge value", "manifest/huge", huge},
		{"binary key", "k\x00\xff", []byte{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.GetMeta(tc.key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("GetMeta before PutMeta = %v, want ErrNotFound", err)
			}
			if err := s.PutMeta(tc.key, tc.value); err != nil {
				t.Fatalf("PutMeta: %v", err)
			}
			got, err := s.GetMeta(tc.key)
			if err != nil || !bytes.Equal(got, tc.value) {
				t.Fatalf("GetMeta = %d bytes, %v; want the %d bytes put", len(got), err, len(tc.value))
			}
			if err := s.PutMeta(tc.key, []byte("replaced")); err != nil {
				t.Fatalf("PutMeta (replace): %v", err)
			}
			if got, err := s.GetMeta(tc.key); err != nil || string(got) != "replaced" {
				t.Fatalf("GetMeta after replace = %q, %v", got, err)
			}
			if err := s.DeleteMeta(tc.key); err != nil {
				t.Fatalf("DeleteMeta: %v", err)
			}
			if _, err := s.GetMeta(tc.key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("GetMeta after DeleteMeta = %v, want ErrNotFound", err)
			}
			if err := s.DeleteMeta(tc.key); err != nil {
				t.Fatalf("DeleteMeta of a missing record = %v, want nil", err)
			}
		})
	}
}

func TestPutMetaDoesNotRetainValue(t *testing.T) {
	s := openTest(t, t.TempDir())
	v := []byte("original")
	if err := s.PutMeta("k", v); err != nil {
		t.Fatal(err)
	}
	copy(v, "XXXXXXXX")
	if got, err := s.GetMeta("k"); err != nil || string(got) != "original" {
		t.Fatalf("GetMeta = %q, %v; want \"original\"", got, err)
	}
}

func TestMetaKeyTooLong(t *testing.T) {
	s := openTest(t, t.TempDir())
	long := strings.Repeat("x", MaxMetaKeyLen+1)
	if err := s.PutMeta(long, nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("PutMeta(long key) = %v, want ErrInvalidKey", err)
	}
	if _, err := s.GetMeta(long); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("GetMeta(long key) = %v, want ErrInvalidKey", err)
	}
	if err := s.DeleteMeta(long); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("DeleteMeta(long key) = %v, want ErrInvalidKey", err)
	}
	if err := s.PutMeta(long[1:], []byte("max")); err != nil {
		t.Fatalf("PutMeta(key of MaxMetaKeyLen) = %v", err)
	}
}

func TestMetaAndChunksDoNotCollide(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(401, 100)
	mustPut(t, s, sum, data)
	// Meta keys spelled like the Badger keys of that chunk.
	for _, k := range []string{"c" + string(sum[:]), string(infoKey(sum)), string(sum[:])} {
		if err := s.PutMeta(k, []byte("meta")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(sum, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after look-alike meta keys: %v", err)
	}
	n := 0
	if err := s.ScanMeta("", func(k string, v []byte) error {
		n++
		if string(v) != "meta" {
			t.Errorf("ScanMeta saw %q = %q, not a meta record", k, v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("ScanMeta(\"\") saw %d records, want 3", n)
	}
	if err := s.Delete(sum); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetMeta(string(infoKey(sum))); err != nil || string(v) != "meta" {
		t.Fatalf("meta record after chunk Delete = %q, %v", v, err)
	}
}

func TestScanMeta(t *testing.T) {
	s := openTest(t, t.TempDir())
	recs := map[string]string{
		"dir/":     "root",
		"dir/a":    "A",
		"dir/a/b":  "AB",
		"dir/b":    "B",
		"dir0":     "not under dir/",
		"di":       "shorter",
		"resume/1": "r1",
	}
	for k, v := range recs {
		if err := s.PutMeta(k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	scan := func(prefix string) string {
		t.Helper()
		var got []string
		if err := s.ScanMeta(prefix, func(k string, v []byte) error {
			got = append(got, k+"="+string(v))
			return nil
		}); err != nil {
			t.Fatalf("ScanMeta(%q): %v", prefix, err)
		}
		return strings.Join(got, ",")
	}
	for prefix, want := range map[string]string{
		"dir/":    "dir/=root,dir/a=A,dir/a/b=AB,dir/b=B",
		"dir/a":   "dir/a=A,dir/a/b=AB",
		"resume/": "resume/1=r1",
		"nothing": "",
		"":        "di=shorter,dir/=root,dir/a=A,dir/a/b=AB,dir/b=B,dir0=not under dir/,resume/1=r1",
	} {
		if got := scan(prefix); got != want {
			t.Errorf("ScanMeta(%q) = %s, want %s", prefix, got, want)
		}
	}
}

func TestScanMetaStopsOnFnError(t *testing.T) {
	s := openTest(t, t.TempDir())
	for i := range 5 {
		if err := s.PutMeta(fmt.Sprintf("k%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.ScanMeta("k", func(string, []byte) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("ScanMeta = %v after %d calls, want the fn's error after 2", err, n)
	}
}

func TestScanMetaFnMayWrite(t *testing.T) {
	s := openTest(t, t.TempDir())
	for i := range 4 {
		if err := s.PutMeta(fmt.Sprintf("old/%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Move every record under old/ to new/ from inside the scan.
	err := s.ScanMeta("old/", func(k string, v []byte) error {
		if err := s.PutMeta("new/"+k[len("old/"):], v); err != nil {
			return err
		}
		return s.DeleteMeta(k)
	})
	if err != nil {
		t.Fatalf("ScanMeta: %v", err)
	}
	for i := range 4 {
		if v, err := s.GetMeta(fmt.Sprintf("new/%d", i)); err != nil || !bytes.Equal(v, []byte{byte(i)}) {
			t.Errorf("new/%d = %v, %v", i, v, err)
		}
		if _, err := s.GetMeta(fmt.Sprintf("old/%d", i)); !errors.Is(err, ErrNotFound) {
			t.Errorf("old/%d after move: %v, want ErrNotFound", i, err)
		}
	}
}

// TestPutMetas writes records in one call, more bytes than one Badger
// transaction takes (PutMetas splits them), reads every one back after a
// reopen, and checks that a call with a key too long writes nothing.
func TestPutMetas(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 24000 // of 1 KiB: 24 MiB, over Badger's largest transaction
	records := make([]MetaRecord, n)
	for i := range records {
		v := bytes.Repeat([]byte{byte(i)}, 1024)
		binary.BigEndian.PutUint32(v, uint32(i))
		records[i] = MetaRecord{Key: fmt.Sprintf("m/%05d", i), Value: v}
	}
	if err := s.PutMetas(records); err != nil {
		t.Fatalf("PutMetas of %d records: %v", n, err)
	}
	bad := []MetaRecord{{Key: "ok", Value: []byte("v")}, {Key: strings.Repeat("x", MaxMetaKeyLen+1)}}
	if err := s.PutMetas(bad); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("PutMetas with a long key = %v, want ErrInvalidKey", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	for i, r := range records {
		got, err := s.GetMeta(r.Key)
		if err != nil || !bytes.Equal(got, r.Value) {
			t.Fatalf("record %d after reopen: %d bytes, %v", i, len(got), err)
		}
	}
	if _, err := s.GetMeta("ok"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a record of the refused call: %v, want ErrNotFound", err)
	}
}
