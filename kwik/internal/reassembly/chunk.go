package reassembly

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// MaxChunk is the largest chunk NewChunk hands out. Receivers read a long
// payload into successive chunks of at most this size.
const MaxChunk = 64 << 10

// SmallPiece is the largest piece Push copies instead of referencing: pieces
// up to this size are appended to their left neighbour where possible, so a
// sender of many tiny frames cannot make the receiver hold one allocation per
// frame.
const SmallPiece = 1 << 10

// chunk size classes, powers of two from 2 KiB to MaxChunk: a chunk wastes
// less than half of its memory.
var classes = [...]int{2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}

var pools [len(classes)]sync.Pool

// Chunk is a reference-counted buffer from a pool of size classes. A Buffer
// that keeps part of a chunk holds a reference; the chunk returns to its pool
// when the last reference is released. A Chunk must not be used after its
// last Release.
type Chunk struct {
	buf   []byte
	class int
	refs  atomic.Int32
}

// NewChunk returns a chunk of n bytes (0 < n <= MaxChunk) holding one
// reference, which the caller must Release.
func NewChunk(n int) *Chunk {
	if n <= 0 || n > MaxChunk {
		panic(fmt.Sprintf("kwik/reassembly: chunk of %d bytes", n))
	}
	class := 0
	for classes[class] < n {
		class++
	}
	c, _ := pools[class].Get().(*Chunk)
	if c == nil {
		c = &Chunk{buf: make([]byte, classes[class]), class: class}
	}
	c.buf = c.buf[:n]
	c.refs.Store(1)
	return c
}

// Bytes returns the chunk's n bytes.
func (c *Chunk) Bytes() []byte { return c.buf }

func (c *Chunk) ref() { c.refs.Add(1) }

// Release drops one reference.
func (c *Chunk) Release() {
	switch r := c.refs.Add(-1); {
	case r == 0:
		c.buf = c.buf[:cap(c.buf)]
		pools[c.class].Put(c)
	case r < 0:
		panic("kwik/reassembly: chunk released too often")
	}
}
