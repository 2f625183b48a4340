package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestPrefetchAPI drives the control socket's prefetch API with
// control.Client against a real primary, store and filesystem: a job is
// started, followed to its end, listed (also in GET /status) and
// canceled; requests the manager refuses get their statuses.
func TestPrefetchAPI(t *testing.T) {
	root := t.TempDir()
	const cs = transfer.MinChunkSize
	data := make([]byte, 7*cs+5)
	x := uint32(1)
	for i := range data { // no two chunks alike: the store would hold one copy
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	if err := os.MkdirAll(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d", "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}})
	client := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	t.Cleanup(func() { client.Close() })
	store, err := chunkstore.Open(t.TempDir(), &chunkstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fsys := fusefs.New(client, store, nil)
	t.Cleanup(func() { fsys.Close() })
	mgr, err := prefetch.New(fsys, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	sock := filepath.Join(t.TempDir(), "control.sock")
	ctl, err := startControl(sock, &statusSource{client: client, store: store, fs: fsys, prefetch: mgr, started: time.Now()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := control.NewClient(sock)
	defer c.Close()
	p, err := c.StartPrefetch(ctx, []string{"d"})
	if err != nil {
		t.Fatalf("StartPrefetch: %v", err)
	}
	if p.ID != 1 || p.State != control.JobRunning {
		t.Errorf("started job %+v", p)
	}
	if _, err := mgr.Wait(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	p, err = c.Prefetch(ctx, p.ID)
	if err != nil || p.State != control.JobDone || p.FilesDone != 1 || p.BytesFetched != int64(len(data)) {
		t.Errorf("Prefetch(1) = %+v, %v; want done, 1 file, %d bytes fetched", p, err, len(data))
	}
	jobs, err := c.Prefetches(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].ID != 1 {
		t.Errorf("Prefetches = %+v, %v", jobs, err)
	}
	if p, err := c.CancelPrefetch(ctx, 1); err != nil || p.State != control.JobDone {
		t.Errorf("CancelPrefetch of an ended job = %+v, %v; want it unchanged", p, err)
	}

	for _, c2 := range []struct {
		name   string
		do     func() error
		status int
	}{
		{"missing path", func() error { _, err := c.StartPrefetch(ctx, []string{"nope"}); return err }, http.StatusNotFound},
		{"escaping path", func() error { _, err := c.StartPrefetch(ctx, []string{"../x"}); return err }, http.StatusBadRequest},
		{"no paths", func() error { _, err := c.StartPrefetch(ctx, nil); return err }, http.StatusBadRequest},
		{"unknown job", func() error { _, err := c.Prefetch(ctx, 99); return err }, http.StatusNotFound},
		{"cancel unknown job", func() error { _, err := c.CancelPrefetch(ctx, 99); return err }, http.StatusNotFound},
	} {
		var ce *control.Error
		if err := c2.do(); !errors.As(err, &ce) || ce.Status != c2.status || ce.Message == "" {
			t.Errorf("%s: %v, want a control.Error with status %d", c2.name, err, c2.status)
		}
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Prefetch) != 1 || st.Prefetch[0].State != control.JobDone {
		t.Errorf("status lists jobs %+v, want job 1 done", st.Prefetch)
	}
}

// fillDistinct sets every number, string, bool and time of v (a pointer to
// a struct, walked into nested structs and slices' elements) to a value
// unlike the zero value, and returns how many it set.
func fillDistinct(v reflect.Value, next *int64) int {
	n := 0
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return fillDistinct(v.Elem(), next)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			*next++
			v.Set(reflect.ValueOf(time.Unix(*next, 0)))
			return 1
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				n += fillDistinct(v.Field(i), next)
			}
		}
		return n
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		}
		for i := range v.Len() {
			n += fillDistinct(v.Index(i), next)
		}
		return n
	}
	*next++
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		v.SetInt(*next)
	case reflect.Uint64:
		v.SetUint(uint64(*next))
	case reflect.Float64:
		v.SetFloat(float64(*next) + 0.5)
	case reflect.String:
		v.SetString(fmt.Sprint("s", *next))
	case reflect.Bool:
		v.SetBool(true)
	default:
		panic("fillDistinct: unexpected kind " + v.Kind().String())
	}
	return 1
}

// zeroLeaves returns the dotted names of the leaves of v (numbers,
// strings, bools, times, nil pointers and empty slices) that are zero.
func zeroLeaves(v reflect.Value, name string) []string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return []string{name}
		}
		return zeroLeaves(v.Elem(), name)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			if v.Interface().(time.Time).IsZero() {
				return []string{name}
			}
			return nil
		}
		var zero []string
		for i := range v.NumField() {
			zero = append(zero, zeroLeaves(v.Field(i), name+"."+v.Type().Field(i).Name)...)
		}
		return zero
	case reflect.Slice:
		if v.Len() == 0 {
			return []string{name}
		}
		var zero []string
		for i := range v.Len() {
			zero = append(zero, zeroLeaves(v.Index(i), fmt.Sprintf("%s[%d]", name, i))...)
		}
		return zero
	}
	if v.IsZero() {
		return []string{name}
	}
	return nil
}

// TestAPIConvertsEveryField: every figure of the components' stats (each
// set to a value of its own) reaches a field of the control API's Status,
// and no field of the Status is left unset: the explicit conversion
// forgets nothing either way.
func TestAPIConvertsEveryField(t *testing.T) {
	var snap snapshot
	var next int64
	in := fillDistinct(reflect.ValueOf(&snap).Elem(), &next)
	// The one API field with no counterpart in the snapshot.
	const apiOnly = 1 // Status.Version
	st := snap.api()
	if zero := zeroLeaves(reflect.ValueOf(st), "Status"); len(zero) > 0 {
		t.Errorf("fields of the API's Status left unset by the conversion: %v", zero)
	}
	var apiCopy control.Status
	var n2 int64
	if out := fillDistinct(reflect.ValueOf(&apiCopy).Elem(), &n2); out != in+apiOnly {
		t.Errorf("the snapshot has %d figures, the API's Status %d (%d of its own): a figure is not converted", in, out, apiOnly)
	}
	if st.Version != control.Version || st.Store.MetaCorrupt != snap.Store.MetaCorrupt || st.FS.MemoryChunks != int64(snap.FS.MemoryChunks) ||
		st.Foreground.BackgroundWaitSeconds != snap.Foreground.BackgroundWaited.Seconds() || st.Prefetch[0].Resumed != int64(snap.Prefetch[0].Resumed) {
		t.Errorf("converted %+v from %+v", st, snap)
	}
}
