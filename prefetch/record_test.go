package prefetch

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, r := range []record{
		{ID: 1, Paths: []string{""}, State: StateRunning, Created: created},
		{ID: 42, Paths: []string{"a/b", "c d/ü"}, State: StateDone, Created: created, Finished: created.Add(time.Minute),
			Resumed: 2, FilesDone: 10, FilesTotal: 10, BytesDone: 1 << 30, BytesTotal: 1 << 30, BytesFetched: 5, Seconds: 60},
		{ID: 1<<64 - 1, Paths: []string{"x"}, State: StateFailed, Error: "boom", Created: created, FilesFailed: 1},
		{ID: 3, Paths: []string{"x"}, State: StateCanceled, Created: created},
	} {
		b, err := encodeRecord(&r)
		if err != nil {
			t.Fatalf("encode %+v: %v", r, err)
		}
		got, err := decodeRecord(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(*got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", *got, r)
		}
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	for _, c := range []struct{ name, in string }{
		{"empty", ""},
		{"not json", "{"},
		{"wrong format", `{"format":2,"id":1,"paths":[""],"state":"running"}`},
		{"no format", `{"id":1,"paths":[""],"state":"running"}`},
		{"id 0", `{"format":1,"id":0,"paths":[""],"state":"running"}`},
		{"bad state", `{"format":1,"id":1,"paths":[""],"state":"sleeping"}`},
		{"no paths", `{"format":1,"id":1,"paths":[],"state":"running"}`},
		{"path escapes", `{"format":1,"id":1,"paths":["../x"],"state":"running"}`},
		{"path not clean", `{"format":1,"id":1,"paths":["a//b"],"state":"running"}`},
		{"negative counter", `{"format":1,"id":1,"paths":["a"],"state":"done","bytes_done":-1}`},
		{"too long", `{"format":1,"id":1,"paths":["` + strings.Repeat("a", maxRecordLen) + `"],"state":"running"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r, err := decodeRecord([]byte(c.in)); !errors.Is(err, errBadRecord) {
				t.Errorf("decodeRecord: %+v, %v; want errBadRecord", r, err)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	for _, c := range []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: ""},
		{in: ".", want: ""},
		{in: "/", want: ""},
		{in: "a", want: "a"},
		{in: "/a/b/", want: "a/b"},
		{in: "a//b/./c", want: "a/b/c"},
		{in: "..", bad: true},
		{in: "a/../b", bad: true},
		{in: "a/..", bad: true},
		{in: "a\x00", bad: true},
		{in: strings.Repeat("a", MaxPathLen+1), bad: true},
		{in: "..a/b..", want: "..a/b.."},
	} {
		got, err := CleanPath(c.in)
		if c.bad {
			if !errors.Is(err, ErrInvalidPath) {
				t.Errorf("CleanPath(%.20q) = %q, %v; want ErrInvalidPath", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestRecordKey(t *testing.T) {
	for _, id := range []uint64{1, 99, 1<<64 - 1} {
		if got, ok := parseRecordKey(recordKey(id)); !ok || got != id {
			t.Errorf("parseRecordKey(recordKey(%d)) = %d, %v", id, got, ok)
		}
	}
	for _, key := range []string{"prefetch/job/1", recordPrefix + strings.Repeat("0", 20), "other/00000000000000000001", recordPrefix + "0000000000000000000x"} {
		if id, ok := parseRecordKey(key); ok {
			t.Errorf("parseRecordKey(%q) = %d, want refused", key, id)
		}
	}
	if recordKey(2) < recordKey(1) || recordKey(10) < recordKey(9) {
		t.Error("record keys do not sort by ID")
	}
}

// FuzzDecodeRecord: decodeRecord never panics, and whatever it accepts
// encodes and decodes again to the same record.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []string{
		`{"format":1,"id":1,"paths":[""],"state":"running","created":"2025-01-02T03:04:05Z"}`,
		`{"format":1,"id":7,"paths":["a","b/c"],"state":"done","created":"2025-01-02T03:04:05Z","finished":"2025-01-02T03:05:05Z","files_done":3,"bytes_done":99,"seconds":1.5}`,
		`{"format":1,"id":2,"paths":["x"],"state":"failed","error":"boom","created":"2025-01-02T03:04:05Z"}`,
		`{"format":1,"id":0}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error %v does not wrap errBadRecord", err)
			}
			return
		}
		b2, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
		r2, err := decodeRecord(b2)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
		}
	})
}
