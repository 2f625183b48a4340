package chunkstore

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// checkMetaKey rejects keys longer than MaxMetaKeyLen.
func checkMetaKey(key string) error {
	if len(key) > MaxMetaKeyLen {
		return fmt.Errorf("chunkstore: meta key of %d bytes exceeds %d: %w", len(key), MaxMetaKeyLen, ErrInvalidKey)
	}
	return nil
}

// PutMeta stores value as the metadata record named key, replacing any
// record of that name. Any key of up to MaxMetaKeyLen bytes is valid (the
// empty key too); a longer one gives an error wrapping ErrInvalidKey.
// PutMeta does not retain value. Metadata names never collide with chunks.
func (s *Store) PutMeta(key string, value []byte) error {
	if err := checkMetaKey(key); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	mk, rec := metaKey(key), encodeMeta(value)
	err := s.update(func(txn *badger.Txn) error { return txn.Set(mk, rec) })
	if err != nil {
		return fmt.Errorf("chunkstore: put meta %q: %w", key, err)
	}
	return nil
}

// MetaRecord is one metadata record of PutMetas.
type MetaRecord struct {
	Key   string
	Value []byte
}

// PutMetas stores records as PutMeta stores each, in as few Badger
// transactions as their size allows (one, unless it is too big for one):
// many small records cost about what one does. Each record is written
// whole or not at all, but when PutMetas fails some records may have been
// written and others not. A key longer than MaxMetaKeyLen fails the call
// before anything is written. It does not retain the values.
func (s *Store) PutMetas(records []MetaRecord) error {
	for _, r := range records {
		if err := checkMetaKey(r.Key); err != nil {
			return err
		}
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	for len(records) > 0 {
		n := len(records)
		for {
			err := s.update(func(txn *badger.Txn) error {
				for _, r := range records[:n] {
					if err := txn.Set(metaKey(r.Key), encodeMeta(r.Value)); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				break
			}
			if !errors.Is(err, badger.ErrTxnTooBig) || n == 1 {
				return fmt.Errorf("chunkstore: put %d meta records: %w", n, err)
			}
			n /= 2
		}
		records = records[n:]
	}
	return nil
}

// GetMeta returns a copy of the metadata record named key, or an error
// wrapping ErrNotFound. A record that fails its checksum is removed,
// counted in Stats.MetaCorrupt, and reported with an error wrapping
// ErrCorrupt.
func (s *Store) GetMeta(key string) ([]byte, error) {
	if err := checkMetaKey(key); err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.ops.Done()
	var (
		rec     []byte
		version uint64
	)
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(key))
		if err != nil {
			return err
		}
		version = item.Version()
		rec, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("chunkstore: get meta %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunkstore: get meta %q: %w", key, err)
	}
	value, err := decodeMeta(rec)
	if err != nil {
		if derr := s.dropCorruptMeta(key, version, err); derr != nil {
			return nil, fmt.Errorf("chunkstore: get meta %q: %w (removing it: %w)", key, err, derr)
		}
		return nil, fmt.Errorf("chunkstore: get meta %q: %w", key, err)
	}
	return value, nil
}

// DeleteMeta removes the metadata record named key. Deleting a record that
// does not exist is not an error.
func (s *Store) DeleteMeta(key string) error {
	if err := checkMetaKey(key); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	mk := metaKey(key)
	if err := s.update(func(txn *badger.Txn) error { return txn.Delete(mk) }); err != nil {
		return fmt.Errorf("chunkstore: delete meta %q: %w", key, err)
	}
	return nil
}

// ScanMeta calls fn for every metadata record whose key starts with prefix,
// in byte order of the keys, on a consistent snapshot taken when ScanMeta
// starts. fn must not retain value (the buffer is reused); it may call other
// methods of s except Close. If fn returns an error, ScanMeta stops and returns that
// error unwrapped. Records that fail their checksum are skipped, removed and
// counted in Stats.MetaCorrupt.
func (s *Store) ScanMeta(prefix string, fn func(key string, value []byte) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	type bad struct {
		key     string
		version uint64
		err     error
	}
	var (
		corrupt []bad
		fnErr   error
	)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: metaKey(prefix)})
		defer it.Close()
		var buf []byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key()[1:])
			var err error
			// Copy the value so that no Badger lock is held while fn runs.
			if buf, err = item.ValueCopy(buf); err != nil {
				return fmt.Errorf("read %q: %w", key, err)
			}
			value, err := decodeMeta(buf)
			if err != nil {
				corrupt = append(corrupt, bad{key, item.Version(), err})
				continue
			}
			if err := fn(key, value); err != nil {
				fnErr = err
				return nil
			}
		}
		return nil
	})
	for _, b := range corrupt {
		if derr := s.dropCorruptMeta(b.key, b.version, b.err); derr != nil && err == nil {
			err = derr
		}
	}
	if err != nil {
		return fmt.Errorf("chunkstore: scan meta %q: %w", prefix, err)
	}
	return fnErr
}

// dropCorruptMeta removes the metadata record key read as version, unless
// it has been replaced or removed since, and counts it in Stats.MetaCorrupt
// if this call removed it.
func (s *Store) dropCorruptMeta(key string, version uint64, cause error) error {
	mk := metaKey(key)
	var removed bool
	err := s.update(func(txn *badger.Txn) error {
		removed = false
		item, err := txn.Get(mk)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if item.Version() != version {
			return nil
		}
		removed = true
		return txn.Delete(mk)
	})
	if err != nil {
		return err
	}
	if removed {
		s.count(func(st *Stats) { st.MetaCorrupt++ })
		s.log.Warn("chunkstore: removed corrupt metadata record", "key", key, "cause", cause)
	}
	return nil
}
