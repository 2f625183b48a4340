package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"unsafe"

	"github.com/kwikfs/kwikfs/transfer"
)

// List returns the entries of directory path (following symlinks that stay
// within the root), each with its full Attr in lstat semantics, in
// directory order. Entries of other types are skipped. A directory of more
// than transfer.MaxEntries entries, or whose listing encodes to more than
// transfer.MaxListLen bytes, fails with ErrTooLarge as soon as that is
// seen: the names are read listBatch at a time, so a refused directory
// never costs more than a batch of names and what the bounds allow.
func (c *Catalog) List(path string) ([]transfer.Attr, error) {
	return c.list(context.Background(), path, nil)
}

// listBatch is how many directory entries a listing reads at a time.
const listBatch = 1024

// list is List charging the memory of the listing to h (nil: to nothing)
// before it is built. It reads the directory twice: first it measures the
// entries (scanDir: their count and the bytes of their names and symlink
// targets) and refuses an oversized directory, then it takes the
// listSize.cost of that from h, waiting for it as long as ctx allows, and
// builds the listing. A directory that grew in between takes the
// difference from h as it is built.
func (c *Catalog) list(ctx context.Context, path string, h *hold) ([]transfer.Attr, error) {
	name, err := rootName(path)
	if err != nil {
		return nil, err
	}
	f, err := c.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, c.mapErr("list", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, c.mapErr("list", path, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("list %q: %w", path, transfer.ErrNotDir)
	}
	// Entries are examined relative to the directory, so that no name can
	// lead anywhere but into it.
	dir, err := c.root.OpenRoot(name)
	if err != nil {
		return nil, c.mapErr("list", path, err)
	}
	defer dir.Close()
	size, err := c.scanDir(path, f, dir)
	if err != nil {
		return nil, err
	}
	charged := size.cost()
	if err := h.resize(ctx, charged); err != nil {
		return nil, fmt.Errorf("list %q: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, c.mapErr("list", path, err)
	}
	out := make([]transfer.Attr, 0, size.entries)
	var built listSize
	var attrsLen int64 // the encoded length of out's entries
	seen := 0
	for {
		names, err := f.Readdirnames(listBatch)
		for _, n := range names {
			if seen++; seen > c.maxEntries {
				return nil, c.tooManyEntries(path)
			}
			if !transfer.ValidName(n) {
				continue
			}
			a, ok, err := c.lstatIn(dir, n)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since it was listed
			}
			if err != nil {
				return nil, c.mapErr("list", path+"/"+n, err)
			}
			if !ok {
				continue
			}
			a.Name = n
			// The body: the count of entries, then each one.
			attrsLen += attrLen(&a)
			if int64(uvarintLen(uint64(len(out)+1)))+attrsLen > c.maxListLen {
				return nil, c.listTooLong(path)
			}
			out = append(out, a)
			built.add(n, int64(len(a.Target)))
		}
		if cost := built.cost(); cost > charged {
			charged = cost
			if err := h.resize(ctx, charged); err != nil {
				return nil, fmt.Errorf("list %q: %w", path, err)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, c.mapErr("list", path, err)
		}
	}
	return out, nil
}

func (c *Catalog) tooManyEntries(path string) error {
	return fmt.Errorf("list %q: more than %d entries: %w", path, c.maxEntries, transfer.ErrTooLarge)
}

func (c *Catalog) listTooLong(path string) error {
	return fmt.Errorf("list %q: listing of more than %d bytes: %w", path, c.maxListLen, transfer.ErrTooLarge)
}

// scanDir measures the listing of directory f (whose entries dir
// examines) without keeping it: it reads the entries listBatch at a time,
// counts those List reports, with the bytes of their names and of their
// symlinks' targets (from lstat), and refuses (ErrTooLarge) a directory
// of more than maxEntries entries, or whose listing cannot encode to
// maxListLen bytes or less, as soon as it has read that much.
func (c *Catalog) scanDir(path string, f *os.File, dir *os.Root) (listSize, error) {
	var size listSize
	var minLen int64 // a lower bound of the listing's encoded length
	seen := 0
	for {
		ents, err := f.ReadDir(listBatch)
		for _, e := range ents {
			n := e.Name()
			if seen++; seen > c.maxEntries {
				return listSize{}, c.tooManyEntries(path)
			}
			if !transfer.ValidName(n) {
				continue
			}
			var target int64
			switch t := e.Type(); {
			case t.IsDir(), t.IsRegular():
			case t&fs.ModeSymlink != 0:
				if fi, err := dir.Lstat(n); err == nil {
					target = fi.Size() // the target's length
				}
			default:
				continue // not exported
			}
			size.add(n, target)
			// Each field of an encoded Attr takes a byte at least.
			if minLen += 5 + int64(len(n)) + target; minLen > c.maxListLen {
				return listSize{}, c.listTooLong(path)
			}
		}
		if err == io.EOF {
			return size, nil
		}
		if err != nil {
			return listSize{}, c.mapErr("list", path, err)
		}
	}
}

// listSize measures a listing: its entries and the bytes of their names
// and symlink targets.
type listSize struct {
	entries int64
	strings int64
}

func (s *listSize) add(name string, target int64) {
	s.entries++
	s.strings += int64(len(name)) + target
}

// attrSize is the size of a transfer.Attr in a listing's slice;
// stringOverhead allows for the rounding up of each name's allocation.
const (
	attrSize       = int64(unsafe.Sizeof(transfer.Attr{}))
	stringOverhead = 16
)

// cost returns the most memory a LIST reply of such a listing holds at
// once on its way to the stream: its []transfer.Attr and their strings,
// and, while transfer.EncodeReply runs, the body (allocated for the most
// every Attr can take: five varints of binary.MaxVarintLen64 bytes plus
// its strings), the compressed body and the reply, each at most the body.
// It overestimates: a short body is allocated in full, but only what is
// written of it is touched.
func (s listSize) cost() int64 {
	body := binary.MaxVarintLen64 + s.entries*5*binary.MaxVarintLen64 + s.strings
	return s.entries*(attrSize+stringOverhead) + s.strings + 3*body
}

// attrLen returns the length of the encoding of a in a listing (that of
// transfer.EncodeAttr: name, mode, size, mtime, target), without encoding
// it.
func attrLen(a *transfer.Attr) int64 {
	var b [binary.MaxVarintLen64]byte
	n := uvarintLen(uint64(len(a.Name))) + len(a.Name) + uvarintLen(uint64(a.Mode)) +
		binary.PutVarint(b[:], a.Size) + binary.PutVarint(b[:], a.MtimeNs) +
		uvarintLen(uint64(len(a.Target))) + len(a.Target)
	return int64(n)
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
