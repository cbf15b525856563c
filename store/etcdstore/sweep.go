package etcdstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// sweeper deletes expired records in the background. They are invisible
// already: this only reclaims their space and gives their owners their
// quota back. Every host sweeps; the transactions' compares let one win.
func (s *Store) sweeper() {
	defer s.stopped.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.Sweep(); err != nil {
				s.log.Debug("etcd store: sweeping expired keys", "err", err)
			}
		}
	}
}

// Sweep deletes up to 1000 records whose expiry has passed, with their
// index entries and accounting, and returns how many.
func (s *Store) Sweep() (int, error) {
	n := 0
	for batch := 0; batch < 10; batch++ {
		end := fmt.Sprintf("%sx/%016x/", s.prefix, uint64(s.opts.Now().UnixNano())+1)
		var idx *clientv3.GetResponse
		err := s.call("sweep_read", func(ctx context.Context) error {
			var err error
			idx, err = s.cli.Get(ctx, s.prefix+"x/", clientv3.WithRange(end), clientv3.WithLimit(100))
			return err
		})
		if err != nil || len(idx.Kvs) == 0 {
			return n, err
		}
		type entry struct {
			index, data string
			expiry      int64
		}
		var es []entry
		ops := map[string]clientv3.Op{}
		var cmps []clientv3.Cmp
		for _, x := range idx.Kvs {
			rest := strings.TrimPrefix(string(x.Key), s.prefix+"x/")
			hex, rel, ok := strings.Cut(rest, "/")
			ns, err := strconv.ParseUint(hex, 16, 64)
			if !ok || err != nil {
				ops[string(x.Key)] = clientv3.OpDelete(string(x.Key))
				continue
			}
			es = append(es, entry{string(x.Key), s.prefix + rel, int64(ns)})
		}
		var got *clientv3.TxnResponse
		err = s.call("sweep_read", func(ctx context.Context) error {
			gets := make([]clientv3.Op, len(es))
			for i, e := range es {
				gets[i] = clientv3.OpGet(e.data)
			}
			var err error
			got, err = s.cli.Txn(ctx).Then(gets...).Commit()
			return err
		})
		if err != nil {
			return n, err
		}
		d := usage{}
		for i, e := range es {
			ops[e.index] = clientv3.OpDelete(e.index)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(e.index), ">", 0))
			g := got.Responses[i].GetResponseRange()
			if len(g.Kvs) != 1 {
				continue
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.data), "=", g.Kvs[0].ModRevision))
			rec, err := decodeRecord(g.Kvs[0].Value, true)
			// Only a record that still carries this expiry: a rewrite
			// moved or removed its index entry already.
			if err != nil || rec.Expires.IsZero() || rec.Expires.UnixNano() != e.expiry {
				continue
			}
			kind, name := s.splitDataKey(e.data)
			d.add(rec.Owner, kind, -charge(name, rec), -1)
			ops[e.data] = clientv3.OpDelete(e.data)
			n++
		}
		ok, err := s.release("sweep", d, cmps, ops)
		if err != nil || !ok {
			// Another host swept or wrote meanwhile; the next round
			// takes what is left.
			return n, err
		}
		if len(idx.Kvs) < 100 {
			return n, nil
		}
	}
	return n, nil
}
