package prefetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// recordPrefix starts the Store key of every job record; the rest of the key
// is the job's ID in 20 decimal digits, so that records sort by ID.
const recordPrefix = "prefetch/job/"

// recordFormat is the format number of the job records written now.
const recordFormat = 1

// Bounds of what a job record (and Start) may hold.
const (
	// MaxPaths is the most paths one job may be given.
	MaxPaths = 1024
	// MaxPathLen is the longest path a job may be given, in bytes.
	MaxPathLen = 4096
	// maxRecordLen bounds an encoded record; decodeRecord refuses longer
	// input before parsing it.
	maxRecordLen = MaxPaths*(MaxPathLen+8) + 4096
	// maxErrorLen bounds the error text kept in a record.
	maxErrorLen = 1024
)

// errBadRecord marks a job record that cannot be decoded.
var errBadRecord = errors.New("prefetch: bad job record")

// record is what the Store keeps of a job: enough to list it and, while it
// is running, to start it again after a restart. Counters are those of the
// job's end (zero while it runs).
type record struct {
	Format   int       `json:"format"`
	ID       uint64    `json:"id"`
	Paths    []string  `json:"paths"`
	State    State     `json:"state"`
	Error    string    `json:"error,omitempty"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Resumed counts the starts after the first (daemon restarts).
	Resumed int `json:"resumed,omitempty"`

	FilesDone    int64 `json:"files_done,omitempty"`
	FilesFailed  int64 `json:"files_failed,omitempty"`
	FilesTotal   int64 `json:"files_total,omitempty"`
	BytesDone    int64 `json:"bytes_done,omitempty"`
	BytesTotal   int64 `json:"bytes_total,omitempty"`
	BytesFetched int64 `json:"bytes_fetched,omitempty"`
	// Seconds is how long the job's last run took, for the final rate.
	Seconds float64 `json:"seconds,omitempty"`
}

// recordKey is the Store key of job id's record.
func recordKey(id uint64) string {
	return fmt.Sprintf("%s%020d", recordPrefix, id)
}

// parseRecordKey returns the job ID of a record key.
func parseRecordKey(key string) (uint64, bool) {
	digits, ok := strings.CutPrefix(key, recordPrefix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil && id > 0
}

// encodeRecord encodes r.
func encodeRecord(r *record) ([]byte, error) {
	r.Format = recordFormat
	if len(r.Error) > maxErrorLen {
		r.Error = r.Error[:maxErrorLen]
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// decodeRecord decodes and checks a record written by encodeRecord. Any
// input that is not such a record gives an error wrapping errBadRecord.
func decodeRecord(b []byte) (*record, error) {
	if len(b) > maxRecordLen {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errBadRecord, len(b), maxRecordLen)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	if r.Format != recordFormat {
		return nil, fmt.Errorf("%w: format %d, want %d", errBadRecord, r.Format, recordFormat)
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return &r, nil
}

// check validates the fields of r.
func (r *record) check() error {
	if r.ID == 0 {
		return fmt.Errorf("%w: job ID 0", errBadRecord)
	}
	switch r.State {
	case StateRunning, StateDone, StateFailed, StateCanceled:
	default:
		return fmt.Errorf("%w: state %q", errBadRecord, r.State)
	}
	if len(r.Paths) == 0 || len(r.Paths) > MaxPaths {
		return fmt.Errorf("%w: %d paths", errBadRecord, len(r.Paths))
	}
	for _, p := range r.Paths {
		if c, err := CleanPath(p); err != nil || c != p {
			return fmt.Errorf("%w: path %q", errBadRecord, p)
		}
	}
	if len(r.Error) > maxErrorLen || r.Resumed < 0 || r.Seconds < 0 ||
		r.FilesDone < 0 || r.FilesFailed < 0 || r.FilesTotal < 0 ||
		r.BytesDone < 0 || r.BytesTotal < 0 || r.BytesFetched < 0 {
		return fmt.Errorf("%w: counters out of range", errBadRecord)
	}
	return nil
}

// CleanPath returns p, a '/'-separated path relative to the exported root,
// in the form jobs keep: cleaned, without leading or trailing slashes, ""
// for the root ("." and "/" name the root too). A path with a ".."
// element, a NUL byte or more than MaxPathLen bytes gives an error
// wrapping ErrInvalidPath.
func CleanPath(p string) (string, error) {
	if len(p) > MaxPathLen || strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: %.64q", ErrInvalidPath, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: %q leaves the exported root", ErrInvalidPath, p)
		}
	}
	c := strings.Trim(path.Clean("/"+p), "/")
	return c, nil
}
