package transfer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
)

func TestPathReportsRoundTrip(t *testing.T) {
	full := PathReport{
		ID: 7, Addr: "mirror.example:4434", State: kwik.PathUp, RTT: 12345678 * time.Nanosecond,
		Rate: 12_500_000, DeliveredBytes: 1 << 40, DeliveredChunks: 1 << 20, Strikes: 3, InFlightBytes: 1 << 21,
	}
	many := make([]PathReport, MaxPathReports)
	for i := range many {
		many[i] = PathReport{ID: kwik.PathID(i), Addr: strings.Repeat("a", MaxAddrLen), State: kwik.PathClosed, RTT: math.MaxInt64, Rate: math.MaxUint64}
	}
	tests := []struct {
		name string
		rs   []PathReport
	}{
		{"none", nil},
		{"primary alone", []PathReport{{ID: 0, State: kwik.PathUp, RTT: time.Millisecond, DeliveredBytes: 5, DeliveredChunks: 1}}},
		{"primary and secondaries", []PathReport{{ID: 0, State: kwik.PathUp}, full, {ID: 9, Addr: "10.0.0.2:1", State: kwik.PathFailed}}},
		{"pending", []PathReport{{ID: 1, Addr: "x:1", State: kwik.PathPending}}},
		{"largest", many},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodePathReports(tc.rs)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(b) > MaxPathReportReplyLen {
				t.Fatalf("encoded %d bytes, beyond MaxPathReportReplyLen %d", len(b), MaxPathReportReplyLen)
			}
			got, err := DecodePathReports(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(got) != len(tc.rs) || (len(got) > 0 && !reflect.DeepEqual(got, tc.rs)) {
				t.Errorf("round trip: got %+v, want %+v", got, tc.rs)
			}
		})
	}
}

func TestPathReportsEncoding(t *testing.T) {
	b, err := EncodePathReports([]PathReport{{ID: 2, Addr: "h:1", State: kwik.PathUp, RTT: 1000, Rate: 2, DeliveredBytes: 3, DeliveredChunks: 4, Strikes: 5, InFlightBytes: 6}})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 1, 2, 3, 'h', ':', '1', 1, 0xe8, 0x07, 2, 3, 4, 5, 6}
	if !bytes.Equal(b, want) {
		t.Errorf("encoded %x, want %x", b, want)
	}
}

func TestDecodePathReportsRejects(t *testing.T) {
	good, err := EncodePathReports([]PathReport{{ID: 0, State: kwik.PathUp}, {ID: 1, Addr: "s:1", State: kwik.PathUp}})
	if err != nil {
		t.Fatal(err)
	}
	// record builds one record by hand, bypassing the encoder's checks.
	record := func(id uint64, addr string, state byte, rtt uint64) []byte {
		b := binary.AppendUvarint(nil, id)
		b = appendString(b, addr)
		b = append(b, state)
		b = binary.AppendUvarint(b, rtt)
		return append(b, 0, 0, 0, 0, 0, 0)
	}
	reply := func(recs ...[]byte) []byte {
		b := []byte{0, byte(len(recs))}
		for _, r := range recs {
			b = append(b, r...)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrBadRequest},
		{"no count", []byte{0}, ErrBadRequest},
		{"truncated", good[:len(good)-1], ErrBadRequest},
		{"trailing", append(bytes.Clone(good), 0), ErrBadRequest},
		{"count beyond records", []byte{0, 3}, ErrBadRequest},
		{"too many paths", binary.AppendUvarint([]byte{0}, MaxPathReports+1), ErrTooLarge},
		{"reply too large", make([]byte, MaxPathReportReplyLen+1), ErrTooLarge},
		{"address too long", reply(record(1, strings.Repeat("a", MaxAddrLen+1), 1, 0)), ErrTooLarge},
		{"address not UTF-8", reply(record(1, "\xff", 1, 0)), ErrBadRequest},
		{"unknown state", reply(record(1, "a", 4, 0)), ErrBadRequest},
		{"RTT beyond int64", reply(record(1, "a", 1, math.MaxInt64+1)), ErrBadRequest},
		{"repeated id", reply(record(1, "a", 1, 0), record(1, "b", 1, 0)), ErrBadRequest},
		{"decreasing ids", reply(record(2, "a", 1, 0), record(1, "b", 1, 0)), ErrBadRequest},
		{"error reply", EncodeError(ErrBadRequest), ErrBadRequest},
		{"error reply not found", EncodeError(ErrNotFound), ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if rs, err := DecodePathReports(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("Decode = %+v, %v; want %v", rs, err, tc.want)
			}
		})
	}
	var re *RemoteError
	if _, err := DecodePathReports(EncodeError(ErrNotFound)); !errors.As(err, &re) {
		t.Errorf("error reply decoded as %T, want *RemoteError", err)
	}
}

