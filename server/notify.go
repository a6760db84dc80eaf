package server

import "sync"

// notifier tells the readers of a stream that it has a new fragment. It is one of the two parts
// of the live path; the other is the chunk cache (livecache.go), which holds recent fragments'
// bytes. A notice carries no data: a woken reader pulls what is new from the cache, or from the
// store. A reader subscribes before it chooses where to start, so that nothing published between
// the choice and the wait goes unnoticed. The local notifier serves one process; a cluster node
// swaps in one that is also woken by other nodes' commits, while the cache stays local.
type notifier interface {
	// subscribe returns a channel that receives a value after each notify of stream (a 1-slot
	// channel and a non-blocking send: one pending notice stands for any number) and a function
	// that ends the subscription. A deleted stream's readers are woken by a notify too, and find
	// their buffer closed (media.forget): the name may already be another stream's.
	subscribe(stream string) (<-chan struct{}, func())
	// notify wakes the stream's subscribers; it never blocks.
	notify(stream string)
}

// localNotifier is the notifier of a single process.
type localNotifier struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

func newLocalNotifier() *localNotifier {
	return &localNotifier{subs: make(map[string]map[chan struct{}]struct{})}
}

func (n *localNotifier) subscribe(stream string) (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	n.mu.Lock()
	set := n.subs[stream]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		n.subs[stream] = set
	}
	set[c] = struct{}{}
	n.mu.Unlock()
	return c, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if set := n.subs[stream]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(n.subs, stream)
			}
		}
	}
}

func (n *localNotifier) notify(stream string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for c := range n.subs[stream] {
		select {
		case c <- struct{}{}:
		default: // already notified; the reader will find everything when it looks
		}
	}
}