func TestEncodePathReportsRefusesInvalid(t *testing.T) {
	tests := []struct {
		name string
		rs   []PathReport
		want error
	}{
		{"too many", make([]PathReport, MaxPathReports+1), ErrTooLarge},
		{"address too long", []PathReport{{Addr: strings.Repeat("a", MaxAddrLen+1)}}, ErrTooLarge},
		{"address not UTF-8", []PathReport{{Addr: "\xc3"}}, ErrBadRequest},
		{"bad state", []PathReport{{State: kwik.PathState(9)}}, ErrBadRequest},
		{"negative RTT", []PathReport{{RTT: -1}}, ErrBadRequest},
		{"unordered", []PathReport{{ID: 3}, {ID: 1}}, ErrBadRequest},
		{"repeated", []PathReport{{ID: 0}, {ID: 0}}, ErrBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := EncodePathReports(tc.rs); !errors.Is(err, tc.want) {
				t.Errorf("Encode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPathReportRequest(t *testing.T) {
	req := EncodePathReportRequest()
	if !IsPathReportRequest(req) {
		t.Errorf("IsPathReportRequest(%x) = false", req)
	}
	if err := DecodePathReportRequest(req); err != nil {
		t.Errorf("DecodePathReportRequest(%x): %v", req, err)
	}
	// Not an ordinary request: a server that does not know it refuses it.
	if _, err := DecodeRequest(req); !errors.Is(err, ErrBadRequest) {
		t.Errorf("DecodeRequest(%x): %v, want ErrBadRequest", req, err)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"other op", []byte{byte(OpStat)}},
		{"corrupt report op", []byte{byte(OpReportCorrupt)}},
		{"trailing", []byte{byte(OpPathReport), 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := DecodePathReportRequest(tc.b); !errors.Is(err, ErrBadRequest) {
				t.Errorf("Decode(%x): %v, want ErrBadRequest", tc.b, err)
			}
		})
	}
	if IsPathReportRequest(nil) || IsPathReportRequest([]byte{byte(OpRead)}) {
		t.Error("IsPathReportRequest accepts another message")
	}
}

func FuzzDecodePathReports(f *testing.F) {
	for _, rs := range [][]PathReport{
		nil,
		{{ID: 0, State: kwik.PathUp, RTT: time.Millisecond, DeliveredBytes: 1 << 20, DeliveredChunks: 1}},
		{{ID: 0, State: kwik.PathUp}, {ID: 3, Addr: "127.0.0.1:4434", State: kwik.PathFailed, Rate: 1e7, Strikes: 2, InFlightBytes: 65536}},
	} {
		b, err := EncodePathReports(rs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(EncodeError(ErrBadRequest))
	f.Add([]byte{0, 1, 1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := DecodePathReports(b)
		if err != nil {
			return
		}
		again, err := EncodePathReports(rs)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", rs, err)
		}
		// Varints may have been encoded longer than needed: compare the
		// decoded values, not the bytes.
		rs2, err := DecodePathReports(again)
		if err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", again, err)
		}
		if len(rs) != len(rs2) || (len(rs) > 0 && !reflect.DeepEqual(rs, rs2)) {
			t.Fatalf("round trip changed %+v into %+v", rs, rs2)
		}
		if len(again) > len(b) {
			t.Fatalf("re-encoding %x is longer: %x", b, again)
		}
	})
}
